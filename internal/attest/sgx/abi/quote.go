// Package abi turns the bytes of an Intel SGX DCAP quote (version 3) into
// structs. Every length is checked against the bytes that are really there;
// nothing here checks a signature (that is package verify).
//
// Layout (all integers little-endian):
//
//	header            48 bytes  version, attestation key type, QE SVN, PCE SVN, QE vendor id, user data
//	report body      384 bytes  the attested enclave's REPORT body
//	signature length   4 bytes  length of what follows, to the end of the quote
//	signature data              quote signature (64), attestation key (64), QE report body (384),
//	                            QE report signature (64), QE auth data (u16 length + bytes),
//	                            certification data (u16 type, u32 length, bytes)
package abi

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
)

// Sizes and constants of quote v3.
const (
	HeaderSize     = 48
	ReportBodySize = 384
	// SignedSize is the part of the quote the attestation key signs.
	SignedSize = HeaderSize + ReportBodySize
	// ECDSA P-256 signatures and public keys are 64 bytes (r‖s, x‖y).
	SignatureSize = 64
	PublicKeySize = 64

	Version3 = 3
	// AttestationKeyECDSAP256 is attestation key type 2, ECDSA-256-with-P-256.
	AttestationKeyECDSAP256 = 2
	// CertDataPCKChain is certification data type 5: the PEM PCK certificate chain.
	CertDataPCKChain = 5

	// MaxQuoteSize bounds the input; real quotes are under 8 KiB.
	MaxQuoteSize = 64 << 10
	// MaxCertDataSize bounds the certification data (three PEM certificates).
	MaxCertDataSize = 32 << 10
	// MaxAuthDataSize bounds the QE authentication data (32 bytes in practice).
	MaxAuthDataSize = 4 << 10
)

// IntelQEVendorID is the QE vendor id of Intel's quoting enclave.
var IntelQEVendorID = [16]byte{0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07}

// Header is the quote header.
type Header struct {
	Version            uint16
	AttestationKeyType uint16
	Reserved           uint32 // TEE type in quote v4; 0 for SGX
	QESVN              uint16
	PCESVN             uint16
	QEVendorID         [16]byte
	UserData           [20]byte
}

// Attribute flags (the low byte of ATTRIBUTES).
const (
	AttributeInit          = 0x01
	AttributeDebug         = 0x02
	AttributeMode64        = 0x04
	AttributeProvisionKey  = 0x10
	AttributeEInitTokenKey = 0x20
	AttributeKSS           = 0x80
)

// ReportBody is an SGX REPORT body (the enclave's identity).
type ReportBody struct {
	CPUSVN       [16]byte
	MiscSelect   uint32
	Reserved1    [12]byte
	ISVExtProdID [16]byte
	Attributes   [16]byte
	MREnclave    [32]byte
	Reserved2    [32]byte
	MRSigner     [32]byte
	Reserved3    [32]byte
	ConfigID     [64]byte
	ISVProdID    uint16
	ISVSVN       uint16
	ConfigSVN    uint16
	Reserved4    [42]byte
	ISVFamilyID  [16]byte
	ReportData   [64]byte
}

// Debug reports whether the enclave was launched in debug mode.
func (r *ReportBody) Debug() bool { return r.Attributes[0]&AttributeDebug != 0 }

// Quote is a parsed quote v3 with an ECDSA-P256 attestation key and a PCK
// certificate chain.
type Quote struct {
	Header Header
	Body   ReportBody
	// Signed is the header and report body as they appear in the quote: the
	// bytes the attestation key signs.
	Signed []byte

	Signature      [SignatureSize]byte // ECDSA r‖s over Signed
	AttestationKey [PublicKeySize]byte // P-256 x‖y
	QEReport       ReportBody
	// QEReportRaw is the QE report body as it appears in the quote: the bytes
	// the PCK key signs.
	QEReportRaw       []byte
	QEReportSignature [SignatureSize]byte
	QEAuthData        []byte
	CertDataType      uint16
	CertData          []byte
}

