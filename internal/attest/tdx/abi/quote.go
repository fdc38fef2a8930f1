// Package abi turns the bytes of an Intel TDX DCAP quote (version 4 or 5)
// into structs. Every length is checked against the bytes that are really
// there; nothing here checks a signature (that is package verify). It
// imports only the standard library and the SGX quote parser, so that the
// node (which checks the quote it was given) links no verification code.
//
// Layout (all integers little-endian):
//
//	header              48 bytes  version, attestation key type 2, TEE type 0x81, QE vendor id, user data
//	(v5) body type       2 bytes  2 = TDX 1.0 TD report, 3 = TDX 1.5 TD report
//	(v5) body size       4 bytes  584 or 648
//	TD report body  584/648 bytes the TD's identity (TEE TCB SVN, MRSEAM, MRTD, RTMRs, report data, ...)
//	signature length     4 bytes  length of what follows
//	signature data                quote signature (64), attestation key (64), certification data
//	                              (u16 type 6, u32 length): QE report (384), QE report signature (64),
//	                              QE auth data (u16 length + bytes), PCK certification data
//	                              (u16 type 5, u32 length, PEM PCK chain)
//
// The signed part is everything before the signature length.
package abi

import (
	"encoding/binary"
	"fmt"

	sgxabi "github.com/mse-in-go/mse/internal/attest/sgx/abi"
)

// Sizes and constants.
const (
	HeaderSize = 48
	// TD10BodySize is the TDX 1.0 TD report body (quote v4, v5 body type 2).
	TD10BodySize = 584
	// TD15BodySize is the TDX 1.5 TD report body (v5 body type 3): TD10
	// followed by TEE_TCB_SVN2 (16) and MRSERVICETD (48).
	TD15BodySize = 648
	// v5 body descriptor: u16 type, u32 size.
	V5DescriptorSize = 6

	Version4 = 4
	Version5 = 5
	// TEETypeTDX is the header's TEE type for TDX (0 is SGX).
	TEETypeTDX = 0x81

	BodyTypeTD10 = 2
	BodyTypeTD15 = 3

	// CertDataQEReport is certification data type 6: the QE report, its
	// signature, the QE authentication data and the PCK certification data.
	CertDataQEReport = 6

	SignatureSize = sgxabi.SignatureSize
	PublicKeySize = sgxabi.PublicKeySize

	// MaxQuoteSize bounds the input; real quotes are about 5 KiB.
	MaxQuoteSize = sgxabi.MaxQuoteSize
)

// TD attribute bits (TDATTRIBUTES, little-endian u64).
const (
	TDAttrDebug         = 1 << 0
	TDAttrSEPTVEDisable = 1 << 28
	TDAttrPKS           = 1 << 30
	TDAttrKL            = 1 << 31
	TDAttrPerfmon       = 1 << 63
)

// Header is the quote header.
type Header struct {
	Version            uint16
	AttestationKeyType uint16
	TEEType            uint32
	Reserved1          uint16
	Reserved2          uint16
	QEVendorID         [16]byte
	UserData           [20]byte
}

// TDReport is the TD report body of quote v4 (TDX 1.0) or v5 (1.0 or 1.5).
type TDReport struct {
	TEETCBSVN      [16]byte
	MRSEAM         [48]byte
	MRSignerSEAM   [48]byte
	SEAMAttributes [8]byte
	TDAttributes   [8]byte
	XFAM           [8]byte
	MRTD           [48]byte
	MRConfigID     [48]byte
	MROwner        [48]byte
	MROwnerConfig  [48]byte
	RTMR           [4][48]byte
	ReportData     [64]byte
	// TDX 1.5 only (v5 body type 3); zero otherwise.
	TEETCBSVN2  [16]byte
	MRServiceTD [48]byte
}

// TDAttributesU64 is TDATTRIBUTES as an integer.
func (r *TDReport) TDAttributesU64() uint64 { return binary.LittleEndian.Uint64(r.TDAttributes[:]) }

// Debug reports whether the TD runs in debug mode (TDATTRIBUTES.DEBUG): its
// host can read and change its memory and registers.
func (r *TDReport) Debug() bool { return r.TDAttributesU64()&TDAttrDebug != 0 }

// SEPTVEDisable reports TDATTRIBUTES.SEPT_VE_DISABLE: the host cannot make
// the TD take #VE exceptions on EPT violations (a known attack surface).
func (r *TDReport) SEPTVEDisable() bool { return r.TDAttributesU64()&TDAttrSEPTVEDisable != 0 }

