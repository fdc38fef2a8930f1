package pcs

import (
	"context"
	"strings"
	"testing"
)

// TestTDXTCBInfo reads TDX TCB info v3 (TDX components, the TDX module and
// its identities) from the TDX vector's bundle.
func TestTDXTCBInfo(t *testing.T) {
	b, err := LoadBundle("../../tdx/testdata/good_phala_collateral.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.TDXCollateral(context.Background(), "B0C06F000000", CAPlatform)
	if err != nil {
		t.Fatal(err)
	}
	i := c.TCBInfo
	if i.ID != TCBInfoTDX || i.Version != 3 || i.TDXModule == nil || len(i.TDXModuleIdentities) != 2 || c.QEIdentity.ID != "TD_QE" {
		t.Fatalf("TCB info %+v", i)
	}
	l := i.TCBLevels[0].TCB
	if !l.HasTDX || l.TDXCompSVN[0] != 5 || l.TDXCompSVN[2] != 2 || l.PCESVN != 11 || l.CompTypes[7] != "SEAMLDR ACM" || l.TDXCompTypes[0] != "TDX Module" {
		t.Errorf("level 0 TCB %+v", l)
	}
	m := i.TDXModuleIdentities[1]
	if m.ID != "TDX_01" || len(m.TCBLevels) != 2 || m.TCBLevels[0].TCB.ISVSVN != 4 || m.AttributesMask != [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff} {
		t.Errorf("module identity %+v", m)
	}
	// An SGX bundle's levels have no TDX components.
	s, err := LoadBundle("../testdata/good_phala_collateral.json")
	if err != nil {
		t.Fatal(err)
	}
	if s.Contents().TCBInfo.TCBLevels[0].TCB.HasTDX || s.Contents().TCBInfo.TDXModule != nil {
		t.Error("SGX TCB info has TDX parts")
	}
}

func TestTDXTCBInfoRefusals(t *testing.T) {
	lvl := `{"tcb":{"sgxtcbcomponents":[` + strings.Repeat(`{"svn":1},`, 15) + `{"svn":1}],"pcesvn":1%s},"tcbDate":"2024-03-13T00:00:00Z","tcbStatus":"UpToDate"}`
	tdx := `,"tdxtcbcomponents":[` + strings.Repeat(`{"svn":1},`, 15) + `{"svn":1}]`
	mod := `"tdxModule":{"mrsigner":"` + strings.Repeat("00", 48) + `","attributes":"0000000000000000","attributesMask":"FFFFFFFFFFFFFFFF"}`
	for _, tc := range []struct{ name, json, want string }{
		{"no TDX components", `{"id":"TDX","version":3,` + mod + `,"tcbLevels":[` + strings.Replace(lvl, "%s", "", 1) + `]}`, "has no tdxtcbcomponents"},
		{"15 TDX components", `{"id":"TDX","version":3,` + mod + `,"tcbLevels":[` + strings.Replace(lvl, "%s", tdx[:strings.LastIndex(tdx, ",")]+"]", 1) + `]}`, "tdxtcbcomponents is not 16 components"},
		{"short module signer", `{"id":"TDX","version":3,"tdxModule":{"mrsigner":"00","attributes":"0000000000000000","attributesMask":"FFFFFFFFFFFFFFFF"},"tcbLevels":[` + strings.Replace(lvl, "%s", tdx, 1) + `]}`, "tdxModule mrsigner"},
		{"module identity status", `{"id":"TDX","version":3,` + mod + `,"tdxModuleIdentities":[{"id":"TDX_01","mrsigner":"` + strings.Repeat("00", 48) + `","attributes":"0000000000000000","attributesMask":"FFFFFFFFFFFFFFFF","tcbLevels":[{"tcb":{"isvsvn":1},"tcbStatus":"Fine"}]}],"tcbLevels":[` + strings.Replace(lvl, "%s", tdx, 1) + `]}`, `unknown tcbStatus "Fine"`},
		{"module identity without levels", `{"id":"TDX","version":3,` + mod + `,"tdxModuleIdentities":[{"id":"TDX_01","mrsigner":"` + strings.Repeat("00", 48) + `","attributes":"0000000000000000","attributesMask":"FFFFFFFFFFFFFFFF","tcbLevels":[]}],"tcbLevels":[` + strings.Replace(lvl, "%s", tdx, 1) + `]}`, "has 0 TCB levels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseTCBInfo([]byte(tc.json))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
	// A well-formed one parses.
	if _, err := ParseTCBInfo([]byte(`{"id":"TDX","version":3,` + mod + `,"tcbLevels":[` + strings.Replace(lvl, "%s", tdx, 1) + `]}`)); err != nil {
		t.Errorf("well-formed TDX TCB info: %v", err)
	}
}
