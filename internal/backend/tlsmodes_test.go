package backend

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest/sim"
	"github.com/mse-in-go/mse/internal/backend/router"
	"github.com/mse-in-go/mse/internal/backend/service"
)

// writeCertKey writes a self-signed certificate for names and its key as PEM files.
func writeCertKey(t *testing.T, dir string, names ...string) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600)
	return certFile, keyFile
}

func TestACMESettings(t *testing.T) {
	dir := t.TempDir()
	roots, _ := writeCertKey(t, dir, "ca.example")
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("not pem"), 0o600)
	const d = "https://acme.example/dir"
	for _, c := range []struct {
		dirs  []string
		roots string
		err   string
	}{
		{[]string{"http://acme.example/dir"}, "", "is not an https URL"},
		{[]string{d, "acme.example"}, "", `"acme.example" is not an https URL`},
		{nil, roots, "--acme-roots without --acme-directory"},
		{[]string{d}, bad, "is not a PEM certificate chain"},
		{[]string{d}, filepath.Join(dir, "none.pem"), "no such file"},
	} {
		if _, err := acmeSettings(c.dirs, c.roots); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("acmeSettings(%q, %q) = %v, want %q", c.dirs, c.roots, err, c.err)
		}
	}
	pemRoots, err := acmeSettings([]string{d}, roots)
	if want, _ := os.ReadFile(roots); err != nil || pemRoots != string(want) {
		t.Errorf("acmeSettings = %q, %v", pemRoots, err)
	}
	if r, err := acmeSettings(nil, ""); err != nil || r != "" {
		t.Errorf("no ACME: %q, %v", r, err)
	}
}

func TestOperatorTLS(t *testing.T) {
	dir := t.TempDir()
	plat, _ := sim.NewPlatformInMemory()
	cert, key := writeCertKey(t, dir, "*.mse.test")
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	lookup := func(_ context.Context, host string) (router.Route, error) {
		switch host {
		case "op.mse.test":
			return router.Route{TLSMode: "operator"}, nil
		case "self.mse.test":
			return router.Route{TLSMode: "self"}, nil
		}
		return router.Route{}, service.ErrNoRoute
	}
	base := Config{DataDir: dir, BaseDomain: "mse.test"}
	for _, c := range []struct {
		mod func(*Config)
		err string
	}{
		{func(c *Config) { c.OperatorCert, c.OperatorACMEDirectory = cert, "https://ca.example/dir" }, "choose one"},
		{func(c *Config) { c.OperatorCert = cert }, "--operator-cert and --operator-key go together"},
		{func(c *Config) { c.OperatorCert, c.OperatorKey = cert, filepath.Join(dir, "none") }, "no such file"},
		{func(c *Config) { c.OperatorACMEDirectory = "http://ca.example/dir" }, "is not an https URL"},
		{func(c *Config) { c.OperatorACMEEmail = "a@b.c" }, "need --operator-acme-directory"},
	} {
		cfg := base
		c.mod(&cfg)
		if _, err := operatorTLS(cfg, plat, "00", lookup, discard); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("operatorTLS(%+v) = %v, want %q", cfg, err, c.err)
		}
	}
	if op, err := operatorTLS(base, plat, "00", lookup, discard); op != nil || err != nil {
		t.Errorf("no source: %v, %v; want nil (operator mode refused)", op, err)
	}

	cfg := base
	cfg.OperatorCert, cfg.OperatorKey = cert, key
	op, err := operatorTLS(cfg, plat, "00", lookup, discard)
	if err != nil || op == nil || op.ACME || op.VerifyNode == nil {
		t.Fatalf("file source: %+v, %v", op, err)
	}
	c, err := op.GetCertificate(&tls.ClientHelloInfo{ServerName: "op.mse.test"})
	if err != nil || c.Leaf.VerifyHostname("op.mse.test") != nil {
		t.Errorf("GetCertificate: %v", err)
	}

	cfg = base
	cfg.OperatorACMEDirectory, cfg.OperatorACMERoots = "https://127.0.0.1:1/dir", cert
	op, err = operatorTLS(cfg, plat, "00", lookup, discard)
	if err != nil || op == nil || !op.ACME {
		t.Fatalf("ACME source: %+v, %v", op, err)
	}
	// The host policy: only active operator-mode apps, checked before any request to the CA.
	for host, want := range map[string]string{"self.mse.test": "is not an operator-mode app", "none.mse.test": "no active app serves none.mse.test"} {
		_, err := op.GetCertificate(&tls.ClientHelloInfo{ServerName: host, SupportedProtos: []string{"h2"}})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("GetCertificate(%s) = %v, want %q", host, err, want)
		}
	}
	if err := op.VerifyNode(context.Background(), c.Leaf, router.Route{AppID: "a", Domain: "op.mse.test"}); err == nil ||
		!strings.Contains(err.Error(), "verification failed") {
		t.Errorf("VerifyNode of a certificate without evidence: %v", err)
	}
}
