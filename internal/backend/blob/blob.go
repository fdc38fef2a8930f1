// Package blob stores encrypted bundles. The backend only ever holds
// ciphertext: the code key never reaches it.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// ErrNotFound is returned for a missing blob.
var ErrNotFound = errors.New("blob not found")

// ErrTooLarge is returned by Put when the content exceeds the limit.
var ErrTooLarge = errors.New("blob too large")

// ErrFull is wrapped by errors of a store whose storage is full.
var ErrFull = errors.New("blob storage is full")

// FullError is a store's failure for lack of space: where, and how much was
// free then (-1 if unknown). It wraps ErrFull and the system's error.
type FullError struct {
	Path string
	Free int64
	Err  error
}

func (e *FullError) Error() string {
	return fmt.Sprintf("blob storage is full at %s (%d bytes free): %v", e.Path, e.Free, e.Err)
}

func (e *FullError) Unwrap() []error { return []error{ErrFull, e.Err} }

// Info describes a stored blob.
type Info struct {
	Size   int64
	SHA256 [32]byte
}

// Store holds blobs by key.
type Store interface {
	// Put stores r under key, at most maxSize bytes, atomically: a failed Put
	// leaves nothing behind.
	Put(ctx context.Context, key string, r io.Reader, maxSize int64) (Info, error)
	Open(ctx context.Context, key string) (io.ReadCloser, error)
	Delete(ctx context.Context, key string) error
	// List returns every key (for garbage collection of orphans).
	List(ctx context.Context) ([]string, error)
}

// Sweeper is implemented by stores that can leave partial uploads behind
// after a crash: Sweep removes those no upload in flight owns.
type Sweeper interface {
	Sweep(ctx context.Context) (files int, bytes int64, err error)
}

// Local is implemented by stores whose blobs are files on this machine.
type Local interface {
	LocalPath(key string) (string, error)
}
