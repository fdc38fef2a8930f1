// Package e2e runs the platform for real: a backend in-process on loopback
// (SQLite, local bundles, local runner spawning built mse-node processes with
// the sim TEE, SNI router) and the owner's CLI in-process, as a user types it.
package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/backend/store/pgtest"
	"github.com/mse-in-go/mse/internal/cli"
	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/e2e/e2eutil"
	"github.com/mse-in-go/mse/internal/testenv"
)

// run runs the CLI in-process and returns stdout, stderr and the exit code.
func run(t testing.TB, args ...string) (string, string, int) {
	t.Helper()
	return e2eutil.CLI(t, 2*time.Minute, args...)
}

func mustRun(t testing.TB, args ...string) (string, string) {
	t.Helper()
	return e2eutil.MustCLI(t, 2*time.Minute, args...)
}

// login points the CLI at b with a fresh config dir.
func login(t testing.TB, b *testenv.Backend, token string) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("MSE_CONFIG_DIR", dir)
	t.Setenv("MSE_BACKEND_URL", "")
	t.Setenv("MSE_TOKEN", "")
	mustRun(t, "cloud", "login", "--url", b.APIURL, "--token", token)
	return dir
}

// helloApp copies examples/helloworld into a temp dir, renaming the app, and
// returns the path of its mse.toml.
func helloApp(t testing.TB, name, extraToml string) string {
	t.Helper()
	dst := t.TempDir()
	src := filepath.Join(testenv.RepoRoot(), "examples", "helloworld")
	e2eutil.CopyTree(t, filepath.Join(src, "mse_src"), filepath.Join(dst, "mse_src"))
	conf := fmt.Sprintf("name = %q\npython_application = \"app:app\"\nhealthcheck_endpoint = \"/health\"\n\n[cloud]\ncode = \"mse_src\"\nhardware = \"1g\"\n%s", name, extraToml)
	p := filepath.Join(dst, "mse.toml")
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type deployed struct {
	cli.DeployResult
	stderr string
}

func deployJSON(t testing.TB, args ...string) (*deployed, string, int) {
	t.Helper()
	out, errs, code := run(t, append([]string{"cloud", "deploy", "--json", "-y", "--timeout", "90s"}, args...)...)
	if code != 0 {
		return nil, errs, code
	}
	var r cli.DeployResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("deploy --json printed %q: %v", out, err)
	}
	return &deployed{DeployResult: r, stderr: errs}, errs, 0
}

func mustDeploy(t testing.TB, args ...string) *deployed {
	t.Helper()
	d, errs, code := deployJSON(t, args...)
	if code != 0 {
		t.Fatalf("deploy failed (exit %d):\n%s", code, errs)
	}
	return d
}

func apiFor(b *testenv.Backend, token string) *client.Client { return client.New(b.APIURL, token) }

