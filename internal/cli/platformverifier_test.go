package cli

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
)

// TestPlatformVerifierSGX: the sgx verifier that deploy and verify use takes
// its collateral from the policy and verifies a recorded real quote; the
// policy then decides on its TCB status.
func TestPlatformVerifierSGX(t *testing.T) {
	quote, err := os.ReadFile("../attest/sgx/testdata/good_phala_quote.bin")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)
	p := &attest.Policy{TEETypes: []string{attest.TypeSGX}, Collateral: attest.CollateralSource{File: "../attest/sgx/testdata/good_phala_collateral.json"}}
	v, err := newPlatformVerifier(attest.TypeSGX, p, func() time.Time { return at })
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Verify(context.Background(), quote)
	if err != nil {
		t.Fatal(err)
	}
	if got.TCBStatus != attest.TCBConfigurationAndSWHardeningNeeded || len(got.AdvisoryIDs) != 2 {
		t.Fatalf("TCB %s %v", got.TCBStatus, got.AdvisoryIDs)
	}
	p.Measurements = []string{"33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"}
	if err := p.Check(got, at); err == nil || !strings.Contains(err.Error(), "TCB status ConfigurationAndSWHardeningNeeded is not accepted") {
		t.Fatalf("default TCB policy: %v", err)
	}
	p.AcceptedTCBStatuses = []string{attest.TCBConfigurationAndSWHardeningNeeded}
	p.AcceptedAdvisories = []string{"INTEL-SA-00289", "INTEL-SA-00615"}
	if err := p.Check(got, at); err != nil {
		t.Fatal(err)
	}

	// Without a collateral source the error says how to give one.
	if _, err := newPlatformVerifier(attest.TypeSGX, &attest.Policy{}, time.Now); err == nil || !strings.Contains(err.Error(), "[collateral]") {
		t.Fatalf("no collateral: %v", err)
	}
	// The default policy uses Intel's PCS.
	f := trustFlags{}
	dp, err := f.policy()
	if err != nil || dp.Collateral.PCCS != DefaultPCS {
		t.Fatalf("default policy collateral: %+v %v", dp.Collateral, err)
	}
	if _, err := newPlatformVerifier("nitro", p, time.Now); err == nil {
		t.Fatal("nitro verifier")
	}
	// TDX takes the same [collateral]; SEV-SNP needs [sev_snp] (attestcmd.PlatformVerifier).
	if v, err := newPlatformVerifier(attest.TypeTDX, p, time.Now); err != nil || v.Type() != attest.TypeTDX {
		t.Fatalf("tdx verifier: %v", err)
	}
	if _, err := newPlatformVerifier(attest.TypeSEVSNP, p, time.Now); err == nil || !strings.Contains(err.Error(), "[sev_snp]") {
		t.Fatalf("sev-snp without a CRL source: %v", err)
	}
	// One verifier per command: its collateral cache serves every check.
	vs := &verifiers{policy: p, now: time.Now}
	v1, err1 := vs.For(attest.TypeSGX)
	v2, err2 := vs.For(attest.TypeSGX)
	if err1 != nil || err2 != nil || v1 != v2 {
		t.Fatalf("verifier built twice (%v, %v)", err1, err2)
	}
}
