package attest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// Claim keys. "pubkey-hash" and "nonce" follow the interoperable RA-TLS
// convention; the "mse-" keys are this platform's own (docs/ratls.md).
const (
	ClaimPubkeyHash   = "pubkey-hash"
	ClaimNonce        = "nonce"
	ClaimAppID        = "mse-app-id"
	ClaimCodeDigest   = "mse-code-digest"
	ClaimConfigDigest = "mse-config-digest"
	ClaimSealingKey   = "mse-sealing-key"
	// ClaimRuntimeDigest is the SHA-256 manifest digest of the runtime image
	// (OCI) the node runs in.
	ClaimRuntimeDigest = "mse-runtime-digest"
	// ClaimTLSMode is the app's TLS mode (self, owner, operator, acme), so
	// that anyone verifying a running app learns what its TLS proves.
	ClaimTLSMode = "mse-tls-mode"
	// ClaimServedKey is SHA-256 of the SubjectPublicKeyInfo of the
	// certificate the node serves to ordinary clients of its domains, when
	// the node holds that key (fresh evidence only; absent in operator mode).
	ClaimServedKey = "mse-served-key"
	// ClaimTLSExporter is the TLS exporter (RFC 5705 / RFC 8446 §7.5) of
	// the connection that asked for fresh evidence, label
	// "EXPORTER-mse-attestation", context = the nonce, 32 bytes: it binds
	// the evidence to that one connection (docs/protocol.md).
	ClaimTLSExporter = "mse-tls-exporter"
)

// HashAlgSHA256 is the hash-algorithm identifier in "pubkey-hash" ([1, digest]),
// the IANA "Named Information Hash Algorithm" value for sha-256.
const HashAlgSHA256 = 1

// MaxClaimsSize bounds an encoded claims map.
const MaxClaimsSize = 16 << 10

