package attestcmd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sgx/pcs/pcstest"
	snpabi "github.com/mse-in-go/mse/internal/attest/snp/abi"
	"github.com/mse-in-go/mse/internal/ratls"
)

const (
	tdxTD         = "../../attest/tdx/testdata/"
	tdxQuote      = tdxTD + "good_phala_quote_v4.bin"
	tdxCollateral = tdxTD + "good_phala_collateral.json"
	tdxOld        = tdxTD + "fail_phala_outdated_quote_v5.bin"
	tdxOldColl    = tdxTD + "fail_phala_outdated_collateral.json"
	tdxAt         = "2025-07-01T00:00:00Z"
	tdxMRTD       = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
	snpTD         = "../../attest/snp/testdata/"
	snpReport     = snpTD + "good_gosevguest_report_v2.bin"
	snpVCEK       = snpTD + "good_gosevguest_vcek.der"
	snpAt         = "2025-07-01T00:00:00Z"
)

// staticIssuer returns recorded evidence whatever report data it is asked
// to bind: the certificate it makes is well-formed but not bound.
type staticIssuer struct {
	tee string
	ev  []byte
}

func (s staticIssuer) Type() string { return s.tee }
func (s staticIssuer) Issue(context.Context, [64]byte) ([]byte, error) {
	return s.ev, nil
}

