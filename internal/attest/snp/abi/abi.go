// Package abi turns the bytes of an AMD SEV-SNP attestation report (SEV
// Secure Nested Paging Firmware ABI, ATTESTATION_REPORT, versions 2 to 5)
// and of the certificate table that comes with an extended report into
// structs. Every length is checked and every reserved range must be zero;
// nothing here checks a signature (that is package verify). It imports only
// the standard library, so that the node links no verification code.
//
// Evidence of the sev-snp TEE type is the 1184-byte report, optionally
// followed by the certificate table the host supplied (configfs-tsm's
// auxblob, the GHCB extended guest request's data pages): GUID-keyed entries
// {guid, offset, length}, an all-zero entry, then the DER certificates.
package abi

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// Sizes and constants.
const (
	ReportSize = 0x4A0
	// SignedSize is the part of the report the VCEK or VLEK signs.
	SignedSize      = 0x2A0
	signatureOffset = SignedSize
	// The ECDSA P-384 signature: R and S, 72 bytes each, little-endian.
	sigComponentSize = 72
	sigSize          = 2 * sigComponentSize

	MinVersion = 2
	MaxVersion = 5

	// SignatureAlgoECDSAP384SHA384 is the only signature algorithm defined.
	SignatureAlgoECDSAP384SHA384 = 1

	// CertTableEntrySize is the size of one certificate table entry.
	CertTableEntrySize = 24
	// MaxCertTableSize bounds the certificate table, so that report and
	// table fit the 64 KiB an RA-TLS certificate carries; a real table
	// (VCEK, ASK, ARK) is about 5 KiB.
	MaxCertTableSize = 60 << 10
	// MaxCertTableEntries bounds the number of entries.
	MaxCertTableEntries = 16
	// MaxEvidenceSize is a report and the largest table.
	MaxEvidenceSize = ReportSize + MaxCertTableSize
)

// Signing keys (the report's SIGNING_KEY field).
const (
	SignerVCEK = 0
	SignerVLEK = 1
	SignerNone = 7
)

// Guest policy bits.
const (
	PolicySMT          = 1 << 16
	PolicyReserved1    = 1 << 17 // must be 1
	PolicyMigrateMA    = 1 << 18
	PolicyDebug        = 1 << 19
	PolicySingleSocket = 1 << 20
)

// Report is a parsed attestation report.
type Report struct {
	Version       uint32
	GuestSVN      uint32
	Policy        uint64
	FamilyID      [16]byte
	ImageID       [16]byte
	VMPL          uint32
	SignatureAlgo uint32
	CurrentTCB    uint64
	PlatformInfo  uint64
	// SignerInfo holds AUTHOR_KEY_EN (bit 0), MASK_CHIP_KEY (bit 1) and
	// SIGNING_KEY (bits 2..4).
	SignerInfo      uint32
	ReportData      [64]byte
	Measurement     [48]byte
	HostData        [32]byte
	IDKeyDigest     [48]byte
	AuthorKeyDigest [48]byte
	ReportID        [32]byte
	ReportIDMA      [32]byte
	ReportedTCB     uint64
	// CPUID family, model and stepping (version 3 and later; zero before).
	CPUIDFamily, CPUIDModel, CPUIDStepping         uint8
	ChipID                                         [64]byte
	CommittedTCB                                   uint64
	CurrentBuild, CurrentMinor, CurrentMajor       uint8
	CommittedBuild, CommittedMinor, CommittedMajor uint8
	LaunchTCB                                      uint64
	// Mitigation vectors (defined from version 5; read from version 3).
	LaunchMitVector, CurrentMitVector uint64
	// SignatureR and SignatureS are the ECDSA P-384 signature's components,
	// little-endian as in the report (72 bytes, the top 24 zero).
	SignatureR, SignatureS [sigComponentSize]byte

	// Signed is the report's first 0x2A0 bytes: what the key signs.
	Signed []byte
}

// SigningKey is the SIGNING_KEY field: SignerVCEK, SignerVLEK or SignerNone.
func (r *Report) SigningKey() uint32 { return (r.SignerInfo >> 2) & 7 }

// MaskChipKey reports whether the chip id is masked (zero) in the report.
func (r *Report) MaskChipKey() bool { return r.SignerInfo&2 != 0 }

// Debug reports whether the guest policy allows the host to debug the guest
// (read and write its memory).
func (r *Report) Debug() bool { return r.Policy&PolicyDebug != 0 }

// Error is a parse error; every message starts with "sev-snp report:" or
// "sev-snp certificate table:".
type Error struct {
	What string
	Msg  string
}

func (e *Error) Error() string { return "sev-snp " + e.What + ": " + e.Msg }

func errorf(format string, args ...any) error {
	return &Error{What: "report", Msg: fmt.Sprintf(format, args...)}
}

func tableErrorf(format string, args ...any) error {
	return &Error{What: "certificate table", Msg: fmt.Sprintf(format, args...)}
}

