package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/mse-in-go/mse/internal/backend/blob/fs"
	"github.com/mse-in-go/mse/internal/backend/service"
	"github.com/mse-in-go/mse/internal/backend/service/servicetest"
	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/testenv/ciskip"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestOutOfStorage: an upload to a full disk answers 507 with the operator
// message; the backend's log has the path and the free space; nothing of the
// upload stays.
func TestOutOfStorage(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		ciskip.Missing(t, "cannot mount a tmpfs (run the tests as root): %s", strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	blobs, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuf
	e := servicetest.New(t, func(c *service.Config) {
		c.Blobs = blobs
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	_, tok := e.User(t, "alice", false)
	srv := mustAPI(t, e)
	c := client.New(srv.URL, tok)
	big := make([]byte, 2<<20)
	d := sha256.Sum256(big)
	req := client.CreateAppRequest{Name: "big", Hardware: "1g", PythonApplication: "app:app", ExpiresAt: e.Now().Add(3600e9),
		TLSMode: "self", CodeDigest: hex.EncodeToString(d[:])}
	_, err = c.CreateApp(context.Background(), req, bytes.NewReader(big), nil)
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != 507 || ae.Msg != "the operator is out of storage; try again later or ask the operator" {
		t.Fatalf("upload to a full disk: %v", err)
	}
	if l := logs.String(); !strings.Contains(l, "out of storage") || !strings.Contains(l, "path="+dir) || !strings.Contains(l, "free_bytes=") {
		t.Errorf("the log does not name the path and the free space:\n%s", l)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left on the full disk: %v", ents)
	}
}