// TestScenario1 is the main job: deploy with verification in simulation,
// serve over the enclave's own certificate, third-party verification,
// status/list/logs/stop.
func TestScenario1(t *testing.T) {
	b := testenv.Start(t, testenv.Options{})
	if st, err := os.Stat(b.AdminTokenFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v %v", err, st.Mode())
	}
	login(t, b, b.AdminToken)
	policy := b.PolicyFile(t, "")
	toml := helloApp(t, "hello1", "")
	d := mustDeploy(t, "--path", toml, "--policy", policy)
	if !d.Verified || d.TEE != "sim" || !d.Simulated {
		t.Fatalf("deploy result %+v", d.DeployResult)
	}
	if !strings.Contains(d.stderr, "WARNING: simulation mode") {
		t.Errorf("no simulation warning in:\n%s", d.stderr)
	}
	for _, step := range []string{"Encrypted", "Uploaded", "Verified the enclave", "Fresh evidence", "Sent the code key", "App is running"} {
		if !strings.Contains(d.stderr, step) {
			t.Errorf("deploy output lacks step %q:\n%s", step, d.stderr)
		}
	}

	// The app serves its page with the verified RA-TLS certificate.
	page, err := e2eutil.GetVia(b.RouterAddr, d.Domain, &tls.Config{RootCAs: e2eutil.CertPool(t, d.Certificate)})
	if err != nil || page != "Hello world!" {
		t.Fatalf("GET via router = %q, %v", page, err)
	}
	// The context is private and holds what is needed to verify again.
	st, err := os.Stat(d.Context)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("context %s: %v, mode %v", d.Context, err, st.Mode())
	}
	// The backend never holds the code key or the plaintext code: not in its
	// database, bundles or log. (Its nodes/ directory is, in simulation, the
	// enclave's private storage on the same disk.)
	ctxBytes, _ := os.ReadFile(d.Context)
	m := regexp.MustCompile(`code_key = '([0-9a-f]{64})'`).FindSubmatch(ctxBytes)
	if m == nil {
		t.Fatalf("no code key in the context:\n%s", ctxBytes)
	}
	key := m[1]
	rawKey, _ := hex.DecodeString(string(key))
	appPy, _ := os.ReadFile(filepath.Join(testenv.RepoRoot(), "examples", "helloworld", "mse_src", "app.py"))
	skip := filepath.Join(b.DataDir, "nodes")
	assertNotInDir(t, b.DataDir, key, "the code key (hex)", skip)
	assertNotInDir(t, b.DataDir, rawKey, "the code key", skip)
	assertNotInDir(t, b.DataDir, appPy[:64], "the plaintext code", skip)
	if strings.Contains(b.Log(), string(key)) {
		t.Fatal("the backend log holds the code key")
	}
	// Metrics are served.
	resp, err := http.Get(b.APIURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{"mse_apps_created_total 1", "mse_app_transitions_total{to=\"running\"} 1", "mse_router_", "mse_api_requests_total"} {
		if !strings.Contains(string(metrics), name) {
			t.Errorf("/metrics lacks %q", name)
		}
	}

	// Third-party verification by fingerprint, and with the exported context.
	out, _ := mustRun(t, "cloud", "verify", d.Domain, "--addr", b.RouterAddr, "--fingerprint", d.Fingerprint, "--policy", policy, "--json")
	var vr cli.VerifyResult
	if err := json.Unmarshal([]byte(out), &vr); err != nil || !vr.Verified || vr.AppID != d.AppID ||
		vr.TLSMode != "self" || !vr.TerminatedInEnclave || vr.Direct || vr.ServedFingerprint != d.Fingerprint {
		t.Fatalf("verify --json = %s (%v)", out, err)
	}
	mustRun(t, "cloud", "verify", d.Domain, "--context", d.Context, "--policy", policy)
	_, errs, code := run(t, "cloud", "verify", d.Domain, "--addr", b.RouterAddr, "--fingerprint", strings.Repeat("ab", 32), "--policy", policy)
	if code == 0 || !strings.Contains(errs, "not the fingerprint") {
		t.Fatalf("verify with a wrong fingerprint: exit %d\n%s", code, errs)
	}

	out, _ = mustRun(t, "cloud", "status", d.AppID, "--json")
	var app client.App
	if err := json.Unmarshal([]byte(out), &app); err != nil || app.Status != "running" {
		t.Fatalf("status = %s", out)
	}
	out, _ = mustRun(t, "cloud", "list")
	if !strings.Contains(out, d.AppID) || !strings.Contains(out, "running") {
		t.Fatalf("list:\n%s", out)
	}
	out, _ = mustRun(t, "cloud", "logs", d.AppID)
	if !strings.Contains(out, "GET /health") {
		t.Fatalf("logs lack the app's access log:\n%s", out)
	}
	out, _ = mustRun(t, "cloud", "context", "--list")
	if !strings.Contains(out, d.AppID) {
		t.Fatalf("context --list:\n%s", out)
	}

	// logs -f follows until the app stops.
	followed := make(chan string, 1)
	go func() {
		var o, e bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cli.Main(ctx, []string{"cloud", "logs", d.AppID, "-f"}, &o, &e)
		followed <- o.String()
	}()
	time.Sleep(500 * time.Millisecond)
	if _, err := e2eutil.GetVia(b.RouterAddr, d.Domain, &tls.Config{RootCAs: e2eutil.CertPool(t, d.Certificate)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)

	mustRun(t, "cloud", "stop", d.AppID)
	select {
	case o := <-followed:
		if strings.Count(o, `"GET / HTTP/1.1" 200`) < 2 {
			t.Fatalf("logs -f did not follow the new request:\n%s", o)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("logs -f did not end when the app stopped")
	}
	out, _ = mustRun(t, "cloud", "list")
	if strings.Contains(out, d.AppID) {
		t.Fatalf("stopped app still listed without --all:\n%s", out)
	}
	out, _ = mustRun(t, "cloud", "list", "--all")
	if !strings.Contains(out, d.AppID) || !strings.Contains(out, "stopped") {
		t.Fatalf("list --all:\n%s", out)
	}
	if _, err := e2eutil.GetVia(b.RouterAddr, d.Domain, &tls.Config{RootCAs: e2eutil.CertPool(t, d.Certificate)}); err == nil {
		t.Fatal("a stopped app is still routed")
	}
	// The decrypted code and secrets are gone from the node's directory.
	if _, err := os.Stat(filepath.Join(b.NodeDir(d.AppID), "work")); !os.IsNotExist(err) {
		t.Fatalf("node work dir still exists after stop: %v", err)
	}
}

// TestNoVerify deploys without verification: it works and says loudly that
// nothing was verified.
func TestNoVerify(t *testing.T) {
	b := testenv.Start(t, testenv.Options{})
	login(t, b, b.AdminToken)
	d := mustDeploy(t, "--path", helloApp(t, "nover", ""), "--no-verify")
	if d.Verified {
		t.Fatal("--no-verify deploy says verified")
	}
	if !strings.Contains(d.stderr, "WARNING: --no-verify") {
		t.Fatalf("no warning:\n%s", d.stderr)
	}
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// ownerPKI writes a CA and a leaf for domain; returns paths of the CA, the
// leaf chain and the leaf key, and a wrong key.
func ownerPKI(t *testing.T, dir, domain string) (caFile, chainFile, keyFile, wrongKeyFile string) {
	t.Helper()
	caKey, leafKey := newKey(t), newKey(t)
	now := time.Now()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Owner test CA"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(240 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: domain}, DNSNames: []string{domain},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(240 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, leafKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, blocks ...*pem.Block) string {
		var buf bytes.Buffer
		for _, b := range blocks {
			_ = pem.Encode(&buf, b)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(leafKey)
	wrongDER, _ := x509.MarshalPKCS8PrivateKey(newKey(t))
	return write("ca.pem", &pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		write("cert.pem", &pem.Block{Type: "CERTIFICATE", Bytes: leafDER}, &pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		write("key.pem", &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		write("wrong.pem", &pem.Block{Type: "PRIVATE KEY", Bytes: wrongDER})
}

// TestScenario2 deploys with the owner's certificate: its private key goes
// to the verified node only, which then serves with it.
func TestScenario2(t *testing.T) {
	domain := "owner-app.example.test"
	tomlPath := helloApp(t, "owner1", "")
	dir := filepath.Dir(tomlPath)
	ca, chain, key, _ := ownerPKI(t, dir, domain)
	// The owner's CA is one the operator trusts (owner-mode chains are verified).
	b := testenv.Start(t, testenv.Options{OwnerCAFiles: []string{ca}})
	login(t, b, b.AdminToken)
	policy := b.PolicyFile(t, "")
	f, err := os.OpenFile(tomlPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\n[cloud.ssl]\ndomain_name = %q\nprivate_key = %q\ncertificate = %q\n", domain, key, chain)
	f.Close()

	d := mustDeploy(t, "--path", tomlPath, "--policy", policy)
	if d.Domain != domain || !d.Verified {
		t.Fatalf("deploy result %+v", d.DeployResult)
	}
	page, err := e2eutil.GetVia(b.RouterAddr, domain, &tls.Config{RootCAs: e2eutil.CertPool(t, ca)})
	if err != nil || page != "Hello world!" {
		t.Fatalf("GET with the owner's CA = %q, %v", page, err)
	}
	// Anyone can verify the running app, though it serves the owner's
	// certificate: the enclave attests the key it serves, on this connection.
	out, _ := mustRun(t, "cloud", "verify", domain, "--addr", b.RouterAddr, "--cacert", ca, "--policy", policy, "--json")
	var vr cli.VerifyResult
	if err := json.Unmarshal([]byte(out), &vr); err != nil || !vr.Verified || vr.TLSMode != "owner" || !vr.TerminatedInEnclave || !vr.ServedTrusted ||
		vr.ServedFingerprint == vr.Fingerprint || len(vr.Proves) != 2 || !strings.Contains(vr.Proves[1], "the owner holds it too") {
		t.Fatalf("verify --json of an owner-mode app = %s (%v)", out, err)
	}
	// The owner's private key never reached the backend: not in its data dir.
	keyPEM, _ := os.ReadFile(key)
	blk, _ := pem.Decode(keyPEM)
	assertNotInDir(t, b.DataDir, blk.Bytes, "the owner's private key", filepath.Join(b.DataDir, "nodes"))
	if strings.Contains(b.Log(), "PRIVATE KEY") {
		t.Fatal("the backend log mentions a private key")
	}
}

// assertNotInDir fails if needle occurs in any file under dir (except under skip,
// which in simulation is the "enclave's" private directory on the same disk).
func assertNotInDir(t *testing.T, dir string, needle []byte, what, skip string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			if d != nil && d.IsDir() && p == skip {
				return filepath.SkipDir
			}
			return nil
		}
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, needle) {
			t.Errorf("%s found in the backend's file %s", what, p)
		}
		return nil
	})
}

// TestScenario1Postgres runs the main flow with the backend on PostgreSQL.
func TestScenario1Postgres(t *testing.T) {
	b := testenv.Start(t, testenv.Options{DB: pgtest.URL(t)})
	login(t, b, b.AdminToken)
	d := mustDeploy(t, "--path", helloApp(t, "pg1", ""), "--policy", b.PolicyFile(t, ""))
	page, err := e2eutil.GetVia(b.RouterAddr, d.Domain, &tls.Config{RootCAs: e2eutil.CertPool(t, d.Certificate)})
	if err != nil || page != "Hello world!" {
		t.Fatalf("GET via router = %q, %v", page, err)
	}
	mustRun(t, "cloud", "stop", d.AppID)
}

// TestGoHelloEntrypoint deploys examples/go-hello: any HTTP server started
// through `entrypoint`, here a Go binary shipped in the bundle.
func TestGoHelloEntrypoint(t *testing.T) {
	b := testenv.Start(t, testenv.Options{})
	login(t, b, b.AdminToken)
	dir := t.TempDir()
	e2eutil.CopyTree(t, filepath.Join(testenv.RepoRoot(), "examples", "go-hello", "code"), filepath.Join(dir, "code"))
	src, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "examples", "go-hello", "mse.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mse.toml"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "code", "go-hello"), "./examples/go-hello/src")
	build.Dir = testenv.RepoRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build go-hello: %v\n%s", err, out)
	}
	d := mustDeploy(t, "--path", filepath.Join(dir, "mse.toml"), "--policy", b.PolicyFile(t, ""))
	page, err := e2eutil.GetVia(b.RouterAddr, d.Domain, &tls.Config{RootCAs: e2eutil.CertPool(t, d.Certificate)})
	if err != nil || page != "Hello from Go!\n" {
		t.Fatalf("GET = %q, %v", page, err)
	}
}

// TestAPIOverTLS: the API served over HTTPS; the CLI trusts its CA with
// login --cacert, and refuses an unknown one.
func TestAPIOverTLS(t *testing.T) {
	dir := t.TempDir()
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "mse api"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "api.pem"), filepath.Join(dir, "api.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)

	b := testenv.Start(t, testenv.Options{APITLSCert: certFile, APITLSKey: keyFile})
	if !strings.HasPrefix(b.APIURL, "https://") {
		t.Fatalf("API URL %s", b.APIURL)
	}
	t.Setenv("MSE_CONFIG_DIR", t.TempDir())
	t.Setenv("MSE_BACKEND_URL", "")
	t.Setenv("MSE_TOKEN", "")
	if _, errs, code := run(t, "cloud", "login", "--url", b.APIURL, "--token", b.AdminToken); code == 0 || !strings.Contains(errs, "certificate") {
		t.Fatalf("login to an unknown CA: %d %s", code, errs)
	}
	mustRun(t, "cloud", "login", "--url", b.APIURL, "--token", b.AdminToken, "--cacert", certFile)
	out, _ := mustRun(t, "cloud", "user", "whoami")
	if !strings.Contains(out, "admin") {
		t.Fatalf("whoami: %s", out)
	}
}
