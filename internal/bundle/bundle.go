package bundle

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
)

// Stats describes an archive.
type Stats struct {
	Files int   // regular files
	Dirs  int   // directories, not counting the root
	Bytes int64 // sum of the sizes of the files
}

// The only modes an archive holds (docs/bundle-format.md): what the owner
// side writes and what Unpack creates; nothing else is ever written or
// created.
const (
	ModeFile = 0o644 // regular files
	ModeExec = 0o755 // regular files with an executable bit set in the code directory
	ModeDir  = 0o755 // directories
)

// Open decrypts the bundle read from src with key and unpacks it into dir
// (see Decrypt and Unpack). Plaintext is only ever released segment by
// segment after authentication, but a bundle that is cut short or modified
// near its end fails only once the earlier entries are written: Open removes
// them again, leaving dir absent or empty. The node accepts a code key only
// once Open succeeded, and starts nothing before.
func Open(src io.Reader, key Key, dir string, lim Limits) (Stats, error) {
	r, err := Decrypt(src, key)
	if err != nil {
		return Stats{}, err
	}
	return Unpack(r, dir, lim)
}

// Check authenticates and decrypts the whole bundle read from src and
// validates the archive it holds exactly as Unpack would, without writing
// anything. A nil error means Open will succeed on the same bytes (file system
// errors aside).
func Check(src io.Reader, key Key, lim Limits) (Stats, error) {
	r, err := Decrypt(src, key)
	if err != nil {
		return Stats{}, err
	}
	return extract(r, lim, nil)
}

// DigestFile returns the SHA-256 and the size of the file at path, reading it
// as a stream. For a bundle file, that is its code digest.
func DigestFile(path string) ([32]byte, int64, error) {
	var d [32]byte
	f, err := os.Open(path)
	if err != nil {
		return d, 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return d, n, fmt.Errorf("%s: %w", path, err)
	}
	h.Sum(d[:0])
	return d, n, nil
}
