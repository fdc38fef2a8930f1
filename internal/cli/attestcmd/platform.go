package attestcmd

import (
	"errors"
	"fmt"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sgx/pcs"
	"github.com/mse-in-go/mse/internal/attest/snp"
	"github.com/mse-in-go/mse/internal/attest/snp/kds"
	"github.com/mse-in-go/mse/internal/attest/tdx"
)

// PlatformVerifier returns the verifier of a confidential-VM TEE type (tdx,
// sev-snp) for RA-TLS certificates of nodes, with collateral from the
// trust policy: [collateral] for TDX (a PCCS or an offline bundle), and
// [sev_snp] kds / crl_file for SEV-SNP. The VCEK of SEV-SNP evidence rides
// in the certificate, so only the CRL may need the network; a KDS named in
// the policy also serves VCEKs that are missing.
func PlatformVerifier(teeType string, p *attest.Policy, now attest.Clock) (attest.Verifier, error) {
	switch teeType {
	case attest.TypeTDX:
		src, err := pcs.OpenTDXSource(p.Collateral.File, p.Collateral.PCCS, now)
		if err != nil {
			return nil, fmt.Errorf("collateral: %w", err)
		}
		if src == nil {
			return nil, errors.New("the node presents TDX evidence, and verifying it needs collateral: set [collateral] pccs = URL (a PCCS, or Intel's PCS) or file = BUNDLE in your trust policy")
		}
		return tdx.NewVerifier(tdx.Options{Collateral: src, Now: now}), nil
	case attest.TypeSEVSNP:
		o := snp.Options{Now: now}
		if u := p.SEVSNP.KDS; u != "" {
			c := kds.NewClient(u)
			c.Now = now
			o.KDS, o.CRLs = c, c
		}
		if f := p.SEVSNP.CRLFile; f != "" {
			b, err := kds.LoadBundle(f)
			if err != nil {
				return nil, err
			}
			o.CRLs = b
		}
		if o.CRLs == nil {
			return nil, fmt.Errorf("the node presents SEV-SNP evidence, and checking that AMD has not revoked its keys needs a CRL: set [sev_snp] kds = %q (or a cache of it) or crl_file = FILE in your trust policy", kds.AMDKDS)
		}
		return snp.NewVerifier(o), nil
	}
	return nil, fmt.Errorf("TEE type %q is not a confidential-VM type", teeType)
}
