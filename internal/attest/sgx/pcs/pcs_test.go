package pcs

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest/sgx/abi"
	"github.com/mse-in-go/mse/internal/attest/sgx/pcs/pcstest"
)

const testdata = "../testdata/"

func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(testdata + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func phalaBundle(t testing.TB) *BundleJSON {
	t.Helper()
	var j BundleJSON
	if err := json.Unmarshal(read(t, "good_phala_collateral.json"), &j); err != nil {
		t.Fatal(err)
	}
	return &j
}

func TestParseBundle(t *testing.T) {
	c, err := ParseBundle(read(t, "good_phala_collateral.json"))
	if err != nil {
		t.Fatal(err)
	}
	if c.TCBInfo.FMSPC != "00A067110000" || c.TCBInfo.Version != 3 || len(c.TCBInfo.TCBLevels) == 0 {
		t.Errorf("TCB info: %+v", c.TCBInfo)
	}
	if c.TCBInfo.TCBLevels[0].TCB.CompSVN[6] != 12 || c.TCBInfo.TCBLevels[0].TCB.PCESVN != 13 {
		t.Errorf("TCB level 0: %+v", c.TCBInfo.TCBLevels[0].TCB)
	}
	if c.QEIdentity.ID != "QE" || c.QEIdentity.ISVProdID != 1 || c.QEIdentity.MRSigner[0] != 0x8c {
		t.Errorf("QE identity: %+v", c.QEIdentity)
	}
	want := time.Date(2025, 3, 20, 11, 21, 57, 0, time.UTC)
	if !c.Issued().Equal(want) {
		t.Errorf("Issued = %s, want %s", c.Issued(), want)
	}
	if want := time.Date(2025, 7, 19, 10, 1, 18, 0, time.UTC); !c.NextUpdate().Equal(want) {
		t.Errorf("NextUpdate = %s, want %s", c.NextUpdate(), want)
	}
	// Round trip through MarshalBundle.
	b, err := MarshalBundle(c)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ParseBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	if string(c2.TCBInfoRaw) != string(c.TCBInfoRaw) || string(c2.PCKCRL.Raw) != string(c.PCKCRL.Raw) {
		t.Error("round trip changed the collateral")
	}
}

func TestParseBundleFail(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(j *BundleJSON)
		want string
	}{
		{"no pck crl", func(j *BundleJSON) { j.PCKCRL = "" }, "pck_crl is missing"},
		{"bad crl", func(j *BundleJSON) { j.RootCACRL = "zz" }, "root_ca_crl"},
		{"bad signature", func(j *BundleJSON) { j.TCBInfoSignature = "00" }, "tcb_info_signature"},
		{"bad tcb info", func(j *BundleJSON) { j.TCBInfo = "{" }, "tcb_info"},
		{"unknown status", func(j *BundleJSON) { j.TCBInfo = strings.Replace(j.TCBInfo, "OutOfDate", "Fine", 1) }, "unknown tcbStatus"},
		{"bad advisory", func(j *BundleJSON) { j.TCBInfo = strings.Replace(j.TCBInfo, "INTEL-SA-00615", "in tel", 1) }, "malformed advisory"},
		{"15 components", func(j *BundleJSON) { j.TCBInfo = strings.Replace(j.TCBInfo, `{"svn":11},`, "", 1) }, "16 components"},
		{"bad mrsigner", func(j *BundleJSON) { j.QEIdentity = strings.Replace(j.QEIdentity, "8C4F", "8C4", 1) }, "mrsigner"},
		{"bad chain", func(j *BundleJSON) { j.TCBInfoIssuerChain = "junk" }, "tcb_info_issuer_chain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := phalaBundle(t)
			tc.edit(j)
			if _, err := j.Parse(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := ParseBundle([]byte(`{"unknown": 1}`)); err == nil {
		t.Error("unknown field accepted")
	}
	if _, err := ParseBundle(make([]byte, MaxBundleSize+1)); err == nil {
		t.Error("oversized bundle accepted")
	}
}

func TestLoadBundle(t *testing.T) {
	b, err := LoadBundle(testdata + "good_phala_collateral.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.Collateral(context.Background(), "00A067110000", CAProcessor)
	if err != nil || c != b.Contents() {
		t.Fatal(err)
	}
	if _, err := LoadBundle(filepath.Join(t.TempDir(), "none.json")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestTCBInfoV2(t *testing.T) {
	v2 := `{"version":2,"issueDate":"2022-01-01T00:00:00Z","nextUpdate":"2022-02-01T00:00:00Z","fmspc":"00906EA10000","pceId":"0000","tcbType":0,"tcbEvaluationDataNumber":12,"tcbLevels":[{"tcb":{` +
		`"sgxtcbcomp01svn":1,"sgxtcbcomp02svn":2,"sgxtcbcomp03svn":3,"sgxtcbcomp04svn":4,"sgxtcbcomp05svn":5,"sgxtcbcomp06svn":6,"sgxtcbcomp07svn":7,"sgxtcbcomp08svn":8,` +
		`"sgxtcbcomp09svn":9,"sgxtcbcomp10svn":10,"sgxtcbcomp11svn":11,"sgxtcbcomp12svn":12,"sgxtcbcomp13svn":13,"sgxtcbcomp14svn":14,"sgxtcbcomp15svn":15,"sgxtcbcomp16svn":16,"pcesvn":9},` +
		`"tcbDate":"2021-11-10T00:00:00Z","tcbStatus":"UpToDate"}]}`
	info, err := ParseTCBInfo([]byte(v2))
	if err != nil {
		t.Fatal(err)
	}
	if info.TCBLevels[0].TCB.CompSVN[15] != 16 || info.TCBLevels[0].TCB.PCESVN != 9 {
		t.Fatalf("%+v", info.TCBLevels[0].TCB)
	}
}

func TestPCKExtensions(t *testing.T) {
	for _, tc := range []struct {
		file, fmspc, ca string
		pcesvn          uint16
	}{
		{"good_phala_quote.bin", "00A067110000", CAProcessor, 13},
		{"good_oasis_quote.bin", "00606A000000", CAPlatform, 13},
	} {
		q, err := abi.ParseQuote(read(t, tc.file))
		if err != nil {
			t.Fatal(err)
		}
		chain, err := abi.ParsePCKChain(q.CertData)
		if err != nil {
			t.Fatal(err)
		}
		p, err := ParsePCKExtensions(chain[0])
		if err != nil {
			t.Fatal(err)
		}
		if p.FMSPCHex() != tc.fmspc || p.PCEIDHex() != "0000" || len(p.PPID) != 16 {
			t.Errorf("%s: FMSPC %s PCEID %s", tc.file, p.FMSPCHex(), p.PCEIDHex())
		}
		if tc.ca == CAPlatform && (p.Configuration == nil || len(p.PlatformInstanceID) != 16) {
			t.Errorf("%s: platform CA certificate without configuration", tc.file)
		}
		t.Logf("%s: comps %v pcesvn %d cpusvn %x type %d", tc.file, p.CompSVN, p.PCESVN, p.CPUSVN, p.SGXType)
		if _, err := ParsePCKExtensions(chain[1]); err == nil {
			t.Errorf("%s: CA certificate has SGX extensions", tc.file)
		}
	}
}

func pckExtDER(t testing.TB) []byte {
	q, err := abi.ParseQuote(read(t, "good_phala_quote.bin"))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := abi.ParsePCKChain(q.CertData)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range chain[0].Extensions {
		if e.Id.Equal(OIDSGXExtensions) {
			return e.Value
		}
	}
	t.Fatal("no SGX extension")
	return nil
}

func TestPCKExtensionsFail(t *testing.T) {
	der := pckExtDER(t)
	if _, err := ParsePCKExtensionsDER(append(append([]byte{}, der...), 0)); err == nil {
		t.Error("trailing byte accepted")
	}
	if _, err := ParsePCKExtensionsDER(der[:len(der)-1]); err == nil {
		t.Error("truncated extension accepted")
	}
	if _, err := ParsePCKExtensionsDER([]byte{0x30, 0x00}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("empty extension: %v", err)
	}
}

func FuzzParsePCKExtensions(f *testing.F) {
	f.Add(pckExtDER(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParsePCKExtensionsDER(b)
	})
}

func FuzzParseBundle(f *testing.F) {
	f.Add(read(f, "good_phala_collateral.json"))
	f.Add([]byte(`{"tcb_info":"{}"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseBundle(b)
		if err == nil && (c.TCBInfo == nil || c.QEIdentity == nil || c.PCKCRL == nil || c.RootCACRL == nil) {
			t.Fatal("incomplete bundle accepted")
		}
	})
}

func FuzzParseTCBInfo(f *testing.F) {
	j := phalaBundle(f)
	f.Add([]byte(j.TCBInfo))
	f.Add([]byte(j.QEIdentity))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseTCBInfo(b)
		_, _ = ParseEnclaveIdentity(b)
	})
}

func TestClient(t *testing.T) {
	srv := pcstest.New(t, testdata+"good_phala_collateral.json", CAProcessor)
	now := time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)
	c := &Client{BaseURL: srv.URL, HTTPClient: srv.Client(), Now: func() time.Time { return now }}
	ctx := context.Background()
	got, err := c.Collateral(ctx, "00A067110000", CAProcessor)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ParseBundle(read(t, "good_phala_collateral.json"))
	if string(got.TCBInfoRaw) != string(want.TCBInfoRaw) || string(got.QEIdentityRaw) != string(want.QEIdentityRaw) ||
		string(got.PCKCRL.Raw) != string(want.PCKCRL.Raw) || string(got.RootCACRL.Raw) != string(want.RootCACRL.Raw) ||
		len(got.TCBInfoIssuerChain) != 2 || len(got.PCKCRLIssuerChain) != 2 {
		t.Fatal("client collateral differs from the recorded bundle")
	}
	if n := srv.Hits.Load(); n != 4 {
		t.Fatalf("%d requests, want 4", n)
	}
	// Cached until each item's next update.
	if _, err := c.Collateral(ctx, "00A067110000", CAProcessor); err != nil {
		t.Fatal(err)
	}
	if n := srv.Hits.Load(); n != 4 {
		t.Fatalf("%d requests after a cached call, want 4", n)
	}
	// After the QE identity's next update (2025-07-19T10:01:18Z) but before
	// the PCK CRL's (10:23:18), only the QE identity is fetched again.
	now = time.Date(2025, 7, 19, 10, 10, 0, 0, time.UTC)
	if _, err := c.Collateral(ctx, "00A067110000", CAProcessor); err != nil {
		t.Fatal(err)
	}
	if n := srv.Hits.Load(); n != 5 {
		t.Fatalf("%d requests after the QE identity expired, want 5", n)
	}
	// Errors name the cause.
	if _, err := c.Collateral(ctx, "00606A000000", CAProcessor); err == nil || !strings.Contains(err.Error(), "no TCB info for this FMSPC") {
		t.Fatalf("unknown FMSPC: %v", err)
	}
	if _, err := c.Collateral(ctx, "00A06711", CAProcessor); err == nil {
		t.Fatal("malformed FMSPC accepted")
	}
	if _, err := c.Collateral(ctx, "00A067110000", "other"); err == nil {
		t.Fatal("unknown CA accepted")
	}
}
