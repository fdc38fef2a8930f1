// Package blob stores encrypted bundles. The backend only ever holds
// ciphertext: the code key never reaches it.
package blob

import (
	"context"
	"errors"
	"io"
)

// ErrNotFound is returned for a missing blob.
var ErrNotFound = errors.New("blob not found")

// ErrTooLarge is returned by Put when the content exceeds the limit.
var ErrTooLarge = errors.New("blob too large")

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

// Local is implemented by stores whose blobs are files on this machine.
type Local interface {
	LocalPath(key string) (string, error)
}
