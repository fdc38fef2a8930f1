package attest

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Policy is the owner's trust policy: which evidence they accept. The zero
// Policy accepts nothing. It is read from a TOML file by package policyfile
// (see docs/trust-policy.md).
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
	// TDX applies to evidence of TEE type tdx only.
	TDX TDXPolicy `toml:"tdx"`
	// SEVSNP applies to evidence of TEE type sev-snp only.
	SEVSNP SEVSNPPolicy `toml:"sev_snp"`
}

// TDXPolicy is the [tdx] section: what an Intel TDX trust domain must be,
// beyond its MRTD (which is in measurements). Every list, when non-empty,
// names the accepted values (lowercase hex); empty accepts any value.
type TDXPolicy struct {
	// RTMR0..RTMR3 list accepted runtime measurement registers (48 bytes):
	// firmware configuration, kernel and boot loader, kernel command line and
	// initrd, and what the guest extends at run time.
	RTMR0 []string `toml:"rtmr0"`
	RTMR1 []string `toml:"rtmr1"`
	RTMR2 []string `toml:"rtmr2"`
	RTMR3 []string `toml:"rtmr3"`
	// MRConfigID, MROwner, MROwnerConfig list accepted values (48 bytes) of
	// the registers the VM's launcher sets.
	MRConfigID    []string `toml:"mrconfigid"`
	MROwner       []string `toml:"mrowner"`
	MROwnerConfig []string `toml:"mrownerconfig"`
	// XFAM and TDAttributes, when set, are the only accepted values (8 bytes,
	// hex of the quote's little-endian bytes).
	XFAM         string `toml:"xfam"`
	TDAttributes string `toml:"td_attributes"`
	// AllowSEPTVE accepts TDs without SEPT_VE_DISABLE, in which the host can
	// inject #VE exceptions on secure EPT violations. Refused by default.
	AllowSEPTVE bool `toml:"allow_sept_ve"`
	// MinTEETCBSVN (16 bytes hex) is the lowest accepted TEE_TCB_SVN, byte by byte.
	MinTEETCBSVN string `toml:"min_tee_tcb_svn"`
	// MRSEAM and MRSignerSEAM list accepted TDX modules (48 bytes).
	MRSEAM       []string `toml:"mrseam"`
	MRSignerSEAM []string `toml:"mrsignerseam"`
}

// SEVSNPPolicy is the [sev_snp] section: what an AMD SEV-SNP guest must be,
// beyond its launch measurement (which is in measurements).
type SEVSNPPolicy struct {
	// HostData lists accepted HOST_DATA values (32 bytes), set at launch.
	HostData []string `toml:"host_data"`
	// IDKeyDigests and AuthorKeyDigests list accepted SHA-384 digests (48
	// bytes) of the ID key and author key that signed the ID block.
	IDKeyDigests     []string `toml:"id_key_digests"`
	AuthorKeyDigests []string `toml:"author_key_digests"`
	// MinTCB is the lowest accepted reported TCB, component by component.
	MinTCB SNPTCB `toml:"min_tcb"`
	// MinGuestSVN is the lowest accepted guest SVN.
	MinGuestSVN uint32 `toml:"min_guest_svn"`
	// VMPL, when set, is the only accepted VMPL the report was requested at
	// (0 is the most privileged level).
	VMPL *uint8 `toml:"vmpl"`
	// RefuseSMT refuses guests whose policy allows simultaneous multithreading.
	RefuseSMT bool `toml:"refuse_smt"`
	// AllowMigrationAgent accepts guests whose policy allows a migration agent.
	AllowMigrationAgent bool `toml:"allow_migration_agent"`
	// ChipIDs, when non-empty, lists the only accepted chips (64 bytes).
	ChipIDs []string `toml:"chip_ids"`
	// SigningKeys lists accepted signing keys: "vcek", "vlek"; empty is both.
	SigningKeys []string `toml:"signing_keys"`
	// KDS is the base URL of AMD's Key Distribution Service or a cache of it
	// (for VCEKs and CRLs); empty means AMD's.
	KDS string `toml:"kds"`
	// CRLFile is an offline CRL bundle (PEM CRLs signed by the ARKs); it
	// wins over KDS.
	CRLFile string `toml:"crl_file"`
}

