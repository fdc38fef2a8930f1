package testenv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"image/png"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// testCA is a root made for one test, and what it signs.
type testCA struct {
	cert  *x509.Certificate
	key   *ecdsa.PrivateKey
	pem   []byte   // the root's PEM (empty for an intermediate)
	chain [][]byte // DER of the intermediates from this CA up, served after a leaf
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf issues a server certificate for names, valid for a day.
func (ca *testCA) leaf(t *testing.T, names ...string) tls.Certificate {
	t.Helper()
	return ca.leafFor(t, 24*time.Hour, names...)
}

// leafFor issues a server certificate for names valid for d; the chain
// served is the leaf and the intermediates between it and the root.
func (ca *testCA) leafFor(t *testing.T, d time.Duration, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(d),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: append([][]byte{der}, ca.chain...), PrivateKey: key}
}

// intermediate makes a CA signed by ca, as Pebble and public CAs issue
// from: its leaves are served with it, and only the root is trusted.
func (ca *testCA) intermediate(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(2),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, chain: append([][]byte{der}, ca.chain...)}
}

// tlsServer serves a small page over TLS on loopback with cert, and returns
// its URL under host (which the browser maps to 127.0.0.1).
func tlsServer(t *testing.T, host string, cert tls.Certificate) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprint(w, `<!doctype html><html><head><title>MSE browser test</title></head>`+
				`<body><h1>Hello from `+host+`</h1><p>served over TLS by a test CA</p></body></html>`)
		default:
			http.NotFound(w, r)
		}
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	// The handshakes a browser aborts on a refused certificate are expected.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return "https://" + host + ":" + u.Port()
}

func loadCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestBrowserTrustsGivenRoot: with the server's CA given, Chromium loads the
// page with no certificate error and calls it secure.
func TestBrowserTrustsGivenRoot(t *testing.T) {
	NeedChromium(t)
	ca := newTestCA(t, "MSE browser test CA")
	base := tlsServer(t, "app.test", ca.leaf(t, "app.test", "other.app.test"))
	// Like Pebble: issued by an intermediate (served in the chain), for five
	// years (more than the 398 days Chromium allows publicly trusted
	// certificates; a root a user added is not held to that).
	chained := tlsServer(t, "chain.app.test", ca.intermediate(t, "MSE browser test intermediate").leafFor(t, 5*365*24*time.Hour, "chain.app.test"))
	b := Chromium(t, BrowserOptions{RootsPEM: ca.pem, HostMap: map[string]string{"app.test": "127.0.0.1", "*.app.test": "127.0.0.1"}})
	if !strings.Contains(b.Version, "Chrome/") {
		t.Errorf("Version = %q, want Chrome/...", b.Version)
	}

	for _, tc := range []struct {
		name, url  string
		wantStatus int
		wantText   string
	}{
		{"page", base + "/", http.StatusOK, "Hello from app.test"},
		{"wildcard host", strings.Replace(base, "app.test", "other.app.test", 1) + "/", http.StatusOK, "Hello from app.test"},
		{"not found", base + "/missing", http.StatusNotFound, "404 page not found"},
		{"intermediate, five years", chained + "/", http.StatusOK, "Hello from chain.app.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := b.Load(loadCtx(t), tc.url)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("loaded %s in %v", tc.url, p.Loaded.Round(time.Millisecond))
			if p.CertError != "" {
				t.Fatalf("CertError = %q, want none (the CA is trusted)", p.CertError)
			}
			if p.HTTPStatus != tc.wantStatus {
				t.Errorf("HTTPStatus = %d, want %d", p.HTTPStatus, tc.wantStatus)
			}
			if !strings.Contains(p.Text, tc.wantText) {
				t.Errorf("Text = %q, want it to contain %q", p.Text, tc.wantText)
			}
			if p.SecurityState != "secure" {
				t.Errorf("SecurityState = %q, want secure", p.SecurityState)
			}
			if !strings.HasPrefix(p.URL, "https://") {
				t.Errorf("URL = %q", p.URL)
			}
			checkPNG(t, p.Screenshot)
			if p.Loaded > 5*time.Second {
				t.Errorf("the load took %v, want under 5s", p.Loaded)
			}
		})
	}
	p, err := b.Load(loadCtx(t), base+"/")
	if err != nil {
		t.Fatal(err)
	}
	if p.Title != "MSE browser test" {
		t.Errorf("Title = %q", p.Title)
	}

	// The same browser on plain HTTP (an IP literal, which the resolver
	// rules leave alone): loaded, and not called secure.
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "<!doctype html><title>plain</title><p>plain http</p>")
	}))
	t.Cleanup(plain.Close)
	p, err = b.Load(loadCtx(t), plain.URL+"/")
	if err != nil {
		t.Fatal(err)
	}
	if p.Text != "plain http" || p.HTTPStatus != http.StatusOK || p.CertError != "" {
		t.Errorf("plain HTTP: Text %q, HTTPStatus %d, CertError %q", p.Text, p.HTTPStatus, p.CertError)
	}
	if p.SecurityState == "secure" || p.SecurityState == "" {
		t.Errorf("plain HTTP: SecurityState = %q, want a state that is not secure", p.SecurityState)
	}
	t.Logf("plain HTTP: SecurityState %q", p.SecurityState)
}

