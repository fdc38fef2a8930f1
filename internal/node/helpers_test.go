package node

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sim"
	"github.com/mse-in-go/mse/internal/bundle"
	"github.com/mse-in-go/mse/internal/bundle/pack"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/ratls"
	"github.com/mse-in-go/mse/internal/spec"
	"github.com/mse-in-go/mse/internal/testenv/ciskip"
)

const testAppID = "3f1d1a8e-0000-4000-8000-000000000001"

var testMeasurement = sha256.Sum256([]byte("mse-node under test"))

// simIssuer issues sim quotes straight from an in-memory platform.
type simIssuer struct {
	p  *sim.Platform
	id sim.Identity
}

func (i simIssuer) Type() string { return attest.TypeSim }
func (i simIssuer) Issue(_ context.Context, rd [64]byte) ([]byte, error) {
	return i.p.Quote(i.id, rd, time.Now())
}

// appPy is the test app: a WSGI app that echoes its environment and secrets,
// and obeys a few control paths.
const appPy = `
import json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
if os.path.exists(os.path.join(here, "slow")):
    time.sleep(float(open(os.path.join(here, "slow")).read() or "2"))
state = {"sick": False}

def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/exit":
        os._exit(3)
    if path == "/sick":
        state["sick"] = True
    if path == "/unhealthy" or (path == "/health" and state["sick"]):
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"sick"]
    if path == "/hang":
        time.sleep(60)
    with open(os.environ["SECRETS_PATH"]) as f:
        secrets = f.read()
    st = os.stat(os.environ["SECRETS_PATH"])
    body = json.dumps({
        "PORT": os.environ.get("PORT"),
        "SECRETS_PATH": os.environ.get("SECRETS_PATH"),
        "MODULE_PATH": os.environ.get("MODULE_PATH"),
        "secrets": secrets,
        "secrets_mode": oct(st.st_mode & 0o777),
        "method": environ["REQUEST_METHOD"],
        "path": path,
        "host": environ.get("HTTP_HOST"),
        "xff": environ.get("HTTP_X_FORWARDED_FOR"),
        "cwd": os.getcwd(),
        "MSE_APP_ID": os.environ.get("MSE_APP_ID"),
        "pids": "%d %d" % (os.getpid(), os.getppid()),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
`

type testBundle struct {
	path   string
	key    bundle.Key
	digest [32]byte
}

// makeBundle seals files (name → content; names ending in ".sh" are executable).
func makeBundle(t testing.TB, files map[string]string) testBundle {
	t.Helper()
	src := t.TempDir()
	for name, content := range files {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	key, err := bundle.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "bundle.mse")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	s, err := pack.Seal(src, f, key, bundle.DefaultLimits(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return testBundle{path: out, key: key, digest: s.Digest}
}

func pyBundle(t testing.TB, extra map[string]string) testBundle {
	files := map[string]string{"app.py": appPy}
	for k, v := range extra {
		files[k] = v
	}
	return makeBundle(t, files)
}

func baseSpec() spec.Spec {
	return spec.Spec{
		AppID:             testAppID,
		Name:              "test",
		Domains:           []string{"app.example"},
		PythonApplication: "app:app",
		ExpiresAt:         time.Now().Add(24 * time.Hour).Truncate(time.Second),
		TLSMode:           spec.TLSSelf,
		Runtime:           spec.Runtime{Name: "test", Image: "mse/test:1", Digest: testRuntimeDigest, Kind: "any"},
	}
}

// testRuntimeDigest names a runtime in specs; in-process tests run the
// host's python3 (Config.Python), not a runtime image.
const testRuntimeDigest = "sha256:5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"

type testNode struct {
	n       *Node
	cfg     Config
	addr    string
	client  *http.Client
	done    chan error
	cancel  context.CancelFunc
	plat    *sim.Platform
	bundle  testBundle
	runErr  error
	stopped bool
}

type nodeOpt func(*Config)

func needPython(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		ciskip.Missing(t, "python3 is not installed (apt-get install python3): the node serves python_application with it")
	}
}

// startNode runs a node in-process on 127.0.0.1:0 and waits until it waits
// for secrets.
func startNode(t testing.TB, b testBundle, spec spec.Spec, opts ...nodeOpt) *testNode {
	t.Helper()
	plat, err := sim.NewPlatformInMemory()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Spec:          spec,
		BundlePath:    b.path,
		Listener:      ln,
		WorkDir:       filepath.Join(t.TempDir(), "work"),
		Issuer:        simIssuer{p: plat, id: sim.Identity{Measurement: testMeasurement, Signer: sim.DevSigner}},
		HealthTimeout: 20 * time.Second,
		Python:        "python3", // the host's: no runtime image in-process
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.Listener != ln { // an option brought its own
		ln.Close()
		ln = cfg.Listener
	}
	n, err := New(cfg)
	if err != nil {
		ln.Close()
		t.Fatalf("New: %v", err)
	}
	if st := readStatus(t, n.cfg.StatusFile); st.State != nodeapi.StateStarting {
		t.Errorf("status after New = %q, want starting", st.State)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tn := &testNode{n: n, cfg: n.cfg, addr: ln.Addr().String(), done: make(chan error, 1), cancel: cancel, plat: plat, bundle: b}
	tn.client = &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "app.example"},
		},
	}
	go func() { tn.done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		tn.wait(t, 30*time.Second)
		tn.client.CloseIdleConnections()
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := tn.client.Get(tn.url("/"))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && resp.Header.Get(nodeapi.HeaderStatus) == nodeapi.StatusWaiting {
				break
			}
		}
		select {
		case err := <-tn.done:
			tn.done <- err
			t.Fatalf("the node stopped before it waited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node never waited for secrets: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return tn
}

func (tn *testNode) url(path string) string { return "https://" + tn.addr + path }

// wait returns Run's error, waiting at most d.
func (tn *testNode) wait(t testing.TB, d time.Duration) error {
	t.Helper()
	if tn.stopped {
		return tn.runErr
	}
	select {
	case err := <-tn.done:
		tn.stopped, tn.runErr = true, err
		return err
	case <-time.After(d):
		t.Fatalf("Run did not return within %s", d)
		return nil
	}
}

// running reports whether Run has not returned.
func (tn *testNode) running() bool {
	if tn.stopped {
		return false
	}
	select {
	case err := <-tn.done:
		tn.stopped, tn.runErr = true, err
		return false
	default:
		return true
	}
}

func (tn *testNode) request() nodeapi.SecretsRequest {
	return nodeapi.SecretsRequest{UUID: testAppID, CodeSecretKey: tn.bundle.key.Hex()}
}

// postRaw POSTs body to / and decodes the node's answer.
func (tn *testNode) postRaw(t testing.TB, body []byte) (int, nodeapi.Response) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, tn.url("/"), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := tn.client.Do(req)
	if err != nil {
		t.Fatalf("POST /: %v", err)
	}
	defer resp.Body.Close()
	var r nodeapi.Response
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &r); err != nil {
		t.Logf("answer is not a nodeapi.Response: %q", b)
	}
	return resp.StatusCode, r
}

