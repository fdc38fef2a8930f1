package tdx

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"math/big"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sgx/pcs"
	"github.com/mse-in-go/mse/internal/attest/sgx/pcs/pcstest"
	"github.com/mse-in-go/mse/internal/attest/tdx/abi"
	"github.com/mse-in-go/mse/internal/attest/tdx/verify"
)

const (
	goodQuote      = "testdata/good_phala_quote_v4.bin"
	goodCollateral = "testdata/good_phala_collateral.json"
	oldQuote       = "testdata/fail_phala_outdated_quote_v5.bin"
	oldCollateral  = "testdata/fail_phala_outdated_collateral.json"
	goodMRTD       = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
	oldMRTD        = "273828c46252fcbdd8ad2dd907130222b03466d52a2911d70c1a5950895d6bd1ae451d382d5a9b1b4c0ed0e5ae9a3dbd"
)

var (
	goodAt = time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)
	oldAt  = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
)

func read(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func bundle(t testing.TB, p string) *pcs.Bundle {
	t.Helper()
	b, err := pcs.LoadBundle(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func at(t time.Time) attest.Clock { return func() time.Time { return t } }

func defaultPolicy(mrtd string) *attest.Policy {
	return &attest.Policy{TEETypes: []string{attest.TypeTDX}, Measurements: []string{mrtd}}
}

// TestVectors verifies every shared TDX vector with its collateral and
// applies the default policy (UpToDate only, no advisories).
func TestVectors(t *testing.T) {
	for _, tc := range []struct {
		name, quote, collateral string
		at                      time.Time
		mrtd                    string
		wantStep                string // verification must fail at this step
		wantErr                 string
	}{
		{name: "phala v4 up to date", quote: goodQuote, collateral: goodCollateral, at: goodAt, mrtd: goodMRTD},
		{name: "phala v5 out of date", quote: oldQuote, collateral: oldCollateral, at: oldAt, mrtd: oldMRTD,
			wantStep: verify.StepTCBLevel, wantErr: "SGX TCB component 8 (SEAMLDR ACM) SVN 3 < 5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := NewVerifier(Options{Collateral: bundle(t, tc.collateral), Now: at(tc.at)})
			got, err := v.Verify(context.Background(), read(t, tc.quote))
			if tc.wantStep != "" {
				if err == nil || verify.StepOf(err) != tc.wantStep || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v (step %q), want step %s with %q", err, verify.StepOf(err), tc.wantStep, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Type != attest.TypeTDX || hex.EncodeToString(got.Measurement) != tc.mrtd || got.Debug ||
				got.TCBStatus != attest.TCBUpToDate || len(got.AdvisoryIDs) != 0 {
				t.Errorf("verified %+v", got)
			}
			for k, want := range map[string]string{
				attest.DetailMRTD: tc.mrtd, attest.DetailTDAttributes: "0000001000000000", attest.DetailSEPTVEDisable: "true",
				"tdx_module_identity": "TDX_01", "tdx_module_tcb_status": "UpToDate", "qe_tcb_status": "UpToDate",
				"fmspc": "b0c06f000000", "pck_ca": "platform", attest.DetailXFAM: "e702060000000000",
			} {
				if got.Details[k] != want {
					t.Errorf("%s = %q, want %q", k, got.Details[k], want)
				}
			}
			if err := defaultPolicy(tc.mrtd).Check(got, tc.at); err != nil {
				t.Errorf("default policy: %v", err)
			}
		})
	}
}

// TestOutdatedWithoutCollateral: the out-of-date quote is genuine (its
// signatures and chain verify), and only its TCB makes it refused.
func TestOutdatedWithoutCollateral(t *testing.T) {
	v := NewVerifier(Options{SkipCollateral: true, Now: at(oldAt)})
	got, err := v.Verify(context.Background(), read(t, oldQuote))
	if err != nil {
		t.Fatal(err)
	}
	if got.TCBStatus != attest.TCBUnchecked || got.Details["quote_version"] != "5" || got.Details["body_type"] != "3" || got.Details["tee_tcb_svn2"] == "" {
		t.Errorf("verified %+v", got)
	}
	err = defaultPolicy(oldMRTD).Check(got, oldAt)
	var pe *attest.PolicyError
	if !errors.As(err, &pe) || pe.Check != "tcb_status" || !strings.Contains(err.Error(), "TCB status unchecked is not accepted") {
		t.Errorf("default policy on unchecked: %v", err)
	}
}

// offsets of the regions of a v4 quote's signature data.
type regions struct{ sig, key, qeReport, qeSig, auth, pck int }

func layout(t *testing.T, b []byte) regions {
	q, err := abi.ParseQuote(b)
	if err != nil {
		t.Fatal(err)
	}
	s := len(q.Signed) + 4
	r := regions{sig: s, key: s + 64, qeReport: s + 134, qeSig: s + 134 + 384, auth: s + 134 + 384 + 64 + 2}
	r.pck = r.auth + len(q.QEAuthData) + 6
	return r
}

// TestByteFlips flips one byte in each signed region of the good quote:
// every flip is refused, at the step that owns the region.
func TestByteFlips(t *testing.T) {
	b := read(t, goodQuote)
	r := layout(t, b)
	src := bundle(t, goodCollateral)
	for _, tc := range []struct {
		name  string
		off   int
		steps []string
	}{
		{"header user data", 40, []string{verify.StepQuoteSignature}},
		{"TEE_TCB_SVN", 48, []string{verify.StepQuoteSignature}},
		{"MRTD", 48 + 136, []string{verify.StepQuoteSignature}},
		{"RTMR3", 48 + 328 + 144 + 5, []string{verify.StepQuoteSignature}},
		{"report data", 48 + 520 + 63, []string{verify.StepQuoteSignature}},
		{"quote signature", r.sig + 10, []string{verify.StepQuoteSignature}},
		{"attestation key", r.key + 10, []string{verify.StepQuoteSignature}},
		{"QE report", r.qeReport + 130, []string{verify.StepQEReportData, verify.StepQEReportSignature}},
		{"QE report data", r.qeReport + 320, []string{verify.StepQEReportData}},
		{"QE report signature", r.qeSig + 3, []string{verify.StepQEReportSignature}},
		{"QE auth data", r.auth + 1, []string{verify.StepQEReportData}},
		{"PCK certificate", r.pck + 400, []string{verify.StepPCKChain}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := append([]byte(nil), b...)
			c[tc.off] ^= 0x01
			_, err := NewVerifier(Options{Collateral: src, Now: at(goodAt)}).Verify(context.Background(), c)
			if err == nil || !slices.Contains(tc.steps, verify.StepOf(err)) {
				t.Errorf("flip at %d: error %v (step %q), want step %v", tc.off, err, verify.StepOf(err), tc.steps)
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	good := read(t, goodQuote)
	ctx := context.Background()
	sgxCollateral := bundle(t, "../sgx/testdata/good_phala_collateral.json")
	for _, tc := range []struct {
		name     string
		quote    []byte
		src      pcs.TDXSource
		at       time.Time
		step     string
		contains string
	}{
		{"SGX collateral", good, sgxCollateral, goodAt, verify.StepTCBInfo, `has id "SGX", want "TDX"`},
		{"other platform's collateral", good, bundle(t, oldCollateral), goodAt, verify.StepTCBInfo, "is for FMSPC 90C06F000000, but the quote's PCK certificate has FMSPC B0C06F000000"},
		{"collateral expired", good, bundle(t, goodCollateral), time.Date(2025, 7, 25, 0, 0, 0, 0, time.UTC), "", "expired"},
		{"collateral not yet issued", good, bundle(t, goodCollateral), time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC), verify.StepPCKCRL, "is not valid before"},
		{"PCK certificate expired", good, bundle(t, goodCollateral), time.Date(2033, 1, 1, 0, 0, 0, 0, time.UTC), verify.StepPCKChain, "expired"},
		{"before the PCK certificate", good, bundle(t, goodCollateral), time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), verify.StepPCKChain, "is not valid before"},
		{"trailing bytes", append(append([]byte(nil), good...), 1), bundle(t, goodCollateral), goodAt, "", "trailing bytes"},
		{"truncated", good[:len(good)-100], bundle(t, goodCollateral), goodAt, "", "truncated"},
		{"no collateral source", good, nil, goodAt, "", "no collateral source configured"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewVerifier(Options{Collateral: tc.src, Now: at(tc.at)}).Verify(ctx, tc.quote)
			if err == nil || (tc.step != "" && verify.StepOf(err) != tc.step) || !strings.Contains(err.Error(), tc.contains) {
				t.Errorf("error %v (step %q), want step %q with %q", err, verify.StepOf(err), tc.step, tc.contains)
			}
		})
	}
}

// TestCollateralSteps moves each collateral item's validity window past
// the time of verification, or changes what it says, one at a time: each is
// refused at its own step.
func TestCollateralSteps(t *testing.T) {
	good := read(t, goodQuote)
	q, err := abi.ParseQuote(good)
	if err != nil {
		t.Fatal(err)
	}
	o := verify.Options{Now: goodAt}
	for _, tc := range []struct {
		name string
		edit func(c *pcs.Collateral)
		step string
	}{
		{"TCB info next update", func(c *pcs.Collateral) { c.TCBInfo.NextUpdate = goodAt.Add(-time.Hour) }, verify.StepTCBInfo},
		{"TCB info issue date", func(c *pcs.Collateral) { c.TCBInfo.IssueDate = goodAt.Add(time.Hour) }, verify.StepTCBInfo},
		{"QE identity next update", func(c *pcs.Collateral) { c.QEIdentity.NextUpdate = goodAt.Add(-time.Hour) }, verify.StepQEIdentity},
		{"root CA CRL next update", func(c *pcs.Collateral) { c.RootCACRL.NextUpdate = goodAt.Add(-time.Hour) }, verify.StepRootCACRL},
		{"PCK CRL this update", func(c *pcs.Collateral) { c.PCKCRL.ThisUpdate = goodAt.Add(time.Hour) }, verify.StepPCKCRL},
		// The CRLs' signatures cover their raw bytes; the parsed entries are
		// what revocation reads: an entry for the quote's PCK revokes it.
		{"PCK certificate revoked", func(c *pcs.Collateral) {
			c.PCKCRL.RevokedCertificateEntries = append(c.PCKCRL.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: pckSerial(t, q), RevocationTime: goodAt})
		}, verify.StepRevoked},
		{"TCB info of another platform model", func(c *pcs.Collateral) { c.TCBInfo.FMSPC = "00906ED50000" }, verify.StepTCBInfo},
		{"TD QE identity for SGX", func(c *pcs.Collateral) { c.QEIdentity.ID = "QE" }, verify.StepQEIdentity},
		{"QE of another signer", func(c *pcs.Collateral) { c.QEIdentity.MRSigner[0] ^= 1 }, verify.StepQEReport},
		{"TDX module of another signer", func(c *pcs.Collateral) { c.TCBInfo.TDXModuleIdentities[1].MRSigner[0] ^= 1 }, verify.StepTDXModule},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := copyCollateral(t)
			tc.edit(c)
			res, err := verify.Signatures(q, o)
			if err != nil {
				t.Fatal(err)
			}
			if err := verify.Evaluate(res, c, o); verify.StepOf(err) != tc.step {
				t.Errorf("error %v (step %q), want step %s", err, verify.StepOf(err), tc.step)
			}
		})
	}
}

