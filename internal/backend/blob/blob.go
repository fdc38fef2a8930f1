// Package blob stores encrypted bundles. The backend only ever holds
// ciphertext: the code key never reaches it.
package blob

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"time"
)

// ErrNotFound is returned for a missing blob.
var ErrNotFound = errors.New("blob not found")

// ErrTooLarge is returned by Put when the content exceeds the limit.
var ErrTooLarge = errors.New("blob too large")

// ErrDigestMismatch is wrapped by PutVerified's error when the content's
// SHA-256 is not the one the caller expected.
var ErrDigestMismatch = errors.New("blob content does not match its expected SHA-256")

// DigestError is PutVerified's failure for content whose SHA-256 is not the
// one expected. It wraps ErrDigestMismatch.
type DigestError struct {
	Want, Got [32]byte
}

func (e *DigestError) Error() string {
	return fmt.Sprintf("the content's SHA-256 %s is not the expected %s: it was corrupted or truncated on the way; send it again",
		hex.EncodeToString(e.Got[:])[:12], hex.EncodeToString(e.Want[:])[:12])
}

func (e *DigestError) Unwrap() error { return ErrDigestMismatch }

// MaxKeyLen is the longest key a store accepts.
const MaxKeyLen = 128

var keyRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$`)

// CheckKey refuses a key that is not 1 to MaxKeyLen letters, digits, '.',
// '_' or '-', starting with a letter or digit: keys are file names and
// object names, and must not leave the store's directory or prefix.
func CheckKey(key string) error {
	if !keyRE.MatchString(key) {
		return fmt.Errorf("blob: invalid key %q (1 to %d letters, digits, '.', '_', '-', starting with a letter or digit)", key, MaxKeyLen)
	}
	return nil
}

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

// Verifier is implemented by stores that check the content's SHA-256
// while it streams in, before the blob becomes visible under its key:
// content that does not match leaves nothing behind (a blob that was
// already under key stays as it was).
type Verifier interface {
	PutVerified(ctx context.Context, key string, r io.Reader, maxSize int64, want [32]byte) (Info, error)
}

// PutVerified stores r under key only if its SHA-256 is want; otherwise it
// fails with a *DigestError. A store that implements Verifier checks before
// the blob becomes visible; another one is Put, then Delete on a mismatch.
func PutVerified(ctx context.Context, s Store, key string, r io.Reader, maxSize int64, want [32]byte) (Info, error) {
	if v, ok := s.(Verifier); ok {
		return v.PutVerified(ctx, key, r, maxSize, want)
	}
	info, err := s.Put(ctx, key, r, maxSize)
	if err != nil {
		return Info{}, err
	}
	if info.SHA256 != want {
		if err := s.Delete(ctx, key); err != nil {
			return Info{}, fmt.Errorf("%w (and removing it failed: %v)", &DigestError{Want: want, Got: info.SHA256}, err)
		}
		return Info{}, &DigestError{Want: want, Got: info.SHA256}
	}
	return info, nil
}

// Presigner is implemented by stores that can let someone fetch exactly one
// blob without credentials of their own: a node fetching its bundle, which
// must see no other. The URL is a bearer credential for that blob until it
// expires: never log it.
type Presigner interface {
	// PresignGet returns a URL that answers a GET with the blob under key
	// for ttl (MinPresignTTL to MaxPresignTTL), and nothing else.
	PresignGet(ctx context.Context, key string, ttl time.Duration) (*url.URL, error)
}

// Bounds of a presigned URL's lifetime (S3's SigV4 allows 1 s to 7 days;
// bundles need minutes).
const (
	MinPresignTTL = time.Second
	MaxPresignTTL = 24 * time.Hour
)

// Sweeper is implemented by stores that can leave partial uploads behind
// after a crash: Sweep removes those no upload in flight owns.
type Sweeper interface {
	Sweep(ctx context.Context) (files int, bytes int64, err error)
}

// Local is implemented by stores whose blobs are files on this machine.
type Local interface {
	LocalPath(key string) (string, error)
}

// ContextReader reads r until ctx ends: each Read first checks ctx, so an
// upload stops at the next chunk once its request is gone.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }

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
