package snp

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gabi "github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	gverify "github.com/google/go-sev-guest/verify"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/snp/abi"
	"github.com/mse-in-go/mse/internal/attest/snp/kds"
	"github.com/mse-in-go/mse/internal/attest/snp/snptest"
	"github.com/mse-in-go/mse/internal/attest/snp/verify"
)

const (
	reportFile = "testdata/good_gosevguest_report_v2.bin"
	vcekFile   = "testdata/good_gosevguest_vcek.der"
)

var vectorAt = time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)

func read(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func vcek(t testing.TB) *x509.Certificate {
	c, err := x509.ParseCertificate(read(t, vcekFile))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func at(t time.Time) attest.Clock { return func() time.Time { return t } }

func withTable(t testing.TB, report []byte, entries ...abi.CertEntry) []byte {
	return append(append([]byte(nil), report...), abi.MarshalCertTable(entries)...)
}

// TestVector verifies the go-sev-guest report with its VCEK, given or in
// the evidence's certificate table, against the pinned Milan roots.
func TestVector(t *testing.T) {
	report := read(t, reportFile)
	for _, tc := range []struct {
		name     string
		evidence []byte
		o        Options
		source   string
	}{
		{"VCEK given", report, Options{EndorsementKey: vcek(t)}, "given"},
		{"VCEK in the certificate table", withTable(t, report, abi.CertEntry{GUID: abi.GUIDVCEK, Data: read(t, vcekFile)}), Options{}, "certificate table"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.SkipCRL, tc.o.Now = true, at(vectorAt)
			res, err := NewVerifier(tc.o).VerifyEvidence(context.Background(), tc.evidence)
			if err != nil {
				t.Fatal(err)
			}
			v := ToVerified(res)
			if v.Type != attest.TypeSEVSNP || !strings.HasPrefix(hex.EncodeToString(v.Measurement), "b07af962") || !v.Debug ||
				v.TCBStatus != attest.TCBUnchecked || v.Details["policy"] != "b0000" || v.Details["product"] != "Milan" ||
				v.Details["signing_key"] != "vcek" || v.Details["endorsement_key_source"] != tc.source || v.Details["revocation"] != "unchecked" {
				t.Errorf("verified %+v", v)
			}
			if res.ReportedTCB != (verify.TCB{Bootloader: 2, TEE: 0, SNP: 5, Microcode: 68}) {
				t.Errorf("reported TCB %v", res.ReportedTCB)
			}
			// It is a debug guest: the default policy refuses it, naming why.
			p := &attest.Policy{TEETypes: []string{attest.TypeSEVSNP}, Measurements: []string{hex.EncodeToString(v.Measurement)}, AcceptedTCBStatuses: []string{attest.TCBUnchecked}}
			var pe *attest.PolicyError
			if err := p.Check(v, vectorAt); !errors.As(err, &pe) || pe.Check != "debug" {
				t.Errorf("default policy: %v", err)
			}
			p.AllowDebug = true
			if err := p.Check(v, vectorAt); err != nil {
				t.Errorf("allow-debug policy: %v", err)
			}
			// Unchecked revocation must be named by the policy.
			p.AcceptedTCBStatuses = nil
			if err := p.Check(v, vectorAt); !errors.As(err, &pe) || pe.Check != "tcb_status" {
				t.Errorf("unchecked revocation accepted: %v", err)
			}
		})
	}
}

// TestCrossCheckGoSEVGuest: google/go-sev-guest verifies the same report
// with the same VCEK and roots at the same time, and agrees on refusals.
func TestCrossCheckGoSEVGuest(t *testing.T) {
	report := read(t, reportFile)
	check := func(rep []byte, now time.Time) error {
		p, err := gabi.ReportToProto(rep)
		if err != nil {
			return err
		}
		return gverify.SnpAttestation(&spb.Attestation{Report: p, CertificateChain: &spb.CertificateChain{VcekCert: read(t, vcekFile)}},
			&gverify.Options{Now: now, DisableCertFetching: true})
	}
	if err := check(report, vectorAt); err != nil {
		t.Fatalf("go-sev-guest refuses what we accept: %v", err)
	}
	if err := gverify.SnpReportSignature(report, vcek(t)); err != nil {
		t.Fatal(err)
	}
	c := append([]byte(nil), report...)
	c[0x90] ^= 1
	if check(c, vectorAt) == nil {
		t.Error("go-sev-guest accepts a flipped measurement")
	}
	if _, err := NewVerifier(Options{EndorsementKey: vcek(t), SkipCRL: true, Now: at(vectorAt)}).Verify(context.Background(), c); verify.StepOf(err) != verify.StepReportSignature {
		t.Errorf("we: %v", err)
	}
	if check(report, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) == nil {
		t.Error("go-sev-guest accepts an expired VCEK")
	}
}

// TestByteFlips flips a byte in each field of the signed part: each is
// refused, by the signature or by the check of the field itself.
func TestByteFlips(t *testing.T) {
	report := read(t, reportFile)
	v := NewVerifier(Options{EndorsementKey: vcek(t), SkipCRL: true, Now: at(vectorAt)})
	for _, tc := range []struct {
		name string
		off  int
		step string
	}{
		{"guest svn", 0x04, verify.StepReportSignature},
		{"policy", 0x08, verify.StepReportSignature},
		{"family id", 0x10, verify.StepReportSignature},
		{"image id", 0x2F, verify.StepReportSignature},
		{"vmpl", 0x30, verify.StepReportSignature},
		{"current tcb", 0x38, verify.StepReportSignature},
		{"platform info", 0x40, verify.StepReportSignature},
		{"report data", 0x50, verify.StepReportSignature},
		{"measurement", 0x90 + 47, verify.StepReportSignature},
		{"host data", 0xC0, verify.StepReportSignature},
		{"id key digest", 0xE0, verify.StepReportSignature},
		{"author key digest", 0x110, verify.StepReportSignature},
		{"report id", 0x140, verify.StepReportSignature},
		{"report id ma", 0x160, verify.StepReportSignature},
		{"reported tcb", 0x180, verify.StepReportedTCB},
		{"chip id", 0x1A0, verify.StepChipID},
		{"committed tcb", 0x1E0, verify.StepReportSignature},
		{"current build", 0x1E8, verify.StepReportSignature},
		{"launch tcb", 0x1F0, verify.StepReportSignature},
		{"signature r", 0x2A0, verify.StepReportSignature},
		{"signature s", 0x2A0 + 72 + 10, verify.StepReportSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := append([]byte(nil), report...)
			c[tc.off] ^= 0x01
			_, err := v.Verify(context.Background(), c)
			if verify.StepOf(err) != tc.step {
				t.Errorf("flip at %#x: %v (step %q), want step %s", tc.off, err, verify.StepOf(err), tc.step)
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	report := read(t, reportFile)
	ctx := context.Background()
	pki := snptest.New(t, verify.Milan)
	var chip [64]byte
	copy(chip[:], report[0x1A0:0x1E0])
	forged := pki.NewVCEK(t, chip, verify.TCB{Bootloader: 2, SNP: 5, Microcode: 68})
	for _, tc := range []struct {
		name     string
		evidence []byte
		o        Options
		step     string
		contains string
	}{
		{"before the VCEK", report, Options{EndorsementKey: vcek(t), SkipCRL: true, Now: at(time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC))}, verify.StepChain, "is not valid before"},
		{"after the VCEK", report, Options{EndorsementKey: vcek(t), SkipCRL: true, Now: at(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))}, verify.StepChain, "expired on 2029-"},
		{"forged VCEK", report, Options{EndorsementKey: forged.Cert, SkipCRL: true, Now: at(vectorAt)}, verify.StepChain, "is not signed by the signing key of any AMD product line"},
		{"not a VCEK", report, Options{EndorsementKey: pki.Roots.ASK, SkipCRL: true, Now: at(vectorAt)}, verify.StepEndorsementKey, ""},
		{"no VCEK anywhere", report, Options{SkipCRL: true, Now: at(vectorAt)}, verify.StepEndorsementKey, "pass the VCEK with --vcek"},
		{"trailing bytes", append(append([]byte(nil), report...), 7), Options{EndorsementKey: vcek(t), SkipCRL: true, Now: at(vectorAt)}, "", "after the report"},
		{"truncated", report[:1000], Options{EndorsementKey: vcek(t), SkipCRL: true, Now: at(vectorAt)}, "", "truncated"},
		{"no CRL source", report, Options{EndorsementKey: vcek(t), Now: at(vectorAt)}, "", "no CRL source configured"},
		{"unsigned report", func() []byte { c := append([]byte(nil), report...); c[0x48] = 7 << 2; return c }(), Options{EndorsementKey: vcek(t), SkipCRL: true, Now: at(vectorAt)}, verify.StepSigningKey, "not signed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewVerifier(tc.o).Verify(ctx, tc.evidence)
			if err == nil || (tc.step != "" && verify.StepOf(err) != tc.step) || !strings.Contains(err.Error(), tc.contains) {
				t.Errorf("error %v (step %q), want step %q with %q", err, verify.StepOf(err), tc.step, tc.contains)
			}
		})
	}
}

// TestFakePKI runs what the real vector cannot show: other chips, TCBs
// above the VCEK's, and revocation, with a PKI of the test's own.
func TestFakePKI(t *testing.T) {
	base := read(t, reportFile)
	ctx := context.Background()
	pki := snptest.New(t, verify.Milan)
	roots := []*verify.Roots{pki.Roots}
	chip := [64]byte{1, 2, 3}
	other := [64]byte{9, 9, 9}
	tcb := verify.TCB{Bootloader: 3, TEE: 0, SNP: 8, Microcode: 115}
	key := pki.NewVCEK(t, chip, tcb)
	good := snptest.Report(t, base, chip, tcb, key)
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	crl := func(revoked ...*x509.Certificate) kds.CRLSource {
		b, err := kds.ParseBundle(pemCRL(pki.CRL(t, now.Add(-time.Hour), now.Add(24*time.Hour), revoked...)))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	above := tcb
	above.SNP++
	for _, tc := range []struct {
		name     string
		evidence []byte
		o        Options
		step     string
		contains string
	}{
		{"good, revocation checked", good, Options{EndorsementKey: key.Cert, CRLs: crl()}, "", ""},
		{"VCEK of another chip", good, Options{EndorsementKey: pki.NewVCEK(t, other, tcb).Cert, SkipCRL: true}, verify.StepChipID, "the VCEK is for chip 0909090000000000…, but the report comes from chip 0102030000000000…"},
		{"reported TCB above the VCEK's", snptest.Report(t, base, chip, above, key), Options{EndorsementKey: key.Cert, SkipCRL: true}, verify.StepReportedTCB, "(bootloader 3, tee 0, snp 9, microcode 115) is above the TCB the VCEK was issued for (bootloader 3, tee 0, snp 8, microcode 115)"},
		{"reported TCB below the VCEK's", snptest.Report(t, base, chip, verify.TCB{Bootloader: 3, SNP: 7, Microcode: 115}, key), Options{EndorsementKey: key.Cert, SkipCRL: true}, verify.StepReportedTCB, "is below the TCB"},
		{"ASK revoked", good, Options{EndorsementKey: key.Cert, CRLs: crl(pki.Roots.ASK)}, verify.StepRevoked, `"SEV-Milan"`},
		{"VCEK revoked", good, Options{EndorsementKey: key.Cert, CRLs: crl(key.Cert)}, verify.StepRevoked, `"SEV-VCEK"`},
		{"CRL expired", good, Options{EndorsementKey: key.Cert, CRLs: crlOf(t, pki.CRL(t, now.Add(-48*time.Hour), now.Add(-time.Hour)))}, verify.StepCRL, "the CRL expired"},
		{"CRL not yet valid", good, Options{EndorsementKey: key.Cert, CRLs: crlOf(t, pki.CRL(t, now.Add(time.Hour), now.Add(48*time.Hour)))}, verify.StepCRL, "not valid before"},
		{"CRL forged", good, Options{EndorsementKey: key.Cert, CRLs: crlOf(t, pki.ForeignCRL(t, now.Add(-time.Hour), now.Add(time.Hour)))}, verify.StepCRL, "signature does not verify"},
		{"CRL of another product", good, Options{EndorsementKey: key.Cert, CRLs: crlOf(t, snptest.New(t, verify.Genoa).CRL(t, now.Add(-time.Hour), now.Add(time.Hour)))}, verify.StepCRL, "no CRL of ARK-Milan"},
		{"the pinned roots refuse the fake PKI", good, Options{EndorsementKey: key.Cert, SkipCRL: true, Roots: verify.AMDRoots()}, verify.StepChain, "not a genuine AMD endorsement key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Now = at(now)
			if tc.o.Roots == nil {
				tc.o.Roots = roots
			}
			res, err := NewVerifier(tc.o).VerifyEvidence(ctx, tc.evidence)
			if tc.step == "" && tc.contains == "" {
				if err != nil {
					t.Fatal(err)
				}
				if v := ToVerified(res); v.TCBStatus != "" || v.Details["revocation"] != "checked" {
					t.Errorf("verified %+v", v)
				}
				return
			}
			if err == nil || verify.StepOf(err) != tc.step || !strings.Contains(err.Error(), tc.contains) {
				t.Errorf("error %v (step %q), want step %q with %q", err, verify.StepOf(err), tc.step, tc.contains)
			}
		})
	}
}

func pemCRL(crl *x509.RevocationList) []byte {
	return []byte("-----BEGIN X509 CRL-----\n" + b64(crl.Raw) + "\n-----END X509 CRL-----\n")
}

func crlOf(t *testing.T, crl *x509.RevocationList) kds.CRLSource {
	b, err := kds.ParseBundle(crl.Raw)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKDS fetches the VCEK and the CRL from a (fake) KDS, and answers the
// second verification from the client's cache.
func TestKDS(t *testing.T) {
	base := read(t, reportFile)
	pki := snptest.New(t, verify.Milan)
	chip := [64]byte{0xaa, 0xbb}
	tcb := verify.TCB{Bootloader: 3, SNP: 8, Microcode: 115}
	key := pki.NewVCEK(t, chip, tcb)
	report := snptest.Report(t, base, chip, tcb, key)
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	crl := pki.CRL(t, now.Add(-time.Hour), now.Add(24*time.Hour))
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch {
		case r.URL.Path == "/vcek/v1/Milan/crl":
			w.Write(crl.Raw)
		case r.URL.Path == "/vcek/v1/Milan/"+hex.EncodeToString(chip[:]) && r.URL.RawQuery == "blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115":
			w.Write(key.Cert.Raw)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	c := kds.NewClient(srv.URL)
	c.Now = at(now)
	v := NewVerifier(Options{KDS: c, CRLs: c, Now: at(now), Roots: []*verify.Roots{pki.Roots}})
	for i := range 2 {
		res, err := v.VerifyEvidence(context.Background(), report)
		if err != nil {
			t.Fatal(err)
		}
		if res.KeySource != "kds" || !res.RevocationChecked {
			t.Errorf("result %+v", res)
		}
		if n := hits.Load(); n != 2 {
			t.Fatalf("after verification %d: %d requests, want 2 (VCEK, CRL; then cached)", i+1, n)
		}
	}
	if c.CacheHits() != 2 {
		t.Errorf("cache hits %d", c.CacheHits())
	}
}

func TestPolicySEVSNPSection(t *testing.T) {
	res, err := NewVerifier(Options{EndorsementKey: vcek(t), SkipCRL: true, Now: at(vectorAt)}).VerifyEvidence(context.Background(), read(t, reportFile))
	if err != nil {
		t.Fatal(err)
	}
	v := ToVerified(res)
	m := hex.EncodeToString(v.Measurement)
	vmpl0, vmpl1 := uint8(0), uint8(1)
	for _, tc := range []struct {
		name  string
		edit  func(p *attest.Policy)
		check string
	}{
		{"accepted", func(p *attest.Policy) {
			p.SEVSNP.HostData = []string{v.Details["host_data"]}
			p.SEVSNP.IDKeyDigests = []string{v.Details["id_key_digest"]}
			p.SEVSNP.AuthorKeyDigests = []string{v.Details["author_key_digest"]}
			p.SEVSNP.ChipIDs = []string{v.Details["chip_id"]}
			p.SEVSNP.MinTCB = attest.SNPTCB{Bootloader: 2, SNP: 5, Microcode: 68}
			p.SEVSNP.VMPL = &vmpl0
			p.SEVSNP.SigningKeys = []string{"vcek"}
		}, ""},
		{"wrong measurement", func(p *attest.Policy) { p.Measurements = []string{strings.Repeat("ab", 48)} }, "measurement"},
		{"wrong host data", func(p *attest.Policy) { p.SEVSNP.HostData = []string{strings.Repeat("ab", 32)} }, "sev_snp.host_data"},
		{"wrong id key", func(p *attest.Policy) { p.SEVSNP.IDKeyDigests = []string{strings.Repeat("ab", 48)} }, "sev_snp.id_key_digest"},
		{"wrong author key", func(p *attest.Policy) { p.SEVSNP.AuthorKeyDigests = []string{strings.Repeat("ab", 48)} }, "sev_snp.author_key_digest"},
		{"other chip", func(p *attest.Policy) { p.SEVSNP.ChipIDs = []string{strings.Repeat("ab", 64)} }, "sev_snp.chip_id"},
		{"TCB too low", func(p *attest.Policy) { p.SEVSNP.MinTCB.Microcode = 115 }, "sev_snp.min_tcb"},
		{"SNP firmware too low", func(p *attest.Policy) { p.SEVSNP.MinTCB.SNP = 8 }, "sev_snp.min_tcb"},
		{"VMPL", func(p *attest.Policy) { p.SEVSNP.VMPL = &vmpl1 }, "sev_snp.vmpl"},
		{"SMT refused", func(p *attest.Policy) { p.SEVSNP.RefuseSMT = true }, "sev_snp.policy"},
		{"VLEK only", func(p *attest.Policy) { p.SEVSNP.SigningKeys = []string{"vlek"} }, "sev_snp.signing_keys"},
		{"guest SVN", func(p *attest.Policy) { p.SEVSNP.MinGuestSVN = 1 }, "sev_snp.min_guest_svn"},
		{"debug", func(p *attest.Policy) { p.AllowDebug = false }, "debug"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &attest.Policy{TEETypes: []string{attest.TypeSEVSNP}, Measurements: []string{m}, AllowDebug: true, AcceptedTCBStatuses: []string{attest.TCBUnchecked}}
			tc.edit(p)
			if err := p.Validate(); err != nil {
				t.Fatal(err)
			}
			err := p.Check(v, vectorAt)
			var pe *attest.PolicyError
			if tc.check == "" && err != nil || tc.check != "" && (!errors.As(err, &pe) || pe.Check != tc.check) {
				t.Errorf("error %v, want check %q", err, tc.check)
			}
		})
	}
	// A guest that allows a migration agent is refused unless allowed.
	ma := *v
	ma.Details = map[string]string{}
	for k, val := range v.Details {
		ma.Details[k] = val
	}
	ma.Details["policy"] = "f0000"
	p := &attest.Policy{TEETypes: []string{attest.TypeSEVSNP}, Measurements: []string{m}, AllowDebug: true, AcceptedTCBStatuses: []string{attest.TCBUnchecked}}
	var pe *attest.PolicyError
	if err := p.Check(&ma, vectorAt); !errors.As(err, &pe) || !strings.Contains(err.Error(), "migration agent") {
		t.Errorf("migration agent: %v", err)
	}
	p.SEVSNP.AllowMigrationAgent = true
	if err := p.Check(&ma, vectorAt); err != nil {
		t.Errorf("allowed migration agent: %v", err)
	}
}

// BenchmarkVerify is full verification of the real report with its VCEK
// from the certificate table (revocation unchecked: there is no real CRL).
func BenchmarkVerify(b *testing.B) {
	ev := withTable(b, read(b, reportFile), abi.CertEntry{GUID: abi.GUIDVCEK, Data: read(b, vcekFile)})
	v := NewVerifier(Options{SkipCRL: true, Now: at(vectorAt)})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyWithCRL adds the CRL check (a fake PKI's, cached in memory).
func BenchmarkVerifyWithCRL(b *testing.B) {
	pki := snptest.New(b, verify.Milan)
	chip := [64]byte{1}
	tcb := verify.TCB{Bootloader: 3, SNP: 8, Microcode: 115}
	key := pki.NewVCEK(b, chip, tcb)
	report := snptest.Report(b, read(b, reportFile), chip, tcb, key)
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	crl, err := kds.ParseBundle(pki.CRL(b, now.Add(-time.Hour), now.Add(time.Hour)).Raw)
	if err != nil {
		b.Fatal(err)
	}
	ev := withTable(b, report, abi.CertEntry{GUID: abi.GUIDVCEK, Data: key.Cert.Raw})
	v := NewVerifier(Options{CRLs: crl, Now: at(now), Roots: []*verify.Roots{pki.Roots}})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
