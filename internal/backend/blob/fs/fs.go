// Package fs stores blobs as files in a local directory.
//
// An upload is written to a temporary file (".upload-*") and renamed into
// place when complete, so a blob is never seen half written. A crash during
// an upload leaves its temporary file behind: Sweep removes those, at
// start-up (every one: no upload of this process has begun) and then
// periodically (those no upload in flight owns).
package fs

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/mse-in-go/mse/internal/backend/blob"
)

// Store keeps blobs in Dir.
type Store struct {
	Dir string

	mu       sync.Mutex
	inFlight map[string]bool // temporary files of uploads under way
}

// New creates the directory if needed.
func New(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &Store{Dir: dir}, nil
}

// tempPrefix names the temporary files of uploads.
const tempPrefix = ".upload-"

func (s *Store) path(key string) (string, error) {
	if err := blob.CheckKey(key); err != nil {
		return "", err
	}
	return filepath.Join(s.Dir, key), nil
}

// LocalPath implements blob.Local.
func (s *Store) LocalPath(key string) (string, error) { return s.path(key) }

// full wraps err in a *blob.FullError when it is the file system's "no space"
// (or "quota exceeded").
func (s *Store) full(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return &blob.FullError{Path: s.Dir, Free: freeBytes(s.Dir), Err: err}
	}
	return err
}

// Put implements blob.Store.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, maxSize int64) (blob.Info, error) {
	return s.put(ctx, key, r, maxSize, nil)
}

// PutVerified implements blob.Verifier: content whose SHA-256 is not want is
// never renamed into place.
func (s *Store) PutVerified(ctx context.Context, key string, r io.Reader, maxSize int64, want [32]byte) (blob.Info, error) {
	return s.put(ctx, key, r, maxSize, &want)
}

func (s *Store) put(ctx context.Context, key string, r io.Reader, maxSize int64, want *[32]byte) (blob.Info, error) {
	p, err := s.path(key)
	if err != nil {
		return blob.Info{}, err
	}
	s.mu.Lock()
	f, err := os.CreateTemp(s.Dir, tempPrefix+"*")
	if err == nil {
		if s.inFlight == nil {
			s.inFlight = map[string]bool{}
		}
		s.inFlight[filepath.Base(f.Name())] = true
	}
	s.mu.Unlock()
	if err != nil {
		return blob.Info{}, s.full(err)
	}
	defer func() {
		s.mu.Lock()
		delete(s.inFlight, filepath.Base(f.Name()))
		s.mu.Unlock()
	}()
	defer os.Remove(f.Name())
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(blob.ContextReader(ctx, r), maxSize+1))
	if err != nil {
		return blob.Info{}, s.full(err)
	}
	if n > maxSize {
		return blob.Info{}, blob.ErrTooLarge
	}
	var info blob.Info
	info.Size = n
	copy(info.SHA256[:], h.Sum(nil))
	if want != nil && info.SHA256 != *want {
		return blob.Info{}, &blob.DigestError{Want: *want, Got: info.SHA256}
	}
	if err := f.Sync(); err != nil {
		return blob.Info{}, s.full(err)
	}
	if err := f.Close(); err != nil {
		return blob.Info{}, s.full(err)
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return blob.Info{}, s.full(err)
	}
	return info, nil
}

// Sweep removes the temporary files that no upload in flight owns: partial
// uploads of a process that crashed. It returns what it removed.
func (s *Store) Sweep(ctx context.Context) (files int, bytes int64, err error) {
	ents, err := os.ReadDir(s.Dir)
	if err != nil {
		return 0, 0, err
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, tempPrefix) || !e.Type().IsRegular() {
			continue
		}
		s.mu.Lock()
		busy := s.inFlight[name]
		s.mu.Unlock()
		if busy {
			continue
		}
		var size int64
		if fi, err := e.Info(); err == nil {
			size = fi.Size()
		}
		if err := os.Remove(filepath.Join(s.Dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return files, bytes, err
		}
		files++
		bytes += size
	}
	return files, bytes, nil
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

// List implements blob.Store.
func (s *Store) List(ctx context.Context) ([]string, error) {
	ents, err := os.ReadDir(s.Dir)
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, e := range ents {
		if e.Type().IsRegular() && blob.CheckKey(e.Name()) == nil {
			keys = append(keys, e.Name())
		}
	}
	return keys, nil
}
