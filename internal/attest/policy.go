package attest

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// Policy is the owner's trust policy: which evidence they accept. The zero
// Policy accepts nothing. It is read from a TOML file (see docs/trust-policy.md).
type Policy struct {
	// TEETypes lists accepted TEE types ("sgx", "sim", ...). "sim" is accepted
	// only when AllowSimulation is also true.
	TEETypes []string `toml:"tee_types"`
	// Measurements lists accepted runtime measurements (lowercase hex):
	// MRENCLAVE for sgx, the SHA-256 of the mse-node executable for sim.
	Measurements []string `toml:"measurements"`
	// Signers lists accepted signers (MRSIGNER for sgx).
	Signers []string `toml:"signers"`
	// ProductID, when set, is the only accepted ISVPRODID.
	ProductID *uint16 `toml:"product_id"`
	// MinSVN is the lowest accepted ISVSVN.
	MinSVN uint16 `toml:"min_svn"`
	// AcceptedTCBStatuses lists accepted TCB statuses; empty means UpToDate only.
	AcceptedTCBStatuses []string `toml:"accepted_tcb_statuses"`
	// AcceptedAdvisories lists advisory IDs the owner accepts; evidence whose
	// platform is affected by any other advisory is refused.
	AcceptedAdvisories []string `toml:"accepted_advisories"`
	// AllowDebug accepts debug enclaves (whose memory the host can read).
	AllowDebug bool `toml:"allow_debug"`
	// AllowSimulation accepts the sim TEE type, which proves nothing.
	AllowSimulation bool `toml:"allow_simulation"`
	// MaxCollateralAge, when set (Go duration, e.g. "720h"), refuses collateral
	// issued longer ago than this.
	MaxCollateralAge Duration `toml:"max_collateral_age"`
	// Collateral says where SGX/TDX collateral comes from.
	Collateral CollateralSource `toml:"collateral"`
	// Simulation pins the simulated platform's root.
	Simulation SimulationPolicy `toml:"simulation"`
	// Runtimes, when set, lists the runtime images (OCI manifest digests,
	// "sha256:" + hex) the owner accepts; empty accepts the runtime the
	// deploy asked for (which the node must attest all the same).
	Runtimes []string `toml:"runtimes"`
}

// CollateralSource names where collateral for DCAP evidence comes from.
type CollateralSource struct {
	// PCCS is the base URL of a PCCS or of Intel's PCS (v4 API).
	PCCS string `toml:"pccs"`
	// File is an offline collateral bundle (JSON).
	File string `toml:"file"`
}

// SimulationPolicy configures the sim TEE type.
type SimulationPolicy struct {
	// RootSHA256 pins the simulated platform's root certificate (SHA-256 of
	// its DER, hex). Empty means: trust the root the operator publishes, which
	// the CLI says on every run.
	RootSHA256 string `toml:"root_sha256"`
}

// Duration is a time.Duration read from a TOML string such as "720h".
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (use Go syntax such as \"720h\")", b)
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// LoadPolicy reads a policy file.
func LoadPolicy(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read trust policy: %w", err)
	}
	p, err := ParsePolicy(b)
	if err != nil {
		return nil, fmt.Errorf("trust policy %s: %w", path, err)
	}
	return p, nil
}