// Claims are what a node binds into its evidence: report data [0:32] is the
// SHA-256 of their CBOR encoding.
type Claims struct {
	PubkeyHash   []byte // SHA-256 of the DER SubjectPublicKeyInfo of the TLS key
	Nonce        []byte // optional freshness nonce chosen by a verifier
	AppID        string
	CodeDigest   []byte // SHA-256 of the encrypted bundle the node was given
	ConfigDigest []byte // config.Spec.Digest() of the app's runtime configuration
	SealingKey   []byte // X25519 public key for secrets sealed to this enclave
	// RuntimeDigest is the SHA-256 manifest digest of the node's runtime
	// image; the config digest covers it too.
	RuntimeDigest []byte
	TLSMode       string // self, owner, operator or acme
	ServedKey     []byte // SHA-256 of the served certificate's SPKI (fresh evidence)
	TLSExporter   []byte // exporter of the asking connection (fresh evidence)
	// Other holds claims this platform does not know (e.g. from other RA-TLS
	// implementations), keyed by name, as raw CBOR.
	Other map[string]cbor.RawMessage
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		MaxNestedLevels:  8,
		MaxArrayElements: 64,
		MaxMapPairs:      64,
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// CBOREncMode is the deterministic (RFC 8949 core deterministic) encoding
// used for everything this platform hashes.
func CBOREncMode() cbor.EncMode { return encMode }

// CBORDecMode is a decoding mode with bounded sizes for untrusted input.
func CBORDecMode() cbor.DecMode { return decMode }

// Marshal encodes the claims deterministically.
func (c *Claims) Marshal() ([]byte, error) {
	m := map[string]any{}
	for k, v := range c.Other {
		m[k] = v
	}
	if len(c.PubkeyHash) > 0 {
		// Interoperable RA-TLS (and Gramine) wrap the hash entry in a byte
		// string: "pubkey-hash": bstr .cbor [alg, digest].
		entry, err := encMode.Marshal([]any{HashAlgSHA256, c.PubkeyHash})
		if err != nil {
			return nil, err
		}
		m[ClaimPubkeyHash] = entry
	}
	if len(c.Nonce) > 0 {
		m[ClaimNonce] = c.Nonce
	}
	if c.AppID != "" {
		m[ClaimAppID] = c.AppID
	}
	if len(c.CodeDigest) > 0 {
		m[ClaimCodeDigest] = c.CodeDigest
	}
	if len(c.ConfigDigest) > 0 {
		m[ClaimConfigDigest] = c.ConfigDigest
	}
	if len(c.SealingKey) > 0 {
		m[ClaimSealingKey] = c.SealingKey
	}
	if len(c.RuntimeDigest) > 0 {
		m[ClaimRuntimeDigest] = c.RuntimeDigest
	}
	if c.TLSMode != "" {
		m[ClaimTLSMode] = c.TLSMode
	}
	if len(c.ServedKey) > 0 {
		m[ClaimServedKey] = c.ServedKey
	}
	if len(c.TLSExporter) > 0 {
		m[ClaimTLSExporter] = c.TLSExporter
	}
	return encMode.Marshal(m)
}

// ParseClaims decodes a claims map from untrusted bytes.
func ParseClaims(b []byte) (*Claims, error) {
	if len(b) > MaxClaimsSize {
		return nil, fmt.Errorf("claims are %d bytes, more than the %d allowed", len(b), MaxClaimsSize)
	}
	var raw map[string]cbor.RawMessage
	if err := decMode.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("claims are not a CBOR map with text keys: %w", err)
	}
	c := &Claims{}
	bstr := func(k string, size int) ([]byte, error) {
		var v []byte
		if err := decMode.Unmarshal(raw[k], &v); err != nil {
			return nil, fmt.Errorf("claim %q is not a byte string", k)
		}
		if size > 0 && len(v) != size {
			return nil, fmt.Errorf("claim %q is %d bytes, want %d", k, len(v), size)
		}
		return v, nil
	}
	var err error
	for k, v := range raw {
		switch k {
		case ClaimPubkeyHash:
			// Accept both the bstr-wrapped entry (interoperable RA-TLS) and a
			// bare array.
			var wrapped []byte
			if err := decMode.Unmarshal(v, &wrapped); err == nil {
				v = wrapped
			}
			var arr []cbor.RawMessage
			if err := decMode.Unmarshal(v, &arr); err != nil || len(arr) != 2 {
				return nil, errors.New(`claim "pubkey-hash" is not [alg, digest]`)
			}
			var alg int64
			if err := decMode.Unmarshal(arr[0], &alg); err != nil || alg != HashAlgSHA256 {
				return nil, errors.New(`claim "pubkey-hash": only hash algorithm 1 (sha-256) is supported`)
			}
			if err := decMode.Unmarshal(arr[1], &c.PubkeyHash); err != nil || len(c.PubkeyHash) != sha256.Size {
				return nil, errors.New(`claim "pubkey-hash": digest is not 32 bytes`)
			}
		case ClaimNonce:
			if c.Nonce, err = bstr(k, 0); err != nil {
				return nil, err
			}
			if len(c.Nonce) > 64 {
				return nil, errors.New(`claim "nonce" is longer than 64 bytes`)
			}
		case ClaimAppID:
			if err := decMode.Unmarshal(v, &c.AppID); err != nil || len(c.AppID) > 128 {
				return nil, errors.New(`claim "mse-app-id" is not a short text string`)
			}
		case ClaimCodeDigest:
			if c.CodeDigest, err = bstr(k, sha256.Size); err != nil {
				return nil, err
			}
		case ClaimConfigDigest:
			if c.ConfigDigest, err = bstr(k, sha256.Size); err != nil {
				return nil, err
			}
		case ClaimSealingKey:
			if c.SealingKey, err = bstr(k, 32); err != nil {
				return nil, err
			}
		case ClaimRuntimeDigest:
			if c.RuntimeDigest, err = bstr(k, sha256.Size); err != nil {
				return nil, err
			}
		case ClaimTLSMode:
			if err := decMode.Unmarshal(v, &c.TLSMode); err != nil || len(c.TLSMode) == 0 || len(c.TLSMode) > 16 {
				return nil, errors.New(`claim "mse-tls-mode" is not a short text string`)
			}
		case ClaimServedKey:
			if c.ServedKey, err = bstr(k, sha256.Size); err != nil {
				return nil, err
			}
		case ClaimTLSExporter:
			if c.TLSExporter, err = bstr(k, 32); err != nil {
				return nil, err
			}
		default:
			// Unknown claims are kept only if they re-encode, so that parsed
			// claims always marshal again.
			if _, err := encMode.Marshal(v); err != nil {
				return nil, fmt.Errorf("claim %q is not valid CBOR: %v", k, err)
			}
			if c.Other == nil {
				c.Other = map[string]cbor.RawMessage{}
			}
			c.Other[k] = v
		}
	}
	return c, nil
}

// ReportData is the report data that binds encoded claims: SHA-256 of the
// claims bytes in [0:32], zeros in [32:64].
func ReportData(claims []byte) [64]byte {
	var rd [64]byte
	h := sha256.Sum256(claims)
	copy(rd[:], h[:])
	return rd
}

// CheckReportData reports whether report data binds the given claims bytes.
// Bytes [32:64] must be zero so that nothing else can ride along.
func CheckReportData(rd [64]byte, claims []byte) error {
	want := ReportData(claims)
	if !bytes.Equal(rd[:32], want[:32]) {
		return errors.New("verification failed: report data does not match the SHA-256 of the certificate's claims; the claims were not produced by the attested enclave")
	}
	if !bytes.Equal(rd[32:], want[32:]) {
		return errors.New("verification failed: report data [32:64] is not zero")
	}
	return nil
}
