package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/e2e/e2eutil"
	"github.com/mse-in-go/mse/internal/testenv"
)

// TestDeployBackendGoneAfterKey stops the backend between stage 2 and the
// poll for `running`: the node holds the key and starts the app, but the CLI
// never sees it run. The deploy fails when --timeout is spent, yet the owner
// keeps everything: the context (with the code key) is saved, the app was
// not stopped, and the error names the commands to use. After a restart the
// app runs, and the saved context verifies it.
func TestDeployBackendGoneAfterKey(t *testing.T) {
	dataDir, err := os.MkdirTemp("", "mse-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dataDir) })
	b := testenv.Start(t, testenv.Options{DataDir: dataDir})

	// The CLI talks to the API through this proxy. Once an app poll has
	// answered that the node is up, the CLI verifies and sends the key
	// through the router; its next poll stops the backend, which from then
	// on is gone (the proxy answers 502).
	target, _ := url.Parse(b.APIURL)
	rp := httputil.NewSingleHostReverseProxy(target)
	appPath := regexp.MustCompile(`^/v1/apps/[0-9a-f-]{36}$`)
	var mu sync.Mutex
	var nodeUp, stopped bool
	rp.ModifyResponse = func(resp *http.Response) error {
		if !appPath.MatchString(resp.Request.URL.Path) || resp.StatusCode != 200 {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		var a client.App
		if json.Unmarshal(body, &a) == nil && (a.Status == "initializing" || a.Status == "running") {
			mu.Lock()
			nodeUp = true
			mu.Unlock()
		}
		return nil
	}
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if nodeUp && !stopped && appPath.MatchString(r.URL.Path) {
			stopped = true
			b.Stop(t) // nodes keep running
		}
		mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()

	cfg := t.TempDir()
	t.Setenv("MSE_CONFIG_DIR", cfg)
	t.Setenv("MSE_BACKEND_URL", "")
	t.Setenv("MSE_TOKEN", "")
	mustRun(t, "cloud", "login", "--url", proxy.URL, "--token", b.AdminToken)
	policy := b.PolicyFile(t, "")
	start := time.Now()
	_, errs, code := run(t, "cloud", "deploy", "-y", "--timeout", "20s", "--path", helloApp(t, "outage", ""), "--policy", policy)
	if code == 0 {
		t.Fatalf("deploy succeeded although the backend was stopped:\n%s", errs)
	}
	if !stopped {
		t.Fatalf("the backend was never stopped:\n%s", errs)
	}
	if time.Since(start) < 15*time.Second {
		t.Errorf("deploy gave up after %s, before its 20s timeout: it must retry polls through an outage\n%s", time.Since(start), errs)
	}
	id := appIDFrom(t, errs)
	ctxFile := filepath.Join(cfg, "contexts", id+".toml")
	for _, want := range []string{"Sent the code key", "Saved the app context", ctxFile,
		"`mse cloud status " + id + "`", "`mse cloud logs " + id + "`", "`mse cloud stop " + id + "`"} {
		if !strings.Contains(errs, want) {
			t.Errorf("deploy output lacks %q:\n%s", want, errs)
		}
	}
	if strings.Contains(errs, "stopped app") {
		t.Errorf("the CLI tried to stop an app that holds its key:\n%s", errs)
	}
	if _, err := os.Stat(ctxFile); err != nil {
		t.Fatalf("no saved context: %v", err)
	}

	// The backend comes back on the same data: the app runs, and the saved
	// context (id, code and config digests, certificate) verifies it.
	b2 := testenv.Start(t, testenv.Options{DataDir: dataDir})
	c := apiFor(b2, b.AdminToken)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := c.WaitStatus(ctx, id, 100*time.Millisecond, "running")
	if err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	mustRun(t, "cloud", "login", "--url", b2.APIURL, "--token", b.AdminToken)
	mustRun(t, "cloud", "verify", a.Domains[0], "--context", ctxFile, "--addr", b2.RouterAddr, "--policy", policy)
	page, err := e2eutil.GetVia(b2.RouterAddr, a.Domains[0], &tls.Config{RootCAs: e2eutil.CertPool(t, filepath.Join(cfg, "contexts", id+".pem"))})
	if err != nil || page != "Hello world!" {
		t.Fatalf("GET after the restart = %q, %v", page, err)
	}
	mustRun(t, "cloud", "stop", id)
}
