package servicetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/backend/service"
)

// CA is a test certificate authority, valid around the Env's clock.
type CA struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var serial atomic.Int64

// Validity is what Env's certificates are valid for: around the Env's start time.
var (
	ValidFrom  = time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC)
	ValidUntil = time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
)

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// NewCA makes a self-signed root CA.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: name},
		NotBefore: ValidFrom, NotAfter: ValidUntil, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &CA{Cert: c, key: key}
}

// Roots are service.OwnerRoots trusting only these CAs.
func Roots(cas ...*CA) service.OwnerRoots {
	p := x509.NewCertPool()
	for _, ca := range cas {
		p.AddCert(ca.Cert)
	}
	return service.OwnerRoots{Pool: p, Desc: "test roots"}
}

// TrustCAs is an option of New: owner certificates must chain to cas.
func TrustCAs(cas ...*CA) func(*service.Config) {
	return func(c *service.Config) { c.OwnerRoots = Roots(cas...) }
}

// LeafOptions change a leaf from Leaf's defaults.
type LeafOptions struct {
	NotBefore, NotAfter time.Time
	ExtKeyUsage         []x509.ExtKeyUsage
}

// Leaf returns the PEM chain (leaf, then the CA) of a server certificate for domains.
func (ca *CA) Leaf(t testing.TB, domains ...string) string {
	return ca.LeafWith(t, LeafOptions{}, domains...)
}

// LeafWith is Leaf with options.
func (ca *CA) LeafWith(t testing.TB, o LeafOptions, domains ...string) string {
	t.Helper()
	if o.NotBefore.IsZero() {
		o.NotBefore = ValidFrom
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = ValidUntil
	}
	if o.ExtKeyUsage == nil {
		o.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: domains[0]}, DNSNames: domains,
		NotBefore: o.NotBefore, NotAfter: o.NotAfter, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: o.ExtKeyUsage}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
	return b.String()
}

// SelfSigned returns a self-signed server certificate for domains (PEM).
func SelfSigned(t testing.TB, domains ...string) string {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: domains[0]}, DNSNames: domains,
		NotBefore: ValidFrom, NotAfter: ValidUntil, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
