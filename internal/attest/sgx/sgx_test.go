package sgx

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sgx/pcs"
	"github.com/mse-in-go/mse/internal/attest/sgx/verify"
)

var phalaAt = time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)

const (
	phalaMREnclave = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
	phalaMRSigner  = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
)

func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func phalaVerifier(t testing.TB, at time.Time) *Verifier {
	t.Helper()
	b, err := pcs.LoadBundle("testdata/good_phala_collateral.json")
	if err != nil {
		t.Fatal(err)
	}
	return NewVerifier(Options{Collateral: b, Now: func() time.Time { return at }})
}

func TestVerifyPhala(t *testing.T) {
	v, err := phalaVerifier(t, phalaAt).Verify(context.Background(), read(t, "good_phala_quote.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if v.Type != attest.TypeSGX || hex.EncodeToString(v.Measurement) != phalaMREnclave || hex.EncodeToString(v.Signer) != phalaMRSigner {
		t.Errorf("identity: %s %x %x", v.Type, v.Measurement, v.Signer)
	}
	if v.ProductID != 0 || v.SVN != 0 || v.Debug || v.Simulated {
		t.Errorf("prodid %d svn %d debug %v", v.ProductID, v.SVN, v.Debug)
	}
	if v.TCBStatus != attest.TCBConfigurationAndSWHardeningNeeded || !slices.Equal(v.AdvisoryIDs, []string{"INTEL-SA-00289", "INTEL-SA-00615"}) {
		t.Errorf("TCB %s %v", v.TCBStatus, v.AdvisoryIDs)
	}
	if !strings.HasPrefix(string(v.ReportData[:]), "Hello, world!") {
		t.Errorf("report data %x", v.ReportData)
	}
	if v.CollateralIssued.IsZero() || v.Details["fmspc"] != "00a067110000" || v.Details["qe_tcb_status"] != "UpToDate" || v.Details["pck_ca"] != "processor" {
		t.Errorf("details %v issued %s", v.Details, v.CollateralIssued)
	}
}

func TestVerifyOptions(t *testing.T) {
	q := read(t, "good_phala_quote.bin")
	ctx := context.Background()
	if _, err := NewVerifier(Options{}).Verify(ctx, q); err == nil || !strings.Contains(err.Error(), "no collateral source") {
		t.Fatalf("no collateral: %v", err)
	}
	v, err := NewVerifier(Options{SkipCollateral: true, Now: func() time.Time { return phalaAt }}).Verify(ctx, q)
	if err != nil || v.TCBStatus != attest.TCBUnchecked || !v.CollateralIssued.IsZero() {
		t.Fatalf("skip collateral: %v %+v", err, v)
	}
	failing := sourceFunc(func(ctx context.Context, fmspc, ca string) (*pcs.Collateral, error) {
		return nil, errors.New("offline")
	})
	_, err = NewVerifier(Options{Collateral: failing, Now: func() time.Time { return phalaAt }}).Verify(ctx, q)
	if verify.StepOf(err) != verify.StepCollateral || !strings.Contains(err.Error(), "00A067110000") {
		t.Fatalf("failing source: %v", err)
	}
	// The encrypted-PPID quote is refused with the reason.
	_, err = NewVerifier(Options{SkipCollateral: true, Now: func() time.Time { return phalaAt }}).Verify(ctx, read(t, "fail_oasis_eppid_quote.bin"))
	if err == nil || !strings.Contains(err.Error(), "the quote must carry a PCK chain") {
		t.Fatalf("eppid: %v", err)
	}
	// At a time outside the collateral's window.
	if _, err := phalaVerifier(t, time.Date(2025, 7, 20, 0, 0, 0, 0, time.UTC)).Verify(ctx, q); err == nil {
		t.Fatal("expired collateral accepted")
	}
}

type sourceFunc func(ctx context.Context, fmspc, ca string) (*pcs.Collateral, error)

func (f sourceFunc) Collateral(ctx context.Context, fmspc, ca string) (*pcs.Collateral, error) {
	return f(ctx, fmspc, ca)
}

func u16(v uint16) *uint16 { return &v }

// The policy layer over verified values: every check names the value and
// what the policy accepts.
func TestPolicy(t *testing.T) {
	v, err := phalaVerifier(t, phalaAt).Verify(context.Background(), read(t, "good_phala_quote.bin"))
	if err != nil {
		t.Fatal(err)
	}
	base := func() attest.Policy {
		return attest.Policy{
			TEETypes: []string{"sgx"}, Measurements: []string{phalaMREnclave},
			AcceptedTCBStatuses: []string{attest.TCBConfigurationAndSWHardeningNeeded},
			AcceptedAdvisories:  []string{"INTEL-SA-00289", "INTEL-SA-00615"},
		}
	}
	for _, tc := range []struct {
		name  string
		edit  func(p *attest.Policy)
		check string // "" = accepted
		want  string
	}{
		{"accepted", func(p *attest.Policy) {}, "", ""},
		{"default statuses", func(p *attest.Policy) { p.AcceptedTCBStatuses = nil }, "tcb_status", "TCB status ConfigurationAndSWHardeningNeeded is not accepted by the trust policy (accepted: UpToDate)"},
		{"advisory", func(p *attest.Policy) { p.AcceptedAdvisories = []string{"INTEL-SA-00289"} }, "advisory", "INTEL-SA-00615"},
		{"measurement", func(p *attest.Policy) { p.Measurements = []string{strings.Repeat("ab", 32)} }, "measurement", "33d8736d"},
		{"signer", func(p *attest.Policy) { p.Signers = []string{strings.Repeat("cd", 32)} }, "signer", "815f42f1"},
		{"signer ok", func(p *attest.Policy) { p.Measurements = nil; p.Signers = []string{phalaMRSigner} }, "", ""},
		{"product id", func(p *attest.Policy) { p.ProductID = u16(1) }, "product_id", "ISVPRODID 0"},
		{"min svn", func(p *attest.Policy) { p.MinSVN = 1 }, "svn", "ISVSVN 0 is below the policy's minimum 1"},
		{"collateral age", func(p *attest.Policy) { p.MaxCollateralAge = attest.Duration{Duration: 24 * time.Hour} }, "collateral_age", "refresh the collateral"},
		{"collateral age ok", func(p *attest.Policy) { p.MaxCollateralAge = attest.Duration{Duration: 200 * 24 * time.Hour} }, "", ""},
		{"tee type", func(p *attest.Policy) { p.TEETypes = []string{"sim"} }, "tee_type", `"sgx"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := base()
			tc.edit(&p)
			err := p.Check(v, phalaAt)
			var pe *attest.PolicyError
			switch {
			case tc.check == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.check != "" && (!errors.As(err, &pe) || pe.Check != tc.check || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want check %s containing %q", err, tc.check, tc.want)
			}
		})
	}
}

func TestDebugEnclavePolicy(t *testing.T) {
	// The Gramine certificate's quote (legacy form) is a debug enclave.
	quote := gramineQuote(t)
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	v, err := NewVerifier(Options{SkipCollateral: true, Now: func() time.Time { return at }}).Verify(context.Background(), quote)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Debug || hex.EncodeToString(v.Measurement) != "0866e7ca11b9f4efe4bf39b2607f4e1299f111920d96d95719080f01b62b7585" ||
		hex.EncodeToString(v.Signer) != "adc53501f21ced9b998e37a7a18e061c63e00315045fa57a49c18ef0a30d02ca" || v.Details["attributes"][:2] != "07" {
		t.Fatalf("%+v", v)
	}
	p := attest.Policy{TEETypes: []string{"sgx"}, Measurements: []string{hex.EncodeToString(v.Measurement)}, AcceptedTCBStatuses: []string{attest.TCBUnchecked}}
	var pe *attest.PolicyError
	if err := p.Check(v, at); !errors.As(err, &pe) || pe.Check != "debug" {
		t.Fatalf("default policy on a debug enclave: %v", err)
	}
	p.AllowDebug = true
	if err := p.Check(v, at); err != nil {
		t.Fatalf("allow-debug policy: %v", err)
	}
}

// gramineQuote is the bare quote of the Gramine certificate's legacy
// extension (the certificate layer is tested in package sgxtls).
func gramineQuote(t *testing.T) []byte {
	blk, _ := pem.Decode(read(t, "good_gramine_cert.pem"))
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range cert.Extensions {
		if e.Id.String() == "0.6.9.42.840.113741.1337.6" {
			return e.Value
		}
	}
	t.Fatal("no Gramine quote extension")
	return nil
}

func TestIssuer(t *testing.T) {
	dir := t.TempDir()
	quote := read(t, "good_phala_quote.bin")
	var rd [64]byte
	copy(rd[:], "Hello, world!")
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("attestation_type", []byte("dcap\n"))
	write("user_report_data", nil)
	write("quote", append(append([]byte{}, quote...), make([]byte, 100)...)) // zero padding as Gramine may return
	iss := NewIssuer(dir)
	if iss.Type() != attest.TypeSGX {
		t.Fatal(iss.Type())
	}
	got, err := iss.Issue(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(quote) {
		t.Fatal("issued quote differs")
	}
	if w, _ := os.ReadFile(filepath.Join(dir, "user_report_data")); string(w) != string(rd[:]) {
		t.Fatalf("user_report_data = %x", w)
	}
	// A quote over other report data (a stale or raced quote) is refused.
	rd[0] ^= 1
	if _, err := iss.Issue(context.Background(), rd); err == nil || !strings.Contains(err.Error(), "does not carry the report data") {
		t.Fatalf("stale quote: %v", err)
	}
	// Not DCAP.
	write("attestation_type", []byte("epid"))
	if _, err := iss.Issue(context.Background(), rd); err == nil || !strings.Contains(err.Error(), "epid") {
		t.Fatalf("epid: %v", err)
	}
	// Not in an enclave.
	if _, err := NewIssuer(filepath.Join(dir, "none")).Issue(context.Background(), rd); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("no /dev/attestation: %v", err)
	}
	// A broken quote.
	write("attestation_type", []byte("dcap"))
	write("quote", quote[:100])
	if _, err := iss.Issue(context.Background(), rd); err == nil || !strings.Contains(err.Error(), "unusable quote") {
		t.Fatalf("broken quote: %v", err)
	}
}

// BenchmarkVerify is full verification of the phala quote with collateral
// already in memory (an offline bundle, or a PCCS client's cache).
func BenchmarkVerify(b *testing.B) {
	v := phalaVerifier(b, phalaAt)
	q := read(b, "good_phala_quote.bin")
	ctx := context.Background()
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		if _, err := v.Verify(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	if cpu := cpuTime() - start; cpu > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
	}
}
