package snp_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/snp"
)

// Verify a recorded SEV-SNP report with its VCEK (revocation unchecked: no
// CRL is at hand), then apply a trust policy, which refuses a debug guest.
func ExampleVerifier() {
	report, _ := os.ReadFile("testdata/good_gosevguest_report_v2.bin")
	der, _ := os.ReadFile("testdata/good_gosevguest_vcek.der")
	vcek, _ := x509.ParseCertificate(der)
	at := time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)
	v := snp.NewVerifier(snp.Options{EndorsementKey: vcek, SkipCRL: true, Now: func() time.Time { return at }})
	got, err := v.Verify(context.Background(), report)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(got.Details["product"], got.Details["policy"], got.TCBStatus)
	policy := &attest.Policy{TEETypes: []string{"sev-snp"}, Measurements: []string{got.Details["measurement"]}, AcceptedTCBStatuses: []string{"unchecked"}}
	fmt.Println(policy.Check(got, at))
	// Output:
	// Milan b0000 unchecked
	// verification failed: the guest runs (its policy allows debugging) in debug mode, so its host can read its memory; refused (set allow_debug only for development)
}
