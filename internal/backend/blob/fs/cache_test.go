package fs

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/mse-in-go/mse/internal/backend/blob"
	"github.com/mse-in-go/mse/internal/backend/blob/blobtest"
)

func newCache(t *testing.T) (*Cache, *Store) {
	t.Helper()
	remote, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCache(remote, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c, remote
}

func TestCacheConformance(t *testing.T) {
	blobtest.Run(t, blobtest.Suite{
		New: func(t *testing.T) blob.Store { c, _ := newCache(t); return c },
		Partial: func(t *testing.T, s blob.Store) []string {
			c := s.(*Cache)
			return append(tempFiles(t, c.local.Dir), tempFiles(t, c.Remote.(*Store).Dir)...)
		},
	})
}

// TestCacheLocalPath: a blob is fetched into the cache when a runner asks
// for its path, replaced when it is put again, and removed with it; copies
// of blobs the remote lost are swept.
func TestCacheLocalPath(t *testing.T) {
	c, remote := newCache(t)
	v1, v2 := blobtest.Content(3000, 1), blobtest.Content(2000, 2)
	if _, err := c.Put(ctx, "app", bytes.NewReader(v1), 1<<20); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(c.local.Dir, "*")); len(m) != 0 {
		t.Errorf("fetched before anyone asked: %v", m)
	}
	p, err := c.LocalPath("app")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, v1) || filepath.Dir(p) != c.local.Dir {
		t.Fatalf("LocalPath = %s holding %d bytes", p, len(got))
	}
	// Put again: the stale copy goes, the next LocalPath fetches v2.
	if _, err := c.PutVerified(ctx, "app", bytes.NewReader(v2), 1<<20, sha256.Sum256(v2)); err != nil {
		t.Fatal(err)
	}
	if p2, err := c.LocalPath("app"); err != nil || p2 != p {
		t.Fatalf("LocalPath = %s, %v", p2, err)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, v2) {
		t.Fatalf("the local copy holds %d bytes, want the new %d", len(got), len(v2))
	}
	if _, err := c.LocalPath("missing"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("LocalPath of a missing blob: %v", err)
	}
	if _, err := c.LocalPath("../x"); err == nil {
		t.Error("LocalPath of an invalid key was accepted")
	}
	// Another replica deletes the blob: the sweep drops the copy.
	if err := remote.Delete(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	files, n, err := c.Sweep(ctx)
	if err != nil || files != 1 || n != int64(len(v2)) {
		t.Errorf("Sweep = %d, %d, %v; want 1 copy of %d bytes", files, n, err, len(v2))
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the copy of a deleted blob stays: %v", err)
	}
	// Delete removes both.
	if _, err := c.Put(ctx, "app2", bytes.NewReader(v1), 1<<20); err != nil {
		t.Fatal(err)
	}
	p, _ = c.LocalPath("app2")
	if err := c.Delete(ctx, "app2"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Delete left the local copy: %v", err)
	}
	if _, err := remote.Open(ctx, "app2"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Delete left the remote blob: %v", err)
	}
	if _, err := c.PresignGet(ctx, "app2", 60e9); err == nil {
		t.Error("PresignGet over a store that cannot presign succeeded")
	}
}
