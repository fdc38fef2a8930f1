// Package attest holds what every TEE type shares: evidence, the claims a node
// binds into its evidence, the issuer and verifier interfaces, and the owner's
// trust policy. It imports nothing of the platform: the node, the CLI and the
// backend all build on it, never the other way round.
//
// Each TEE type lives in its own package (attest/sim, attest/sgx, ...) and is
// split in three layers, as in google/go-tdx-guest: parse (bytes to structs,
// every length checked), verify (signatures, chains, collateral, with an
// injectable clock) and validate (the Policy below, applied to values that are
// already verified).
package attest

import (
	"context"
	"time"
)

// TEE types known to the platform.
const (
	TypeSim    = "sim"
	TypeSGX    = "sgx"
	TypeTDX    = "tdx"
	TypeSEVSNP = "sev-snp"
)

// TCB status names. SGX and TDX use Intel's names; the sim TEE reuses them.
const (
	TCBUpToDate                          = "UpToDate"
	TCBSWHardeningNeeded                 = "SWHardeningNeeded"
	TCBConfigurationNeeded               = "ConfigurationNeeded"
	TCBConfigurationAndSWHardeningNeeded = "ConfigurationAndSWHardeningNeeded"
	TCBOutOfDate                         = "OutOfDate"
	TCBOutOfDateConfigurationNeeded      = "OutOfDateConfigurationNeeded"
	TCBRevoked                           = "Revoked"
	// TCBUnchecked is reported when the TCB status was not evaluated (no
	// collateral). A policy accepts it only when it names it explicitly.
	TCBUnchecked = "unchecked"
)

// Issuer produces evidence of its TEE type that binds 64 bytes of report data.
// It runs inside the enclave (the node).
type Issuer interface {
	Type() string
	Issue(ctx context.Context, reportData [64]byte) ([]byte, error)
}

// Verifier checks that evidence of its TEE type is genuine: signatures, chain
// to the vendor root, revocation and collateral. It does not apply the owner's
// policy beyond what genuineness needs; Policy.Check does that on the result.
// A verifier is configured when it is built (roots, collateral, clock).
type Verifier interface {
	Type() string
	Verify(ctx context.Context, evidence []byte) (*Verified, error)
}

// Verified holds the values a verifier established from genuine evidence.
type Verified struct {
	Type        string   // TEE type
	Measurement []byte   // MRENCLAVE (sgx), MRTD (tdx), executable hash (sim)
	Signer      []byte   // MRSIGNER (sgx), signer identity (sim); nil when the TEE has none
	ProductID   uint16   // ISVPRODID
	SVN         uint16   // ISVSVN
	Debug       bool     // debug enclave: its memory is readable by the host
	TCBStatus   string   // one of the TCB* constants
	AdvisoryIDs []string // Intel security advisories that apply to the platform's TCB level
	ReportData  [64]byte // the 64 bytes the issuer bound
	Simulated   bool     // true only for the sim TEE type
	// RuntimeDigest is the SHA-256 manifest digest of the runtime image, when
	// the TEE itself attests it apart from the measurement (sim: stated by the
	// simulated hardware; confidential containers: through init data). Nil
	// when the measurement covers the runtime (SGX with Gramine: the runtime's
	// files are trusted files under MRENCLAVE) or no runtime is attested.
	RuntimeDigest []byte
	// CollateralIssued is the oldest issue date among the collateral used
	// (zero when no collateral was used); Policy.MaxCollateralAge applies to it.
	CollateralIssued time.Time
	// Details are TEE-specific extras for display (lowercase hex or decimal strings).
	Details map[string]string
}

// Clock returns the current time; verifiers take one so that tests and
// `--at` can verify recorded evidence whose certificates have expired.
type Clock func() time.Time
