// Package pcs holds the collateral of Intel SGX DCAP quote verification, as
// Intel's Provisioning Certification Service (PCS, API v4) and a caching
// service (PCCS) serve it: the SGX extensions of PCK certificates, TCB info,
// the QE identity and CRLs; an offline bundle of all of them; and a client
// that fetches and caches them. Nothing here verifies a signature: package
// verify does.
package pcs

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
)

// OIDs of the SGX extensions of a PCK certificate (Intel, "SGX PCK
// Certificate and Certificate Revocation List Profile Specification").
var (
	OIDSGXExtensions = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1}
	oidPPID          = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 1}
	oidTCB           = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 2}
	oidPCEID         = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 3}
	oidFMSPC         = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 4}
	oidSGXType       = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 5}
	oidPlatformInst  = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 6}
	oidConfiguration = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 7}
)

// PCKExtensions are the SGX extensions of a PCK certificate: which platform
// it is (FMSPC, PCE ID) and at which TCB level it was certified.
type PCKExtensions struct {
	PPID []byte
	// CompSVN are the 16 SGX TCB component SVNs.
	CompSVN [16]byte
	PCESVN  uint16
	CPUSVN  [16]byte
	PCEID   [2]byte
	FMSPC   [6]byte
	// SGXType is 0 (Standard), 1 (Scalable) or 2 (Scalable with integrity).
	SGXType            int
	PlatformInstanceID []byte
	// Configuration is present in certificates of the Platform CA only.
	Configuration *PlatformConfiguration
}

// PlatformConfiguration is the optional configuration extension.
type PlatformConfiguration struct {
	DynamicPlatform, CachedKeys, SMTEnabled *bool
}

// FMSPCHex is the FMSPC as PCS spells it (upper-case hex).
func (p *PCKExtensions) FMSPCHex() string { return upperHex(p.FMSPC[:]) }

// PCEIDHex is the PCE ID as PCS spells it (upper-case hex).
func (p *PCKExtensions) PCEIDHex() string { return upperHex(p.PCEID[:]) }

func upperHex(b []byte) string {
	const digits = "0123456789ABCDEF"
	out := make([]byte, 2*len(b))
	for i, c := range b {
		out[2*i] = digits[c>>4]
		out[2*i+1] = digits[c&15]
	}
	return string(out)
}

type oidValue struct {
	ID    asn1.ObjectIdentifier
	Value asn1.RawValue
}

// maxExtSize bounds the SGX extension (about 600 bytes in practice).
const maxExtSize = 8 << 10

// ParsePCKExtensions reads the SGX extensions of a PCK certificate. Every
// required entry must be present exactly once, with its exact size.
func ParsePCKExtensions(cert *x509.Certificate) (*PCKExtensions, error) {
	var raw []byte
	for _, e := range cert.Extensions {
		if e.Id.Equal(OIDSGXExtensions) {
			if raw != nil {
				return nil, fmt.Errorf("PCK certificate: SGX extension appears twice")
			}
			raw = e.Value
		}
	}
	if raw == nil {
		return nil, fmt.Errorf("PCK certificate %q has no SGX extension (1.2.840.113741.1.13.1): it is not a PCK certificate", cert.Subject.CommonName)
	}
	return ParsePCKExtensionsDER(raw)
}