// Error is a parse error; every message starts with "sgx quote:".
type Error struct{ Msg string }

func (e *Error) Error() string { return "sgx quote: " + e.Msg }

func errorf(format string, args ...any) error { return &Error{Msg: fmt.Sprintf(format, args...)} }

var certDataNames = map[uint16]string{
	1: "plain PPID",
	2: "encrypted PPID",
	3: "encrypted PPID",
	4: "PCK leaf certificate alone",
	6: "QE report certification data (quote v4)",
	7: "platform manifest",
}

// ParseQuote parses a quote v3. It refuses truncated input, trailing bytes,
// other versions, other attestation key types and certification data other
// than a PCK chain.
func ParseQuote(b []byte) (*Quote, error) {
	if len(b) > MaxQuoteSize {
		return nil, errorf("%d bytes, more than the %d allowed", len(b), MaxQuoteSize)
	}
	if len(b) < HeaderSize {
		return nil, errorf("truncated: %d bytes, shorter than the %d-byte header", len(b), HeaderSize)
	}
	q := &Quote{}
	parseHeader(b[:HeaderSize], &q.Header)
	switch {
	case q.Header.Version != Version3:
		return nil, errorf("version %d is not supported (only SGX DCAP quote version 3)", q.Header.Version)
	case q.Header.AttestationKeyType != AttestationKeyECDSAP256:
		return nil, errorf("attestation key type %d is not supported (only 2, ECDSA-256-with-P-256)", q.Header.AttestationKeyType)
	case q.Header.QEVendorID != IntelQEVendorID:
		return nil, errorf("QE vendor id %x is not Intel's quoting enclave (%x)", q.Header.QEVendorID, IntelQEVendorID)
	}
	if len(b) < SignedSize+4 {
		return nil, errorf("truncated: %d bytes, shorter than header, report body and signature length (%d)", len(b), SignedSize+4)
	}
	q.Signed = b[:SignedSize]
	ParseReportBody(b[HeaderSize:SignedSize], &q.Body)
	sigLen := binary.LittleEndian.Uint32(b[SignedSize:])
	rest := b[SignedSize+4:]
	if uint64(sigLen) != uint64(len(rest)) {
		if uint64(sigLen) > uint64(len(rest)) {
			return nil, errorf("truncated: signature data is declared as %d bytes but %d remain", sigLen, len(rest))
		}
		return nil, errorf("%d trailing bytes after the signature data (declared %d bytes)", uint64(len(rest))-uint64(sigLen), sigLen)
	}
	r := reader{b: rest}
	copy(q.Signature[:], r.next(SignatureSize))
	copy(q.AttestationKey[:], r.next(PublicKeySize))
	q.QEReportRaw = r.next(ReportBodySize)
	copy(q.QEReportSignature[:], r.next(SignatureSize))
	if r.err != nil {
		return nil, errorf("truncated: signature data is %d bytes, too short for signature, attestation key, QE report and its signature", len(rest))
	}
	ParseReportBody(q.QEReportRaw, &q.QEReport)
	authLen := r.u16()
	if r.err != nil {
		return nil, errorf("truncated: no QE authentication data length")
	}
	if int(authLen) > MaxAuthDataSize {
		return nil, errorf("QE authentication data is %d bytes, more than the %d allowed", authLen, MaxAuthDataSize)
	}
	q.QEAuthData = r.next(int(authLen))
	if r.err != nil {
		return nil, errorf("truncated: QE authentication data is declared as %d bytes but %d remain", authLen, len(r.b))
	}
	q.CertDataType = r.u16()
	certLen := r.u32()
	if r.err != nil {
		return nil, errorf("truncated: no certification data header")
	}
	if q.CertDataType != CertDataPCKChain {
		name := certDataNames[q.CertDataType]
		if name == "" {
			name = "unknown"
		}
		return nil, errorf("certification data type %d (%s) is not supported: the quote must carry a PCK chain (type 5); configure the quote provider library (PCCS) so that the quoting enclave embeds the PCK certificate chain", q.CertDataType, name)
	}
	if certLen > MaxCertDataSize {
		return nil, errorf("certification data is %d bytes, more than the %d allowed", certLen, MaxCertDataSize)
	}
	q.CertData = r.next(int(certLen))
	if r.err != nil {
		return nil, errorf("truncated: certification data is declared as %d bytes but %d remain", certLen, len(r.b))
	}
	if len(r.b) != 0 {
		return nil, errorf("%d trailing bytes after the certification data", len(r.b))
	}
	return q, nil
}

