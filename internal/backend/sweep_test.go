package backend

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

func TestSweepTemp(t *testing.T) {
	dir := t.TempDir()
	files := map[string]bool{ // name: removed
		".admin-token.tmp123": true, ".root.pem.tmp9": true,
		"admin-token": false, "mse.db": false, ".hidden": false, "x.tmp": false,
	}
	for n := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sweepTemp(slog.New(slog.NewTextHandler(io.Discard, nil)), dir, filepath.Join(dir, "missing"))
	for n, removed := range files {
		_, err := os.Stat(filepath.Join(dir, n))
		if removed != os.IsNotExist(err) {
			t.Errorf("%s: removed=%v, want %v", n, os.IsNotExist(err), removed)
		}
	}
}
