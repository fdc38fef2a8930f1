package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/cli"
	"github.com/mse-in-go/mse/internal/e2e/e2eutil"
	"github.com/mse-in-go/mse/internal/testenv"
)

// TestACMEModeInBrowser: zero trust that browsers accept. Pebble is the
// ACME CA and validates tls-alpn-01 through the router (SNI passthrough) on
// the node in its sandbox, which reaches the CA through its egress proxy.
// The app then loads in headless Chromium that trusts only Pebble's root,
// with no certificate error, and `mse cloud verify` proves the key the
// browser sees is the enclave's.
func TestACMEModeInBrowser(t *testing.T) {
	testenv.NeedChromium(t) // fails under CI=true when Chromium is missing
	routerLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := routerLn.Addr().(*net.TCPAddr).Port
	ca := testenv.Pebble(t, testenv.PebbleOptions{TLSPort: port})
	dir := t.TempDir()
	serverRoots := filepath.Join(dir, "pebble-wfe.pem")
	issuerRoots := filepath.Join(dir, "pebble-root.pem")
	os.WriteFile(serverRoots, []byte(ca.ServerRootsPEM), 0o644)
	os.WriteFile(issuerRoots, []byte(ca.IssuerRootsPEM), 0o644)

	b := testenv.Start(t, testenv.Options{RouterListener: routerLn, ACMEDirectories: []string{ca.DirectoryURL},
		ACMERootsFile: serverRoots, EgressPrivate: true})
	login(t, b, b.AdminToken)
	policy := b.PolicyFile(t, "")
	d := mustDeploy(t, "--path", helloApp(t, "acme1", ""), "--acme", "--policy", policy)
	running := time.Now()
	if !d.Verified || d.TLSMode != "acme" {
		t.Fatalf("deploy result %+v", d.DeployResult)
	}

	// The certificate comes once the app runs.
	var issuedAfter time.Duration
	deadline := time.Now().Add(90 * time.Second)
	for {
		c, err := tls.Dial("tcp", b.RouterAddr, &tls.Config{ServerName: d.Domain, RootCAs: ca.IssuerRoots()})
		if err == nil {
			c.Close()
			issuedAfter = time.Since(running)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no browser-trusted certificate for %s after 90 s: %v\nCA log:\n%s", d.Domain, err, ca.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("deploy returned → browser-trusted certificate at the router: %s", issuedAfter.Round(time.Millisecond))
	// From the node's own log: "app running" to "acme: certificate obtained".
	var logs string
	for end := time.Now().Add(10 * time.Second); ; {
		logs, _ = mustRun(t, "cloud", "logs", d.AppID, "--raw")
		ran, got := logTime(t, logs, `msg="app running"`), logTime(t, logs, `msg="acme: certificate obtained"`)
		if !ran.IsZero() && !got.IsZero() {
			t.Logf("node: running → valid ACME certificate: %s", got.Sub(ran).Round(time.Millisecond))
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the node's log lacks its running or ACME lines:\n%s", logs)
		}
		time.Sleep(200 * time.Millisecond)
	}

	out, _ := mustRun(t, "cloud", "status", d.AppID)
	if !strings.Contains(out, "acme ") || !strings.Contains(out, "valid") || !strings.Contains(out, "Pebble") {
		t.Errorf("status does not show the node's ACME certificate:\n%s", out)
	}
	out, _ = mustRun(t, "cloud", "verify", d.Domain, "--addr", b.RouterAddr, "--cacert", issuerRoots, "--policy", policy, "--json")
	var vr cli.VerifyResult
	if err := json.Unmarshal([]byte(out), &vr); err != nil || !vr.Verified || vr.TLSMode != "acme" || !vr.TerminatedInEnclave || !vr.ServedTrusted ||
		vr.ServedFingerprint == vr.Fingerprint || !strings.Contains(vr.ServedIssuer, "Pebble") {
		t.Fatalf("verify --json of an acme-mode app = %s (%v)", out, err)
	}

	// A real browser, trusting only Pebble's root.
	br := testenv.Chromium(t, testenv.BrowserOptions{RootsPEM: []byte(ca.IssuerRootsPEM), HostMap: map[string]string{d.Domain: "127.0.0.1"}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	page, err := br.Load(ctx, "https://"+net.JoinHostPort(d.Domain, strconv.Itoa(port))+"/")
	if err != nil {
		t.Fatalf("browser: %v\n%s", err, br.Output())
	}
	if page.CertError != "" || page.SecurityState != "secure" || page.HTTPStatus != 200 || !strings.Contains(page.Text, "Hello world") {
		t.Fatalf("browser: status %d, certificate error %q, security %q, text %q", page.HTTPStatus, page.CertError, page.SecurityState, page.Text)
	}
	t.Logf("Chromium %s loaded %s in %s: %q, security %s", br.Version, d.Domain, page.Loaded.Round(time.Millisecond), page.Text, page.SecurityState)
	saveScreenshot(t, "acme-mode-chromium.png", page.Screenshot)
}

// logTime is the time= of the first slog line of logs containing marker.
func logTime(t *testing.T, logs, marker string) time.Time {
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, marker) {
			continue
		}
		f := strings.Fields(line)
		for _, kv := range f {
			if v, ok := strings.CutPrefix(kv, "time="); ok {
				tm, err := time.Parse(time.RFC3339Nano, v)
				if err == nil {
					return tm
				}
			}
		}
	}
	return time.Time{}
}

// saveScreenshot writes a screenshot into the test's output directory, and
// under docs/ when MSE_UPDATE_SCREENSHOTS=1 (as committed).
func saveScreenshot(t *testing.T, name string, png []byte) {
	t.Helper()
	dirs := []string{t.TempDir()}
	if os.Getenv("MSE_UPDATE_SCREENSHOTS") == "1" {
		dirs = append(dirs, filepath.Join(testenv.RepoRoot(), "docs", "screenshots"))
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOperatorMode: scenario 3 (MSE's --untrusted-ssl). The router
// terminates TLS with the operator's certificate and forwards to the node,
// which it verifies; stage 2 still went over the enclave's own TLS, and
// verify says the operator terminates TLS while it checks the enclave over a
// direct connection.
func TestOperatorMode(t *testing.T) {
	dir := t.TempDir()
	caFile, chain, key, _ := ownerPKI(t, dir, "*.mse.localhost")
	b := testenv.Start(t, testenv.Options{OperatorCert: chain, OperatorKey: key})
	login(t, b, b.AdminToken)
	policy := b.PolicyFile(t, "")
	d, errs, code := deployJSON(t, "--path", helloApp(t, "op1", ""), "--untrusted-ssl", "--policy", policy)
	if code != 0 {
		t.Fatalf("deploy --untrusted-ssl: exit %d\n%s", code, errs)
	}
	if !d.Verified || d.TLSMode != "operator" || !strings.Contains(errs, "operator") || !strings.Contains(strings.ToLower(errs), "read") {
		t.Fatalf("deploy result %+v\n%s", d.DeployResult, errs)
	}
	page, err := e2eutil.GetVia(b.RouterAddr, d.Domain, &tls.Config{RootCAs: e2eutil.CertPool(t, caFile)})
	if err != nil || page != "Hello world!" {
		t.Fatalf("GET through the operator's TLS = %q, %v", page, err)
	}
	out, _ := mustRun(t, "cloud", "verify", d.Domain, "--addr", b.RouterAddr, "--cacert", caFile, "--policy", policy, "--json")
	var vr cli.VerifyResult
	if err := json.Unmarshal([]byte(out), &vr); err != nil || !vr.Verified || vr.TLSMode != "operator" || vr.TerminatedInEnclave || !vr.Direct ||
		!vr.ServedTrusted || !strings.Contains(strings.Join(vr.Proves, " "), "the operator can read and change all traffic") {
		t.Fatalf("verify --json of an operator-mode app = %s (%v)", out, err)
	}
	out, _ = mustRun(t, "cloud", "status", d.AppID)
	if !strings.Contains(out, "operator") {
		t.Fatalf("status does not show the TLS mode:\n%s", out)
	}
}

// TestOperatorModeACME: scenario 3 with the router's certificate from an ACME
// CA (autocert, tls-alpn-01 answered by the router itself), as an operator
// without a wildcard certificate runs it.
func TestOperatorModeACME(t *testing.T) {
	routerLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ca := testenv.Pebble(t, testenv.PebbleOptions{TLSPort: routerLn.Addr().(*net.TCPAddr).Port})
	dir := t.TempDir()
	serverRoots := filepath.Join(dir, "pebble-wfe.pem")
	issuerRoots := filepath.Join(dir, "pebble-root.pem")
	os.WriteFile(serverRoots, []byte(ca.ServerRootsPEM), 0o644)
	os.WriteFile(issuerRoots, []byte(ca.IssuerRootsPEM), 0o644)
	b := testenv.Start(t, testenv.Options{RouterListener: routerLn, OperatorACMEDirectory: ca.DirectoryURL, OperatorACMERoots: serverRoots})
	login(t, b, b.AdminToken)
	policy := b.PolicyFile(t, "")
	d, errs, code := deployJSON(t, "--path", helloApp(t, "opacme", ""), "--untrusted-ssl", "--cacert", issuerRoots, "--policy", policy)
	if code != 0 {
		t.Fatalf("deploy --untrusted-ssl: exit %d\n%s\nCA log:\n%s", code, errs, ca.Log())
	}
	page, err := e2eutil.GetVia(b.RouterAddr, d.Domain, &tls.Config{RootCAs: ca.IssuerRoots()})
	if err != nil || page != "Hello world!" {
		t.Fatalf("GET through the router's ACME certificate = %q, %v", page, err)
	}
	out, _ := mustRun(t, "cloud", "verify", d.Domain, "--addr", b.RouterAddr, "--cacert", issuerRoots, "--policy", policy, "--json")
	var vr cli.VerifyResult
	if err := json.Unmarshal([]byte(out), &vr); err != nil || vr.TLSMode != "operator" || !vr.Direct || !vr.ServedTrusted || !strings.Contains(vr.ServedIssuer, "Pebble") {
		t.Fatalf("verify --json = %s (%v)", out, err)
	}
}
