package attestcmd

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mse-in-go/mse/internal/attest/sgx/pcs/pcstest"
)

const td = "../../attest/sgx/testdata/"

const (
	phalaQuote      = td + "good_phala_quote.bin"
	phalaCollateral = td + "good_phala_collateral.json"
	phalaAt         = "2025-07-01T00:00:00Z"
	phalaMREnclave  = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
	phalaMRSigner   = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
	gramineMR       = "0866e7ca11b9f4efe4bf39b2607f4e1299f111920d96d95719080f01b62b7585"
)

func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	c := New()
	var out, errb bytes.Buffer
	c.SetOut(&out)
	c.SetErr(&errb)
	c.SetArgs(args)
	err := c.Execute()
	return out.String(), errb.String(), err
}

func runJSON(t *testing.T, args ...string) (*Result, error) {
	t.Helper()
	out, _, err := run(t, append(args, "--json")...)
	var r Result
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil {
		t.Fatalf("output is not JSON (%v): %q, error %v", jerr, out, err)
	}
	if (err == nil) != r.Verified {
		t.Fatalf("exit error %v but verified=%v", err, r.Verified)
	}
	if err != nil && r.Error == "" {
		t.Fatal("failure without an error in the JSON")
	}
	return &r, err
}

func TestVerifyJSON(t *testing.T) {
	pccs := pcstest.New(t, phalaCollateral, "processor")
	policyOK := writeFile(t, "ok.toml", `tee_types = ["sgx"]
measurements = ["`+phalaMREnclave+`"]
accepted_tcb_statuses = ["ConfigurationAndSWHardeningNeeded"]
accepted_advisories = ["INTEL-SA-00289", "INTEL-SA-00615"]
`)
	policyOther := writeFile(t, "other.toml", `tee_types = ["sgx"]
signers = ["`+strings.Repeat("ab", 32)+`"]
`)
	policyCollateral := writeFile(t, "coll.toml", `tee_types = ["sgx"]
measurements = ["`+phalaMREnclave+`"]
[collateral]
file = "`+phalaCollateral+`"
`)
	acceptPhala := []string{"--accept-tcb", "ConfigurationAndSWHardeningNeeded", "--accept-advisories", "INTEL-SA-00289,INTEL-SA-00615"}
	for _, tc := range []struct {
		name     string
		args     []string
		verified bool
		errHas   string
		check    func(t *testing.T, r *Result)
	}{
		{"phala default policy", []string{phalaQuote, "--collateral", phalaCollateral, "--at", phalaAt}, false,
			"TCB status ConfigurationAndSWHardeningNeeded is not accepted", func(t *testing.T, r *Result) {
				if r.TCBStatus != "ConfigurationAndSWHardeningNeeded" || !slices.Equal(r.AdvisoryIDs, []string{"INTEL-SA-00289", "INTEL-SA-00615"}) {
					t.Errorf("TCB %s %v", r.TCBStatus, r.AdvisoryIDs)
				}
				if r.MREnclave != phalaMREnclave || r.MRSigner != phalaMRSigner || *r.ISVProdID != 0 || *r.ISVSVN != 0 || *r.Debug {
					t.Errorf("identity %+v", r)
				}
				if !strings.HasPrefix(r.ReportData, "48656c6c6f") || r.PubkeyBound != nil || r.TEE != "sgx" || r.Input != "quote" {
					t.Errorf("report data %s bound %v", r.ReportData, r.PubkeyBound)
				}
			}},
		{"phala accepted by flags", append([]string{phalaQuote, "--collateral", phalaCollateral, "--at", phalaAt}, acceptPhala...), true, "", nil},
		{"phala status accepted, advisories not", []string{phalaQuote, "--collateral", phalaCollateral, "--at", phalaAt, "--accept-tcb", "ConfigurationAndSWHardeningNeeded"}, false, "advisory INTEL-SA-00289", nil},
		{"phala via PCCS", append([]string{phalaQuote, "--pccs", pccs.URL, "--at", phalaAt}, acceptPhala...), true, "", func(t *testing.T, r *Result) {
			if !strings.HasPrefix(r.Collateral, "pccs ") || r.CollateralIssued != "2025-03-20T11:21:57Z" {
				t.Errorf("collateral %q issued %q", r.Collateral, r.CollateralIssued)
			}
		}},
		{"phala policy file", []string{phalaQuote, "--collateral", phalaCollateral, "--at", phalaAt, "--policy", policyOK}, true, "", nil},
		{"phala policy other signer", []string{phalaQuote, "--collateral", phalaCollateral, "--at", phalaAt, "--policy", policyOther}, false, "MRSIGNER 815f42f1", nil},
		{"phala policy collateral", []string{phalaQuote, "--at", phalaAt, "--policy", policyCollateral}, false, "TCB status ConfigurationAndSWHardeningNeeded", func(t *testing.T, r *Result) {
			if !strings.HasPrefix(r.Collateral, "file ") {
				t.Errorf("collateral %q", r.Collateral)
			}
		}},
		{"phala expired collateral", []string{phalaQuote, "--collateral", phalaCollateral, "--at", "2025-07-20T00:00:00Z"}, false, "expired", func(t *testing.T, r *Result) {
			if r.MREnclave != "" {
				t.Error("values of evidence that is not genuine are shown")
			}
		}},
		{"phala no collateral", []string{phalaQuote, "--no-collateral", "--at", phalaAt}, true, "", func(t *testing.T, r *Result) {
			if r.TCBStatus != "unchecked" || len(r.Warnings) == 0 || r.Collateral != "none" {
				t.Errorf("TCB %s warnings %v", r.TCBStatus, r.Warnings)
			}
		}},
		{"oasis no collateral", []string{td + "good_oasis_quote.bin", "--no-collateral", "--at", "2022-12-20T00:50:04Z"}, true, "", func(t *testing.T, r *Result) {
			if r.MREnclave != "68823bc62f409ee33a32ea270cfe45d4b19a6fb3c8570d7bc186cbe062398e8f" {
				t.Errorf("mrenclave %s", r.MREnclave)
			}
		}},
		{"oasis with phala collateral", []string{td + "good_oasis_quote.bin", "--collateral", phalaCollateral, "--at", phalaAt}, false, "FMSPC", nil},
		{"eppid", []string{td + "fail_oasis_eppid_quote.bin", "--no-collateral"}, false, "certification data type 3 (encrypted PPID) is not supported: the quote must carry a PCK chain", nil},
		{"gramine debug refused", []string{td + "good_gramine_cert.pem", "--no-collateral", "--at", "2025-01-01T00:00:00Z"}, false, "debug mode", func(t *testing.T, r *Result) {
			if !*r.Debug || r.MREnclave != gramineMR || r.PubkeyBound == nil || !*r.PubkeyBound || r.Input != "certificate" {
				t.Errorf("%+v", r)
			}
		}},
		{"gramine allow debug", []string{td + "good_gramine_cert.pem", "--no-collateral", "--at", "2025-01-01T00:00:00Z", "--allow-debug"}, true, "", func(t *testing.T, r *Result) {
			if r.EvidenceFormat != "tcg-dice-tagged-evidence" || !*r.PubkeyBound || r.Details["certificate_self_signed"] != "true" || r.Details["other_evidence"] != "gramine-legacy" {
				t.Errorf("%+v", r)
			}
		}},
		{"gramine after PCK expiry", []string{td + "good_gramine_cert.pem", "--no-collateral", "--at", "2030-01-01T00:00:00Z", "--allow-debug"}, false, "expired", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := runJSON(t, append([]string{"verify"}, tc.args...)...)
			if r.Verified != tc.verified {
				t.Fatalf("verified=%v (%v), want %v", r.Verified, err, tc.verified)
			}
			if tc.errHas != "" && !strings.Contains(r.Error, tc.errHas) {
				t.Fatalf("error %q does not contain %q", r.Error, tc.errHas)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

func TestVerifyHuman(t *testing.T) {
	out, stderr, err := run(t, "verify", phalaQuote, "--no-collateral", "--at", phalaAt)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"VERIFIED", phalaMREnclave, "tcb_status", "unchecked"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(stderr, "NOT checked") {
		t.Errorf("--no-collateral does not say so: %q", stderr)
	}
	out, _, err = run(t, "verify", phalaQuote, "--collateral", phalaCollateral, "--at", phalaAt)
	if err == nil || !strings.Contains(out, "NOT VERIFIED") || !strings.Contains(out, "ConfigurationAndSWHardeningNeeded") {
		t.Errorf("refused quote: %v\n%s", err, out)
	}
}

func TestVerifyUsage(t *testing.T) {
	trunc := writeFile(t, "trunc.bin", "\x03\x00\x02\x00")
	big := filepath.Join(t.TempDir(), "big.bin")
	if err := os.WriteFile(big, make([]byte, maxInput+1), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"verify", phalaQuote}, "no collateral source"},
		{[]string{"verify", phalaQuote, "--no-collateral", "--collateral", phalaCollateral}, "cannot be combined"},
		{[]string{"verify", phalaQuote, "--collateral", phalaCollateral, "--pccs", "http://127.0.0.1:1"}, "not both"},
		{[]string{"verify", phalaQuote, "--no-collateral", "--at", "yesterday"}, "RFC 3339"},
		{[]string{"verify", phalaQuote, "--no-collateral", "--accept-tcb", "Fine"}, "unknown status"},
		{[]string{"verify", filepath.Join(t.TempDir(), "none"), "--no-collateral"}, "no such file"},
		{[]string{"verify", trunc, "--no-collateral"}, "truncated"},
		{[]string{"verify", big, "--no-collateral"}, "larger than"},
		{[]string{"verify", phalaQuote, "--collateral", writeFile(t, "bad.json", "{}")}, "missing"},
	} {
		_, _, err := run(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Collateral fetched from a PCCS into a bundle verifies like the original.
func TestCollateralBundle(t *testing.T) {
	pccs := pcstest.New(t, phalaCollateral, "processor")
	out := filepath.Join(t.TempDir(), "bundle.json")
	if _, _, err := run(t, "collateral", phalaQuote, "--pccs", pccs.URL, "-o", out); err != nil {
		t.Fatal(err)
	}
	r, err := runJSON(t, "verify", phalaQuote, "--collateral", out, "--at", phalaAt, "--accept-tcb", "ConfigurationAndSWHardeningNeeded", "--accept-advisories", "INTEL-SA-00289,INTEL-SA-00615")
	if err != nil || r.TCBStatus != "ConfigurationAndSWHardeningNeeded" {
		t.Fatalf("%v %+v", err, r)
	}
	if _, _, err := run(t, "collateral", phalaQuote); err == nil {
		t.Fatal("collateral without --pccs")
	}
	if _, _, err := run(t, "collateral", td+"good_oasis_quote.bin", "--pccs", pccs.URL); err == nil || !strings.Contains(err.Error(), "no TCB info") {
		t.Fatalf("unknown FMSPC: %v", err)
	}
}