// ParsePolicy parses and checks a TOML policy. Unknown keys are errors, so a
// misspelt key never silently weakens the policy.
func ParsePolicy(b []byte) (*Policy, error) {
	var p Policy
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		var sme *toml.StrictMissingError
		if ok := asStrict(err, &sme); ok {
			return nil, fmt.Errorf("unknown key(s) in policy: %s", strings.TrimSpace(sme.String()))
		}
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

func asStrict(err error, t **toml.StrictMissingError) bool {
	e, ok := err.(*toml.StrictMissingError)
	if ok {
		*t = e
	}
	return ok
}

// Validate checks the policy's own values.
func (p *Policy) Validate() error {
	for _, t := range p.TEETypes {
		switch t {
		case TypeSim, TypeSGX, TypeTDX, TypeSEVSNP:
		default:
			return fmt.Errorf("tee_types: unknown TEE type %q (known: sim, sgx, tdx, sev-snp)", t)
		}
	}
	for _, m := range p.Measurements {
		if err := checkHex(m, 32, 48); err != nil {
			return fmt.Errorf("measurements: %q: %w", m, err)
		}
	}
	for _, s := range p.Signers {
		if err := checkHex(s, 32); err != nil {
			return fmt.Errorf("signers: %q: %w", s, err)
		}
	}
	for _, s := range p.AcceptedTCBStatuses {
		if !slices.Contains(knownTCB, s) {
			return fmt.Errorf("accepted_tcb_statuses: unknown status %q (known: %s)", s, strings.Join(knownTCB, ", "))
		}
	}
	if p.Simulation.RootSHA256 != "" {
		if err := checkHex(p.Simulation.RootSHA256, 32); err != nil {
			return fmt.Errorf("simulation.root_sha256: %w", err)
		}
	}
	if p.MaxCollateralAge.Duration < 0 {
		return fmt.Errorf("max_collateral_age must not be negative")
	}
	for _, r := range p.Runtimes {
		h, ok := strings.CutPrefix(r, "sha256:")
		if !ok {
			return fmt.Errorf("runtimes: %q must start with sha256:", r)
		}
		if err := checkHex(h, 32); err != nil {
			return fmt.Errorf("runtimes: %q: %w", r, err)
		}
	}
	return nil
}

// CheckRuntime applies Runtimes to the runtime digest a node attests.
func (p *Policy) CheckRuntime(digest []byte) error {
	if len(p.Runtimes) == 0 {
		return nil
	}
	d := "sha256:" + hex.EncodeToString(digest)
	if slices.Contains(p.Runtimes, d) {
		return nil
	}
	return &PolicyError{Check: "runtime", Msg: fmt.Sprintf("runtime %s is not in the trust policy (accepted: %s); pick an accepted runtime in mse.toml or add it to runtimes in --policy",
		d, strings.Join(p.Runtimes, ", "))}
}

var knownTCB = []string{TCBUpToDate, TCBSWHardeningNeeded, TCBConfigurationNeeded,
	TCBConfigurationAndSWHardeningNeeded, TCBOutOfDate, TCBOutOfDateConfigurationNeeded, TCBRevoked, TCBUnchecked}

func checkHex(s string, sizes ...int) error {
	b, err := hex.DecodeString(s)
	if err != nil || strings.ToLower(s) != s {
		return fmt.Errorf("not lowercase hex")
	}
	if !slices.Contains(sizes, len(b)) {
		return fmt.Errorf("is %d bytes, want %v", len(b), sizes)
	}
	return nil
}

// short abbreviates a hex value for messages.
func short(h string) string {
	if len(h) > 8 {
		return h[:8] + "…"
	}
	return h
}

func shortList(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	out := make([]string, len(l))
	for i, s := range l {
		out[i] = short(s)
	}
	return strings.Join(out, ", ")
}

// PolicyError says which policy check refused verified evidence.
type PolicyError struct {
	Check string // "tee_type", "simulation", "debug", "measurement", "signer", "product_id", "svn", "tcb_status", "advisory", "collateral_age"
	Msg   string
}

func (e *PolicyError) Error() string { return "verification failed: " + e.Msg }

// Check applies the policy to verified values at time now.
func (p *Policy) Check(v *Verified, now time.Time) error {
	fail := func(check, format string, args ...any) error {
		return &PolicyError{Check: check, Msg: fmt.Sprintf(format, args...)}
	}
	if !slices.Contains(p.TEETypes, v.Type) {
		return fail("tee_type", "TEE type %q is not accepted by the trust policy (accepted: %s); add it to tee_types", v.Type, strings.Join(p.TEETypes, ", "))
	}
	if v.Simulated || v.Type == TypeSim {
		if !p.AllowSimulation {
			return fail("simulation", "the evidence is simulated (TEE type sim), which proves nothing about the hardware; pass --simulation or set allow_simulation in the policy to accept it")
		}
	}
	if v.Debug && !p.AllowDebug {
		return fail("debug", "the enclave runs in debug mode, so its host can read its memory; refused (set allow_debug only for development)")
	}
	if len(p.Measurements) == 0 && len(p.Signers) == 0 {
		return fail("measurement", "the trust policy accepts no runtime: it names no measurements and no signers; add the node runtime's measurement or signer")
	}
	m := hex.EncodeToString(v.Measurement)
	if len(p.Measurements) > 0 && !slices.Contains(p.Measurements, m) {
		return fail("measurement", "measurement %s is not in the trust policy (accepted: %s); the node does not run a runtime you trust: pass --policy or ask the operator which runtime it runs", m, shortList(p.Measurements))
	}
	s := hex.EncodeToString(v.Signer)
	if len(p.Signers) > 0 && !slices.Contains(p.Signers, s) {
		return fail("signer", "MRSIGNER %s is not in the trust policy (accepted: %s); pass --policy or ask the operator for its signer", s, shortList(p.Signers))
	}
	if p.ProductID != nil && v.ProductID != *p.ProductID {
		return fail("product_id", "ISVPRODID %d is not the one the trust policy accepts (%d)", v.ProductID, *p.ProductID)
	}
	if v.SVN < p.MinSVN {
		return fail("svn", "ISVSVN %d is below the policy's minimum %d", v.SVN, p.MinSVN)
	}
	accepted := p.AcceptedTCBStatuses
	if len(accepted) == 0 {
		accepted = []string{TCBUpToDate}
	}
	if !slices.Contains(accepted, v.TCBStatus) {
		return fail("tcb_status", "TCB status %s is not accepted by the trust policy (accepted: %s); the platform needs an update, or list the status in accepted_tcb_statuses in your policy to accept it", v.TCBStatus, strings.Join(accepted, ", "))
	}
	for _, a := range v.AdvisoryIDs {
		if !slices.Contains(p.AcceptedAdvisories, a) {
			return fail("advisory", "the platform is affected by advisory %s, which the trust policy does not accept (accepted: %s); add it to accepted_advisories to accept it", a, strings.Join(orNone(p.AcceptedAdvisories), ", "))
		}
	}
	if p.MaxCollateralAge.Duration > 0 && !v.CollateralIssued.IsZero() {
		if age := now.Sub(v.CollateralIssued); age > p.MaxCollateralAge.Duration {
			return fail("collateral_age", "collateral was issued %s ago, more than the policy's max_collateral_age %s; refresh the collateral", age.Round(time.Minute), p.MaxCollateralAge.Duration)
		}
	}
	return nil
}

func orNone(l []string) []string {
	if len(l) == 0 {
		return []string{"none"}
	}
	return l
}
