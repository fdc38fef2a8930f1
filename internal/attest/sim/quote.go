// Package sim is the simulated TEE type ("sim"): a per-installation simulated
// platform (a root CA and an attestation key certified by it) that signs sim
// quotes in their own binary format, a verifier that checks them with the same
// steps as real evidence (parse, chain to a trusted root, signature, values),
// and a quoting service that keeps the attestation key out of the node.
//
// A sim quote proves nothing about hardware: anyone holding the platform's
// keys can sign any measurement. Policies accept it only with
// allow_simulation. The format is described in docs/sim.md.
package sim

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mse-in-go/mse/internal/attest"
)

// Format constants (docs/sim.md).
const (
	// Magic opens every sim quote; its last byte is the format version.
	Magic = "MSESIMQ\x02"
	// Version is the only format version this package reads and writes.
	// Version 2 added runtime_digest.
	Version = 2

	// MaxQuoteSize bounds a whole sim quote.
	MaxQuoteSize = 8 << 10
	// MaxAKCertSize bounds the DER attestation key certificate in a quote.
	MaxAKCertSize = 4 << 10
	// MaxSignatureSize bounds the ASN.1 DER ECDSA P-256 signature: a SEQUENCE
	// of two INTEGERs of at most 33 bytes each is at most 72 bytes.
	MaxSignatureSize = 72

	// FlagDebug is bit 0 of the flags byte: the simulated enclave is a debug
	// enclave. All other bits are reserved and must be zero.
	FlagDebug = 0x01

	// offsets of the fixed header
	offMeasurement = 8
	offSigner      = offMeasurement + 32 // 40
	offProductID   = offSigner + 32      // 72
	offSVN         = offProductID + 2    // 74
	offFlags       = offSVN + 2          // 76
	offTCBStatus   = offFlags + 1        // 77
	offReportData  = offTCBStatus + 1    // 78
	offRuntime     = offReportData + 64  // 142
	offTimestamp   = offRuntime + 32     // 174
	offAKCertLen   = offTimestamp + 8    // 182
	// HeaderSize is the size of the fixed part, up to and including the
	// attestation key certificate's length field.
	HeaderSize = offAKCertLen + 2 // 184
)

// tcbCodes maps the tcb_status byte to attest.TCB* names. 0 is invalid, and
// so is every value not listed ("unchecked" has no code: the simulated
// hardware always states its TCB status).
var tcbCodes = map[uint8]string{
	1: attest.TCBUpToDate,
	2: attest.TCBSWHardeningNeeded,
	3: attest.TCBConfigurationNeeded,
	4: attest.TCBConfigurationAndSWHardeningNeeded,
	5: attest.TCBOutOfDate,
	6: attest.TCBOutOfDateConfigurationNeeded,
	7: attest.TCBRevoked,
}

// tcbCode returns the code of a TCB status name.
func tcbCode(name string) (uint8, error) {
	for c, n := range tcbCodes {
		if n == name {
			return c, nil
		}
	}
	return 0, fmt.Errorf("sim: TCB status %q cannot be stated in a sim quote (known: %s, %s, %s, %s, %s, %s, %s)", name,
		tcbCodes[1], tcbCodes[2], tcbCodes[3], tcbCodes[4], tcbCodes[5], tcbCodes[6], tcbCodes[7])
}

// ErrMalformed is wrapped by every error ParseQuote returns.
var ErrMalformed = errors.New("malformed sim quote")

// Quote is a parsed sim quote. ParseQuote accepts exactly the byte strings
// that Marshal produces, so parsing and re-encoding is the identity.
type Quote struct {
	Measurement [32]byte // SHA-256 of the mse-node executable
	Signer      [32]byte // signer identity
	ProductID   uint16
	SVN         uint16
	Flags       uint8    // bit 0: debug; other bits zero
	TCBStatus   string   // one of the attest.TCB* names with a code (not "unchecked")
	ReportData  [64]byte // the 64 bytes the issuer bound
	// RuntimeDigest is the SHA-256 manifest digest of the runtime image the
	// simulated hardware runs the node in (the runner states it, as a
	// confidential VM states its init data); all zero when none.
	RuntimeDigest [32]byte
	Timestamp     int64  // Unix seconds, when the quote was made
	AKCert        []byte // DER X.509 certificate of the attestation key (1..MaxAKCertSize bytes)
	Signature     []byte // ASN.1 DER ECDSA P-256 SHA-256 signature over SignedBytes (1..MaxSignatureSize bytes)
}

// Debug reports whether the debug flag is set.
func (q *Quote) Debug() bool { return q.Flags&FlagDebug != 0 }

// SignedBytes returns the bytes the signature covers: every byte of the quote
// before the signature's length field, that is the magic, the fixed fields,
// the attestation key certificate's length field and the certificate.
// It panics if the quote holds values that cannot be encoded (an unknown TCB
// status, or a certificate longer than 65535 bytes); parsed quotes never do.
func (q *Quote) SignedBytes() []byte {
	b, err := q.signedBytes()
	if err != nil {
		panic(err)
	}
	return b
}