func pckSerial(t *testing.T, q *abi.Quote) *big.Int {
	res, err := verify.Signatures(q, verify.Options{Now: goodAt})
	if err != nil {
		t.Fatal(err)
	}
	return res.PCKChain[0].SerialNumber
}

func copyCollateral(t *testing.T) *pcs.Collateral {
	c, err := pcs.ParseBundle(read(t, goodCollateral))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPCCSClientReuse fetches TDX collateral from a (fake) PCCS through the
// SGX PCS client: the TDX endpoints are used, and the cache answers the
// second verification without a request.
func TestPCCSClientReuse(t *testing.T) {
	srv := pcstest.New(t, goodCollateral, pcs.CAPlatform)
	c := pcs.NewClient(srv.URL)
	c.Now = at(goodAt)
	v := NewVerifier(Options{Collateral: c, Now: at(goodAt)})
	for i := range 2 {
		got, err := v.Verify(context.Background(), read(t, goodQuote))
		if err != nil {
			t.Fatal(err)
		}
		if got.TCBStatus != attest.TCBUpToDate {
			t.Fatalf("status %s", got.TCBStatus)
		}
		if n := srv.Hits.Load(); n != 4 {
			t.Fatalf("after verification %d: %d requests, want 4 (TCB info, QE identity, two CRLs, then cached)", i+1, n)
		}
	}
}

func TestPolicyTDXSection(t *testing.T) {
	v := NewVerifier(Options{Collateral: bundle(t, goodCollateral), Now: at(goodAt)})
	got, err := v.Verify(context.Background(), read(t, goodQuote))
	if err != nil {
		t.Fatal(err)
	}
	other := strings.Repeat("ab", 48)
	for _, tc := range []struct {
		name  string
		edit  func(p *attest.Policy)
		check string // "" = accepted
	}{
		{"pinned registers", func(p *attest.Policy) {
			p.TDX.RTMR0 = []string{got.Details["rtmr0"]}
			p.TDX.RTMR3 = []string{other, got.Details["rtmr3"]}
			p.TDX.MRSignerSEAM = []string{got.Details["mrsignerseam"]}
			p.TDX.XFAM = "e702060000000000"
			p.TDX.TDAttributes = "0000001000000000"
			p.TDX.MinTEETCBSVN = "06010300000000000000000000000000"
		}, ""},
		{"wrong MRTD", func(p *attest.Policy) { p.Measurements = []string{other} }, "measurement"},
		{"wrong RTMR1", func(p *attest.Policy) { p.TDX.RTMR1 = []string{other} }, "tdx.rtmr1"},
		{"wrong RTMR2", func(p *attest.Policy) { p.TDX.RTMR2 = []string{other} }, "tdx.rtmr2"},
		{"wrong MRCONFIGID", func(p *attest.Policy) { p.TDX.MRConfigID = []string{other} }, "tdx.mrconfigid"},
		{"wrong MROWNER", func(p *attest.Policy) { p.TDX.MROwner = []string{other} }, "tdx.mrowner"},
		{"wrong MROWNERCONFIG", func(p *attest.Policy) { p.TDX.MROwnerConfig = []string{other} }, "tdx.mrownerconfig"},
		{"wrong MRSEAM", func(p *attest.Policy) { p.TDX.MRSEAM = []string{other} }, "tdx.mrseam"},
		{"wrong XFAM", func(p *attest.Policy) { p.TDX.XFAM = "e700000000000000" }, "tdx.xfam"},
		{"wrong TD attributes", func(p *attest.Policy) { p.TDX.TDAttributes = "0000000000000000" }, "tdx.td_attributes"},
		{"TEE TCB too low", func(p *attest.Policy) { p.TDX.MinTEETCBSVN = "07010300000000000000000000000000" }, "tdx.min_tee_tcb_svn"},
		{"TDX not accepted", func(p *attest.Policy) { p.TEETypes = []string{attest.TypeSGX} }, "tee_type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := defaultPolicy(goodMRTD)
			tc.edit(p)
			if err := p.Validate(); err != nil {
				t.Fatal(err)
			}
			err := p.Check(got, goodAt)
			var pe *attest.PolicyError
			if tc.check == "" && err != nil || tc.check != "" && (!errors.As(err, &pe) || pe.Check != tc.check) {
				t.Errorf("error %v, want check %q", err, tc.check)
			}
		})
	}
	// A debug TD and one without SEPT_VE_DISABLE are refused unless allowed.
	for _, tc := range []struct {
		name, attrs, check string
		allow              func(p *attest.Policy)
	}{
		{"debug", "0100001000000000", "debug", func(p *attest.Policy) { p.AllowDebug = true }},
		{"sept ve", "0000000000000000", "tdx.sept_ve_disable", func(p *attest.Policy) { p.TDX.AllowSEPTVE = true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := read(t, goodQuote)
			q, _ := abi.ParseQuote(b)
			hex.Decode(q.Body.TDAttributes[:], []byte(tc.attrs))
			res := &verify.Result{Quote: q, PCK: &pcs.PCKExtensions{}, PCKChain: mustChain(t, q), TCBStatus: attest.TCBUpToDate}
			v := ToVerified(res)
			p := defaultPolicy(goodMRTD)
			var pe *attest.PolicyError
			if err := p.Check(v, goodAt); !errors.As(err, &pe) || pe.Check != tc.check {
				t.Errorf("error %v, want check %s", err, tc.check)
			}
			tc.allow(p)
			if err := p.Check(v, goodAt); err != nil {
				t.Errorf("allowed: %v", err)
			}
		})
	}
}