func certFile(t *testing.T, tee string, evidence []byte) string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _, err := ratls.NewCertificate(context.Background(), key, staticIssuer{tee, evidence}, ratls.Template{
		NotBefore: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		Claims: attest.Claims{AppID: "x"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, tee+".pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
}

func readT(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerifyTDX(t *testing.T) {
	pccs := pcstest.New(t, tdxCollateral, "platform")
	for _, tc := range []struct {
		name     string
		args     []string
		verified bool
		errHas   string
		check    func(t *testing.T, r *Result)
	}{
		{"phala up to date", []string{tdxQuote, "--collateral", tdxCollateral, "--at", tdxAt}, true, "", func(t *testing.T, r *Result) {
			if r.TEE != "tdx" || r.MRTD != tdxMRTD || r.TCBStatus != "UpToDate" || len(r.AdvisoryIDs) != 0 || *r.Debug ||
				r.TDAttributes != "0000001000000000" || len(r.RTMR0) != 96 || len(r.RTMR3) != 96 || r.MREnclave != "" || r.ISVSVN != nil ||
				r.Input != "quote" || r.EvidenceFormat != "tdx-dcap-quote" || !strings.HasPrefix(r.ReportData, "9a9d48e7") {
				t.Errorf("%+v", r)
			}
			if r.Details["tdx_module_identity"] != "TDX_01" || r.Details["quote_version"] != "4" {
				t.Errorf("details %v", r.Details)
			}
		}},
		{"phala via PCCS", []string{tdxQuote, "--pccs", pccs.URL, "--at", tdxAt}, true, "", func(t *testing.T, r *Result) {
			if !strings.HasPrefix(r.Collateral, "pccs ") {
				t.Errorf("collateral %q", r.Collateral)
			}
		}},
		{"outdated refused, saying why", []string{tdxOld, "--collateral", tdxOldColl, "--at", "2026-03-01T00:00:00Z"}, false, "the TDX quote is genuine, but its platform is refused: the platform's TCB is below every TCB level in the TDX TCB info (SGX TCB component 8 (SEAMLDR ACM) SVN 3 < 5", nil},
		{"outdated is genuine", []string{tdxOld, "--no-collateral", "--at", "2026-03-01T00:00:00Z"}, true, "", func(t *testing.T, r *Result) {
			if r.TCBStatus != "unchecked" || len(r.Warnings) == 0 || r.Details["quote_version"] != "5" {
				t.Errorf("%+v", r)
			}
		}},
		{"SGX collateral", []string{tdxQuote, "--collateral", phalaCollateral, "--at", tdxAt}, false, `has id "SGX", want "TDX"`, nil},
		{"expired collateral", []string{tdxQuote, "--collateral", tdxCollateral, "--at", "2025-07-25T00:00:00Z"}, false, "expired", func(t *testing.T, r *Result) {
			if r.MRTD != "" {
				t.Error("values of evidence that is not genuine are shown")
			}
		}},
		{"policy MRTD", []string{tdxQuote, "--collateral", tdxCollateral, "--at", tdxAt, "--policy", writeFile(t, "tdx.toml", "tee_types = [\"tdx\"]\nmeasurements = [\""+tdxMRTD+"\"]\n[tdx]\nrtmr3 = [\""+strings.Repeat("00", 48)+"\"]\n")}, true, "", nil},
		{"policy other RTMR1", []string{tdxQuote, "--collateral", tdxCollateral, "--at", tdxAt, "--policy", writeFile(t, "tdx.toml", "tee_types = [\"tdx\"]\nmeasurements = [\""+tdxMRTD+"\"]\n[tdx]\nrtmr1 = [\""+strings.Repeat("ab", 48)+"\"]\n")}, false, "RTMR1 (kernel and boot loader)", nil},
		{"forced sgx", []string{tdxQuote, "--tee", "sgx", "--no-collateral"}, false, "sgx quote: version 4 is not supported", nil},
		{"flipped MRTD", []string{writeFile(t, "flip.bin", string(flip(readT(t, tdxQuote), 48+136))), "--collateral", tdxCollateral, "--at", tdxAt}, false, "quote signature does not verify", nil},
		{"certificate not bound", []string{certFile(t, "tdx", readT(t, tdxQuote)), "--collateral", tdxCollateral, "--at", tdxAt}, false, "not bound", func(t *testing.T, r *Result) {
			if r.Input != "certificate" || r.TEE != "tdx" || r.PubkeyBound == nil || *r.PubkeyBound || r.MRTD != tdxMRTD || r.EvidenceFormat != "tcg-dice-tagged-evidence" {
				t.Errorf("%+v", r)
			}
		}},
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

func flip(b []byte, off int) []byte {
	c := append([]byte(nil), b...)
	c[off] ^= 1
	return c
}

func TestVerifySNP(t *testing.T) {
	report := readT(t, snpReport)
	withTable := writeFile(t, "ext.bin", string(append(append([]byte(nil), report...), snpabi.MarshalCertTable([]snpabi.CertEntry{{GUID: snpabi.GUIDVCEK, Data: readT(t, snpVCEK)}})...)))
	var chip [64]byte
	copy(chip[:], report[0x1A0:])
	kdsSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/vcek/v1/Milan/"+hex.EncodeToString(chip[:]) && r.URL.RawQuery == "blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68" {
			w.Write(readT(t, snpVCEK))
			return
		}
		http.NotFound(w, r) // no CRL: there is no real one to serve
	}))
	defer kdsSrv.Close()
	vcekPEM := writeFile(t, "vcek.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: readT(t, snpVCEK)})))
	for _, tc := range []struct {
		name     string
		args     []string
		verified bool
		errHas   string
		check    func(t *testing.T, r *Result)
	}{
		{"debug guest refused", []string{snpReport, "--vcek", snpVCEK, "--no-collateral", "--at", snpAt}, false, "debug mode", func(t *testing.T, r *Result) {
			if r.TEE != "sev-snp" || !strings.HasPrefix(r.Measurement, "b07af962") || r.GuestPolicy != "b0000" || !*r.Debug ||
				len(r.HostData) != 64 || len(r.ChipID) != 128 || r.ReportedTCB == "" || r.Input != "report" || r.TCBStatus != "unchecked" {
				t.Errorf("%+v", r)
			}
		}},
		{"allowed debug, VCEK given", []string{snpReport, "--vcek", snpVCEK, "--no-collateral", "--at", snpAt, "--allow-debug"}, true, "", func(t *testing.T, r *Result) {
			if r.Details["endorsement_key_source"] != "given" || len(r.Warnings) == 0 || r.Details["product"] != "Milan" {
				t.Errorf("%+v", r)
			}
		}},
		{"VCEK as PEM", []string{snpReport, "--vcek", vcekPEM, "--no-collateral", "--at", snpAt, "--allow-debug"}, true, "", nil},
		{"VCEK from the certificate table", []string{withTable, "--no-collateral", "--at", snpAt, "--allow-debug"}, true, "", func(t *testing.T, r *Result) {
			if r.Details["endorsement_key_source"] != "certificate table" || r.EvidenceFormat != "sev-snp-report+certificate-table" {
				t.Errorf("%+v", r)
			}
		}},
		{"VCEK from KDS, no CRL there", []string{snpReport, "--kds", kdsSrv.URL, "--at", snpAt, "--allow-debug"}, false, "obtain the CRL of ARK-Milan", nil},
		{"no VCEK", []string{snpReport, "--no-collateral", "--at", snpAt}, false, "pass the VCEK with --vcek", nil},
		{"VCEK expired", []string{snpReport, "--vcek", snpVCEK, "--no-collateral", "--at", "2030-01-01T00:00:00Z", "--allow-debug"}, false, "expired on 2029-", nil},
		{"flipped measurement", []string{writeFile(t, "flip.bin", string(flip(report, 0x90))), "--vcek", snpVCEK, "--no-collateral", "--at", snpAt, "--allow-debug"}, false, "report signature does not verify", nil},
		{"policy host data", []string{snpReport, "--vcek", snpVCEK, "--no-collateral", "--at", snpAt, "--policy", writeFile(t, "snp.toml", "tee_types = [\"sev-snp\"]\nallow_debug = true\naccepted_tcb_statuses = [\"unchecked\"]\nmeasurements = [\""+hex.EncodeToString(report[0x90:0xC0])+"\"]\n[sev_snp]\nhost_data = [\""+strings.Repeat("ab", 32)+"\"]\n")}, false, "HOST_DATA", nil},
		{"certificate not bound", []string{certFile(t, "sev-snp", report), "--vcek", snpVCEK, "--no-collateral", "--at", snpAt, "--allow-debug"}, false, "not bound", func(t *testing.T, r *Result) {
			if r.Input != "certificate" || r.TEE != "sev-snp" || r.PubkeyBound == nil || *r.PubkeyBound {
				t.Errorf("%+v", r)
			}
		}},
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

func TestVerifyTEEUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"verify", snpReport, "--vcek", snpVCEK}, "no collateral source: pass --collateral FILE (AMD's CRL"},
		{[]string{"verify", snpReport, "--pccs", "http://127.0.0.1:1"}, "--pccs is Intel's"},
		{[]string{"verify", tdxQuote, "--no-collateral", "--policy", writeFile(t, "sgx.toml", "tee_types = [\"sgx\"]\nmeasurements = [\""+phalaMREnclave+"\"]\n")}, "does not accept the tdx TEE type"},
		{[]string{"verify", snpReport, "--no-collateral", "--kds", "http://127.0.0.1:1"}, "cannot be combined"},
		{[]string{"verify", tdxQuote, "--vcek", snpVCEK, "--no-collateral"}, "are for SEV-SNP evidence"},
		{[]string{"verify", tdxQuote, "--tee", "nitro", "--no-collateral"}, "is not one of sgx, tdx, sev-snp"},
		{[]string{"verify", writeFile(t, "junk.bin", strings.Repeat("x", 2000)), "--no-collateral"}, "pass --tee"},
		{[]string{"verify", snpReport, "--collateral", writeFile(t, "crl.pem", "not a crl"), "--vcek", snpVCEK}, "CRL bundle"},
	} {
		_, _, err := run(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestVerifyTDXHuman(t *testing.T) {
	out, _, err := run(t, "verify", tdxQuote, "--collateral", tdxCollateral, "--at", tdxAt)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"VERIFIED: genuine TDX quote", "mrtd", tdxMRTD, "rtmr2", "UpToDate", "td_attributes"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, _, _ = run(t, "verify", snpReport, "--vcek", snpVCEK, "--no-collateral", "--at", snpAt, "--allow-debug")
	for _, want := range []string{"VERIFIED: genuine SEV-SNP report", "measurement", "host_data", "reported_tcb", "chip_id"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestPlatformVerifier(t *testing.T) {
	now := func() time.Time { return time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC) }
	p := &attest.Policy{TEETypes: []string{"tdx"}}
	if _, err := PlatformVerifier("tdx", p, now); err == nil || !strings.Contains(err.Error(), "needs collateral") {
		t.Errorf("tdx without collateral: %v", err)
	}
	p.Collateral.File = tdxCollateral
	v, err := PlatformVerifier("tdx", p, now)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Verify(context.Background(), readT(t, tdxQuote))
	if err != nil || got.TCBStatus != "UpToDate" || v.Type() != "tdx" {
		t.Errorf("tdx: %v %+v", err, got)
	}
	if _, err := PlatformVerifier("sev-snp", p, now); err == nil || !strings.Contains(err.Error(), "needs a CRL") {
		t.Errorf("sev-snp without CRL: %v", err)
	}
	p.SEVSNP.KDS = "http://127.0.0.1:1"
	v, err = PlatformVerifier("sev-snp", p, now)
	if err != nil || v.Type() != "sev-snp" {
		t.Fatal(err)
	}
	// Evidence with its VCEK, but the CRL cannot be fetched: refused, saying so.
	ev := append(readT(t, snpReport), snpabi.MarshalCertTable([]snpabi.CertEntry{{GUID: snpabi.GUIDVCEK, Data: readT(t, snpVCEK)}})...)
	if _, err := v.Verify(context.Background(), ev); err == nil || !strings.Contains(err.Error(), "obtain the CRL of ARK-Milan") {
		t.Errorf("sev-snp with unreachable KDS: %v", err)
	}
	if _, err := PlatformVerifier("sgx", p, now); err == nil {
		t.Error("sgx is not a confidential-VM type here")
	}
}

// TestCollateralTDX fetches a TDX quote's collateral from a PCCS's TDX
// endpoints into a bundle that verifies like the original.
func TestCollateralTDX(t *testing.T) {
	pccs := pcstest.New(t, tdxCollateral, "platform")
	out := filepath.Join(t.TempDir(), "tdx-bundle.json")
	if _, _, err := run(t, "collateral", tdxQuote, "--pccs", pccs.URL, "-o", out); err != nil {
		t.Fatal(err)
	}
	r, err := runJSON(t, "verify", tdxQuote, "--collateral", out, "--at", tdxAt)
	if err != nil || r.TCBStatus != "UpToDate" {
		t.Fatalf("%v %+v", err, r)
	}
	if !strings.Contains(string(readT(t, out)), `\"id\":\"TDX\"`) {
		t.Error("the bundle does not hold TDX TCB info")
	}
}
