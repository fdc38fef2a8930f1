package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"io"

	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/testenv"
)

// TestKillMidUpload: mse-backend killed with SIGKILL while a bundle is being
// uploaded leaves a partial file; the restarted backend removes it.
func TestKillMidUpload(t *testing.T) {
	dir := t.TempDir()
	nodeBin := testenv.Build(t, "mse-node")
	p := startBackendProc(t, dir, nodeBin)
	tok, err := os.ReadFile(filepath.Join(dir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	c := client.New(p.api, strings.TrimSpace(string(tok)))
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() {
		_, _ = c.CreateApp(context.Background(), client.CreateAppRequest{
			Name: "cut", PythonApplication: "app:app", ExpiresAt: time.Now().Add(time.Hour).Truncate(time.Second),
			TLSMode: "self", CodeDigest: strings.Repeat("ab", 32),
		}, pr, nil)
	}()
	go func() {
		chunk := make([]byte, 64<<10)
		for i := 0; i < 64; i++ { // 4 MiB, then hold the upload open
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
	}()
	partials := func() []string {
		m, _ := filepath.Glob(filepath.Join(dir, "bundles", ".upload-*"))
		return m
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := partials(); len(m) == 1 {
			if fi, err := os.Stat(m[0]); err == nil && fi.Size() >= 1<<20 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no partial upload of 1 MiB appeared: %v", partials())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	if len(partials()) != 1 {
		t.Fatalf("the kill left no partial file to test with: %v", partials())
	}
	startBackendProc(t, dir, nodeBin)
	if m := partials(); len(m) != 0 {
		t.Errorf("partial uploads after the restart: %v", m)
	}
}
