package acme

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/acme"
)

func key(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestNewChecksConfig(t *testing.T) {
	t.Parallel()
	k := key(t)
	ok := Config{DirectoryURL: "https://ca.example.test/dir", Domains: []string{"App.Example.Test", "app.example.test"}, Key: k}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string // "" = accepted
	}{
		{"ok", func(*Config) {}, ""},
		{"http", func(c *Config) { c.DirectoryURL = "http://ca.example.test/dir" }, "not an https URL"},
		{"no host", func(c *Config) { c.DirectoryURL = "https:///dir" }, "not an https URL"},
		{"user info", func(c *Config) { c.DirectoryURL = "https://u:p@ca.example.test/dir" }, "not an https URL"},
		{"no key", func(c *Config) { c.Key = nil }, "no key"},
		{"no domain", func(c *Config) { c.Domains = nil }, "no domain"},
		{"too many", func(c *Config) {
			c.Domains = nil
			for i := 0; i <= MaxDomains; i++ {
				c.Domains = append(c.Domains, fmt.Sprintf("d%d.example.test", i))
			}
		}, "more than 100"},
		{"wildcard", func(c *Config) { c.Domains = []string{"*.example.test"} }, "wildcard"},
		{"single label", func(c *Config) { c.Domains = []string{"localhost"} }, "single label"},
		{"ip", func(c *Config) { c.Domains = []string{"127.0.0.1"} }, "IP address"},
		{"underscore", func(c *Config) { c.Domains = []string{"a_b.example.test"} }, "character"},
		{"trailing dot", func(c *Config) { c.Domains = []string{"example.test."} }, "label"},
		{"hyphen edge", func(c *Config) { c.Domains = []string{"-a.example.test"} }, "hyphen"},
		{"long label", func(c *Config) { c.Domains = []string{strings.Repeat("a", 64) + ".test"} }, "too long"},
		{"two emails", func(c *Config) { c.Email = "a@example.test, b@example.test" }, "not one address"},
		{"mailto in email", func(c *Config) { c.Email = "mailto:a@example.test" }, "not one address"},
		{"negative renew", func(c *Config) { c.RenewBefore = -time.Second }, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.change(&c)
			m, err := New(c)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(m.domains) != 1 || m.domains[0] != "app.example.test" {
					t.Errorf("domains %v, want lowercased and deduplicated", m.domains)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// testCA issues certificates for checkChain's cases.
type testCA struct {
	root, inter       *x509.Certificate
	rootKey, interKey *ecdsa.PrivateKey
}

func newTestCA(t testing.TB) *testCA {
	ca := &testCA{rootKey: key(t), interKey: key(t)}
	now := time.Now()
	rt := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	ca.root = mustCert(t, rt, rt, &ca.rootKey.PublicKey, ca.rootKey)
	it := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "inter"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	ca.inter = mustCert(t, it, ca.root, &ca.interKey.PublicKey, ca.rootKey)
	return ca
}

func mustCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (ca *testCA) leaf(t testing.TB, pub crypto.PublicKey, names []string, isCA bool) *x509.Certificate {
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(3), DNSNames: names, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: isCA}
	return mustCert(t, tmpl, ca.inter, pub, ca.interKey)
}

func ders(cs ...*x509.Certificate) [][]byte {
	var out [][]byte
	for _, c := range cs {
		out = append(out, c.Raw)
	}
	return out
}

// TestCheckChain: what the node refuses to serve, whatever the CA sent.
func TestCheckChain(t *testing.T) {
	t.Parallel()
	ca, other := newTestCA(t), newTestCA(t)
	k := key(t)
	names := []string{"app.example.test", "www.app.example.test"}
	good := ca.leaf(t, &k.PublicKey, names, false)
	now := time.Now()
	for _, tc := range []struct {
		name  string
		chain [][]byte
		now   time.Time
		want  string
	}{
		{"leaf and intermediate", ders(good, ca.inter), now, ""},
		{"leaf, intermediate and root", ders(good, ca.inter, ca.root), now, ""},
		{"empty", nil, now, "no certificate"},
		{"leaf only", ders(good), now, "without its issuer"},
		{"garbage", [][]byte{[]byte("not a certificate"), ca.inter.Raw}, now, "does not parse"},
		{"another key", ders(ca.leaf(t, &key(t).PublicKey, names, false), ca.inter), now, "not for this node's key"},
		{"a CA leaf", ders(ca.leaf(t, &k.PublicKey, names, true), ca.inter), now, "is a CA"},
		{"one name missing", ders(ca.leaf(t, &k.PublicKey, names[:1], false), ca.inter), now, "www.app.example.test"},
		{"expired", ders(good, ca.inter), now.Add(30 * time.Hour), "expired"},
		{"not yet valid", ders(good, ca.inter), now.Add(-time.Hour), "expired or is not yet valid"},
		{"foreign issuer", ders(good, other.inter), now, "unknown authority"},
		{"too long", ders(good, ca.inter, ca.inter, ca.inter, ca.inter, ca.inter, ca.inter, ca.inter, ca.root), now, "more than 8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaf, err := checkChain(tc.chain, &k.PublicKey, names, tc.now)
			if tc.want == "" {
				if err != nil || leaf == nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func FuzzCheckChain(f *testing.F) {
	ca := newTestCA(f)
	k := key(f)
	leaf := ca.leaf(f, &k.PublicKey, []string{"app.example.test"}, false)
	f.Add(leaf.Raw, ca.inter.Raw)
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x01}, []byte{})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		got, err := checkChain([][]byte{a, b}, &k.PublicKey, []string{"app.example.test"}, time.Now())
		if err == nil && !k.PublicKey.Equal(got.PublicKey) {
			t.Fatal("accepted a leaf for another key")
		}
	})
}

func TestRenewalTime(t *testing.T) {
	t.Parallel()
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	leaf := &x509.Certificate{NotBefore: nb, NotAfter: nb.Add(90 * 24 * time.Hour)}
	for _, tc := range []struct {
		before time.Duration
		want   time.Time
	}{
		{0, nb.Add(60 * 24 * time.Hour)},
		{10 * 24 * time.Hour, nb.Add(80 * 24 * time.Hour)},
		{90 * 24 * time.Hour, nb.Add(60 * 24 * time.Hour)}, // not shorter than the lifetime: a third
		{100 * 24 * time.Hour, nb.Add(60 * 24 * time.Hour)},
	} {
		if got := renewalTime(leaf, tc.before); !got.Equal(tc.want) {
			t.Errorf("RenewBefore %v: %v, want %v", tc.before, got, tc.want)
		}
	}
}

// TestDescribe: the CA's problem type and detail reach the error; its text
// is bounded and has no control characters.
func TestDescribe(t *testing.T) {
	t.Parallel()
	prob := &acme.Error{StatusCode: 403, ProblemType: "urn:ietf:params:acme:error:unauthorized", Detail: "bad\nanswer"}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{prob, "unauthorized (HTTP 403): bad answer"},
		{&acme.AuthorizationError{Identifier: "a.example.test", Errors: []error{prob}}, "the CA refused the authorization: unauthorized (HTTP 403): bad answer"},
		{&acme.OrderError{Status: "invalid", Problem: prob}, "the order is invalid: unauthorized"},
		{fmt.Errorf("wrapped: %w", context.DeadlineExceeded), "no answer from the CA in time"},
		{errors.New("dial tcp: refused"), "dial tcp: refused"},
	} {
		if got := describe(tc.err); !strings.Contains(got, tc.want) {
			t.Errorf("describe(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
	long := describe(&acme.Error{ProblemType: "x", Detail: strings.Repeat("é", 1000)})
	if len(long) > maxDetail+len("…") || !strings.HasSuffix(long, "…") || !strings.Contains(long, "é") {
		t.Errorf("long detail kept as %d bytes", len(long))
	}
	e := stepError("finalize the order", "a.example.test", prob)
	if got := e.Error(); got != "acme: finalize the order for a.example.test: unauthorized (HTTP 403): bad answer" {
		t.Errorf("step error %q", got)
	}
	if !errors.Is(e, prob) {
		t.Error("the step error does not wrap the CA's")
	}
}

func TestChallengeCertificate(t *testing.T) {
	t.Parallel()
	m, err := New(Config{DirectoryURL: "https://ca.example.test/dir", Domains: []string{"app.example.test"}, Key: key(t)})
	if err != nil {
		t.Fatal(err)
	}
	c := &tls.Certificate{}
	m.challenges["app.example.test"] = c
	alpn := []string{"h2", ALPNProto}
	for _, tc := range []struct {
		hello tls.ClientHelloInfo
		want  string // "" = the certificate
	}{
		{tls.ClientHelloInfo{ServerName: "app.example.test", SupportedProtos: alpn}, ""},
		{tls.ClientHelloInfo{ServerName: "APP.example.test.", SupportedProtos: alpn}, ""},
		{tls.ClientHelloInfo{ServerName: "app.example.test", SupportedProtos: []string{"h2"}}, "acme-tls/1 not offered"},
		{tls.ClientHelloInfo{ServerName: "other.example.test", SupportedProtos: alpn}, `no TLS-ALPN-01 challenge is pending for "other.example.test"`},
	} {
		got, err := m.ChallengeCertificate(&tc.hello)
		if tc.want == "" {
			if err != nil || got != c {
				t.Errorf("%+v: %v %v", tc.hello, got, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.hello, err, tc.want)
		}
	}
	cfg, err := m.ChallengeTLSConfig(&tls.ClientHelloInfo{ServerName: "app.example.test", SupportedProtos: alpn})
	if err != nil || len(cfg.NextProtos) != 1 || cfg.NextProtos[0] != ALPNProto {
		t.Errorf("challenge config %+v %v: want acme-tls/1 alone", cfg, err)
	}
}

// TestFailedKeepsServing: a failed renewal keeps the still-valid
// certificate and says renewing; once it has expired, failed.
func TestFailedKeepsServing(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m, err := New(Config{DirectoryURL: "https://ca.example.test/dir", Domains: []string{"app.example.test"}, Key: key(t),
		Now: func() time.Time { return now }, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	m.issued(&tls.Certificate{Leaf: leaf}, now, now.Add(time.Minute))
	m.failed(errors.New("CA down"), now.Add(time.Minute))
	if st := m.Status(); st.State != StateRenewing || st.Error != "CA down" || m.Certificate() == nil || st.Serial != "7" {
		t.Errorf("after a failed renewal: %+v", st)
	}
	now = now.Add(2 * time.Hour)
	m.failed(errors.New("CA still down"), now.Add(time.Minute))
	if st := m.Status(); st.State != StateFailed {
		t.Errorf("after the certificate expired: %+v", st)
	}
}

// TestRunOnce: a second Run is refused; Run ends with its context.
func TestRunOnce(t *testing.T) {
	t.Parallel()
	m, err := New(Config{DirectoryURL: "https://127.0.0.1:1/dir", Domains: []string{"app.example.test"}, Key: key(t),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for m.Status().State != StateFailed && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := m.Status(); st.State != StateFailed || !strings.Contains(st.Error, "register an account") {
		t.Errorf("unreachable CA: %+v", st)
	}
	if err := m.Run(ctx); err == nil || !strings.Contains(err.Error(), "already called") {
		t.Errorf("second Run: %v", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v", err)
	}
}
