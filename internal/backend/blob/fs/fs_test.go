package fs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/backend/blob"
	"github.com/mse-in-go/mse/internal/backend/blob/blobtest"
	"github.com/mse-in-go/mse/internal/testenv/ciskip"
)

var ctx = context.Background()

func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, tempPrefix+"*"))
	return m
}

func TestPutOpenDelete(t *testing.T) {
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("ciphertext")
	info, err := s.Put(ctx, "k1", bytes.NewReader(data), 100)
	if err != nil || info.Size != int64(len(data)) || info.SHA256 != sha256.Sum256(data) {
		t.Fatalf("Put = %+v, %v", info, err)
	}
	r, err := s.Open(ctx, "k1")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if !bytes.Equal(got, data) {
		t.Errorf("Open = %q", got)
	}
	if _, err := s.Put(ctx, "k2", bytes.NewReader(make([]byte, 101)), 100); !errors.Is(err, blob.ErrTooLarge) {
		t.Errorf("too large: %v", err)
	}
	if _, err := s.Put(ctx, "../x", bytes.NewReader(data), 100); err == nil {
		t.Error("a key that leaves the directory was accepted")
	}
	if keys, _ := s.List(ctx); len(keys) != 1 || keys[0] != "k1" {
		t.Errorf("List = %v", keys)
	}
	if err := s.Delete(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(ctx, "k1"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Open after Delete: %v", err)
	}
	if m := tempFiles(t, s.Dir); len(m) != 0 {
		t.Errorf("temporary files left: %v", m)
	}
}

// TestSweep: partial uploads of a crashed process are removed; the temporary
// file of an upload in flight is not.
func TestSweep(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{".upload-111", ".upload-222"} {
		if err := os.WriteFile(filepath.Join(dir, n), make([]byte, 1000), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := s.Put(ctx, "inflight", pr, 1<<20)
		done <- err
	}()
	pw.Write([]byte("part of it"))
	// Now three temporary files: two leftovers and the upload's own.
	deadline := time.Now().Add(5 * time.Second)
	for len(tempFiles(t, dir)) != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("temporary files: %v", tempFiles(t, dir))
		}
		time.Sleep(5 * time.Millisecond)
	}
	files, n, err := s.Sweep(ctx)
	if err != nil || files != 2 || n != 2000 {
		t.Errorf("Sweep = %d files, %d bytes, %v; want 2, 2000", files, n, err)
	}
	if m := tempFiles(t, dir); len(m) != 1 {
		t.Errorf("after the sweep: %v, want the upload's own", m)
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatalf("the upload in flight failed: %v", err)
	}
	if m := tempFiles(t, dir); len(m) != 0 {
		t.Errorf("temporary files after the upload: %v", m)
	}
}

// mountTmpfs mounts a tmpfs of size bytes on a new directory (root only).
// Under CI=true a failure to mount fails the test.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		ciskip.Missing(t, "cannot mount a tmpfs (run the tests as root): %s", strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// TestFullDisk: a Put that fills the file system fails with a *FullError
// naming the directory and the free space, and leaves no partial file.
func TestFullDisk(t *testing.T) {
	dir := mountTmpfs(t, "1m")
	s, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Put(ctx, "big", bytes.NewReader(make([]byte, 2<<20)), 4<<20)
	var full *blob.FullError
	if !errors.As(err, &full) || !errors.Is(err, blob.ErrFull) {
		t.Fatalf("Put on a full disk: %v, want a *blob.FullError", err)
	}
	if full.Path != dir || full.Free < 0 || full.Free > 1<<20 {
		t.Errorf("FullError = %+v", full)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left on the full disk: %v", ents)
	}
	// Space is back: a small blob fits.
	if _, err := s.Put(ctx, "small", bytes.NewReader(make([]byte, 1000)), 4<<20); err != nil {
		t.Errorf("small Put after the failure: %v", err)
	}
}

func TestConformance(t *testing.T) {
	blobtest.Run(t, blobtest.Suite{
		New: func(t *testing.T) blob.Store {
			s, err := New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Partial: func(t *testing.T, s blob.Store) []string { return tempFiles(t, s.(*Store).Dir) },
	})
}