// SNPTCB is an SEV-SNP TCB version by component (SVNs). FMC exists on Turin.
type SNPTCB struct {
	Bootloader uint8 `toml:"bootloader"`
	TEE        uint8 `toml:"tee"`
	SNP        uint8 `toml:"snp"`
	Microcode  uint8 `toml:"microcode"`
	FMC        uint8 `toml:"fmc"`
}

// Keys of Verified.Details that the [tdx] and [sev_snp] sections check. The
// verifiers of those types set them (lowercase hex, or decimal).
const (
	DetailMRTD          = "mrtd"
	DetailRTMR0         = "rtmr0"
	DetailRTMR1         = "rtmr1"
	DetailRTMR2         = "rtmr2"
	DetailRTMR3         = "rtmr3"
	DetailMRConfigID    = "mrconfigid"
	DetailMROwner       = "mrowner"
	DetailMROwnerConfig = "mrownerconfig"
	DetailXFAM          = "xfam"
	DetailTDAttributes  = "td_attributes"
	DetailSEPTVEDisable = "sept_ve_disable" // "true" or "false"
	DetailTEETCBSVN     = "tee_tcb_svn"
	DetailMRSEAM        = "mrseam"
	DetailMRSignerSEAM  = "mrsignerseam"

	DetailHostData        = "host_data"
	DetailIDKeyDigest     = "id_key_digest"
	DetailAuthorKeyDigest = "author_key_digest"
	DetailGuestPolicy     = "policy" // hex of the u64
	DetailVMPL            = "vmpl"
	DetailChipID          = "chip_id"
	DetailGuestSVN        = "guest_svn"
	DetailSigningKey      = "signing_key" // "vcek" or "vlek"
	// DetailReportedTCB* are the reported TCB's components (decimal).
	DetailReportedTCBBootloader = "reported_tcb_bootloader"
	DetailReportedTCBTEE        = "reported_tcb_tee"
	DetailReportedTCBSNP        = "reported_tcb_snp"
	DetailReportedTCBMicrocode  = "reported_tcb_microcode"
	DetailReportedTCBFMC        = "reported_tcb_fmc"
)

// SEV-SNP guest policy bits (the report's POLICY field).
const (
	SNPPolicySMT            = 1 << 16
	SNPPolicyMigrateMA      = 1 << 18
	SNPPolicyDebug          = 1 << 19
	SNPPolicySingleSocket   = 1 << 20
	SNPPolicyReserved1Bit17 = 1 << 17
)

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
	if err := p.TDX.validate(); err != nil {
		return fmt.Errorf("tdx.%w", err)
	}
	if err := p.SEVSNP.validate(); err != nil {
		return fmt.Errorf("sev_snp.%w", err)
	}
	return nil
}

func checkHexList(name string, l []string, size int) error {
	for _, v := range l {
		if err := checkHex(v, size); err != nil {
			return fmt.Errorf("%s: %q: %w", name, v, err)
		}
	}
	return nil
}

func (t *TDXPolicy) validate() error {
	for _, f := range []struct {
		name string
		l    []string
	}{{"rtmr0", t.RTMR0}, {"rtmr1", t.RTMR1}, {"rtmr2", t.RTMR2}, {"rtmr3", t.RTMR3},
		{"mrconfigid", t.MRConfigID}, {"mrowner", t.MROwner}, {"mrownerconfig", t.MROwnerConfig},
		{"mrseam", t.MRSEAM}, {"mrsignerseam", t.MRSignerSEAM}} {
		if err := checkHexList(f.name, f.l, 48); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		name, v string
		size    int
	}{{"xfam", t.XFAM, 8}, {"td_attributes", t.TDAttributes, 8}, {"min_tee_tcb_svn", t.MinTEETCBSVN, 16}} {
		if f.v != "" {
			if err := checkHex(f.v, f.size); err != nil {
				return fmt.Errorf("%s: %w", f.name, err)
			}
		}
	}
	return nil
}

