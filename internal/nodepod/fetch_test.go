package nodepod

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var content = bytes.Repeat([]byte("encrypted "), 1000)

func sum(b []byte) string { d := sha256.Sum256(b); return hex.EncodeToString(d[:]) }

// testConfig is a fetch in dir: credentials (token "tok", bundleURL, and
// the expected digest want unless empty) in dir/creds, an mse-node in
// dir/node-in, outputs in dir, a 1 MiB bound.
func testConfig(t *testing.T, dir, bundleURL, want string) Config {
	t.Helper()
	creds := filepath.Join(dir, "creds")
	files := map[string]string{TokenFile: "tok\n", URLFile: bundleURL}
	if want != "" {
		files[SHA256File] = want
	}
	if err := os.Mkdir(creds, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, v := range files {
		if err := os.WriteFile(filepath.Join(creds, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	nodeIn := filepath.Join(dir, "node-in")
	if err := os.WriteFile(nodeIn, []byte("ELF node"), 0o700); err != nil {
		t.Fatal(err)
	}
	return Config{Credentials: creds, BundleOut: filepath.Join(dir, "bundle"), NodeIn: nodeIn, NodeOut: filepath.Join(dir, "mse-node"), MaxSize: 1 << 20}
}

// The backend's side is tested in internal/backend/api (the real endpoint);
// these are the answers a broken or hostile backend may give.
func TestRun(t *testing.T) {
	good := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(SHA256Header, sum(content))
		w.Header().Set("Content-Length", strconv.Itoa(len(content)))
		w.Write(content)
	}
	cases := []struct {
		name    string
		handler func(n int, w http.ResponseWriter, r *http.Request)
		want    string // the bundle's SHA-256 file, if any
		max     int64
		err     string // "" for success
		calls   int    // at least
	}{
		{name: "ok", handler: func(_ int, w http.ResponseWriter, r *http.Request) { good(w, r) }, calls: 1},
		{name: "expected digest", want: sum(content), handler: func(_ int, w http.ResponseWriter, r *http.Request) { good(w, r) }, calls: 1},
		{name: "503 then ok", calls: 3, handler: func(n int, w http.ResponseWriter, r *http.Request) {
			if n < 3 {
				http.Error(w, "still being created", 503)
				return
			}
			good(w, r)
		}},
		{name: "forbidden", err: "403 Forbidden: nope", calls: 1, handler: func(_ int, w http.ResponseWriter, r *http.Request) { http.Error(w, "nope", 403) }},
		{name: "too large", max: 100, err: "over the bound", handler: func(_ int, w http.ResponseWriter, r *http.Request) { good(w, r) }},
		{name: "no digest", err: "no valid Mse-Bundle-Sha256", handler: func(_ int, w http.ResponseWriter, r *http.Request) { w.Write(content[:100]) }},
		{name: "uppercase digest", err: "no valid", handler: func(_ int, w http.ResponseWriter, r *http.Request) {
			w.Header().Set(SHA256Header, strings.ToUpper(sum(content)))
			w.Write(content[:100])
		}},
		{name: "other digest than expected", want: sum([]byte("x")), err: "not the expected", handler: func(_ int, w http.ResponseWriter, r *http.Request) { good(w, r) }},
		{name: "no length", err: "no Content-Length", handler: func(_ int, w http.ResponseWriter, r *http.Request) {
			w.Header().Set(SHA256Header, sum(content))
			w.Write(content) // more than the server buffers: chunked
		}},
		{name: "content not the digest", err: "not the stated", handler: func(_ int, w http.ResponseWriter, r *http.Request) {
			w.Header().Set(SHA256Header, sum(content))
			w.Header().Set("Content-Length", strconv.Itoa(len(content)))
			w.Write(append([]byte("X"), content[1:]...))
		}},
		{name: "cut short, retried", err: "gave up", calls: 2, handler: func(_ int, w http.ResponseWriter, r *http.Request) {
			w.Header().Set(SHA256Header, sum(content))
			w.Header().Set("Content-Length", strconv.Itoa(len(content)))
			w.Write(content[:100])
		}},
		{name: "redirect not followed", err: "302", handler: func(_ int, w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://example.invalid/", http.StatusFound)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := int(calls.Add(1))
				if r.Header.Get("Authorization") != "Bearer tok" || r.URL.Path != "/v1/nodes/app/bundle" {
					http.Error(w, "bad request", 400)
					return
				}
				c.handler(n, w, r)
			}))
			defer srv.Close()
			dir := t.TempDir()
			cfg := testConfig(t, dir, srv.URL+"/v1/nodes/app/bundle", c.want)
			if c.max != 0 {
				cfg.MaxSize = c.max
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			err := Run(ctx, cfg)
			if int(calls.Load()) < c.calls {
				t.Errorf("%d requests, want at least %d", calls.Load(), c.calls)
			}
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				if strings.Contains(err.Error(), "tok") {
					t.Errorf("the error shows the credential: %v", err)
				}
				left, _ := os.ReadDir(dir)
				for _, e := range left {
					if e.Name() != "creds" && e.Name() != "node-in" {
						t.Errorf("a failed fetch left %s", e.Name())
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(cfg.BundleOut); !bytes.Equal(got, content) {
				t.Errorf("bundle: %d bytes", len(got))
			}
			st, err := os.Stat(cfg.NodeOut)
			if err != nil || st.Mode().Perm() != 0o555 {
				t.Errorf("mse-node copy: %v %v", st, err)
			}
			if b, _ := os.ReadFile(cfg.NodeOut); string(b) != "ELF node" {
				t.Errorf("mse-node copy holds %q", b)
			}
		})
	}
}

func TestBadCredentials(t *testing.T) {
	for _, c := range []struct {
		name, token, url, err string
	}{
		{"no token", "", "http://127.0.0.1:1/x", "token is empty"},
		{"not http", "t", "file:///etc/passwd", "not an http(s) URL"},
		{"user info", "t", "http://u:p@127.0.0.1:1/x", "not an http(s) URL"},
		{"huge token", strings.Repeat("t", maxCredentialFile+1), "http://127.0.0.1:1/x", "larger than"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, TokenFile), []byte(c.token), 0o600)
			os.WriteFile(filepath.Join(dir, URLFile), []byte(c.url), 0o600)
			err := Run(context.Background(), Config{Credentials: dir, BundleOut: filepath.Join(dir, "b"), NodeOut: filepath.Join(dir, "n"), MaxSize: 1})
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("err %v, want %q", err, c.err)
			}
		})
	}
}

