package policyfile

import (
	"strings"
	"testing"
	"time"
)

var (
	m1 = strings.Repeat("a1", 32)
	s1 = strings.Repeat("c3", 32)
	s2 = strings.Repeat("d4", 32)
)

func TestParsePolicy(t *testing.T) {
	good := `
tee_types = ["sgx", "sim"]
measurements = ["` + m1 + `", "` + strings.Repeat("ab", 48) + `"]
signers = ["` + s1 + `"]
product_id = 3
min_svn = 2
accepted_tcb_statuses = ["UpToDate", "SWHardeningNeeded"]
accepted_advisories = ["INTEL-SA-00615"]
allow_debug = false
allow_simulation = true
max_collateral_age = "720h"
[collateral]
pccs = "https://pccs.example/sgx/certification/v4"
[simulation]
root_sha256 = "` + s2 + `"
`
	p, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if *p.ProductID != 3 || p.MinSVN != 2 || !p.AllowSimulation || p.MaxCollateralAge.Duration != 720*time.Hour ||
		p.Collateral.PCCS == "" || p.Simulation.RootSHA256 != s2 || len(p.Measurements) != 2 {
		t.Errorf("policy = %+v", p)
	}
	cases := []struct {
		name, toml, msg string
	}{
		{"unknown key", `tee_typs = ["sgx"]`, "unknown key(s) in policy"},
		{"unknown nested key", "[simulation]\nroot = \"x\"", "unknown key(s) in policy"},
		{"bad tee type", `tee_types = ["sgx", "nitro"]`, `tee_types: unknown TEE type "nitro" (known: sim, sgx, tdx, sev-snp)`},
		{"bad hex measurement", `measurements = ["zz` + m1[2:] + `"]`, "measurements: \"zz" + m1[2:] + "\": not lowercase hex"},
		{"uppercase measurement", `measurements = ["` + strings.ToUpper(m1) + `"]`, "not lowercase hex"},
		{"short measurement", `measurements = ["abcd"]`, "is 2 bytes, want [32 48]"},
		{"bad signer", `signers = ["` + m1[:10] + `"]`, "signers: \"" + m1[:10] + "\": is 5 bytes, want [32]"},
		{"48-byte signer", `signers = ["` + strings.Repeat("ab", 48) + `"]`, "is 48 bytes, want [32]"},
		{"bad tcb name", `accepted_tcb_statuses = ["UpToDate", "Uptodate"]`, `accepted_tcb_statuses: unknown status "Uptodate" (known: UpToDate, SWHardeningNeeded`},
		{"bad sim root", "[simulation]\nroot_sha256 = \"xyz\"", "simulation.root_sha256: not lowercase hex"},
		{"bad duration", `max_collateral_age = "30 days"`, `invalid duration "30 days"`},
		{"negative duration", `max_collateral_age = "-1h"`, "max_collateral_age must not be negative"},
		{"wrong type", `allow_debug = "yes"`, ""},
		{"not toml", `tee_types = [`, ""},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.toml))
		if err == nil {
			t.Errorf("%s: ParsePolicy succeeded", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: error %q does not contain %q", c.name, err, c.msg)
		}
	}
	if _, err := Load(t.TempDir() + "/none.toml"); err == nil || !strings.Contains(err.Error(), "read trust policy") {
		t.Errorf("Load(missing) = %v", err)
	}
}

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
	p, err := Parse([]byte(good))
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
		if _, err := Parse([]byte(tc.toml)); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: error %v, want %q", tc.toml, err, tc.msg)
		}
	}
}
