package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/backend/api"
	"github.com/mse-in-go/mse/internal/backend/service/servicetest"
	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/config"
)

type fixture struct {
	env   *servicetest.Env
	srv   *httptest.Server
	token string
	c     *client.Client
}

func mustAPI(tb testing.TB, e *servicetest.Env) *httptest.Server {
	tb.Helper()
	h, err := api.New(api.Config{Service: e.Service}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	return srv
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	e := servicetest.New(t)
	srv := mustAPI(t, e)
	_, tok := e.User(t, "alice", false)
	return &fixture{env: e, srv: srv, token: tok, c: client.New(srv.URL, tok)}
}

// call sends a request and returns the status and the error message.
func (f *fixture) call(t *testing.T, method, path, token, ct string, body io.Reader) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, body)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e client.Error
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &e)
	return resp.StatusCode, e.Error
}

var bundleBytes = []byte("MSEBNDL the API only hashes it")

func (f *fixture) createReq() client.CreateAppRequest {
	d := sha256.Sum256(bundleBytes)
	return client.CreateAppRequest{Name: "app", Hardware: "1g", PythonApplication: "app:app", ExpiresAt: f.env.Now().Add(time.Hour),
		TLSMode: config.TLSSelf, CodeDigest: hex.EncodeToString(d[:])}
}

// multipartBody builds an upload whose config part is configJSON.
func multipartBody(t *testing.T, configJSON []byte) (io.Reader, string) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	p, _ := mw.CreateFormField("config")
	p.Write(configJSON)
	p, _ = mw.CreateFormFile("bundle", "bundle.mse")
	p.Write(bundleBytes)
	mw.Close()
	return &buf, mw.FormDataContentType()
}

// TestStatusCodes: the service's errors reach clients with the status of
// their kind and the service's message, without the kind's prefix.
func TestStatusCodes(t *testing.T) {
	f := newFixture(t)
	good, _ := json.Marshal(f.createReq())
	cases := []struct {
		name, method, path, token, ct string
		body                          string
		code                          int
		msg                           string
	}{
		{"no token", "GET", "/v1/me", "", "", "", 401, "missing API token: run `mse cloud login --token TOKEN`"},
		{"unknown token", "GET", "/v1/me", "mse_nope", "", "", 401, "unknown API token"},
		{"unknown app", "GET", "/v1/apps/nope", f.token, "", "", 404, "no app nope"},
		{"stop unknown app", "POST", "/v1/apps/nope/stop", f.token, "", "", 404, "no app nope"},
		{"not admin", "POST", "/v1/users", f.token, "application/json", `{"name":"bob"}`, 403, "only an administrator can create users"},
		{"bad project name", "POST", "/v1/projects", f.token, "application/json", `{"name":"-"}`, 400, "invalid project name"},
		{"two objects", "POST", "/v1/projects", f.token, "application/json", `{"name":"a"}{"name":"b"}`, 400, "one JSON object"},
		{"object then junk", "POST", "/v1/projects", f.token, "application/json", `{"name":"a"} x`, 400, "one JSON object"},
		{"unknown field", "POST", "/v1/projects", f.token, "application/json", `{"nom":"a"}`, 400, `unknown field "nom"`},
		{"bad status filter", "GET", "/v1/apps?status=dead", f.token, "", "", 400, `unknown status "dead"`},
		{"unknown endpoint", "GET", "/v2/x", f.token, "", "", 404, "no such endpoint"},
		{"two config objects", "POST", "/v1/apps", f.token, "", string(good) + string(good), 400, "one JSON object"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(c.body)
			ct := c.ct
			if c.path == "/v1/apps" {
				body, ct = multipartBody(t, []byte(c.body))
			}
			code, msg := f.call(t, c.method, c.path, c.token, ct, body)
			if code != c.code || !strings.Contains(msg, c.msg) {
				t.Errorf("HTTP %d %q, want %d with %q", code, msg, c.code, c.msg)
			}
			if strings.HasPrefix(msg, "invalid request:") || strings.HasPrefix(msg, "not found:") {
				t.Errorf("the kind's prefix reached the client: %q", msg)
			}
		})
	}
	// Trailing white space after the one object is fine.
	if code, msg := f.call(t, "POST", "/v1/projects", f.token, "application/json", strings.NewReader("{\"name\":\"p1\"}\n \n")); code != 201 {
		t.Errorf("object with trailing newline: HTTP %d %s", code, msg)
	}
}

// TestAppRoundTrip: through the Go client, an upload is created, read, listed
// and stopped.
func TestAppRoundTrip(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a, err := f.c.CreateApp(ctx, f.createReq(), bytes.NewReader(bundleBytes), nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Status != "spawning" || a.Project != "default" || len(a.Domains) != 1 || a.RouterAddr != "127.0.0.1:8443" || !strings.HasPrefix(a.URL, "https://"+a.Domains[0]+":8443") {
		t.Errorf("created: %+v", a)
	}
	got, err := f.c.App(ctx, a.ID)
	if err != nil || got.ID != a.ID {
		t.Fatalf("App: %+v, %v", got, err)
	}
	apps, err := f.c.Apps(ctx, client.ListOptions{})
	if err != nil || len(apps) != 1 || apps[0].ID != a.ID || apps[0].Project != "default" {
		t.Fatalf("Apps: %+v, %v", apps, err)
	}
	if s, err := f.c.Stop(ctx, a.ID); err != nil || s.Status != "stopped" {
		t.Fatalf("Stop: %+v, %v", s, err)
	}
	if apps, _ := f.c.Apps(ctx, client.ListOptions{}); len(apps) != 0 {
		t.Errorf("active apps after stop: %d", len(apps))
	}
	var ae *client.APIError
	if _, err := f.c.CreateApp(ctx, client.CreateAppRequest{Name: "x"}, bytes.NewReader(nil), nil); !errors.As(err, &ae) || ae.Status != 400 {
		t.Errorf("bad create: %v", err)
	}
}
