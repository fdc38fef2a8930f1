package testenv

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/mse-in-go/mse/internal/runtimes"
	"github.com/mse-in-go/mse/internal/runtimes/image"
)

// RuntimesOwnedBy copies the images of entries from the shared store into a
// new store at dir and gives it to uid:gid, for a backend that runs as that
// (unprivileged) user: a store is written to (its lock, extracted trees), so
// the shared one, root's, does not do. The trees are extracted by the first
// backend that needs them, as that user.
func RuntimesOwnedBy(t testing.TB, dir string, uid, gid int, entries []runtimes.Entry) {
	t.Helper()
	ctx := context.Background()
	shared, err := image.Open(RuntimeDir(), image.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	st, err := image.Open(dir, image.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		f, err := os.CreateTemp("", "mse-image-*.tar")
		if err != nil {
			t.Fatal(err)
		}
		err = shared.Export(ctx, e.Digest, f)
		f.Close()
		if err == nil {
			var d string
			if d, err = st.Import(ctx, f.Name()); err == nil && d != e.Digest {
				t.Fatalf("copy runtime %s: imported as %s, want %s", e.Name, d, e.Digest)
			}
		}
		os.Remove(f.Name())
		if err != nil {
			t.Fatalf("copy runtime %s into %s: %v", e.Name, dir, err)
		}
	}
	if err := ChownTree(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// ChownTree gives dir and everything under it to uid:gid (not following
// symbolic links).
func ChownTree(dir string, uid, gid int) error {
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}
