// Package ratls makes and reads certificates that carry attestation evidence
// (RA-TLS), following the interoperable convention: X.509 extension
// 2.23.133.5.4.9 (TCG DICE tagged evidence) = CBOR tag(N) over
// [evidence bstr, claims bstr], where N names the evidence type and
// report data [0:32] = SHA-256(claims). Readers also accept Gramine's legacy
// extension, which carries a bare SGX quote (Extract reads it; Verify, which
// needs claims, refuses it). See docs/ratls.md.
package ratls

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/mse-in-go/mse/internal/attest"
)

// Extension OIDs.
var (
	// OIDTaggedEvidence is TCG DICE "tagged evidence".
	OIDTaggedEvidence = asn1.ObjectIdentifier{2, 23, 133, 5, 4, 9}
	// OIDGramineQuote is Gramine's legacy extension holding a bare SGX quote.
	OIDGramineQuote = asn1.ObjectIdentifier{1, 2, 840, 113741, 1337, 6}
	// oidGramineQuoteMisencoded is how standard parsers read the legacy OID
	// that Gramine wrote with its tag and length bytes inside the value.
	oidGramineQuoteMisencoded = asn1.ObjectIdentifier{0, 6, 9, 42, 840, 113741, 1337, 6}
)

// CBOR tags of tagged evidence. 60000 is the SGX ECDSA quote as written by
// Gramine, the Intel SGX SDK and rats-tls; the sim tag is this platform's own,
// taken from the first-come-first-served range ("MSE1" in ASCII).
//
// TDX quotes take rats-tls's tag for Intel TEE quotes (0x1a7501), which
// holds the bare quote as here. SEV-SNP evidence is this platform's layout
// (the report followed by the host's certificate table, so that the VCEK
// rides with the report and a verifier needs no network), under a tag of
// its own ("MSE2"): rats-tls's SEV-SNP tag holds another layout.
const (
	TagSGXQuote uint64 = 60000
	TagTDXQuote uint64 = 0x1a7501
	TagSEVSNP   uint64 = 0x4d534532
	TagSim      uint64 = 0x4d534531
)

var tagTypes = map[uint64]string{
	TagSGXQuote: attest.TypeSGX,
	TagTDXQuote: attest.TypeTDX,
	TagSEVSNP:   attest.TypeSEVSNP,
	TagSim:      attest.TypeSim,
}

// TagFor returns the CBOR tag for a TEE type.
func TagFor(teeType string) (uint64, error) {
	for t, n := range tagTypes {
		if n == teeType {
			return t, nil
		}
	}
	return 0, fmt.Errorf("ratls: no CBOR tag for TEE type %q", teeType)
}

// Formats of evidence in a certificate.
const (
	FormatTagged        = "tcg-dice-tagged-evidence"
	FormatGramineLegacy = "gramine-legacy"
)

// MaxEvidenceSize bounds the evidence read from a certificate extension.
const MaxEvidenceSize = 64 << 10

// Extracted is the evidence found in a certificate, not yet verified.
type Extracted struct {
	Type     string // TEE type
	Format   string // FormatTagged or FormatGramineLegacy
	Evidence []byte
	// Claims are the raw claims bytes (tagged form); nil for the legacy form,
	// where report data [0:32] is the SHA-256 of the DER public key instead.
	Claims []byte
}

// Extract reads evidence from a certificate, preferring the tagged form.
func Extract(cert *x509.Certificate) (*Extracted, error) {
	var legacy, tagged []byte
	for _, e := range cert.Extensions {
		switch {
		case e.Id.Equal(OIDTaggedEvidence):
			tagged = e.Value
		case e.Id.Equal(OIDGramineQuote) || e.Id.Equal(oidGramineQuoteMisencoded):
			legacy = e.Value
		}
	}
	if tagged != nil {
		ex, err := parseTagged(tagged)
		if err == nil || legacy == nil {
			return ex, err
		}
		// An unreadable tagged extension (e.g. a tag this reader does not
		// know) next to a legacy quote: read the legacy one.
	}
	if legacy != nil {
		if len(legacy) > MaxEvidenceSize {
			return nil, fmt.Errorf("ratls: Gramine quote extension is %d bytes, more than %d", len(legacy), MaxEvidenceSize)
		}
		return &Extracted{Type: attest.TypeSGX, Format: FormatGramineLegacy, Evidence: legacy}, nil
	}
	return nil, errors.New("ratls: the certificate carries no attestation evidence (no extension 2.23.133.5.4.9 or Gramine quote); it is not an RA-TLS certificate")
}

