// Package sgxtls reads SGX evidence from RA-TLS certificates of every known
// form and checks that the certificate's key is the one the evidence binds:
//
//   - TCG DICE tagged evidence (extension 2.23.133.5.4.9, CBOR tag 60000 over
//     [quote, claims]), written by this platform, Gramine, the Intel SGX SDK
//     and rats-tls: report_data[0:32] = SHA-256(claims) and the claims'
//     "pubkey-hash" = [1, SHA-256(DER SubjectPublicKeyInfo)];
//   - Gramine's legacy extension 1.2.840.113741.1337.6 (also as Gramine
//     mis-encodes it, which standard parsers read as 0.6.9.42.840.113741.1337.6)
//     holding a bare quote: report_data[0:32] = SHA-256 of the public key as
//     mbedTLS's mbedtls_pk_write_pubkey_der writes it, which is the DER
//     SubjectPublicKeyInfo, ratls.PubkeyHash (Gramine's
//     ra_tls_verify_common.c, sha256_over_crt_pk).
//
// Reading extensions and hashing keys is internal/ratls's; this package adds
// what only SGX needs: both forms of one certificate, and the legacy binding.
// It lives apart from package sgx so that the TEE type does not depend on
// the certificate layer.
package sgxtls

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/ratls"
)

// oidGramineMisencoded is ratls's unexported twin: how standard parsers read
// the legacy OID as Gramine writes it. ratls.Extract returns only one form,
// so the legacy extension next to a tagged one is looked up here.
var oidGramineMisencoded = asn1.ObjectIdentifier{0, 6, 9, 42, 840, 113741, 1337, 6}

// Evidence is one SGX quote found in a certificate.
type Evidence struct {
	Format string // ratls.FormatTagged or ratls.FormatGramineLegacy
	Quote  []byte
	Claims []byte // tagged form only
}

// Read returns the SGX evidence in a certificate: the tagged form first
// (when present), then Gramine's legacy form (when present). A certificate
// with tagged evidence of another TEE type is refused.
func Read(cert *x509.Certificate) ([]Evidence, error) {
	ex, err := ratls.Extract(cert)
	if err != nil {
		return nil, err
	}
	if ex.Format == ratls.FormatGramineLegacy {
		// Extract prefers the tagged form: this is the only evidence.
		return []Evidence{{Format: ex.Format, Quote: ex.Evidence}}, nil
	}
	if ex.Type != attest.TypeSGX {
		return nil, fmt.Errorf("the certificate carries %s evidence, not SGX", ex.Type)
	}
	out := []Evidence{{Format: ex.Format, Quote: ex.Evidence, Claims: ex.Claims}}
	for _, e := range cert.Extensions {
		if e.Id.Equal(ratls.OIDGramineQuote) || e.Id.Equal(oidGramineMisencoded) {
			if len(e.Value) > ratls.MaxEvidenceSize {
				return nil, fmt.Errorf("Gramine quote extension is %d bytes, more than %d", len(e.Value), ratls.MaxEvidenceSize)
			}
			out = append(out, Evidence{Format: ratls.FormatGramineLegacy, Quote: e.Value})
			break
		}
	}
	return out, nil
}

// CheckBinding checks that the evidence's report data (taken from the
// verified quote) binds the certificate's public key. A nil error means
// the key is bound.
func CheckBinding(cert *x509.Certificate, ev Evidence, reportData [64]byte) error {
	switch ev.Format {
	case ratls.FormatTagged:
		// The same binding ratls.Verify checks: report data is
		// attest.ReportData(claims), and the claims name the key.
		if reportData != attest.ReportData(ev.Claims) {
			return errors.New("report data is not the SHA-256 of the certificate's claims followed by zeros: the claims were not produced by the attested enclave")
		}
		claims, err := attest.ParseClaims(ev.Claims)
		if err != nil {
			return err
		}
		if claims.PubkeyHash == nil {
			return errors.New("the claims carry no \"pubkey-hash\": the certificate's key is not bound")
		}
		if !bytes.Equal(claims.PubkeyHash, ratls.PubkeyHash(cert)) {
			return errors.New("the claims' pubkey-hash is not the SHA-256 of the certificate's public key: the certificate was not made by the attested enclave")
		}
		return nil
	case ratls.FormatGramineLegacy:
		// Gramine's verifier compares report data [0:32] only.
		if !bytes.Equal(reportData[:32], ratls.PubkeyHash(cert)) {
			return errors.New("report data [0:32] is not the SHA-256 of the certificate's public key (Gramine's binding): the certificate was not made by the attested enclave")
		}
		return nil
	}
	return fmt.Errorf("unknown evidence format %q", ev.Format)
}