// ParseReport parses exactly one attestation report (0x4A0 bytes).
func ParseReport(b []byte) (*Report, error) {
	if len(b) < ReportSize {
		return nil, errorf("truncated: %d bytes, an attestation report is %d", len(b), ReportSize)
	}
	if len(b) > ReportSize {
		return nil, errorf("%d trailing bytes after the %d-byte report", len(b)-ReportSize, ReportSize)
	}
	le32 := func(o int) uint32 { return binary.LittleEndian.Uint32(b[o:]) }
	le64 := func(o int) uint64 { return binary.LittleEndian.Uint64(b[o:]) }
	r := &Report{
		Version:       le32(0x00),
		GuestSVN:      le32(0x04),
		Policy:        le64(0x08),
		VMPL:          le32(0x30),
		SignatureAlgo: le32(0x34),
		CurrentTCB:    le64(0x38),
		PlatformInfo:  le64(0x40),
		SignerInfo:    le32(0x48),
		ReportedTCB:   le64(0x180),
		CommittedTCB:  le64(0x1E0),
		LaunchTCB:     le64(0x1F0),
		Signed:        b[:SignedSize:SignedSize],
	}
	if r.Version < MinVersion || r.Version > MaxVersion {
		return nil, errorf("version %d is not supported (versions %d to %d)", r.Version, MinVersion, MaxVersion)
	}
	if r.SignatureAlgo != SignatureAlgoECDSAP384SHA384 {
		return nil, errorf("signature algorithm %d is not supported (only 1, ECDSA P-384 with SHA-384)", r.SignatureAlgo)
	}
	if r.Policy&PolicyReserved1 == 0 {
		return nil, errorf("guest policy %#x has reserved bit 17 clear (it must be 1)", r.Policy)
	}
	if r.VMPL > 3 {
		return nil, errorf("VMPL %d is not 0..3", r.VMPL)
	}
	if r.SignerInfo>>5 != 0 {
		return nil, errorf("signer info %#x has reserved bits set", r.SignerInfo)
	}
	if k := r.SigningKey(); k != SignerVCEK && k != SignerVLEK && k != SignerNone {
		return nil, errorf("signing key %d is reserved (0 = VCEK, 1 = VLEK, 7 = none)", k)
	}
	copy(r.FamilyID[:], b[0x10:0x20])
	copy(r.ImageID[:], b[0x20:0x30])
	copy(r.ReportData[:], b[0x50:0x90])
	copy(r.Measurement[:], b[0x90:0xC0])
	copy(r.HostData[:], b[0xC0:0xE0])
	copy(r.IDKeyDigest[:], b[0xE0:0x110])
	copy(r.AuthorKeyDigest[:], b[0x110:0x140])
	copy(r.ReportID[:], b[0x140:0x160])
	copy(r.ReportIDMA[:], b[0x160:0x180])
	copy(r.ChipID[:], b[0x1A0:0x1E0])
	zeroFrom := 0x188
	if r.Version >= 3 {
		r.CPUIDFamily, r.CPUIDModel, r.CPUIDStepping = b[0x188], b[0x189], b[0x18A]
		zeroFrom = 0x18B
	}
	r.CurrentBuild, r.CurrentMinor, r.CurrentMajor = b[0x1E8], b[0x1E9], b[0x1EA]
	r.CommittedBuild, r.CommittedMinor, r.CommittedMajor = b[0x1EC], b[0x1ED], b[0x1EE]
	// The mitigation vectors are defined from version 5; google/go-sev-guest
	// reads them from every version, as firmware of version 3 and 4 reports
	// may fill them. Version 2 must leave them zero.
	reservedFrom := 0x1F8
	if r.Version >= 3 {
		r.LaunchMitVector, r.CurrentMitVector = le64(0x1F8), le64(0x200)
		reservedFrom = 0x208
	}
	for _, z := range [][2]int{{0x4C, 0x50}, {zeroFrom, 0x1A0}, {0x1EB, 0x1EC}, {0x1EF, 0x1F0}, {reservedFrom, SignedSize}, {signatureOffset + sigSize, ReportSize}} {
		if i := nonZero(b[z[0]:z[1]]); i >= 0 {
			return nil, errorf("reserved byte at offset %#x is not zero: the report is corrupt or of a newer version than %d says", z[0]+i, r.Version)
		}
	}
	copy(r.SignatureR[:], b[signatureOffset:])
	copy(r.SignatureS[:], b[signatureOffset+sigComponentSize:])
	return r, nil
}

func nonZero(b []byte) int {
	for i, c := range b {
		if c != 0 {
			return i
		}
	}
	return -1
}

// GUIDs of certificate table entries (AMD GHCB specification), in the
// byte order of their string form, as the table holds them.
var (
	GUIDVCEK = mustGUID("63da758d-e664-4564-adc5-f4b93be8accd")
	GUIDVLEK = mustGUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
	GUIDASK  = mustGUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
	GUIDARK  = mustGUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")
)

// GUID is a certificate table entry's GUID.
type GUID [16]byte

func mustGUID(s string) GUID {
	h, err := hex.DecodeString(string(bytes.ReplaceAll([]byte(s), []byte("-"), nil)))
	if err != nil || len(h) != 16 {
		panic("abi: bad GUID " + s)
	}
	return GUID(h)
}

