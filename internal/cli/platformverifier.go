package cli

import (
	"errors"
	"fmt"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sgx"
	"github.com/mse-in-go/mse/internal/attest/sgx/pcs"
)

// newPlatformVerifier returns the verifier for a hardware TEE type, with
// collateral from the policy's [collateral] section.
func newPlatformVerifier(teeType string, p *attest.Policy, now attest.Clock) (attest.Verifier, error) {
	switch teeType {
	case attest.TypeSGX:
		var src pcs.Source
		switch {
		case p != nil && p.Collateral.File != "":
			b, err := pcs.LoadBundle(p.Collateral.File)
			if err != nil {
				return nil, fmt.Errorf("collateral file %s: %w", p.Collateral.File, err)
			}
			src = b
		case p != nil && p.Collateral.PCCS != "":
			src = pcs.NewClient(p.Collateral.PCCS)
		default:
			return nil, errors.New("the node presents SGX evidence, and verifying it needs collateral: set [collateral] pccs = URL (a PCCS, or Intel's PCS) or file = BUNDLE in your trust policy")
		}
		return sgx.NewVerifier(sgx.Options{Collateral: src, Now: now}), nil
	default:
		return nil, fmt.Errorf("TEE type %q cannot be verified by this version of mse", teeType)
	}
}
