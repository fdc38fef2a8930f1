package cli

import (
	"errors"
	"fmt"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sgx"
	"github.com/mse-in-go/mse/internal/attest/sgx/pcs"
	"github.com/mse-in-go/mse/internal/cli/attestcmd"
)

// newPlatformVerifier returns the verifier for a hardware TEE type, with
// collateral from the policy's [collateral] section.
func newPlatformVerifier(teeType string, p *attest.Policy, now attest.Clock) (attest.Verifier, error) {
	switch teeType {
	case attest.TypeSGX:
		src, err := pcs.OpenSource(p.Collateral.File, p.Collateral.PCCS, now)
		if err != nil {
			return nil, fmt.Errorf("collateral: %w", err)
		}
		if src == nil {
			return nil, errors.New("the node presents SGX evidence, and verifying it needs collateral: set [collateral] pccs = URL (a PCCS, or Intel's PCS) or file = BUNDLE in your trust policy")
		}
		return sgx.NewVerifier(sgx.Options{Collateral: src, Now: now}), nil
	case attest.TypeTDX, attest.TypeSEVSNP:
		return attestcmd.PlatformVerifier(teeType, p, now)
	default:
		return nil, fmt.Errorf("TEE type %q cannot be verified by this version of mse", teeType)
	}
}