// ParsePCKExtensionsDER parses the DER value of the SGX extension.
func ParsePCKExtensionsDER(raw []byte) (*PCKExtensions, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("PCK certificate SGX extension: "+format, args...)
	}
	if len(raw) > maxExtSize {
		return nil, bad("%d bytes, more than %d", len(raw), maxExtSize)
	}
	var entries []oidValue
	rest, err := asn1.Unmarshal(raw, &entries)
	if err != nil {
		return nil, bad("not a sequence of (OID, value): %v", err)
	}
	if len(rest) != 0 {
		return nil, bad("%d trailing bytes", len(rest))
	}
	p := &PCKExtensions{SGXType: -1}
	seen := map[string]bool{}
	octets := func(v asn1.RawValue, size int, name string) ([]byte, error) {
		var b []byte
		if _, err := asn1.Unmarshal(v.FullBytes, &b); err != nil {
			return nil, bad("%s is not an OCTET STRING", name)
		}
		if size > 0 && len(b) != size {
			return nil, bad("%s is %d bytes, want %d", name, len(b), size)
		}
		return b, nil
	}
	for _, e := range entries {
		key := e.ID.String()
		if seen[key] {
			return nil, bad("entry %s appears twice", key)
		}
		seen[key] = true
		switch {
		case e.ID.Equal(oidPPID):
			if p.PPID, err = octets(e.Value, 16, "PPID"); err != nil {
				return nil, err
			}
		case e.ID.Equal(oidTCB):
			if err := parseTCBExt(e.Value, p); err != nil {
				return nil, bad("%v", err)
			}
		case e.ID.Equal(oidPCEID):
			b, err := octets(e.Value, 2, "PCE-ID")
			if err != nil {
				return nil, err
			}
			copy(p.PCEID[:], b)
		case e.ID.Equal(oidFMSPC):
			b, err := octets(e.Value, 6, "FMSPC")
			if err != nil {
				return nil, err
			}
			copy(p.FMSPC[:], b)
		case e.ID.Equal(oidSGXType):
			var t asn1.Enumerated
			if _, err := asn1.Unmarshal(e.Value.FullBytes, &t); err != nil || t < 0 || t > 2 {
				return nil, bad("SGX Type is not an ENUMERATED 0..2")
			}
			p.SGXType = int(t)
		case e.ID.Equal(oidPlatformInst):
			if p.PlatformInstanceID, err = octets(e.Value, 16, "PlatformInstanceID"); err != nil {
				return nil, err
			}
		case e.ID.Equal(oidConfiguration):
			c, err := parseConfiguration(e.Value)
			if err != nil {
				return nil, bad("%v", err)
			}
			p.Configuration = c
		default:
			// Unknown entries are ignored, as Intel may add some.
		}
	}
	for _, req := range []struct {
		oid  asn1.ObjectIdentifier
		name string
	}{{oidPPID, "PPID"}, {oidTCB, "TCB"}, {oidPCEID, "PCE-ID"}, {oidFMSPC, "FMSPC"}, {oidSGXType, "SGX Type"}} {
		if !seen[req.oid.String()] {
			return nil, bad("required entry %s (%s) is missing", req.name, req.oid)
		}
	}
	return p, nil
}

func parseTCBExt(v asn1.RawValue, p *PCKExtensions) error {
	var entries []oidValue
	rest, err := asn1.Unmarshal(v.FullBytes, &entries)
	if err != nil || len(rest) != 0 {
		return fmt.Errorf("TCB is not a sequence of (OID, value)")
	}
	var seen [19]bool
	for _, e := range entries {
		if len(e.ID) != len(oidTCB)+1 || !e.ID[:len(oidTCB)].Equal(oidTCB) {
			continue
		}
		n := e.ID[len(oidTCB)]
		if n < 1 || n > 18 {
			continue
		}
		if seen[n] {
			return fmt.Errorf("TCB entry %d appears twice", n)
		}
		seen[n] = true
		switch {
		case n <= 16:
			var svn int
			if _, err := asn1.Unmarshal(e.Value.FullBytes, &svn); err != nil || svn < 0 || svn > 255 {
				return fmt.Errorf("TCB component %d SVN is not an INTEGER 0..255", n)
			}
			p.CompSVN[n-1] = byte(svn)
		case n == 17:
			var svn int
			if _, err := asn1.Unmarshal(e.Value.FullBytes, &svn); err != nil || svn < 0 || svn > 65535 {
				return fmt.Errorf("PCESVN is not an INTEGER 0..65535")
			}
			p.PCESVN = uint16(svn)
		case n == 18:
			var b []byte
			if _, err := asn1.Unmarshal(e.Value.FullBytes, &b); err != nil || len(b) != 16 {
				return fmt.Errorf("CPUSVN is not a 16-byte OCTET STRING")
			}
			copy(p.CPUSVN[:], b)
		}
	}
	for i := 1; i <= 18; i++ {
		if !seen[i] {
			return fmt.Errorf("TCB entry %d is missing", i)
		}
	}
	return nil
}

func parseConfiguration(v asn1.RawValue) (*PlatformConfiguration, error) {
	var entries []oidValue
	rest, err := asn1.Unmarshal(v.FullBytes, &entries)
	if err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("Configuration is not a sequence of (OID, value)")
	}
	c := &PlatformConfiguration{}
	for _, e := range entries {
		if len(e.ID) != len(oidConfiguration)+1 || !e.ID[:len(oidConfiguration)].Equal(oidConfiguration) {
			continue
		}
		var b bool
		if _, err := asn1.Unmarshal(e.Value.FullBytes, &b); err != nil {
			return nil, fmt.Errorf("Configuration entry %s is not a BOOLEAN", e.ID)
		}
		switch e.ID[len(oidConfiguration)] {
		case 1:
			c.DynamicPlatform = &b
		case 2:
			c.CachedKeys = &b
		case 3:
			c.SMTEnabled = &b
		}
	}
	return c, nil
}

// hexBytes decodes hex of an exact size (either case).
func hexBytes(s string, size int, name string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || (size > 0 && len(b) != size) {
		return nil, fmt.Errorf("%s %q is not %d bytes of hex", name, s, size)
	}
	return b, nil
}
