package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mse-in-go/mse/internal/attest/sim"
	"github.com/mse-in-go/mse/internal/backend/api"
	"github.com/mse-in-go/mse/internal/backend/blob"
	"github.com/mse-in-go/mse/internal/backend/blob/s3"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/backend/runner/kubernetes"
	"github.com/mse-in-go/mse/internal/backend/service"
	"github.com/mse-in-go/mse/internal/backend/service/servicetest"
	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/nodepod"
	"github.com/mse-in-go/mse/internal/testenv"
)

// With the local runner's fake, nodes get their bundle from the runner:
// the endpoint has nothing to give, and asks for a credential first.
func TestNodeBundleWithoutBundleServer(t *testing.T) {
	f := newFixture(t)
	if code, msg := f.call(t, "GET", "/v1/nodes/x/bundle", "", "", nil); code != 401 || !strings.Contains(msg, "missing node credential") {
		t.Errorf("no token: HTTP %d %q", code, msg)
	}
	if code, msg := f.call(t, "GET", "/v1/nodes/x/bundle", f.token, "", nil); code != 404 || !strings.Contains(msg, "nothing here for them") {
		t.Errorf("a user's token: HTTP %d %q", code, msg)
	}
}

// createOnKube creates an app of u with bundle through e's service, whose
// runner is the kubernetes one in namespace ns, and returns its id and its
// pod's fetch Secret.
func createOnKube(t *testing.T, e *servicetest.Env, u *store.User, k *testenv.KubeCluster, ns, name string, bundle []byte) (string, *corev1.Secret) {
	t.Helper()
	ctx := context.Background()
	d := sha256.Sum256(bundle)
	req := (&fixture{env: e}).createReq()
	req.Name, req.CodeDigest = name, hex.EncodeToString(d[:])
	a, err := e.Service.CreateApp(ctx, u, req, bytes.NewReader(bundle))
	if err != nil {
		t.Fatalf("CreateApp: %v", err)
	}
	s, err := k.Client.CoreV1().Secrets(ns).Get(ctx, "mse-"+a.ID+"-fetch", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the pod's credential: %v", err)
	}
	return a.ID, s
}

// fetchReq GETs app id's bundle with token ("" for none).
func fetchReq(t *testing.T, base, id, token string) (*http.Response, []byte) {
	t.Helper()
	return nodeReq(t, "GET", base+"/v1/nodes/"+id+"/bundle", token, nil)
}

