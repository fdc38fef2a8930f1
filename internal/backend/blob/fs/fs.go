// Package fs stores blobs as files in a local directory.
package fs

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"

	"github.com/mse-in-go/mse/internal/backend/blob"
)

// Store keeps blobs in Dir.
type Store struct{ Dir string }

// New creates the directory if needed.
func New(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &Store{Dir: dir}, nil
}

var keyRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$`)

func (s *Store) path(key string) (string, error) {
	if !keyRE.MatchString(key) {
		return "", fmt.Errorf("blob: invalid key %q", key)
	}
	return filepath.Join(s.Dir, key), nil
}

// LocalPath implements blob.Local.
func (s *Store) LocalPath(key string) (string, error) { return s.path(key) }

// Put implements blob.Store.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, maxSize int64) (blob.Info, error) {
	p, err := s.path(key)
	if err != nil {
		return blob.Info{}, err
	}
	f, err := os.CreateTemp(s.Dir, ".upload-*")
	if err != nil {
		return blob.Info{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(ctxReader{ctx, r}, maxSize+1))
	if err != nil {
		return blob.Info{}, err
	}
	if n > maxSize {
		return blob.Info{}, blob.ErrTooLarge
	}
	if err := f.Sync(); err != nil {
		return blob.Info{}, err
	}
	if err := f.Close(); err != nil {
		return blob.Info{}, err
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return blob.Info{}, err
	}
	var info blob.Info
	info.Size = n
	copy(info.SHA256[:], h.Sum(nil))
	return info, nil
}

// Open implements blob.Store.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, blob.ErrNotFound
	}
	return f, err
}

// Delete implements blob.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// List implements blob.Store.
func (s *Store) List(ctx context.Context) ([]string, error) {
	ents, err := os.ReadDir(s.Dir)
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, e := range ents {
		if e.Type().IsRegular() && keyRE.MatchString(e.Name()) {
			keys = append(keys, e.Name())
		}
	}
	return keys, nil
}
