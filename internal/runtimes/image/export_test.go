package image

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestExportImport: an exported image imports into another store with the
// same digest and the same tree; other images of the store stay out.
func TestExportImport(t *testing.T) {
	ctx := context.Background()
	img := testImage(t, "amd64", baseLayers(t)...)
	other := testImage(t, "amd64", tree(t, 2, 3))
	want, _ := img.Digest()
	src := t.TempDir()
	writeLayout(t, filepath.Join(src, "layout"), map[string]v1.Image{"a:1": img, "b:1": other})
	s := openStore(t)
	for _, ref := range []string{"a:1", "b:1"} {
		if _, err := s.ImportRef(ctx, filepath.Join(src, "layout"), ref); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := s.Export(ctx, want.String(), &buf); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "export.tar")
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t)
	d, err := s2.Import(ctx, out) // one image only: no ref needed
	if err != nil {
		t.Fatal(err)
	}
	if d != want.String() {
		t.Fatalf("re-imported digest %s, want %s", d, want)
	}
	if _, err := s2.Rootfs(ctx, d); err != nil {
		t.Fatal(err)
	}
	if ds, _ := s2.Digests(); len(ds) != 1 {
		t.Fatalf("the export carried %d images", len(ds))
	}
	missing := "sha256:" + string(bytes.Repeat([]byte("0"), 64))
	if err := s.Export(ctx, missing, &buf); !errors.Is(err, ErrNotFound) {
		t.Fatalf("export of a missing image: %v", err)
	}
}