// TestBrowserRefusesOtherRoot: the same server, with another root trusted
// (or none), is refused on its certificate: nothing else (the system store,
// Chromium's own roots) makes the test CA trusted.
func TestBrowserRefusesOtherRoot(t *testing.T) {
	NeedChromium(t)
	ca := newTestCA(t, "MSE browser test CA")
	base := tlsServer(t, "app.test", ca.leaf(t, "app.test"))
	hosts := map[string]string{"app.test": "127.0.0.1", "wrong.test": "127.0.0.1"}

	for _, tc := range []struct {
		name  string
		roots []byte
		url   string
		want  string
	}{
		{"another root", newTestCA(t, "Another CA").pem, base + "/", "net::ERR_CERT_AUTHORITY_INVALID"},
		{"no root", nil, base + "/", "net::ERR_CERT_AUTHORITY_INVALID"},
		{"trusted root, wrong name", ca.pem, strings.Replace(base, "app.test", "wrong.test", 1) + "/", "net::ERR_CERT_COMMON_NAME_INVALID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := Chromium(t, BrowserOptions{RootsPEM: tc.roots, HostMap: hosts})
			p, err := b.Load(loadCtx(t), tc.url)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("refused %s in %v: %s, state %s", tc.url, p.Loaded.Round(time.Millisecond), p.CertError, p.SecurityState)
			if p.CertError != tc.want {
				t.Errorf("CertError = %q, want %q", p.CertError, tc.want)
			}
			if p.HTTPStatus != 0 {
				t.Errorf("HTTPStatus = %d, want 0 (no response)", p.HTTPStatus)
			}
			if strings.Contains(p.Text, "Hello from") {
				t.Errorf("the page was shown despite the certificate error: %q", p.Text)
			}
			if p.SecurityState == "secure" {
				t.Errorf("SecurityState = secure on a refused certificate")
			}
			checkPNG(t, p.Screenshot)
		})
	}
}

// TestBrowserLoadErrors: what is not a certificate error is an error.
func TestBrowserLoadErrors(t *testing.T) {
	NeedChromium(t)
	b := Chromium(t, BrowserOptions{HostMap: map[string]string{"down.test": "127.0.0.1:1"}})
	for _, tc := range []struct{ url, want string }{
		{"https://down.test/", "net::ERR_CONNECTION_REFUSED"},
		{"https://example.com/", "net::ERR_NAME_NOT_RESOLVED"}, // nothing leaves the machine
	} {
		_, err := b.Load(loadCtx(t), tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%s) = %v, want an error with %s", tc.url, err, tc.want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Load(ctx, "https://down.test/"); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("Load with a canceled context = %v, want context canceled", err)
	}
}

func checkPNG(t *testing.T, b []byte) {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("the screenshot is not a PNG (%d bytes): %v", len(b), err)
	}
	if r := img.Bounds(); r.Dx() < 100 || r.Dy() < 100 {
		t.Errorf("the screenshot is %v", r)
	}
}

func TestParseRoots(t *testing.T) {
	ca := newTestCA(t, "A")
	leaf := ca.leaf(t, "app.test")
	leafPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificate[0]})
	two := append(append([]byte{}, ca.pem...), newTestCA(t, "B").pem...)
	for _, tc := range []struct {
		name    string
		in      []byte
		want    int
		wantErr string
	}{
		{"empty", nil, 0, ""},
		{"blank", []byte("\n \n"), 0, ""},
		{"one", ca.pem, 1, ""},
		{"two", two, 2, ""},
		{"not pem", []byte("hello"), 0, "not PEM"},
		{"a key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}), 0, `"PRIVATE KEY"`},
		{"garbage der", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}), 0, "certificate 1"},
		{"a leaf", leafPEM, 0, "not a CA"},
		{"too many", bytes.Repeat(ca.pem, maxRoots+1), 0, "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseRoots(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || len(got) != tc.want {
				t.Fatalf("= %d roots, %v; want %d", len(got), err, tc.want)
			}
		})
	}
}

func FuzzParseRoots(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		roots, err := parseRoots(b)
		if err == nil && len(roots) > maxRoots {
			t.Fatalf("%d roots", len(roots))
		}
		for _, r := range roots {
			if !r.IsCA {
				t.Fatal("a leaf accepted")
			}
		}
	})
}

func TestHostResolverRules(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      map[string]string
		want    string
		wantErr bool
	}{
		{"none", nil, "MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1", false},
		{"sorted", map[string]string{"b.test": "127.0.0.1:8443", "a.test": "127.0.0.1"},
			"MAP a.test 127.0.0.1, MAP b.test 127.0.0.1:8443, MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1", false},
		{"comma injects a rule", map[string]string{"a.test": "127.0.0.1, MAP * 10.0.0.1"}, "", true},
		{"space", map[string]string{"a test": "127.0.0.1"}, "", true},
		{"empty address", map[string]string{"a.test": ""}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := hostResolverRules(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("= %q, %v; want %q (error %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}
