package attest

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParsePolicyTEESections(t *testing.T) {
	h48 := strings.Repeat("ab", 48)
	good := `tee_types = ["tdx", "sev-snp"]
measurements = ["` + h48 + `"]
[tdx]
rtmr0 = ["` + h48 + `"]
rtmr3 = ["` + h48 + `"]
mrconfigid = ["` + h48 + `"]
mrsignerseam = ["` + strings.Repeat("00", 48) + `"]
xfam = "e702060000000000"
td_attributes = "0000001000000000"
min_tee_tcb_svn = "06010300000000000000000000000000"
allow_sept_ve = false
[sev_snp]
host_data = ["` + strings.Repeat("cd", 32) + `"]
id_key_digests = ["` + h48 + `"]
chip_ids = ["` + strings.Repeat("01", 64) + `"]
min_tcb = { bootloader = 3, snp = 8, microcode = 115 }
vmpl = 0
signing_keys = ["vcek"]
kds = "https://kdsintf.amd.com"
`
	p, err := ParsePolicy([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.TDX.RTMR0) != 1 || p.TDX.XFAM != "e702060000000000" || p.SEVSNP.MinTCB.Microcode != 115 || *p.SEVSNP.VMPL != 0 || p.SEVSNP.KDS == "" {
		t.Errorf("policy %+v", p)
	}
	for _, tc := range []struct{ toml, msg string }{
		{"[tdx]\nrtmr1 = [\"abcd\"]", "tdx.rtmr1: \"abcd\": is 2 bytes, want [48]"},
		{"[tdx]\nxfam = \"E702060000000000\"", "tdx.xfam: not lowercase hex"},
		{"[tdx]\nmin_tee_tcb_svn = \"0601\"", "tdx.min_tee_tcb_svn: is 2 bytes"},
		{"[tdx]\nrtmr4 = []", "unknown key(s) in policy"},
		{"[sev_snp]\nhost_data = [\"" + h48 + "\"]", "sev_snp.host_data"},
		{"[sev_snp]\nvmpl = 4", "sev_snp.vmpl: 4 is not 0..3"},
		{"[sev_snp]\nsigning_keys = [\"ask\"]", `sev_snp.signing_keys: unknown key "ask"`},
		{"[sev_snp]\nchip_ids = [\"01\"]", "sev_snp.chip_ids"},
		{"[sev_snp]\nmin_tcb = { ucode = 1 }", "unknown key(s) in policy"},
	} {
		if _, err := ParsePolicy([]byte(tc.toml)); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: error %v, want %q", tc.toml, err, tc.msg)
		}
	}
}

// A verifier that did not report a value the policy checks is refused, not
// passed: a missing detail never weakens a policy.
func TestPolicyMissingDetail(t *testing.T) {
	h48 := strings.Repeat("ab", 48)
	for _, tc := range []struct {
		v     *Verified
		edit  func(p *Policy)
		check string
	}{
		{&Verified{Type: TypeTDX, Measurement: make([]byte, 48), TCBStatus: TCBUpToDate}, func(p *Policy) { p.TDX.RTMR0 = []string{h48} }, "rtmr0"},
		{&Verified{Type: TypeTDX, Measurement: make([]byte, 48), TCBStatus: TCBUpToDate}, func(p *Policy) {}, "sept_ve_disable"},
		{&Verified{Type: TypeSEVSNP, Measurement: make([]byte, 48)}, func(p *Policy) {}, "policy"},
	} {
		p := &Policy{TEETypes: []string{tc.v.Type}, Measurements: []string{strings.Repeat("00", 48)}}
		tc.edit(p)
		var pe *PolicyError
		if err := p.Check(tc.v, time.Now()); !errors.As(err, &pe) || pe.Check != tc.check {
			t.Errorf("%s: error %v, want check %s", tc.v.Type, err, tc.check)
		}
	}
}