func (tn *testNode) post(t testing.TB, req nodeapi.SecretsRequest) (int, nodeapi.Response) {
	t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return tn.postRaw(t, b)
}

// get GETs path through the node's TLS port.
func (tn *testNode) get(t testing.TB, path string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := tn.client.Get(tn.url(path))
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// waitWaiting checks that the node still waits for secrets.
func (tn *testNode) assertWaiting(t testing.TB) {
	t.Helper()
	code, h, _ := tn.get(t, "/")
	if code != 200 || h.Get(nodeapi.HeaderStatus) != nodeapi.StatusWaiting {
		t.Errorf("the node does not wait any more: HTTP %d, %s %q", code, nodeapi.HeaderStatus, h.Get(nodeapi.HeaderStatus))
	}
	if !tn.running() {
		t.Errorf("Run returned: %v", tn.runErr)
	}
}

// waitApp waits until a GET of path is answered by the app (200).
func (tn *testNode) waitApp(t testing.TB, path string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _, b := tn.get(t, path)
		if code == 200 {
			var m map[string]string
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("app answer %q: %v", b, err)
			}
			return m
		}
		if !tn.running() {
			t.Fatalf("Run returned while waiting for the app: %v", tn.runErr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the app never answered: HTTP %d %s", code, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// peerCert returns the leaf the node serves.
func (tn *testNode) peerCert(t testing.TB) *x509.Certificate {
	t.Helper()
	conn, err := tls.Dial("tcp", tn.addr, &tls.Config{InsecureSkipVerify: true, ServerName: "app.example"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// raClaims reads the claims from the node's RA-TLS certificate.
func raClaims(t testing.TB, cert *x509.Certificate) *attest.Claims {
	t.Helper()
	ex, err := ratls.Extract(cert)
	if err != nil {
		t.Fatal(err)
	}
	c, err := attest.ParseClaims(ex.Claims)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func readStatus(t testing.TB, path string) nodeapi.Status {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("status file: %v", err)
	}
	var st nodeapi.Status
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("status file %q: %v", b, err)
	}
	return st
}

// waitStatus polls the status file until it says state.
func waitStatus(t testing.TB, path, state string, d time.Duration) nodeapi.Status {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		st := readStatus(t, path)
		if st.State == state {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status is %q (%s), want %q", st.State, st.Error, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ownerPKI makes a CA and a leaf for domains; it returns the chain PEM (leaf
// first) and the leaf's private key PEM.
func ownerPKI(t testing.TB, domains []string, notAfter time.Time) (chainPEM, keyPEM string, leaf *x509.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Owner Test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: domains[0]}, DNSNames: domains,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ = x509.ParseCertificate(leafDER)
	kb, _ := x509.MarshalPKCS8PrivateKey(leafKey)
	chainPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	keyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}))
	return chainPEM, keyPEM, leaf
}
