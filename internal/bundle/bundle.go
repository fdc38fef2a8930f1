package bundle

import (
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"os"
)

// Sealed describes a bundle written by Seal.
type Sealed struct {
	// Digest is the code digest: SHA-256 of the bundle bytes written to dst.
	Digest [32]byte
	// Size is the number of bundle bytes written to dst.
	Size int64
	// PlainSize is the size of the archive before encryption.
	PlainSize int64
	Stats
}

// Seal packs dir (see Pack) and encrypts the archive under key (see Encrypt)
// into dst, in one pass and in bounded memory. progress, if not nil, is called
// after each write to the archive with the number of archive bytes so far; it
// is called often and should be cheap.
//
// On error, what was written to dst is not a valid bundle and should be
// discarded.
func Seal(dir string, dst io.Writer, key Key, lim Limits, progress func(plaintextBytes int64)) (Sealed, error) {
	h := sha256.New()
	out := &hashCounter{w: dst, h: h}
	ew, err := Encrypt(out, key)
	if err != nil {
		return Sealed{}, err
	}
	pw := &progressWriter{w: ew, progress: progress}
	stats, err := Pack(dir, pw, lim)
	if err != nil {
		return Sealed{}, err
	}
	if err := ew.Close(); err != nil {
		return Sealed{}, fmt.Errorf("writing the bundle: %w", err)
	}
	s := Sealed{Size: out.n, PlainSize: pw.n, Stats: stats}
	h.Sum(s.Digest[:0])
	return s, nil
}

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

// hashCounter hashes and counts what it forwards.
type hashCounter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (c *hashCounter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

type progressWriter struct {
	w        io.Writer
	progress func(int64)
	n        int64
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n += int64(n)
	if p.progress != nil && n > 0 {
		p.progress(p.n)
	}
	return n, err
}