func parseTagged(v []byte) (*Extracted, error) {
	if len(v) > MaxEvidenceSize+attest.MaxClaimsSize+64 {
		return nil, fmt.Errorf("ratls: tagged evidence is %d bytes, too large", len(v))
	}
	var tag cbor.RawTag
	if err := attest.CBORDecMode().Unmarshal(v, &tag); err != nil {
		return nil, fmt.Errorf("ratls: extension 2.23.133.5.4.9 is not a CBOR tag: %w", err)
	}
	teeType, ok := tagTypes[tag.Number]
	if !ok {
		return nil, fmt.Errorf("ratls: tagged evidence has unknown CBOR tag %d (known: %d sgx, %d tdx, %d sev-snp, %d sim)", tag.Number, TagSGXQuote, TagTDXQuote, TagSEVSNP, TagSim)
	}
	var arr [][]byte
	if err := attest.CBORDecMode().Unmarshal(tag.Content, &arr); err != nil || len(arr) != 2 {
		return nil, errors.New("ratls: tagged evidence is not [evidence bstr, claims bstr]")
	}
	if len(arr[0]) == 0 || len(arr[0]) > MaxEvidenceSize {
		return nil, fmt.Errorf("ratls: evidence is %d bytes (allowed 1..%d)", len(arr[0]), MaxEvidenceSize)
	}
	if len(arr[1]) > attest.MaxClaimsSize {
		return nil, fmt.Errorf("ratls: claims are %d bytes, more than %d", len(arr[1]), attest.MaxClaimsSize)
	}
	return &Extracted{Type: teeType, Format: FormatTagged, Evidence: arr[0], Claims: arr[1]}, nil
}

// EncodeTagged builds the value of extension 2.23.133.5.4.9.
func EncodeTagged(teeType string, evidence, claims []byte) ([]byte, error) {
	n, err := TagFor(teeType)
	if err != nil {
		return nil, err
	}
	return attest.CBOREncMode().Marshal(cbor.Tag{Number: n, Content: [][]byte{evidence, claims}})
}

// PubkeyHash is SHA-256 of the certificate's DER SubjectPublicKeyInfo.
func PubkeyHash(cert *x509.Certificate) []byte {
	h := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return h[:]
}

// Fingerprint is the lowercase hex SHA-256 of a certificate's DER.
func Fingerprint(cert *x509.Certificate) string {
	h := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(h[:])
}

// Template describes a certificate to make.
type Template struct {
	DNSNames  []string
	NotBefore time.Time
	NotAfter  time.Time
	// Claims to bind; PubkeyHash is filled in from the key.
	Claims attest.Claims
}

// NewCertificate makes a self-signed RA-TLS certificate for key, with
// evidence from issuer over the claims. It returns the DER certificate and the
// claims bytes that were bound.
func NewCertificate(ctx context.Context, key crypto.Signer, issuer attest.Issuer, t Template) ([]byte, []byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, nil, err
	}
	ph := sha256.Sum256(spki)
	claims := t.Claims
	claims.PubkeyHash = ph[:]
	cb, err := claims.Marshal()
	if err != nil {
		return nil, nil, err
	}
	ev, err := issuer.Issue(ctx, attest.ReportData(cb))
	if err != nil {
		return nil, nil, fmt.Errorf("ratls: obtain %s evidence: %w", issuer.Type(), err)
	}
	ext, err := EncodeTagged(issuer.Type(), ev, cb)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	cn := "mse enclave"
	if len(t.DNSNames) > 0 {
		cn = t.DNSNames[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"MSE RA-TLS"}},
		NotBefore:    t.NotBefore,
		NotAfter:     t.NotAfter,
		DNSNames:     t.DNSNames,
		// Not a CA (docs/ratls.md "Not a CA"): a user who trusts this
		// certificate trusts this one key for these names, nothing it could
		// sign. OpenSSL (curl --cacert) and Go accept a self-signed leaf
		// that is itself the trust anchor.
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		ExtraExtensions:       []pkix.Extension{{Id: OIDTaggedEvidence, Value: ext}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	return der, cb, nil
}