func mustChain(t *testing.T, q *abi.Quote) []*x509.Certificate {
	res, err := verify.Signatures(q, verify.Options{Now: goodAt})
	if err != nil {
		// The attributes were edited, so the quote signature fails: take
		// the chain from the unedited quote instead.
		orig, _ := abi.ParseQuote(read(t, goodQuote))
		if res, err = verify.Signatures(orig, verify.Options{Now: goodAt}); err != nil {
			t.Fatal(err)
		}
	}
	return res.PCKChain
}

// BenchmarkVerify is full verification with collateral already in memory
// (an offline bundle; a PCS client's cache serves the same objects).
func BenchmarkVerify(b *testing.B) {
	quote := read(b, goodQuote)
	v := NewVerifier(Options{Collateral: bundle(b, goodCollateral), Now: at(goodAt)})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, quote); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyPCCSCached goes through the PCS client, every item cached.
func BenchmarkVerifyPCCSCached(b *testing.B) {
	srv := pcstest.New(b, goodCollateral, pcs.CAPlatform)
	c := pcs.NewClient(srv.URL)
	c.Now = at(goodAt)
	quote := read(b, goodQuote)
	v := NewVerifier(Options{Collateral: c, Now: at(goodAt)})
	ctx := context.Background()
	if _, err := v.Verify(ctx, quote); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, quote); err != nil {
			b.Fatal(err)
		}
	}
}
