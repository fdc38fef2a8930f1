package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"time"

	"github.com/mse-in-go/mse/internal/backend/blob"
)

// Cache is a store kept elsewhere (S3) with local copies of its blobs for a
// runner that needs a file (blob.Local): LocalPath fetches a blob into the
// cache directory the first time it is asked for. The remote store holds
// the truth: Put, Open and List go to it; Delete removes both copies; Sweep
// also removes the local copies of blobs the remote no longer has (another
// backend replica deleted them).
type Cache struct {
	Remote blob.Store
	local  *Store
	// FetchTimeout bounds LocalPath's download (default 10 minutes).
	FetchTimeout time.Duration
}

// NewCache keeps local copies of remote's blobs in dir.
func NewCache(remote blob.Store, dir string) (*Cache, error) {
	local, err := New(dir)
	if err != nil {
		return nil, err
	}
	return &Cache{Remote: remote, local: local, FetchTimeout: 10 * time.Minute}, nil
}

// Put implements blob.Store.
func (c *Cache) Put(ctx context.Context, key string, r io.Reader, maxSize int64) (blob.Info, error) {
	info, err := c.Remote.Put(ctx, key, r, maxSize)
	if err == nil {
		err = c.local.Delete(ctx, key) // a stale copy of what was there
	}
	return info, err
}

// PutVerified implements blob.Verifier (through the remote's, if it has one).
func (c *Cache) PutVerified(ctx context.Context, key string, r io.Reader, maxSize int64, want [32]byte) (blob.Info, error) {
	info, err := blob.PutVerified(ctx, c.Remote, key, r, maxSize, want)
	if err == nil {
		err = c.local.Delete(ctx, key)
	}
	return info, err
}

// Open implements blob.Store.
func (c *Cache) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	return c.Remote.Open(ctx, key)
}

// Delete implements blob.Store.
func (c *Cache) Delete(ctx context.Context, key string) error {
	if err := c.Remote.Delete(ctx, key); err != nil {
		return err
	}
	return c.local.Delete(ctx, key)
}

// List implements blob.Store.
func (c *Cache) List(ctx context.Context) ([]string, error) { return c.Remote.List(ctx) }

// LocalPath implements blob.Local: the path of a local copy of the blob,
// fetched now if there is none.
func (c *Cache) LocalPath(key string) (string, error) {
	p, err := c.local.path(key)
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
		return p, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.FetchTimeout)
	defer cancel()
	r, err := c.Remote.Open(ctx, key)
	if err != nil {
		return "", fmt.Errorf("blob: fetch %s into the local cache: %w", key, err)
	}
	defer r.Close()
	if _, err := c.local.Put(ctx, key, r, math.MaxInt64-1); err != nil {
		return "", fmt.Errorf("blob: fetch %s into the local cache %s: %w", key, c.local.Dir, err)
	}
	return p, nil
}

// Sweep implements blob.Sweeper: the remote's partial uploads (if it keeps
// any), the cache's own partial fetches, and local copies of blobs the
// remote no longer holds.
func (c *Cache) Sweep(ctx context.Context) (files int, bytes int64, err error) {
	if sw, ok := c.Remote.(blob.Sweeper); ok {
		if files, bytes, err = sw.Sweep(ctx); err != nil {
			return files, bytes, err
		}
	}
	n, b, err := c.local.Sweep(ctx)
	files, bytes = files+n, bytes+b
	if err != nil {
		return files, bytes, err
	}
	remote, err := c.Remote.List(ctx)
	if err != nil {
		return files, bytes, err
	}
	keep := make(map[string]bool, len(remote))
	for _, k := range remote {
		keep[k] = true
	}
	local, err := c.local.List(ctx)
	if err != nil {
		return files, bytes, err
	}
	for _, k := range local {
		if keep[k] {
			continue
		}
		p, _ := c.local.path(k)
		var size int64
		if fi, err := os.Stat(p); err == nil {
			size = fi.Size()
		}
		if err := c.local.Delete(ctx, k); err != nil {
			return files, bytes, err
		}
		files++
		bytes += size
	}
	return files, bytes, nil
}

// PresignGet implements blob.Presigner when the remote does.
func (c *Cache) PresignGet(ctx context.Context, key string, ttl time.Duration) (*url.URL, error) {
	p, ok := c.Remote.(blob.Presigner)
	if !ok {
		return nil, errors.New("blob: this store cannot presign URLs")
	}
	return p.PresignGet(ctx, key, ttl)
}