func TestMainUsage(t *testing.T) {
	var out bytes.Buffer
	if code := Main([]string{"--bundle-out", "x"}, &out); code != 2 || !strings.Contains(out.String(), "--node-out") {
		t.Errorf("exit %d: %s", code, out.String())
	}
	if code := Main([]string{"--nope"}, io.Discard); code != 2 {
		t.Errorf("unknown flag: exit %d", code)
	}
}

// The backend sends the node to a presigned URL of the bundle store (307):
// the node GETs it without its credential, checks the digest the backend
// stated, asks the backend again when the store refuses (the URL may have
// expired), and never shows the URL.
func TestRunPresigned(t *testing.T) {
	cases := []struct {
		name     string
		store    func(n int, w http.ResponseWriter, r *http.Request)
		location string // default: the store's presigned URL
		err      string
		backend  int // calls to the backend, at least
	}{
		{name: "ok", backend: 1, store: func(_ int, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(content)))
			w.Write(content)
		}},
		{name: "expired, asked again", backend: 2, store: func(n int, w http.ResponseWriter, r *http.Request) {
			if n == 1 {
				http.Error(w, "<Error><Code>AccessDenied</Code><SignatureProvided>s3cr3tsig</SignatureProvided></Error>", 403)
				return
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(content)))
			w.Write(content)
		}},
		{name: "always refused", err: "the bundle store (", store: func(_ int, w http.ResponseWriter, r *http.Request) {
			http.Error(w, "<SignatureProvided>s3cr3tsig</SignatureProvided>", 403)
		}},
		{name: "not the stated digest", err: "not the stated", store: func(_ int, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(content)))
			w.Write(append([]byte("X"), content[1:]...))
		}},
		{name: "not http", location: "file:///etc/passwd", err: "not an http(s) URL"},
		{name: "store unreachable, retried", location: "http://127.0.0.1:1/bucket/app?X-Amz-Signature=s3cr3tsig", err: "the bundle store (127.0.0.1:1)", backend: 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var storeCalls, backendCalls atomic.Int32
			store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := int(storeCalls.Add(1))
				if r.Header.Get("Authorization") != "" || r.URL.Query().Get("X-Amz-Signature") != "s3cr3tsig" {
					http.Error(w, "the pod's credential reached the store, or the signature is missing", 400)
					return
				}
				c.store(n, w, r)
			}))
			defer store.Close()
			loc := c.location
			if loc == "" {
				loc = store.URL + "/bucket/app?X-Amz-Signature=s3cr3tsig"
			}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				backendCalls.Add(1)
				if r.Header.Get("Authorization") != "Bearer tok" {
					http.Error(w, "bad request", 400)
					return
				}
				w.Header().Set(SHA256Header, sum(content))
				http.Redirect(w, r, loc, http.StatusTemporaryRedirect)
			}))
			defer srv.Close()
			cfg := testConfig(t, t.TempDir(), srv.URL+"/v1/nodes/app/bundle", sum(content))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			err := Run(ctx, cfg)
			if int(backendCalls.Load()) < c.backend {
				t.Errorf("%d requests to the backend, want at least %d", backendCalls.Load(), c.backend)
			}
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				if strings.Contains(err.Error(), "s3cr3tsig") || strings.Contains(err.Error(), "tok") {
					t.Errorf("the error shows a credential: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(cfg.BundleOut); !bytes.Equal(got, content) {
				t.Errorf("bundle: %d bytes", len(got))
			}
		})
	}
}