// String is the GUID's usual form.
func (g GUID) String() string {
	h := hex.EncodeToString(g[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// CertTable is a parsed certificate table: each entry's GUID and bytes.
type CertTable struct {
	Entries []CertEntry
}

// CertEntry is one certificate of the table.
type CertEntry struct {
	GUID GUID
	Data []byte
}

// Get returns the entry with GUID g, or nil.
func (t *CertTable) Get(g GUID) []byte {
	if t == nil {
		return nil
	}
	for _, e := range t.Entries {
		if e.GUID == g {
			return e.Data
		}
	}
	return nil
}

// ParseCertTable parses a certificate table. It refuses a table without its
// all-zero terminating entry, entries that point outside the table, into
// the entry list or at each other, duplicate GUIDs, and non-zero bytes that
// no entry covers (a table may be zero-padded to a page).
func ParseCertTable(b []byte) (*CertTable, error) {
	if len(b) > MaxCertTableSize {
		return nil, tableErrorf("%d bytes, more than the %d allowed", len(b), MaxCertTableSize)
	}
	t := &CertTable{}
	var spans [][2]int
	headerEnd := -1
	for i := 0; ; i++ {
		o := i * CertTableEntrySize
		if o+CertTableEntrySize > len(b) {
			return nil, tableErrorf("truncated: no all-zero entry ends the entry list after %d entries", i)
		}
		e := b[o : o+CertTableEntrySize]
		if nonZero(e) < 0 {
			headerEnd = o + CertTableEntrySize
			break
		}
		if i == MaxCertTableEntries {
			return nil, tableErrorf("more than %d entries", MaxCertTableEntries)
		}
		var g GUID
		copy(g[:], e[:16])
		off := binary.LittleEndian.Uint32(e[16:])
		n := binary.LittleEndian.Uint32(e[20:])
		if g == (GUID{}) {
			return nil, tableErrorf("entry %d has a zero GUID but a non-zero offset or length", i)
		}
		if t.Get(g) != nil {
			return nil, tableErrorf("GUID %s appears twice", g)
		}
		if n == 0 {
			return nil, tableErrorf("entry %d (%s) is empty", i, g)
		}
		if uint64(off)+uint64(n) > uint64(len(b)) {
			return nil, tableErrorf("entry %d (%s) points at bytes %d..%d, beyond the table's %d bytes", i, g, off, uint64(off)+uint64(n), len(b))
		}
		t.Entries = append(t.Entries, CertEntry{GUID: g, Data: b[off : off+n : off+n]})
		spans = append(spans, [2]int{int(off), int(off + n)})
	}
	for i, s := range spans {
		if s[0] < headerEnd {
			return nil, tableErrorf("entry %d (%s) overlaps the entry list", i, t.Entries[i].GUID)
		}
		for j := range i {
			if s[0] < spans[j][1] && spans[j][0] < s[1] {
				return nil, tableErrorf("entries %d and %d overlap", j, i)
			}
		}
	}
	// Every byte that no entry covers must be zero (padding), so that
	// nothing rides along unverified and unseen.
	covered := make([]bool, len(b)-headerEnd)
	for _, s := range spans {
		for k := s[0]; k < s[1]; k++ {
			covered[k-headerEnd] = true
		}
	}
	for k, c := range covered {
		if !c && b[headerEnd+k] != 0 {
			return nil, tableErrorf("non-zero byte at offset %d belongs to no entry", headerEnd+k)
		}
	}
	return t, nil
}

// Evidence is a report and the certificate table that came with it.
type Evidence struct {
	Report *Report
	// Raw is the report's bytes.
	Raw []byte
	// Certs is nil when the evidence is a bare report.
	Certs *CertTable
}

// ParseEvidence parses sev-snp evidence: a report, optionally followed by a
// certificate table.
func ParseEvidence(b []byte) (*Evidence, error) {
	if len(b) > MaxEvidenceSize {
		return nil, errorf("evidence is %d bytes, more than the %d allowed (a report and a certificate table)", len(b), MaxEvidenceSize)
	}
	if len(b) < ReportSize {
		return nil, errorf("truncated: %d bytes, an attestation report is %d", len(b), ReportSize)
	}
	r, err := ParseReport(b[:ReportSize])
	if err != nil {
		return nil, err
	}
	ev := &Evidence{Report: r, Raw: b[:ReportSize:ReportSize]}
	if len(b) > ReportSize {
		if ev.Certs, err = ParseCertTable(b[ReportSize:]); err != nil {
			return nil, fmt.Errorf("after the report: %w", err)
		}
	}
	return ev, nil
}

// MarshalCertTable writes a certificate table holding entries, in order.
func MarshalCertTable(entries []CertEntry) []byte {
	head := (len(entries) + 1) * CertTableEntrySize
	out := make([]byte, head)
	for i, e := range entries {
		o := i * CertTableEntrySize
		copy(out[o:], e.GUID[:])
		binary.LittleEndian.PutUint32(out[o+16:], uint32(len(out)))
		binary.LittleEndian.PutUint32(out[o+20:], uint32(len(e.Data)))
		out = append(out, e.Data...)
	}
	return out
}
