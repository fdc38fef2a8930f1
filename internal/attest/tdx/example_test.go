package tdx_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sgx/pcs"
	"github.com/mse-in-go/mse/internal/attest/tdx"
)

// Verify a recorded TDX quote offline with its collateral bundle, at a time
// when its certificates were valid, then apply a trust policy.
func ExampleVerifier() {
	quote, _ := os.ReadFile("testdata/good_phala_quote_v4.bin")
	bundle, _ := pcs.LoadBundle("testdata/good_phala_collateral.json")
	at := time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)
	v := tdx.NewVerifier(tdx.Options{Collateral: bundle, Now: func() time.Time { return at }})
	got, err := v.Verify(context.Background(), quote)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(got.TCBStatus, got.Details["mrtd"][:16], got.Details["tdx_module_identity"])
	policy := &attest.Policy{TEETypes: []string{"tdx"}, Measurements: []string{got.Details["mrtd"]}}
	fmt.Println(policy.Check(got, at))
	// Output:
	// UpToDate 91eb2b44d141d4ec TDX_01
	// <nil>
}