func (q *Quote) signedBytes() ([]byte, error) {
	code, err := tcbCode(q.TCBStatus)
	if err != nil {
		return nil, err
	}
	if len(q.AKCert) == 0 || len(q.AKCert) > MaxAKCertSize {
		return nil, fmt.Errorf("sim: attestation key certificate is %d bytes, want 1..%d", len(q.AKCert), MaxAKCertSize)
	}
	b := make([]byte, HeaderSize, HeaderSize+len(q.AKCert)+2+MaxSignatureSize)
	copy(b, Magic)
	copy(b[offMeasurement:], q.Measurement[:])
	copy(b[offSigner:], q.Signer[:])
	binary.BigEndian.PutUint16(b[offProductID:], q.ProductID)
	binary.BigEndian.PutUint16(b[offSVN:], q.SVN)
	b[offFlags] = q.Flags
	b[offTCBStatus] = code
	copy(b[offReportData:], q.ReportData[:])
	copy(b[offRuntime:], q.RuntimeDigest[:])
	binary.BigEndian.PutUint64(b[offTimestamp:], uint64(q.Timestamp))
	binary.BigEndian.PutUint16(b[offAKCertLen:], uint16(len(q.AKCert)))
	return append(b, q.AKCert...), nil
}

// Marshal encodes the quote: SignedBytes, then the signature's length (u16
// big-endian) and the signature.
func (q *Quote) Marshal() ([]byte, error) {
	b, err := q.signedBytes()
	if err != nil {
		return nil, err
	}
	if len(q.Signature) == 0 || len(q.Signature) > MaxSignatureSize {
		return nil, fmt.Errorf("sim: signature is %d bytes, want 1..%d", len(q.Signature), MaxSignatureSize)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(q.Signature)))
	return append(b, q.Signature...), nil
}

// digest is the SHA-256 the signature signs.
func (q *Quote) digest() [32]byte { return sha256.Sum256(q.SignedBytes()) }

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// ParseQuote parses a sim quote. It checks every length and every enumerated
// value, and refuses oversize input and trailing bytes. It verifies nothing:
// use the Verifier for that.
func ParseQuote(b []byte) (*Quote, error) {
	if len(b) > MaxQuoteSize {
		return nil, malformed("%d bytes, more than the %d-byte maximum", len(b), MaxQuoteSize)
	}
	// The magic first, so that foreign evidence is named as such even when short.
	n := min(len(b), len(Magic))
	if string(b[:n]) != Magic[:n] {
		if n == len(Magic) && string(b[:n-1]) == Magic[:n-1] {
			return nil, malformed("unsupported format version %d (this build reads version %d)", b[n-1], Version)
		}
		return nil, malformed("bad magic: not a sim quote")
	}
	if len(b) < HeaderSize {
		return nil, malformed("truncated: %d bytes, shorter than the %d-byte header", len(b), HeaderSize)
	}
	q := &Quote{
		ProductID: binary.BigEndian.Uint16(b[offProductID:]),
		SVN:       binary.BigEndian.Uint16(b[offSVN:]),
		Flags:     b[offFlags],
		Timestamp: int64(binary.BigEndian.Uint64(b[offTimestamp:])),
	}
	copy(q.Measurement[:], b[offMeasurement:])
	copy(q.Signer[:], b[offSigner:])
	copy(q.ReportData[:], b[offReportData:])
	copy(q.RuntimeDigest[:], b[offRuntime:])
	if q.Flags&^FlagDebug != 0 {
		return nil, malformed("flags 0x%02x set reserved bits (only bit 0, debug, is defined)", q.Flags)
	}
	var ok bool
	if q.TCBStatus, ok = tcbCodes[b[offTCBStatus]]; !ok {
		return nil, malformed("unknown tcb_status %d (known: 1..7)", b[offTCBStatus])
	}
	rest := b[HeaderSize:]
	certLen := int(binary.BigEndian.Uint16(b[offAKCertLen:]))
	if certLen == 0 || certLen > MaxAKCertSize {
		return nil, malformed("attestation key certificate length %d out of range 1..%d", certLen, MaxAKCertSize)
	}
	if len(rest) < certLen {
		return nil, malformed("truncated: attestation key certificate needs %d bytes, %d left", certLen, len(rest))
	}
	q.AKCert = append([]byte(nil), rest[:certLen]...)
	rest = rest[certLen:]
	if len(rest) < 2 {
		return nil, malformed("truncated: signature length missing")
	}
	sigLen := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if sigLen == 0 || sigLen > MaxSignatureSize {
		return nil, malformed("signature length %d out of range 1..%d", sigLen, MaxSignatureSize)
	}
	if len(rest) < sigLen {
		return nil, malformed("truncated: signature needs %d bytes, %d left", sigLen, len(rest))
	}
	q.Signature = append([]byte(nil), rest[:sigLen]...)
	if extra := len(rest) - sigLen; extra > 0 {
		return nil, malformed("%d trailing byte(s) after the signature", extra)
	}
	return q, nil
}
