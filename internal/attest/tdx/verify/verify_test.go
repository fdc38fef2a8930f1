package verify

import (
	"strings"
	"testing"

	"github.com/mse-in-go/mse/internal/attest/sgx/pcs"
	"github.com/mse-in-go/mse/internal/attest/tdx/abi"
)

func info() *pcs.TCBInfo {
	lvl := func(isv int, status string, adv ...string) pcs.EnclaveTCBLevel {
		l := pcs.EnclaveTCBLevel{TCBStatus: status, AdvisoryIDs: adv}
		l.TCB.ISVSVN = isv
		return l
	}
	i := &pcs.TCBInfo{ID: pcs.TCBInfoTDX, Version: 3, FMSPC: "B0C06F000000", PCEID: "0000",
		TDXModule: &pcs.TDXModule{AttributesMask: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		TDXModuleIdentities: []pcs.TDXModuleIdentity{{ID: "TDX_01", TCBLevels: []pcs.EnclaveTCBLevel{
			lvl(6, pcs.StatusUpToDate), lvl(4, pcs.StatusOutOfDate, "INTEL-SA-01036")}}},
	}
	i.TDXModuleIdentities[0].AttributesMask = i.TDXModule.AttributesMask
	up := pcs.TCBLevel{TCBStatus: pcs.StatusUpToDate}
	up.TCB = pcs.TCB{CompSVN: [16]byte{3, 3}, PCESVN: 13, TDXCompSVN: [16]byte{5, 0, 3}, HasTDX: true}
	up.TCB.CompTypes[1] = "SGX Late Microcode Update"
	old := pcs.TCBLevel{TCBStatus: pcs.StatusOutOfDate, AdvisoryIDs: []string{"INTEL-SA-01079"}}
	old.TCB = pcs.TCB{CompSVN: [16]byte{2, 2}, PCESVN: 13, TDXCompSVN: [16]byte{5, 0, 2}, HasTDX: true}
	i.TCBLevels = []pcs.TCBLevel{up, old}
	return i
}

func TestModule(t *testing.T) {
	for _, tc := range []struct {
		name     string
		svn      [16]byte
		edit     func(b *abi.TDReport, i *pcs.TCBInfo)
		id       string
		status   string
		errorHas string
	}{
		{name: "version 0 uses tdxModule", svn: [16]byte{5, 0, 3}},
		{name: "version 1 up to date", svn: [16]byte{7, 1, 3}, id: "TDX_01", status: pcs.StatusUpToDate},
		{name: "version 1 out of date", svn: [16]byte{4, 1, 3}, id: "TDX_01", status: pcs.StatusOutOfDate},
		{name: "version 1 below every level", svn: [16]byte{3, 1, 3}, errorHas: "SVN 3 (identity TDX_01) is below every TCB level"},
		{name: "unknown version", svn: [16]byte{7, 2, 3}, errorHas: "no identity TDX_02"},
		{name: "wrong signer", svn: [16]byte{7, 1, 3}, edit: func(b *abi.TDReport, _ *pcs.TCBInfo) { b.MRSignerSEAM[0] = 1 }, errorHas: "MRSIGNERSEAM 0100000000000000… is not the one"},
		{name: "wrong signer, version 0", svn: [16]byte{5, 0, 3}, edit: func(b *abi.TDReport, _ *pcs.TCBInfo) { b.MRSignerSEAM[47] = 1 }, errorHas: "MRSIGNERSEAM"},
		{name: "SEAM attributes", svn: [16]byte{7, 1, 3}, edit: func(b *abi.TDReport, _ *pcs.TCBInfo) { b.SEAMAttributes[7] = 0x80 }, errorHas: "SEAM attributes"},
		{name: "masked SEAM attributes", svn: [16]byte{7, 1, 3}, edit: func(b *abi.TDReport, i *pcs.TCBInfo) {
			b.SEAMAttributes[7] = 0x80
			i.TDXModuleIdentities[0].AttributesMask[7] = 0x7f
		}, id: "TDX_01", status: pcs.StatusUpToDate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i := info()
			b := &abi.TDReport{TEETCBSVN: tc.svn}
			if tc.edit != nil {
				tc.edit(b, i)
			}
			id, lvl, err := Module(i, b)
			if tc.errorHas != "" {
				if StepOf(err) != StepTDXModule || !strings.Contains(err.Error(), tc.errorHas) {
					t.Fatalf("error %v, want step %s with %q", err, StepTDXModule, tc.errorHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id != tc.id || (lvl == nil) != (tc.status == "") || lvl != nil && lvl.TCBStatus != tc.status {
				t.Errorf("id %q level %+v", id, lvl)
			}
		})
	}
}

func TestTCBLevel(t *testing.T) {
	pck := func(c0, c1 byte, pce uint16) *pcs.PCKExtensions {
		return &pcs.PCKExtensions{CompSVN: [16]byte{c0, c1}, PCESVN: pce}
	}
	for _, tc := range []struct {
		name     string
		pck      *pcs.PCKExtensions
		svn      [16]byte
		status   string
		errorHas string
	}{
		{"up to date", pck(3, 3, 13), [16]byte{5, 0, 3}, pcs.StatusUpToDate, ""},
		{"TDX component old", pck(3, 3, 13), [16]byte{5, 0, 2}, pcs.StatusOutOfDate, ""},
		{"SGX component old", pck(3, 2, 13), [16]byte{5, 0, 3}, pcs.StatusOutOfDate, ""},
		// Module version > 0: its SVN (byte 0) is judged by Module, not here.
		{"module svn skipped for version 1", pck(3, 3, 13), [16]byte{0, 1, 3}, pcs.StatusUpToDate, ""},
		{"module svn counted for version 0", pck(3, 3, 13), [16]byte{4, 0, 3}, "", "TDX TCB component 1 SVN 4 < 5"},
		{"PCESVN", pck(3, 3, 12), [16]byte{5, 0, 3}, "", "PCESVN 12 < 13"},
		{"SGX below all", pck(1, 3, 13), [16]byte{5, 0, 3}, "", "SGX TCB component 1 SVN 1 < 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := TCBLevel(info(), tc.pck, &abi.TDReport{TEETCBSVN: tc.svn})
			if tc.errorHas != "" {
				if StepOf(err) != StepTCBLevel || !strings.Contains(err.Error(), tc.errorHas) {
					t.Fatalf("error %v, want %q", err, tc.errorHas)
				}
				return
			}
			if err != nil || l.TCBStatus != tc.status {
				t.Fatalf("level %+v, error %v", l, err)
			}
		})
	}
}

func TestTCBInfoMatches(t *testing.T) {
	pck := &pcs.PCKExtensions{FMSPC: [6]byte{0xb0, 0xc0, 0x6f}}
	for _, tc := range []struct {
		name     string
		edit     func(i *pcs.TCBInfo)
		errorHas string
	}{
		{"match", func(*pcs.TCBInfo) {}, ""},
		{"SGX", func(i *pcs.TCBInfo) { i.ID = "SGX" }, `has id "SGX", want "TDX"`},
		{"version 2", func(i *pcs.TCBInfo) { i.Version = 2 }, "version 2 is not supported"},
		{"no module", func(i *pcs.TCBInfo) { i.TDXModule = nil }, "no tdxModule"},
		{"FMSPC", func(i *pcs.TCBInfo) { i.FMSPC = "00906ED50000" }, "FMSPC 00906ED50000"},
		{"PCE ID", func(i *pcs.TCBInfo) { i.PCEID = "0001" }, "PCE ID 0001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i := info()
			tc.edit(i)
			err := TCBInfoMatches(i, pck)
			if tc.errorHas == "" && err != nil || tc.errorHas != "" && (StepOf(err) != StepTCBInfo || !strings.Contains(err.Error(), tc.errorHas)) {
				t.Errorf("error %v, want %q", err, tc.errorHas)
			}
		})
	}
}

func TestConvergeModule(t *testing.T) {
	for _, tc := range [][3]string{
		{pcs.StatusUpToDate, pcs.StatusUpToDate, pcs.StatusUpToDate},
		{pcs.StatusUpToDate, pcs.StatusOutOfDate, pcs.StatusOutOfDate},
		{pcs.StatusSWHardeningNeeded, pcs.StatusOutOfDate, pcs.StatusOutOfDate},
		{pcs.StatusConfigurationNeeded, pcs.StatusOutOfDate, pcs.StatusOutOfDateConfigurationNeeded},
		{pcs.StatusUpToDate, pcs.StatusRevoked, pcs.StatusRevoked},
		{pcs.StatusSWHardeningNeeded, pcs.StatusUpToDate, pcs.StatusSWHardeningNeeded},
	} {
		if got := ConvergeModule(tc[0], tc[1]); got != tc[2] {
			t.Errorf("ConvergeModule(%s, %s) = %s, want %s", tc[0], tc[1], got, tc[2])
		}
	}
}