func parseHeader(b []byte, h *Header) {
	h.Version = binary.LittleEndian.Uint16(b[0:])
	h.AttestationKeyType = binary.LittleEndian.Uint16(b[2:])
	h.Reserved = binary.LittleEndian.Uint32(b[4:])
	h.QESVN = binary.LittleEndian.Uint16(b[8:])
	h.PCESVN = binary.LittleEndian.Uint16(b[10:])
	copy(h.QEVendorID[:], b[12:28])
	copy(h.UserData[:], b[28:48])
}

// ParseReportBody decodes a 384-byte report body. It panics if b is shorter.
func ParseReportBody(b []byte, r *ReportBody) {
	_ = b[ReportBodySize-1]
	copy(r.CPUSVN[:], b[0:16])
	r.MiscSelect = binary.LittleEndian.Uint32(b[16:])
	copy(r.Reserved1[:], b[20:32])
	copy(r.ISVExtProdID[:], b[32:48])
	copy(r.Attributes[:], b[48:64])
	copy(r.MREnclave[:], b[64:96])
	copy(r.Reserved2[:], b[96:128])
	copy(r.MRSigner[:], b[128:160])
	copy(r.Reserved3[:], b[160:192])
	copy(r.ConfigID[:], b[192:256])
	r.ISVProdID = binary.LittleEndian.Uint16(b[256:])
	r.ISVSVN = binary.LittleEndian.Uint16(b[258:])
	r.ConfigSVN = binary.LittleEndian.Uint16(b[260:])
	copy(r.Reserved4[:], b[262:304])
	copy(r.ISVFamilyID[:], b[304:320])
	copy(r.ReportData[:], b[320:384])
}

type reader struct {
	b   []byte
	err error
}

var errShort = errors.New("short")

func (r *reader) next(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b) {
		r.err = errShort
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

// PCKChainLen is the number of certificates a PCK chain holds: the PCK
// certificate, the PCK platform or processor CA, and the Intel SGX Root CA.
const PCKChainLen = 3

// ParsePCKChain parses the PEM certificates of certification data type 5,
// leaf first. Only PEM CERTIFICATE blocks, whitespace and a trailing NUL are
// allowed; the chain must hold exactly three certificates.
func ParsePCKChain(data []byte) ([]*x509.Certificate, error) {
	return ParsePEMChain(data, PCKChainLen, "PCK certificate chain")
}

// ParsePEMChain parses exactly n PEM certificates (n <= 0: any number from 1
// to 8) from data, in order. what names the chain in errors.
func ParsePEMChain(data []byte, n int, what string) ([]*x509.Certificate, error) {
	rest := bytes.TrimRight(data, "\x00")
	var certs []*x509.Certificate
	for {
		rest = bytes.TrimLeft(rest, " \t\r\n")
		if len(rest) == 0 {
			break
		}
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return nil, fmt.Errorf("%s: bytes that are not a PEM certificate after certificate %d", what, len(certs))
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: PEM block %q where a CERTIFICATE was expected", what, blk.Type)
		}
		if len(certs) >= 8 {
			return nil, fmt.Errorf("%s: more than 8 certificates", what)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %v", what, len(certs), err)
		}
		certs = append(certs, c)
	}
	if n > 0 && len(certs) != n {
		return nil, fmt.Errorf("%s holds %d certificates, want %d (leaf, intermediate CA, root CA)", what, len(certs), n)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s holds no certificate", what)
	}
	return certs, nil
}