// nodeReq sends a node's request with token ("" for none) and returns the
// answer with its body read.
func nodeReq(t *testing.T, method, url, token string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, body)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// A node on Kubernetes fetches its own app's bundle with its pod's
// credential, through the API and mse-fetch; another node's credential, no
// credential and a stopped app are refused. The runner is the real one on
// the test cluster, and the bundle store is not local (as with S3).
func TestNodeBundleOnKubernetes(t *testing.T) {
	k := testenv.Kube(t)
	ns := k.Namespace(t)
	var kr *kubernetes.Runner
	plat, err := sim.NewPlatformInMemory()
	if err != nil {
		t.Fatal(err)
	}
	meas := strings.Repeat("5a", 32)
	e := servicetest.New(t, func(c *service.Config) {
		var err error
		kr, err = kubernetes.New(kubernetes.Config{Client: k.Client, Namespace: ns, Platform: plat, Measurement: meas,
			NodeImage: "mse/node@sha256:" + strings.Repeat("11", 32), BundleURL: "http://127.0.0.1:1",
			NodeStatus: func(context.Context, string, string) (runner.NodeState, error) {
				return runner.NodeState{}, io.EOF // kwok's pods do not answer
			},
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		c.Runner = kr
		c.Blobs = struct{ blob.Store }{c.Blobs} // not blob.Local
	})
	t.Cleanup(func() { kr.Close() })
	srv := mustAPI(t, e)
	u, _ := e.User(t, "alice", false)
	ctx := context.Background()

	create := func(name string, bundle []byte) (id, token string) {
		t.Helper()
		id, s := createOnKube(t, e, u, k, ns, name, bundle)
		if want := "http://127.0.0.1:1/v1/nodes/" + id + "/bundle"; string(s.Data["bundle-url"]) != want {
			t.Errorf("bundle-url %q, want %q", s.Data["bundle-url"], want)
		}
		return id, string(s.Data["token"])
	}
	bundleA := bytes.Repeat([]byte("MSEBNDL A "), 100_000)
	idA, tokA := create("a", bundleA)
	idB, tokB := create("b", []byte("MSEBNDL B"))

	resp, body := fetchReq(t, srv.URL, idA, tokA)
	if resp.StatusCode != 200 || !bytes.Equal(body, bundleA) {
		t.Fatalf("own credential: HTTP %d, %d bytes", resp.StatusCode, len(body))
	}
	d := sha256.Sum256(bundleA)
	if got := resp.Header.Get(api.BundleSHA256Header); got != hex.EncodeToString(d[:]) {
		t.Errorf("%s: %q", api.BundleSHA256Header, got)
	}
	for _, c := range []struct {
		name, id, token string
		code            int
		msg             string
	}{
		{"no credential", idA, "", 401, "missing node credential"},
		{"another node's credential", idA, tokB, 403, "not the one of app " + idA},
		{"a user's API token", idA, "mse_" + strings.Repeat("0", 40), 403, "not the one"},
		{"credential too long", idA, strings.Repeat(tokA, 5), 403, "not the one"},
		{"unknown app", "00000000-0000-0000-0000-000000000000", tokA, 404, "no app"},
		{"bad app id", "-x", tokA, 404, "no app"},
	} {
		resp, body := fetchReq(t, srv.URL, c.id, c.token)
		if resp.StatusCode != c.code || !strings.Contains(string(body), c.msg) {
			t.Errorf("%s: HTTP %d %s, want %d with %q", c.name, resp.StatusCode, body, c.code, c.msg)
		}
	}

	// mse-fetch, as the init container runs it, with the Secret's files.
	dir := t.TempDir()
	cfg := fetchConfig(t, dir, tokA, srv.URL+"/v1/nodes/"+idA+"/bundle", "")
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	fetchAndCheck(t, fctx, cfg, bundleA)
	// Too small a bound: refused before anything is written.
	cfg.BundleOut, cfg.MaxSize = filepath.Join(dir, "small"), 1000
	if err := nodepod.Run(fctx, cfg); err == nil || !strings.Contains(err.Error(), "over the bound") {
		t.Errorf("mse-fetch with --max-size 1000: %v", err)
	}
	if _, err := os.Stat(cfg.BundleOut); !os.IsNotExist(err) {
		t.Errorf("a refused fetch left %s: %v", cfg.BundleOut, err)
	}
	// Another node's credential: refused at once, not retried.
	os.WriteFile(filepath.Join(cfg.Credentials, "token"), []byte(tokB), 0o600)
	cfg.BundleOut, cfg.MaxSize = filepath.Join(dir, "other"), 10<<20
	start := time.Now()
	if err := nodepod.Run(fctx, cfg); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("mse-fetch with another node's credential: %v", err)
	} else if time.Since(start) > 5*time.Second {
		t.Errorf("a 403 was retried for %v", time.Since(start))
	}

	// The qe sidecar relays the node's quote requests: the quote states the
	// node image's mse-node and the app's runtime, and binds the node's
	// report data; another node's credential gets none.
	post := func(id, token string, body []byte) (int, string) {
		resp, b := nodeReq(t, "POST", srv.URL+"/v1/nodes/"+id+"/quote", token, bytes.NewReader(body))
		return resp.StatusCode, string(b)
	}
	rd := bytes.Repeat([]byte{7}, 64)
	for _, c := range []struct {
		name, token string
		body        []byte
		code        int
		msg         string
	}{
		{"no credential", "", rd, 401, "missing node credential"},
		{"another node's credential", tokB, rd, 403, "not the one of app " + idA},
		{"63 bytes", tokA, rd[:63], 400, "exactly 64 bytes"},
		{"65 bytes", tokA, append(rd, 1), 400, "exactly 64 bytes"},
	} {
		if code, msg := post(idA, c.token, c.body); code != c.code || !strings.Contains(msg, c.msg) {
			t.Errorf("quote, %s: HTTP %d %s, want %d with %q", c.name, code, msg, c.code, c.msg)
		}
	}
	sockDir, err := os.MkdirTemp("", "qe") // short: unix socket paths are bounded
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	qeCreds := func(token string) string {
		d := filepath.Join(dir, "qe-"+token[:8])
		os.Mkdir(d, 0o700)
		os.WriteFile(filepath.Join(d, "token"), []byte(token), 0o600)
		os.WriteFile(filepath.Join(d, "quote-url"), []byte(srv.URL+"/v1/nodes/"+idA+"/quote"), 0o600)
		return d
	}
	serve := func(token, sock string) {
		qctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- nodepod.ServeQE(qctx, nodepod.QEConfig{Credentials: qeCreds(token), Listen: sock}) }()
		t.Cleanup(func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("qe sidecar: %v", err)
			}
		})
		for i := 0; i < 100; i++ {
			if _, err := os.Stat(sock); err == nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("the qe sidecar does not listen on %s", sock)
	}
	sockA, sockB := filepath.Join(sockDir, "a.sock"), filepath.Join(sockDir, "b.sock")
	serve(tokA, sockA)
	serve(tokB, sockB) // B's credential, A's URL
	var report [64]byte
	copy(report[:], "the node's TLS key and claims")
	q, err := sim.NewIssuer(sockA).Issue(ctx, report)
	if err != nil {
		t.Fatalf("the node's sim issuer through the qe sidecar: %v", err)
	}
	v, err := sim.NewVerifier(plat.RootCertificate(), time.Now).Verify(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(v.Measurement) != meas || "sha256:"+hex.EncodeToString(v.RuntimeDigest) != servicetest.Runtimes[0].Digest || v.ReportData != report {
		t.Errorf("the quote states measurement %x, runtime %x, report data %q", v.Measurement, v.RuntimeDigest, v.ReportData)
	}
	if _, err := sim.NewIssuer(sockB).Issue(ctx, report); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("a quote for app A with B's credential: %v", err)
	}

	// A stopped app's bundle is gone, even for its own node.
	if _, err := e.Service.StopApp(ctx, u, idB); err != nil {
		t.Fatal(err)
	}
	if resp, body := fetchReq(t, srv.URL, idB, tokB); resp.StatusCode != 404 || !strings.Contains(string(body), "stopped: its node") {
		t.Errorf("stopped app: HTTP %d %s", resp.StatusCode, body)
	}
}

