package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const goodApp = `{"id":"3f1d1a8e-0000-4000-8000-000000000001","name":"hello","project":"default","status":"running",
"hardware":"4g","domains":["hello-3f1d1a8e0000.mse.localhost"],"url":"https://hello-3f1d1a8e0000.mse.localhost:8443/",
"router_addr":"127.0.0.1:8443","code_digest":"` + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `",
"bundle_size":123,"tls_mode":"self","created_at":"2030-01-01T00:00:00Z","updated_at":"2030-01-01T00:00:00Z",
"expires_at":"2030-01-02T00:00:00Z","spec":{"app_id":"3f1d1a8e-0000-4000-8000-000000000001"}}`

func answer(b []byte) *http.Response {
	return &http.Response{StatusCode: 200, Body: io.NopCloser(bytes.NewReader(b)), Header: http.Header{}}
}

// inert reports whether s is safe to print and to paste in a shell command
// once quoted: no control characters, no shell metacharacters.
func inert(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool {
		return r < ' ' || r == 0x7f || strings.ContainsRune("'\"`\\;$&|<>(){}*?!~ ", r) || r > 0x7e
	})
}

func checkApp(t *testing.T, a *App) {
	t.Helper()
	active := a.Status == "spawning" || a.Status == "initializing" || a.Status == "running"
	if active && len(a.Domains) == 0 {
		t.Fatalf("accepted an active app without a domain: %+v", a)
	}
	for _, s := range append([]string{a.ID, a.Name, a.Status, a.RouterAddr, a.URL, a.CodeDigest, a.Fingerprint, a.Hardware, a.Project}, a.Domains...) {
		if !inert(s) {
			t.Fatalf("accepted an app with %q", s)
		}
	}
}

// FuzzDecodeAnswers: no answer a backend can send makes the client's
// decoders panic, and what they accept is safe to use: every active app has
// a domain, and the strings the CLI prints or pastes are inert.
func FuzzDecodeAnswers(f *testing.F) {
	f.Add([]byte(goodApp))
	f.Add([]byte("[" + goodApp + "," + goodApp + "]"))
	f.Add([]byte(strings.Replace(goodApp, `["hello-3f1d1a8e0000.mse.localhost"]`, `[]`, 1)))
	f.Add([]byte(strings.Replace(goodApp, `https://hello`, `https://x; touch /tmp/p #`, 1)))
	f.Add([]byte(strings.Replace(goodApp, `"hello"`, `"\u001b]0;pwned\u0007"`, 1)))
	f.Add([]byte(strings.Replace(goodApp, `127.0.0.1:8443`, `$(id):1`, 1)))
	f.Add([]byte(`{"tee":"sim","router_addr":"127.0.0.1:8443","base_domain":"mse.localhost","node_measurement":"00ff"}`))
	f.Add([]byte(`[{"name":"4g","memory_mib":4096,"cores":2,"tee":"sim","available":3}]`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"domains":null,"status":"running","id":"3f1d1a8e-0000-4000-8000-000000000001","name":"a"}`))
	f.Add([]byte(`{"bundle_size":-1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var a App
		if err := decodeAnswer(answer(b), "GET", "/v1/apps/x", &a); err == nil {
			checkApp(t, &a)
		}
		var apps []App
		if err := decodeAnswer(answer(b), "GET", "/v1/apps", &apps); err == nil {
			for i := range apps {
				checkApp(t, &apps[i])
			}
		}
		var p Platform
		if err := decodeAnswer(answer(b), "GET", "/v1/platform", &p); err == nil {
			for _, s := range []string{p.TEE, p.RouterAddr, p.BaseDomain, p.NodeMeasurement, p.SimRootSHA256} {
				if !inert(s) {
					t.Fatalf("accepted a platform with %q", s)
				}
			}
		}
		var hw []Hardware
		if err := decodeAnswer(answer(b), "GET", "/v1/hardware", &hw); err == nil {
			for _, h := range hw {
				if !inert(h.Name) || !inert(h.TEE) || h.MemoryMiB < 0 || h.Cores < 0 {
					t.Fatalf("accepted hardware %+v", h)
				}
			}
		}
	})
}

// TestHostileBackend: a backend that answers an app without domains, or with
// a URL or router address that would run a command when pasted, or with
// escape sequences, gets an error from the client, not a value.
func TestHostileBackend(t *testing.T) {
	cases := map[string]string{
		"no domains":         strings.Replace(goodApp, `["hello-3f1d1a8e0000.mse.localhost"]`, `[]`, 1),
		"null domains":       strings.Replace(goodApp, `["hello-3f1d1a8e0000.mse.localhost"]`, `null`, 1),
		"url runs a command": strings.Replace(goodApp, `https://hello-3f1d1a8e0000.mse.localhost:8443/`, `https://a.example/; touch FILE`, 1),
		"url not https":      strings.Replace(goodApp, `https://`, `javascript://`, 1),
		"router addr":        strings.Replace(goodApp, `127.0.0.1:8443`, `127.0.0.1:8443 $(touch FILE)`, 1),
		"domain escape":      strings.Replace(goodApp, `hello-3f1d1a8e0000.mse.localhost"]`, `a.example\u001b[2J"]`, 1),
		"name escape":        strings.Replace(goodApp, `"name":"hello"`, `"name":"\u001b]0;x\u0007"`, 1),
		"id not a uuid":      strings.Replace(goodApp, `"id":"3f1d1a8e-0000-4000-8000-000000000001"`, `"id":"../../etc"`, 1),
		"unknown status":     strings.Replace(goodApp, `"running"`, `"exploded"`, 1),
		"spec of another":    strings.Replace(goodApp, `{"app_id":"3f1d1a8e-0000-4000-8000-000000000001"}`, `{"app_id":"other"}`, 1),
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				if r.URL.Path == "/v1/apps" {
					io.WriteString(w, "["+body+"]")
					return
				}
				io.WriteString(w, body)
			}))
			defer srv.Close()
			c := New(srv.URL, "t")
			if a, err := c.App(context.Background(), "3f1d1a8e-0000-4000-8000-000000000001"); !errors.Is(err, errInvalidAnswer) {
				t.Errorf("App = %+v, %v; want an invalid-answer error", a, err)
			}
			if _, err := c.Apps(context.Background(), ListOptions{}); !errors.Is(err, errInvalidAnswer) {
				t.Errorf("Apps: %v; want an invalid-answer error", err)
			}
		})
	}
	// The good answer passes.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, goodApp) }))
	defer srv.Close()
	if _, err := New(srv.URL, "t").App(context.Background(), "x"); err != nil {
		t.Errorf("good answer: %v", err)
	}
}

// TestPagesEnd: a backend whose cursors loop is refused, not followed forever.
func TestPagesEnd(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(HeaderNextCursor, "3f1d1a8e-0000-4000-8000-000000000001")
		io.WriteString(w, "["+goodApp+"]")
	}))
	defer srv.Close()
	if _, err := New(srv.URL, "t").Apps(context.Background(), ListOptions{}); err == nil || !strings.Contains(err.Error(), "do not end") {
		t.Errorf("looping cursors: %v", err)
	}
}