// Quote is a parsed TDX quote with an ECDSA-P256 attestation key and a PCK
// certificate chain.
type Quote struct {
	Header Header
	// BodyType is BodyTypeTD10 or BodyTypeTD15 (v4 quotes are TD10).
	BodyType uint16
	Body     TDReport
	// Signed is the header, the v5 body descriptor and the body as they
	// appear in the quote: the bytes the attestation key signs.
	Signed []byte

	Signature      [SignatureSize]byte
	AttestationKey [PublicKeySize]byte
	QEReport       sgxabi.ReportBody
	// QEReportRaw is the QE report as it appears in the quote (signed by the PCK key).
	QEReportRaw       []byte
	QEReportSignature [SignatureSize]byte
	QEAuthData        []byte
	// CertData is the PCK certification data (type 5): the PEM PCK chain.
	CertData []byte
	// Padding counts zero bytes after the quote's declared end, which some
	// quote providers leave from their buffer. They are not part of the quote.
	Padding int
}

// Error is a parse error; every message starts with "tdx quote:".
type Error struct{ Msg string }

func (e *Error) Error() string { return "tdx quote: " + e.Msg }

func errorf(format string, args ...any) error { return &Error{Msg: fmt.Sprintf(format, args...)} }

// ParseQuote parses a TDX quote v4 or v5. It refuses truncated input,
// non-zero bytes after the quote, other versions, TEE types, attestation
// key types and certification data. Zero padding after the quote is
// accepted and counted in Padding.
func ParseQuote(b []byte) (*Quote, error) {
	if len(b) > MaxQuoteSize {
		return nil, errorf("%d bytes, more than the %d allowed", len(b), MaxQuoteSize)
	}
	if len(b) < HeaderSize {
		return nil, errorf("truncated: %d bytes, shorter than the %d-byte header", len(b), HeaderSize)
	}
	q := &Quote{}
	h := &q.Header
	h.Version = binary.LittleEndian.Uint16(b[0:])
	h.AttestationKeyType = binary.LittleEndian.Uint16(b[2:])
	h.TEEType = binary.LittleEndian.Uint32(b[4:])
	h.Reserved1 = binary.LittleEndian.Uint16(b[8:])
	h.Reserved2 = binary.LittleEndian.Uint16(b[10:])
	copy(h.QEVendorID[:], b[12:28])
	copy(h.UserData[:], b[28:48])
	switch {
	case h.Version != Version4 && h.Version != Version5:
		if h.Version == sgxabi.Version3 {
			return nil, errorf("version 3 is an SGX quote, not TDX (pass --tee sgx, or let the type be detected)")
		}
		return nil, errorf("version %d is not supported (TDX quote versions 4 and 5)", h.Version)
	case h.TEEType != TEETypeTDX:
		return nil, errorf("TEE type %#x is not TDX (%#x): this is an SGX quote", h.TEEType, TEETypeTDX)
	case h.AttestationKeyType != sgxabi.AttestationKeyECDSAP256:
		return nil, errorf("attestation key type %d is not supported (only 2, ECDSA-256-with-P-256)", h.AttestationKeyType)
	case h.QEVendorID != sgxabi.IntelQEVendorID:
		return nil, errorf("QE vendor id %x is not Intel's quoting enclave (%x)", h.QEVendorID, sgxabi.IntelQEVendorID)
	}
	off := HeaderSize
	bodySize := TD10BodySize
	q.BodyType = BodyTypeTD10
	if h.Version == Version5 {
		if len(b) < off+V5DescriptorSize {
			return nil, errorf("truncated: %d bytes, too short for the v5 body descriptor", len(b))
		}
		q.BodyType = binary.LittleEndian.Uint16(b[off:])
		size := binary.LittleEndian.Uint32(b[off+2:])
		switch q.BodyType {
		case BodyTypeTD10:
			bodySize = TD10BodySize
		case BodyTypeTD15:
			bodySize = TD15BodySize
		case 1:
			return nil, errorf("v5 body type 1 is an SGX enclave report, not a TD report")
		default:
			return nil, errorf("v5 body type %d is not supported (2 = TDX 1.0, 3 = TDX 1.5)", q.BodyType)
		}
		if uint64(size) != uint64(bodySize) {
			return nil, errorf("v5 body type %d declares %d bytes, want %d", q.BodyType, size, bodySize)
		}
		off += V5DescriptorSize
	}
	if len(b) < off+bodySize+4 {
		return nil, errorf("truncated: %d bytes, shorter than header, TD report and signature length (%d)", len(b), off+bodySize+4)
	}
	parseBody(b[off:off+bodySize], &q.Body)
	off += bodySize
	q.Signed = b[:off:off]
	sigLen := binary.LittleEndian.Uint32(b[off:])
	rest := b[off+4:]
	if uint64(sigLen) > uint64(len(rest)) {
		return nil, errorf("truncated: signature data is declared as %d bytes but %d remain", sigLen, len(rest))
	}
	if pad := rest[sigLen:]; !allZero(pad) {
		return nil, errorf("%d trailing bytes after the signature data (declared %d bytes), not all zero: the file holds more than one quote, or was altered", len(pad), sigLen)
	} else {
		q.Padding = len(pad)
	}
	r := reader{b: rest[:sigLen]}
	copy(q.Signature[:], r.next(SignatureSize))
	copy(q.AttestationKey[:], r.next(PublicKeySize))
	outerType, outerLen := r.u16(), r.u32()
	if r.err != nil {
		return nil, errorf("truncated: signature data is %d bytes, too short for signature, attestation key and certification data header", sigLen)
	}
	if outerType != CertDataQEReport {
		return nil, errorf("certification data type %d is not supported: a TDX quote must carry type 6 (QE report certification data)", outerType)
	}
	if uint64(outerLen) != uint64(len(r.b)) {
		if uint64(outerLen) > uint64(len(r.b)) {
			return nil, errorf("truncated: certification data is declared as %d bytes but %d remain", outerLen, len(r.b))
		}
		return nil, errorf("%d bytes after the certification data inside the signature data", uint64(len(r.b))-uint64(outerLen))
	}
	q.QEReportRaw = r.next(sgxabi.ReportBodySize)
	copy(q.QEReportSignature[:], r.next(SignatureSize))
	if r.err != nil {
		return nil, errorf("truncated: certification data is %d bytes, too short for the QE report and its signature", outerLen)
	}
	sgxabi.ParseReportBody(q.QEReportRaw, &q.QEReport)
	authLen := r.u16()
	if r.err != nil {
		return nil, errorf("truncated: no QE authentication data length")
	}
	if int(authLen) > sgxabi.MaxAuthDataSize {
		return nil, errorf("QE authentication data is %d bytes, more than the %d allowed", authLen, sgxabi.MaxAuthDataSize)
	}
	q.QEAuthData = r.next(int(authLen))
	if r.err != nil {
		return nil, errorf("truncated: QE authentication data is declared as %d bytes but %d remain", authLen, len(r.b))
	}
	certType, certLen := r.u16(), r.u32()
	if r.err != nil {
		return nil, errorf("truncated: no PCK certification data header")
	}
	if certType != sgxabi.CertDataPCKChain {
		return nil, errorf("PCK certification data type %d is not supported: the quote must carry a PCK chain (type 5); configure the quote provider library (PCCS) so that the quoting enclave embeds the PCK certificate chain", certType)
	}
	if certLen > sgxabi.MaxCertDataSize {
		return nil, errorf("PCK certification data is %d bytes, more than the %d allowed", certLen, sgxabi.MaxCertDataSize)
	}
	q.CertData = r.next(int(certLen))
	if r.err != nil {
		return nil, errorf("truncated: PCK certification data is declared as %d bytes but %d remain", certLen, len(r.b))
	}
	if len(r.b) != 0 {
		return nil, errorf("%d trailing bytes after the PCK certification data", len(r.b))
	}
	return q, nil
}