func (s *SEVSNPPolicy) validate() error {
	if err := checkHexList("host_data", s.HostData, 32); err != nil {
		return err
	}
	if err := checkHexList("id_key_digests", s.IDKeyDigests, 48); err != nil {
		return err
	}
	if err := checkHexList("author_key_digests", s.AuthorKeyDigests, 48); err != nil {
		return err
	}
	if err := checkHexList("chip_ids", s.ChipIDs, 64); err != nil {
		return err
	}
	if s.VMPL != nil && *s.VMPL > 3 {
		return fmt.Errorf("vmpl: %d is not 0..3", *s.VMPL)
	}
	for _, k := range s.SigningKeys {
		if k != "vcek" && k != "vlek" {
			return fmt.Errorf("signing_keys: unknown key %q (known: vcek, vlek)", k)
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
		what := "the enclave runs"
		switch v.Type {
		case TypeTDX:
			what = "the trust domain runs (TDATTRIBUTES.DEBUG)"
		case TypeSEVSNP:
			what = "the guest runs (its policy allows debugging)"
		}
		return fail("debug", "%s in debug mode, so its host can read its memory; refused (set allow_debug only for development)", what)
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
	// SEV-SNP has no TCB status: the reported TCB is judged by [sev_snp]
	// min_tcb. Its status is set only when revocation was not checked
	// ("unchecked"), which the policy must then name as for SGX and TDX.
	if v.Type == TypeSEVSNP && v.TCBStatus == "" {
		accepted = []string{""}
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
	switch v.Type {
	case TypeTDX:
		return p.TDX.check(v)
	case TypeSEVSNP:
		return p.SEVSNP.check(v)
	}
	return nil
}

// detail returns a detail the verifier of v's type must have set; a missing
// one refuses the evidence rather than accepting it unchecked.
func detail(v *Verified, key string) (string, error) {
	s, ok := v.Details[key]
	if !ok {
		return "", &PolicyError{Check: key, Msg: fmt.Sprintf("the %s verifier did not report %s, so the trust policy cannot check it", v.Type, key)}
	}
	return s, nil
}

func (t *TDXPolicy) check(v *Verified) error {
	fail := func(check, format string, args ...any) error {
		return &PolicyError{Check: "tdx." + check, Msg: fmt.Sprintf(format, args...)}
	}
	for _, f := range []struct {
		key, what string
		l         []string
	}{
		{DetailRTMR0, "RTMR0 (firmware configuration)", t.RTMR0},
		{DetailRTMR1, "RTMR1 (kernel and boot loader)", t.RTMR1},
		{DetailRTMR2, "RTMR2 (kernel command line and initrd)", t.RTMR2},
		{DetailRTMR3, "RTMR3 (run-time measurements)", t.RTMR3},
		{DetailMRConfigID, "MRCONFIGID", t.MRConfigID},
		{DetailMROwner, "MROWNER", t.MROwner},
		{DetailMROwnerConfig, "MROWNERCONFIG", t.MROwnerConfig},
		{DetailMRSEAM, "MRSEAM (the TDX module)", t.MRSEAM},
		{DetailMRSignerSEAM, "MRSIGNERSEAM (the TDX module's signer)", t.MRSignerSEAM},
	} {
		if len(f.l) == 0 {
			continue
		}
		got, err := detail(v, f.key)
		if err != nil {
			return err
		}
		if !slices.Contains(f.l, got) {
			return fail(f.key, "%s %s is not in the trust policy's [tdx] %s (accepted: %s): the TD does not boot what you trust", f.what, short(got), f.key, shortList(f.l))
		}
	}
	for _, f := range []struct{ key, want, what string }{
		{DetailXFAM, t.XFAM, "XFAM"}, {DetailTDAttributes, t.TDAttributes, "TD attributes"},
	} {
		if f.want == "" {
			continue
		}
		got, err := detail(v, f.key)
		if err != nil {
			return err
		}
		if got != f.want {
			return fail(f.key, "%s %s are not the trust policy's [tdx] %s %s", f.what, got, f.key, f.want)
		}
	}
	if !t.AllowSEPTVE {
		got, err := detail(v, DetailSEPTVEDisable)
		if err != nil {
			return err
		}
		if got != "true" {
			return fail("sept_ve_disable", "the TD's attributes do not set SEPT_VE_DISABLE, so its host can inject #VE exceptions on secure EPT violations; refused (set [tdx] allow_sept_ve to accept it)")
		}
	}
	if t.MinTEETCBSVN != "" {
		got, err := detail(v, DetailTEETCBSVN)
		if err != nil {
			return err
		}
		g, _ := hex.DecodeString(got)
		m, _ := hex.DecodeString(t.MinTEETCBSVN)
		if len(g) != len(m) {
			return fail("min_tee_tcb_svn", "TEE_TCB_SVN %s is not 16 bytes", got)
		}
		for i := range m {
			if g[i] < m[i] {
				return fail("min_tee_tcb_svn", "TEE_TCB_SVN %s is below the policy's min_tee_tcb_svn %s (byte %d: %d < %d): update the TDX module", got, t.MinTEETCBSVN, i, g[i], m[i])
			}
		}
	}
	return nil
}

func (s *SEVSNPPolicy) check(v *Verified) error {
	fail := func(check, format string, args ...any) error {
		return &PolicyError{Check: "sev_snp." + check, Msg: fmt.Sprintf(format, args...)}
	}
	for _, f := range []struct {
		key, what string
		l         []string
	}{
		{DetailHostData, "HOST_DATA", s.HostData},
		{DetailIDKeyDigest, "ID key digest", s.IDKeyDigests},
		{DetailAuthorKeyDigest, "author key digest", s.AuthorKeyDigests},
		{DetailChipID, "chip id", s.ChipIDs},
	} {
		if len(f.l) == 0 {
			continue
		}
		got, err := detail(v, f.key)
		if err != nil {
			return err
		}
		if !slices.Contains(f.l, got) {
			return fail(f.key, "%s %s is not in the trust policy's [sev_snp] list (accepted: %s)", f.what, short(got), shortList(f.l))
		}
	}
	ps, err := detail(v, DetailGuestPolicy)
	if err != nil {
		return err
	}
	pol, err := strconv.ParseUint(ps, 16, 64)
	if err != nil {
		return fail("policy", "guest policy %q is not hex", ps)
	}
	if pol&SNPPolicyMigrateMA != 0 && !s.AllowMigrationAgent {
		return fail("policy", "the guest policy (%#x) allows a migration agent, which can export the guest's memory; refused (set [sev_snp] allow_migration_agent to accept it)", pol)
	}
	if pol&SNPPolicySMT != 0 && s.RefuseSMT {
		return fail("policy", "the guest policy (%#x) allows SMT, which the trust policy refuses (refuse_smt)", pol)
	}
	if s.VMPL != nil {
		got, err := detail(v, DetailVMPL)
		if err != nil {
			return err
		}
		if got != strconv.Itoa(int(*s.VMPL)) {
			return fail("vmpl", "the report was requested at VMPL %s, not the VMPL %d the trust policy accepts", got, *s.VMPL)
		}
	}
	if len(s.SigningKeys) > 0 {
		got, err := detail(v, DetailSigningKey)
		if err != nil {
			return err
		}
		if !slices.Contains(s.SigningKeys, got) {
			return fail("signing_keys", "the report is signed by a %s, which the trust policy does not accept (accepted: %s)", strings.ToUpper(got), strings.Join(s.SigningKeys, ", "))
		}
	}
	if s.MinGuestSVN > 0 {
		got, err := detail(v, DetailGuestSVN)
		if err != nil {
			return err
		}
		if n, err := strconv.ParseUint(got, 10, 32); err != nil || uint32(n) < s.MinGuestSVN {
			return fail("min_guest_svn", "guest SVN %s is below the policy's min_guest_svn %d", got, s.MinGuestSVN)
		}
	}
	for _, c := range []struct {
		key, name string
		min       uint8
	}{
		{DetailReportedTCBBootloader, "bootloader", s.MinTCB.Bootloader},
		{DetailReportedTCBTEE, "tee", s.MinTCB.TEE},
		{DetailReportedTCBSNP, "snp", s.MinTCB.SNP},
		{DetailReportedTCBMicrocode, "microcode", s.MinTCB.Microcode},
		{DetailReportedTCBFMC, "fmc", s.MinTCB.FMC},
	} {
		if c.min == 0 {
			continue
		}
		got, err := detail(v, c.key)
		if err != nil {
			return err
		}
		if n, err := strconv.Atoi(got); err != nil || n < int(c.min) {
			return fail("min_tcb", "the reported TCB's %s SVN %s is below the policy's min_tcb.%s %d: the host's firmware needs an update", c.name, got, c.name, c.min)
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
