// Package e2eutil holds what the end-to-end test packages (internal/e2e and
// internal/e2e/kubelet) share: the CLI run in-process, an app's source
// copied, and an app fetched through the router.
package e2eutil

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/cli"
)

// CLI runs mse in-process with args, giving up after timeout, and returns
// its stdout, stderr and exit code.
func CLI(t testing.TB, timeout time.Duration, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	code := cli.Main(ctx, args, &out, &errb)
	return out.String(), errb.String(), code
}

// MustCLI is CLI, failing the test unless mse exits 0.
func MustCLI(t testing.TB, timeout time.Duration, args ...string) (string, string) {
	t.Helper()
	out, errs, code := CLI(t, timeout, args...)
	if code != 0 {
		t.Fatalf("mse %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errs)
	}
	return out, errs
}

// CopyTree copies the files under src to dst with their permissions,
// leaving out __pycache__.
func CopyTree(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if strings.Contains(rel, "__pycache__") {
			return nil
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// GetVia fetches https://domain/ through addr (host:port, or unix:PATH for a
// sandboxed node's socket) with tc, its server name set to domain.
func GetVia(addr, domain string, tc *tls.Config) (string, error) {
	tc = tc.Clone()
	tc.ServerName = domain
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			if p, ok := strings.CutPrefix(addr, "unix:"); ok {
				return (&net.Dialer{}).DialContext(ctx, "unix", p)
			}
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
		TLSClientConfig: tc,
	}}
	resp, err := hc.Get("https://" + domain + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// CertPool is the pool of the PEM certificates in pemFile (at least one).
func CertPool(t testing.TB, pemFile string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(pemFile)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		t.Fatalf("no certificate in %s", pemFile)
	}
	return p
}
