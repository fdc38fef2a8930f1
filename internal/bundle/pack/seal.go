package pack

import (
	"crypto/sha256"
	"fmt"
	"hash"
	"io"

	"github.com/mse-in-go/mse/internal/bundle"
)

// Sealed describes a bundle written by Seal.
type Sealed struct {
	// Digest is the code digest: SHA-256 of the bundle bytes written to dst.
	Digest [32]byte
	// Size is the number of bundle bytes written to dst.
	Size int64
	// PlainSize is the size of the archive before encryption.
	PlainSize int64
	bundle.Stats
}

// Seal packs dir (see Pack) and encrypts the archive under key (see
// bundle.Encrypt) into dst, in one pass and in bounded memory. progress, if
// not nil, is called after each write to the archive with the number of
// archive bytes so far; it is called often and should be cheap.
//
// On error, what was written to dst is not a valid bundle and should be
// discarded.
func Seal(dir string, dst io.Writer, key bundle.Key, lim bundle.Limits, progress func(plaintextBytes int64)) (Sealed, error) {
	h := sha256.New()
	out := &hashCounter{w: dst, h: h}
	ew, err := bundle.Encrypt(out, key)
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
