package snp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/snp/abi"
	"github.com/mse-in-go/mse/internal/attest/snp/snptest"
	"github.com/mse-in-go/mse/internal/attest/snp/verify"
	"github.com/mse-in-go/mse/internal/ratls"
)

// fakeGuest issues SEV-SNP evidence over any report data, signed by a fake
// VCEK, with its certificate table, as a node in an SNP VM does.
type fakeGuest struct {
	t    testing.TB
	base []byte
	chip [64]byte
	tcb  verify.TCB
	key  *snptest.VCEK
}

func (g *fakeGuest) Type() string { return attest.TypeSEVSNP }
func (g *fakeGuest) Issue(_ context.Context, rd [64]byte) ([]byte, error) {
	r := append([]byte(nil), g.base...)
	copy(r[0x50:0x90], rd[:])
	r[0x0A] &^= 0x08 // not a debug guest
	r = snptest.Report(g.t, r, g.chip, g.tcb, g.key)
	return append(r, abi.MarshalCertTable([]abi.CertEntry{{GUID: abi.GUIDVCEK, Data: g.key.Cert.Raw}})...), nil
}

// TestRATLS: a node certificate carrying SEV-SNP evidence (report and
// certificate table) in the tagged form verifies through ratls.Verify
// without any network, binds its key, and a tampered claim is refused.
func TestRATLS(t *testing.T) {
	pki := snptest.New(t, verify.Milan)
	g := &fakeGuest{t: t, base: read(t, reportFile), chip: [64]byte{7}, tcb: verify.TCB{Bootloader: 3, SNP: 8, Microcode: 115}}
	g.key = pki.NewVCEK(t, g.chip, g.tcb)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	der, _, err := ratls.NewCertificate(context.Background(), key, g, ratls.Template{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), Claims: attest.Claims{AppID: "app-1"}})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := g.Issue(context.Background(), [64]byte{})
	r, _ := abi.ParseReport(ev[:abi.ReportSize])
	pol := &attest.Policy{TEETypes: []string{attest.TypeSEVSNP}, Measurements: []string{hexOf(r.Measurement[:])}, AcceptedTCBStatuses: []string{attest.TCBUnchecked}}
	verifiers := func(tee string) (attest.Verifier, error) {
		if tee != attest.TypeSEVSNP {
			return nil, errors.New("no")
		}
		return NewVerifier(Options{SkipCRL: true, Now: func() time.Time { return now }, Roots: []*verify.Roots{pki.Roots}}), nil
	}
	id, err := ratls.Verify(context.Background(), cert, ratls.Options{Verifiers: verifiers, Policy: pol, Now: now, Expect: ratls.Expect{AppID: "app-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if id.Verified.Type != attest.TypeSEVSNP || id.Verified.Details["endorsement_key_source"] != "certificate table" || id.Claims.AppID != "app-1" {
		t.Errorf("identity %+v", id.Verified)
	}
	if _, err := ratls.Verify(context.Background(), cert, ratls.Options{Verifiers: verifiers, Policy: pol, Now: now, Expect: ratls.Expect{AppID: "app-2"}}); err == nil {
		t.Error("another app id accepted")
	}
	// With the pinned AMD roots the fake PKI is refused.
	real := func(string) (attest.Verifier, error) {
		return NewVerifier(Options{SkipCRL: true, Now: func() time.Time { return now }}), nil
	}
	if _, err := ratls.Verify(context.Background(), cert, ratls.Options{Verifiers: real, Policy: pol, Now: now}); verify.StepOf(err) != verify.StepChain {
		t.Errorf("fake PKI under the pinned roots: %v", err)
	}
}

func hexOf(b []byte) string {
	const d = "0123456789abcdef"
	out := make([]byte, 2*len(b))
	for i, c := range b {
		out[2*i], out[2*i+1] = d[c>>4], d[c&15]
	}
	return string(out)
}