// With --bundle-presign-ttl and bundles in S3 (a real versitygw), a node's
// credential gets a 307 to a presigned URL of its own bundle, which
// mse-fetch follows without the credential; the URL gives that bundle
// alone; another node's credential gets no URL.
func TestNodeBundlePresigned(t *testing.T) {
	k := testenv.Kube(t)
	ns := k.Namespace(t)
	s3srv := testenv.S3(t)
	store, err := s3.New(context.Background(), s3.Config{Endpoint: s3srv.Endpoint, Insecure: true, Region: s3srv.Region,
		Bucket: s3srv.Bucket, Prefix: "presign/", Creds: s3srv.Creds(), MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	var kr *kubernetes.Runner
	plat, err := sim.NewPlatformInMemory()
	if err != nil {
		t.Fatal(err)
	}
	e := servicetest.New(t, func(c *service.Config) {
		var err error
		kr, err = kubernetes.New(kubernetes.Config{Client: k.Client, Namespace: ns, Platform: plat, Measurement: strings.Repeat("5a", 32),
			NodeImage: "mse/node@sha256:" + strings.Repeat("11", 32), BundleURL: "http://127.0.0.1:1",
			NodeStatus: func(context.Context, string, string) (runner.NodeState, error) { return runner.NodeState{}, io.EOF },
			Logger:     slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		c.Runner, c.Blobs, c.BundlePresignTTL = kr, store, 2*time.Minute
	})
	t.Cleanup(func() { kr.Close() })
	srv := mustAPI(t, e)
	u, _ := e.User(t, "alice", false)
	ctx := context.Background()
	create := func(name string, bundle []byte) (id, token string) {
		t.Helper()
		id, s := createOnKube(t, e, u, k, ns, name, bundle)
		return id, string(s.Data["token"])
	}
	bundleA := bytes.Repeat([]byte("MSEBNDL A "), 100_000)
	idA, tokA := create("a", bundleA)
	idB, tokB := create("b", []byte("MSEBNDL B"))

	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(id, token string) *http.Response {
		req, _ := http.NewRequest("GET", srv.URL+"/v1/nodes/"+id+"/bundle", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	resp := get(idA, tokA)
	d := sha256.Sum256(bundleA)
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusTemporaryRedirect || err != nil || loc.Host != s3srv.Endpoint || resp.Header.Get(api.BundleSHA256Header) != hex.EncodeToString(d[:]) {
		t.Fatalf("own credential: HTTP %d, Location host %q, %s %q", resp.StatusCode, loc.Host, api.BundleSHA256Header, resp.Header.Get(api.BundleSHA256Header))
	}
	if resp := get(idA, tokB); resp.StatusCode != 403 || resp.Header.Get("Location") != "" {
		t.Errorf("another node's credential: HTTP %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// The URL's signature covers its key: B's bundle under A's URL is refused.
	other := *loc
	other.Path = strings.Replace(other.Path, idA, idB, 1)
	if r, err := http.Get(other.String()); err != nil {
		t.Errorf("A's presigned URL for B's key: %v", err)
	} else {
		r.Body.Close()
		if r.StatusCode != 403 {
			t.Errorf("A's presigned URL for B's key: %s, want 403", r.Status)
		}
	}

	// mse-fetch follows it, as the init container does.
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	fetchAndCheck(t, fctx, fetchConfig(t, t.TempDir(), tokA, srv.URL+"/v1/nodes/"+idA+"/bundle", hex.EncodeToString(d[:])), bundleA)
}

// fetchConfig is mse-fetch's configuration in dir as the init container
// runs it: the Secret's files (token, bundle-url, and bundle-sha256 unless
// empty) and an mse-node to copy.
func fetchConfig(t *testing.T, dir, token, bundleURL, sha string) nodepod.Config {
	t.Helper()
	creds := filepath.Join(dir, "fetch")
	files := map[string]string{"token": token, "bundle-url": bundleURL}
	if sha != "" {
		files["bundle-sha256"] = sha
	}
	if err := os.Mkdir(creds, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, v := range files {
		if err := os.WriteFile(filepath.Join(creds, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	nodeIn := filepath.Join(dir, "mse-node-in")
	if err := os.WriteFile(nodeIn, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return nodepod.Config{Credentials: creds, BundleOut: filepath.Join(dir, "bundle"), NodeIn: nodeIn,
		NodeOut: filepath.Join(dir, "mse-node"), MaxSize: 10 << 20}
}

// fetchAndCheck runs mse-fetch with cfg and checks it wrote want.
func fetchAndCheck(t *testing.T, ctx context.Context, cfg nodepod.Config, want []byte) {
	t.Helper()
	if err := nodepod.Run(ctx, cfg); err != nil {
		t.Fatalf("mse-fetch: %v", err)
	}
	if got, _ := os.ReadFile(cfg.BundleOut); !bytes.Equal(got, want) {
		t.Errorf("mse-fetch wrote %d bytes, want the bundle's %d", len(got), len(want))
	}
}