// Expect is what the verifier knows and the certificate must match. Empty
// fields are not checked.
type Expect struct {
	// Domain, when set, must be one of the certificate's DNS names.
	Domain       string
	AppID        string
	CodeDigest   []byte
	ConfigDigest []byte
	Nonce        []byte
	// RuntimeDigest is the runtime image (32-byte SHA-256 manifest digest)
	// the owner asked for.
	RuntimeDigest []byte
}

// Identity is what a successful verification established.
type Identity struct {
	Verified    *attest.Verified
	Claims      *attest.Claims
	Certificate *x509.Certificate
	Fingerprint string
	Format      string
}

// VerifierFor returns the verifier for a TEE type, or an error saying why
// that type cannot be verified.
type VerifierFor func(teeType string) (attest.Verifier, error)

// Options configure Verify.
type Options struct {
	Verifiers VerifierFor
	Policy    *attest.Policy
	Now       time.Time
	Expect    Expect
}

// VerifyError names the check that failed.
type VerifyError struct {
	Check string
	Err   error
}

func (e *VerifyError) Error() string { return e.Err.Error() }
func (e *VerifyError) Unwrap() error { return e.Err }

func fail(check, format string, args ...any) error {
	return &VerifyError{Check: check, Err: fmt.Errorf("verification failed: "+format, args...)}
}

