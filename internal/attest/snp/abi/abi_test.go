package abi

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"

	gabi "github.com/google/go-sev-guest/abi"
)

const reportFile = "../testdata/good_gosevguest_report_v2.bin"

func read(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseVector(t *testing.T) {
	b := read(t, reportFile)
	r, err := ParseReport(b)
	if err != nil {
		t.Fatal(err)
	}
	if r.Version != 2 || r.Policy != 0xB0000 || !r.Debug() || r.SigningKey() != SignerVCEK || r.VMPL != 0 ||
		!strings.HasPrefix(hex.EncodeToString(r.Measurement[:]), "b07af962") {
		t.Errorf("report %+v", r)
	}
	// Cross-check every field with google/go-sev-guest's parser.
	g, err := gabi.ReportToProto(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name     string
		ours, gt any
	}{
		{"version", r.Version, g.GetVersion()}, {"guest svn", r.GuestSVN, g.GetGuestSvn()}, {"policy", r.Policy, g.GetPolicy()},
		{"vmpl", r.VMPL, g.GetVmpl()}, {"current tcb", r.CurrentTCB, g.GetCurrentTcb()}, {"platform info", r.PlatformInfo, g.GetPlatformInfo()},
		{"signer info", r.SignerInfo, g.GetSignerInfo()}, {"reported tcb", r.ReportedTCB, g.GetReportedTcb()},
		{"committed tcb", r.CommittedTCB, g.GetCommittedTcb()}, {"launch tcb", r.LaunchTCB, g.GetLaunchTcb()},
		{"current build", uint32(r.CurrentBuild), g.GetCurrentBuild()}, {"committed major", uint32(r.CommittedMajor), g.GetCommittedMajor()},
		{"family id", string(r.FamilyID[:]), string(g.GetFamilyId())}, {"image id", string(r.ImageID[:]), string(g.GetImageId())},
		{"report data", string(r.ReportData[:]), string(g.GetReportData())}, {"measurement", string(r.Measurement[:]), string(g.GetMeasurement())},
		{"host data", string(r.HostData[:]), string(g.GetHostData())}, {"id key digest", string(r.IDKeyDigest[:]), string(g.GetIdKeyDigest())},
		{"author key digest", string(r.AuthorKeyDigest[:]), string(g.GetAuthorKeyDigest())}, {"report id", string(r.ReportID[:]), string(g.GetReportId())},
		{"chip id", string(r.ChipID[:]), string(g.GetChipId())},
		{"signature", string(r.SignatureR[:]) + string(r.SignatureS[:]), string(g.GetSignature()[:144])},
	} {
		if f.ours != f.gt {
			t.Errorf("%s: ours %v, go-sev-guest %v", f.name, f.ours, f.gt)
		}
	}
}

func TestParseRefusals(t *testing.T) {
	b := read(t, reportFile)
	edit := func(f func(c []byte)) []byte {
		c := append([]byte(nil), b...)
		f(c)
		return c
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "truncated"},
		{"short", b[:ReportSize-1], "truncated: 1183 bytes"},
		{"trailing", append(append([]byte(nil), b...), 0), "1 trailing bytes"},
		{"version 1", edit(func(c []byte) { c[0] = 1 }), "version 1 is not supported"},
		{"version 6", edit(func(c []byte) { c[0] = 6 }), "version 6 is not supported"},
		{"algo", edit(func(c []byte) { c[0x34] = 2 }), "signature algorithm 2"},
		{"policy bit 17", edit(func(c []byte) { c[0x0A] &^= 2 }), "reserved bit 17 clear"},
		{"vmpl", edit(func(c []byte) { c[0x30] = 4 }), "VMPL 4"},
		{"signer reserved", edit(func(c []byte) { c[0x48] = 0x20 }), "reserved bits set"},
		{"signing key 2", edit(func(c []byte) { c[0x48] = 2 << 2 }), "signing key 2 is reserved"},
		{"reserved 0x4c", edit(func(c []byte) { c[0x4D] = 1 }), "offset 0x4d is not zero"},
		{"v2 cpuid bytes", edit(func(c []byte) { c[0x188] = 0x19 }), "offset 0x188 is not zero"},
		{"reserved before signature", edit(func(c []byte) { c[0x29F] = 1 }), "offset 0x29f"},
		{"after signature", edit(func(c []byte) { c[0x4A0-1] = 1 }), "offset 0x49f"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseReport(tc.b)
			var pe *Error
			if err == nil || !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
	// Version 3 reads the CPUID bytes; version 5 the mitigation vectors.
	v3 := edit(func(c []byte) { c[0] = 3; c[0x188], c[0x189], c[0x18A] = 0x19, 0x01, 0x01 })
	if r, err := ParseReport(v3); err != nil || r.CPUIDFamily != 0x19 || r.CPUIDModel != 1 {
		t.Errorf("v3: %v %+v", err, r)
	}
	v5 := edit(func(c []byte) { c[0] = 5; binary.LittleEndian.PutUint64(c[0x200:], 7) })
	if r, err := ParseReport(v5); err != nil || r.CurrentMitVector != 7 {
		t.Errorf("v5: %v", err)
	}
	if _, err := ParseReport(edit(func(c []byte) { c[0x200] = 7 })); err == nil || !strings.Contains(err.Error(), "offset 0x200") {
		t.Errorf("v2 with a mitigation vector: %v", err)
	}
}

func table(t *testing.T) []byte {
	return MarshalCertTable([]CertEntry{{GUIDVCEK, read(t, "../testdata/good_gosevguest_vcek.der")}, {GUIDASK, []byte("ask-bytes")}})
}

func TestCertTable(t *testing.T) {
	b := table(t)
	ct, err := ParseCertTable(append(b, make([]byte, 100)...)) // zero padding is fine
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ct.Get(GUIDVCEK), read(t, "../testdata/good_gosevguest_vcek.der")) || string(ct.Get(GUIDASK)) != "ask-bytes" || ct.Get(GUIDARK) != nil {
		t.Errorf("table %+v", ct)
	}
	// go-sev-guest reads the same table the same way.
	var g gabi.CertTable
	if err := g.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	vcek, err := g.GetByGUIDString(gabi.VcekGUID)
	if err != nil || !bytes.Equal(vcek, ct.Get(GUIDVCEK)) || GUIDVCEK.String() != gabi.VcekGUID || GUIDARK.String() != gabi.ArkGUID || GUIDASK.String() != gabi.AskGUID || GUIDVLEK.String() != gabi.VlekGUID {
		t.Errorf("go-sev-guest disagrees: %v", err)
	}
	edit := func(f func(c []byte)) []byte {
		c := append([]byte(nil), b...)
		f(c)
		return c
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "no all-zero entry"},
		{"no terminator", edit(func(c []byte) { binary.LittleEndian.PutUint32(c[16:], 0); binary.LittleEndian.PutUint32(c[20:], 24) })[:24], "no all-zero entry"},
		{"beyond", edit(func(c []byte) { binary.LittleEndian.PutUint32(c[20:], 1<<20) }), "beyond the table"},
		{"into header", edit(func(c []byte) { binary.LittleEndian.PutUint32(c[16:], 0) }), "overlaps the entry list"},
		{"overlap", edit(func(c []byte) { copy(c[CertTableEntrySize+16:], c[16:20]) }), "overlap"},
		{"duplicate", edit(func(c []byte) { copy(c[CertTableEntrySize:], c[:16]) }), "appears twice"},
		{"empty entry", edit(func(c []byte) { binary.LittleEndian.PutUint32(c[20:], 0) }), "is empty"},
		{"zero guid", edit(func(c []byte) { copy(c[:16], make([]byte, 16)) }), "zero GUID"},
		{"garbage after", append(append([]byte(nil), b...), 0, 0, 9), "belongs to no entry"},
		{"too large", make([]byte, MaxCertTableSize+1), "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCertTable(tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
	many := make([]CertEntry, MaxCertTableEntries+1)
	for i := range many {
		many[i] = CertEntry{GUID{byte(i + 1)}, []byte{1}}
	}
	if _, err := ParseCertTable(MarshalCertTable(many)); err == nil || !strings.Contains(err.Error(), "more than 16 entries") {
		t.Errorf("too many entries: %v", err)
	}
}

func TestParseEvidence(t *testing.T) {
	r := read(t, reportFile)
	ev, err := ParseEvidence(append(append([]byte(nil), r...), table(t)...))
	if err != nil || ev.Certs.Get(GUIDVCEK) == nil || len(ev.Raw) != ReportSize {
		t.Fatalf("evidence: %v", err)
	}
	if ev, err := ParseEvidence(r); err != nil || ev.Certs != nil {
		t.Fatalf("bare report: %v", err)
	}
	if _, err := ParseEvidence(append(append([]byte(nil), r...), 1, 2, 3)); err == nil || !strings.Contains(err.Error(), "after the report: sev-snp certificate table") {
		t.Errorf("trailing garbage: %v", err)
	}
}

func FuzzParseReport(f *testing.F) {
	f.Add(read(f, reportFile))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseReport(b)
		if err != nil {
			return
		}
		if len(b) != ReportSize || len(r.Signed) != SignedSize || r.Version < MinVersion || r.Version > MaxVersion {
			t.Fatal("accepted a report of the wrong shape")
		}
	})
}

func FuzzParseCertTable(f *testing.F) {
	f.Add(MarshalCertTable([]CertEntry{{GUIDVCEK, read(f, "../testdata/good_gosevguest_vcek.der")}, {GUIDASK, []byte("ask")}, {GUIDARK, []byte("ark")}}))
	f.Add(MarshalCertTable(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		ct, err := ParseCertTable(b)
		if err != nil {
			return
		}
		total := 0
		for _, e := range ct.Entries {
			total += len(e.Data)
			if len(e.Data) == 0 {
				t.Fatal("empty entry accepted")
			}
		}
		if total+(len(ct.Entries)+1)*CertTableEntrySize > len(b) {
			t.Fatal("entries add up to more than the table")
		}
	})
}
