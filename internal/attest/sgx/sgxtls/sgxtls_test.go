package sgxtls

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sgx"
	"github.com/mse-in-go/mse/internal/ratls"
)

func gramineCert(t testing.TB) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile("../testdata/good_gramine_cert.pem")
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var at = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func verifyQuote(t *testing.T, q []byte) *attest.Verified {
	t.Helper()
	v, err := sgx.NewVerifier(sgx.Options{SkipCollateral: true, Now: func() time.Time { return at }}).Verify(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Both forms in Gramine's certificate verify and bind the certificate's key.
func TestGramineCertificate(t *testing.T) {
	cert := gramineCert(t)
	evs, err := Read(cert)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Format != ratls.FormatTagged || evs[1].Format != ratls.FormatGramineLegacy {
		t.Fatalf("evidence: %d %v", len(evs), evs)
	}
	for _, ev := range evs {
		t.Run(ev.Format, func(t *testing.T) {
			v := verifyQuote(t, ev.Quote)
			if hex.EncodeToString(v.Measurement) != "0866e7ca11b9f4efe4bf39b2607f4e1299f111920d96d95719080f01b62b7585" ||
				hex.EncodeToString(v.Signer) != "adc53501f21ced9b998e37a7a18e061c63e00315045fa57a49c18ef0a30d02ca" || !v.Debug {
				t.Fatalf("%x %x debug %v", v.Measurement, v.Signer, v.Debug)
			}
			if err := CheckBinding(cert, ev, v.ReportData); err != nil {
				t.Fatalf("not bound: %v", err)
			}
			// Any other report data does not bind the key.
			rd := v.ReportData
			rd[31] ^= 1
			if err := CheckBinding(cert, ev, rd); err == nil {
				t.Fatal("altered report data binds the key")
			}
			// The tagged form binds all 64 bytes, as ratls.Verify does.
			rd = v.ReportData
			rd[63] ^= 1
			if err := CheckBinding(cert, ev, rd); (err == nil) != (ev.Format == ratls.FormatGramineLegacy) {
				t.Fatalf("report data [32:64] altered: %v", err)
			}
		})
	}
	// The legacy binding is SHA-256 of the DER SubjectPublicKeyInfo as
	// mbedTLS re-encodes it from the key, which is the certificate's own
	// (ratls.PubkeyHash); it is also what the tagged claims carry as
	// pubkey-hash.
	der, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(der)
	if hex.EncodeToString(h[:]) != "5a5a5b2d177433048e9d62409d1acc4ec526c06e294d09e69a36cff9369e4851" || hex.EncodeToString(ratls.PubkeyHash(cert)) != hex.EncodeToString(h[:]) {
		t.Fatalf("pubkey hash %x", h)
	}
}

// Another key in a certificate that copies the evidence is not bound.
func TestForeignKey(t *testing.T) {
	orig := gramineCert(t)
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	var exts []pkix.Extension
	for _, e := range orig.Extensions {
		if e.Id.Equal(ratls.OIDTaggedEvidence) || strings.HasSuffix(e.Id.String(), "113741.1337.6") {
			exts = append(exts, e)
		}
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "RATLS"}, NotBefore: at.Add(-time.Hour), NotAfter: at.Add(time.Hour), ExtraExtensions: exts}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	evs, err := Read(cert)
	if err != nil || len(evs) != 2 {
		t.Fatalf("%v %d", err, len(evs))
	}
	for _, ev := range evs {
		v := verifyQuote(t, ev.Quote)
		if err := CheckBinding(cert, ev, v.ReportData); err == nil {
			t.Errorf("%s: a foreign key is bound", ev.Format)
		}
	}
}

func TestReadNone(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: at, NotAfter: at.Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	cert, _ := x509.ParseCertificate(der)
	if _, err := Read(cert); err == nil {
		t.Fatal("certificate without evidence accepted")
	}
}

func FuzzCheckBinding(f *testing.F) {
	cert := gramineCert(f)
	evs, err := Read(cert)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(evs[0].Claims)
	f.Fuzz(func(t *testing.T, claims []byte) {
		var rd [64]byte
		_ = CheckBinding(cert, Evidence{Format: ratls.FormatTagged, Claims: claims}, rd)
	})
}