func parseBody(b []byte, r *TDReport) {
	_ = b[TD10BodySize-1]
	o := 0
	cp := func(dst []byte) {
		copy(dst, b[o:o+len(dst)])
		o += len(dst)
	}
	cp(r.TEETCBSVN[:])
	cp(r.MRSEAM[:])
	cp(r.MRSignerSEAM[:])
	cp(r.SEAMAttributes[:])
	cp(r.TDAttributes[:])
	cp(r.XFAM[:])
	cp(r.MRTD[:])
	cp(r.MRConfigID[:])
	cp(r.MROwner[:])
	cp(r.MROwnerConfig[:])
	for i := range r.RTMR {
		cp(r.RTMR[i][:])
	}
	cp(r.ReportData[:])
	if len(b) == TD15BodySize {
		cp(r.TEETCBSVN2[:])
		cp(r.MRServiceTD[:])
	}
}

// ReportDataOffset returns where the TD report's REPORTDATA starts in a
// quote of version v (4 or 5): what an issuer compares without parsing.
func ReportDataOffset(v uint16) int {
	if v == Version5 {
		return HeaderSize + V5DescriptorSize + TD10BodySize - 64
	}
	return HeaderSize + TD10BodySize - 64
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

type reader struct {
	b   []byte
	err error
}

type shortError struct{}

func (shortError) Error() string { return "short" }

func (r *reader) next(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b) {
		r.err = shortError{}
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u16() uint16 {
	v := r.next(2)
	if v == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(v)
}

func (r *reader) u32() uint32 {
	v := r.next(4)
	if v == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(v)
}