// Verify checks an RA-TLS certificate of this platform's form: its own
// signature and validity, the evidence (genuine, then under policy), the
// binding of claims to report data and of the public key to the claims, and
// the expected app id, code digest, config digest and nonce.
func Verify(ctx context.Context, cert *x509.Certificate, o Options) (*Identity, error) {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	// CheckSignature, not CheckSignatureFrom: other RA-TLS implementations
	// (Gramine) make self-signed certificates that are not CAs.
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		return nil, fail("certificate", "the certificate is not validly self-signed: %v", err)
	}
	if o.Now.Before(cert.NotBefore) || o.Now.After(cert.NotAfter) {
		return nil, fail("certificate", "the certificate is not valid at %s (valid %s to %s)", o.Now.UTC().Format(time.RFC3339), cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	ex, err := Extract(cert)
	if err != nil {
		return nil, &VerifyError{Check: "evidence", Err: fmt.Errorf("verification failed: %w", err)}
	}
	if ex.Format != FormatTagged {
		return nil, fail("evidence", "the certificate carries only Gramine's legacy evidence, which has no claims; an MSE node always uses extension 2.23.133.5.4.9")
	}
	return verifyTagged(ctx, cert, ex, o)
}

// VerifyFresh checks evidence that a node produced over a verifier's nonce
// (GET /.mse/attestation) for the key of an already verified certificate:
// the same checks as Verify, and the claims must carry o.Expect.Nonce.
func VerifyFresh(ctx context.Context, cert *x509.Certificate, tagged []byte, o Options) (*Identity, error) {
	if len(o.Expect.Nonce) == 0 {
		return nil, errors.New("ratls: VerifyFresh needs a nonce")
	}
	ex, err := parseTagged(tagged)
	if err != nil {
		return nil, &VerifyError{Check: "evidence", Err: fmt.Errorf("verification failed: fresh evidence: %w", err)}
	}
	return verifyTagged(ctx, cert, ex, o)
}

func verifyTagged(ctx context.Context, cert *x509.Certificate, ex *Extracted, o Options) (*Identity, error) {
	if o.Policy == nil || o.Verifiers == nil {
		return nil, errors.New("ratls: Verify needs a policy and verifiers")
	}
	v, err := o.Verifiers(ex.Type)
	if err != nil {
		return nil, &VerifyError{Check: "tee_type", Err: fmt.Errorf("verification failed: %w", err)}
	}
	ver, err := v.Verify(ctx, ex.Evidence)
	if err != nil {
		return nil, &VerifyError{Check: "evidence", Err: fmt.Errorf("verification failed: %s evidence is not genuine: %w", ex.Type, err)}
	}
	if err := o.Policy.Check(ver, o.Now); err != nil {
		return nil, &VerifyError{Check: "policy", Err: err}
	}
	if err := attest.CheckReportData(ver.ReportData, ex.Claims); err != nil {
		return nil, &VerifyError{Check: "report_data", Err: err}
	}
	claims, err := attest.ParseClaims(ex.Claims)
	if err != nil {
		return nil, fail("claims", "%v", err)
	}
	if !bytes.Equal(claims.PubkeyHash, PubkeyHash(cert)) {
		return nil, fail("pubkey_hash", "the certificate's public key is not the one bound in the evidence (pubkey-hash mismatch); the certificate was not made by the attested enclave")
	}
	if err := checkRuntime(ver, claims, o); err != nil {
		return nil, err
	}
	e := o.Expect
	if e.AppID != "" && claims.AppID != e.AppID {
		return nil, fail("app_id", "the node attests app id %q, not %q; this is another app's node (the router may have sent you elsewhere)", claims.AppID, e.AppID)
	}
	if e.Domain != "" {
		if err := cert.VerifyHostname(e.Domain); err != nil {
			return nil, fail("domain", "the certificate is not for %s (%v); this node serves another domain", e.Domain, err)
		}
	}
	if len(e.CodeDigest) > 0 && !bytes.Equal(claims.CodeDigest, e.CodeDigest) {
		return nil, fail("code_digest", "the node attests code digest %s, not the digest %s of the bundle you sent; the code it holds is not yours", shortHex(claims.CodeDigest), shortHex(e.CodeDigest))
	}
	if len(e.ConfigDigest) > 0 && !bytes.Equal(claims.ConfigDigest, e.ConfigDigest) {
		return nil, fail("config_digest", "the node attests config digest %s, not %s; the operator changed the app's configuration (entrypoint, domains, expiry or TLS mode)", shortHex(claims.ConfigDigest), shortHex(e.ConfigDigest))
	}
	if len(e.Nonce) > 0 && !bytes.Equal(claims.Nonce, e.Nonce) {
		return nil, fail("nonce", "the evidence does not carry the nonce you sent; it is a replay")
	}
	return &Identity{Verified: ver, Claims: claims, Certificate: cert, Fingerprint: Fingerprint(cert), Format: ex.Format}, nil
}

// checkRuntime checks the runtime image: what the TEE itself attests (when
// it attests one apart from the measurement) must be what the node claims;
// the claim must be what the owner asked for and what the policy accepts.
func checkRuntime(ver *attest.Verified, claims *attest.Claims, o Options) error {
	want := o.Expect.RuntimeDigest
	if ver.RuntimeDigest != nil && !bytes.Equal(ver.RuntimeDigest, claims.RuntimeDigest) {
		return fail("runtime", "the %s hardware attests runtime sha256:%x, but the node claims %s; the node does not run in the runtime it names",
			ver.Type, ver.RuntimeDigest, runtimeString(claims.RuntimeDigest))
	}
	if len(want) > 0 {
		if ver.RuntimeDigest == nil && ver.Type != attest.TypeSGX {
			// SGX measures the runtime's files into MRENCLAVE; the other
			// types must state the runtime apart.
			return fail("runtime", "the %s evidence attests no runtime image, and you asked for sha256:%x; the node's runtime cannot be checked", ver.Type, want)
		}
		if !bytes.Equal(claims.RuntimeDigest, want) {
			return fail("runtime", "the node runs runtime %s, not sha256:%x that you asked for (mse.toml docker); the operator gave your app another runtime", runtimeString(claims.RuntimeDigest), want)
		}
	}
	if len(claims.RuntimeDigest) > 0 {
		if err := o.Policy.CheckRuntime(claims.RuntimeDigest); err != nil {
			return &VerifyError{Check: "policy", Err: err}
		}
	}
	return nil
}

func runtimeString(d []byte) string {
	if len(d) == 0 {
		return "no runtime"
	}
	return fmt.Sprintf("sha256:%x", d)
}

func shortHex(b []byte) string {
	h := hex.EncodeToString(b)
	if len(h) > 12 {
		return h[:12] + "…"
	}
	if h == "" {
		return "(none)"
	}
	return h
}
