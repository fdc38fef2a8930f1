// Package verify checks that a parsed SEV-SNP attestation report is
// genuine: its endorsement key (VCEK, or VLEK) chains to an AMD root key
// (ARK) compiled in and pinned by fingerprint, through the AMD signing key
// (ASK, or ASVK for VLEKs) of the same product line; the key is for this
// chip (VCEK hwID = CHIP_ID) and for the reported TCB (its TCB extensions
// equal REPORTED_TCB); its signature covers the report; and, when a CRL is
// given, neither the signing key nor the endorsement key is revoked. The
// clock is a parameter.
//
// Each step is its own exported function; errors are *Error values naming
// the step. The AMD root certificates are those google/go-sev-guest embeds
// (from AMD's KDS), checked here against pinned SHA-256 fingerprints.
package verify

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-sev-guest/verify/trust"

	"github.com/mse-in-go/mse/internal/attest/snp/abi"
)

// Steps, as named in Error.Step.
const (
	StepSigningKey      = "signing_key"      // the report names no usable key
	StepEndorsementKey  = "endorsement_key"  // the VCEK/VLEK certificate is malformed or missing
	StepChain           = "chain"            // VCEK/VLEK → ASK/ASVK → pinned ARK
	StepChipID          = "chip_id"          // the VCEK is for another chip
	StepReportedTCB     = "reported_tcb"     // the VCEK is for another TCB
	StepReportSignature = "report_signature" // the signature does not cover the report
	StepCRL             = "crl"              // the CRL is not the ARK's, or not valid now
	StepRevoked         = "revoked"          // a key is revoked
)

// Error says which step of verification failed and why.
type Error struct {
	Step string
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func fail(step, format string, args ...any) error {
	return &Error{Step: step, Err: fmt.Errorf(format, args...)}
}

// StepOf returns the step of an *Error in err's chain, or "".
func StepOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Step
	}
	return ""
}

// Product lines.
const (
	Milan = "Milan"
	Genoa = "Genoa"
	Turin = "Turin"
)

// Key kinds, as the policy names them.
const (
	KindVCEK = "vcek"
	KindVLEK = "vlek"
)

// Roots is the AMD PKI of one product line and key kind: the ARK and the
// ASK (VCEK) or ASVK (VLEK) it signed.
type Roots struct {
	Product string
	Kind    string
	ARK     *x509.Certificate
	ASK     *x509.Certificate
}

// Pinned fingerprints (SHA-256 of the DER) of AMD's certificates as KDS
// serves them at /vcek/v1/<product>/cert_chain and /vlek/v1/.../cert_chain.
var pins = map[string]string{
	"ARK-Milan":      "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
	"SEV-Milan":      "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
	"SEV-VLEK-Milan": "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5",
	"ARK-Genoa":      "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
	"SEV-Genoa":      "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521",
	"SEV-VLEK-Genoa": "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372",
	"ARK-Turin":      "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
	"SEV-Turin":      "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185",
	"SEV-VLEK-Turin": "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c",
}

var amdRoots = func() []*Roots {
	var out []*Roots
	for _, b := range []struct {
		product, kind string
		pem           []byte
	}{
		{Milan, KindVCEK, trust.AskArkMilanVcekBytes}, {Milan, KindVLEK, trust.AskArkMilanVlekBytes},
		{Genoa, KindVCEK, trust.AskArkGenoaVcekBytes}, {Genoa, KindVLEK, trust.AskArkGenoaVlekBytes},
		{Turin, KindVCEK, trust.AskArkTurinVcekBytes}, {Turin, KindVLEK, trust.AskArkTurinVlekBytes},
	} {
		certs, err := ParseCertificates(b.pem)
		if err != nil || len(certs) != 2 {
			panic(fmt.Sprintf("snp verify: embedded AMD chain for %s %s: %v", b.product, b.kind, err))
		}
		for _, c := range certs {
			h := sha256.Sum256(c.Raw)
			if pins[c.Subject.CommonName] != hex.EncodeToString(h[:]) {
				panic("snp verify: embedded AMD certificate " + c.Subject.CommonName + " does not have its pinned fingerprint")
			}
		}
		out = append(out, &Roots{Product: b.product, Kind: b.kind, ASK: certs[0], ARK: certs[1]})
	}
	return out
}()

// AMDRoots returns the pinned AMD roots of every product line and key kind.
func AMDRoots() []*Roots { return amdRoots }

// ParseCertificates reads one or more certificates, PEM or DER.
func ParseCertificates(b []byte) ([]*x509.Certificate, error) {
	t := bytes.TrimSpace(b)
	if !bytes.HasPrefix(t, []byte("-----BEGIN")) {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return nil, fmt.Errorf("not a DER or PEM certificate: %v", err)
		}
		return []*x509.Certificate{c}, nil
	}
	var out []*x509.Certificate
	for len(t) > 0 && len(out) < 8 {
		var blk *pem.Block
		blk, t = pem.Decode(t)
		if blk == nil {
			return nil, errors.New("bytes that are not PEM after the last certificate")
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q where a CERTIFICATE was expected", blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
		t = bytes.TrimSpace(t)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate")
	}
	return out, nil
}

// KindOf names the report's signing key, or refuses a report signed by none.
func KindOf(r *abi.Report) (string, error) {
	switch r.SigningKey() {
	case abi.SignerVCEK:
		return KindVCEK, nil
	case abi.SignerVLEK:
		return KindVLEK, nil
	}
	return "", fail(StepSigningKey, "the report is not signed (SIGNING_KEY = none): it proves nothing; request it from the firmware with a VCEK or VLEK")
}

// TCB is a TCB version by component.
type TCB struct {
	Bootloader, TEE, SNP, Microcode, FMC uint8
}

func (t TCB) String() string {
	s := fmt.Sprintf("bootloader %d, tee %d, snp %d, microcode %d", t.Bootloader, t.TEE, t.SNP, t.Microcode)
	if t.FMC != 0 {
		s += fmt.Sprintf(", fmc %d", t.FMC)
	}
	return s
}

// DecodeTCB splits a TCB_VERSION by component; Turin's layout differs from
// Milan's and Genoa's.
func DecodeTCB(v uint64, product string) TCB {
	b := func(i int) uint8 { return uint8(v >> (8 * i)) }
	if product == Turin {
		return TCB{FMC: b(0), Bootloader: b(1), TEE: b(2), SNP: b(3), Microcode: b(7)}
	}
	return TCB{Bootloader: b(0), TEE: b(1), SNP: b(6), Microcode: b(7)}
}

// ProductOf names the product line of a version 3+ report from its CPUID
// family and model, or "" when the report does not say (version 2).
func ProductOf(r *abi.Report) string {
	switch {
	case r.CPUIDFamily == 0x19 && r.CPUIDModel <= 0x0F:
		return Milan
	case r.CPUIDFamily == 0x19 && (r.CPUIDModel >= 0x10 && r.CPUIDModel <= 0x1F || r.CPUIDModel >= 0xA0 && r.CPUIDModel <= 0xAF):
		return Genoa
	case r.CPUIDFamily == 0x1A && r.CPUIDModel <= 0x11:
		return Turin
	}
	return ""
}

// KDS extension OIDs of VCEK and VLEK certificates.
var (
	oidProductName = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 2}
	oidBlSPL       = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 1}
	oidTeeSPL      = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 2}
	oidSnpSPL      = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 3}
	oidUcodeSPL    = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 8}
	oidFmcSPL      = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 9}
	oidHWID        = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 4}
	oidCSPID       = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 5}
)

// Endorsement is what a VCEK or VLEK certificate says.
type Endorsement struct {
	Cert        *x509.Certificate
	Kind        string
	ProductName string // "Milan-B0", "Genoa", ... (may be empty)
	TCB         TCB
	HWID        []byte // VCEK: the chip id (64 bytes; 8 on Turin)
	CSPID       string // VLEK: the cloud provider
}

// EndorsementKey checks that cert is a well-formed VCEK or VLEK
// certificate (X.509 v3, ECDSA P-384 key, RSA-PSS SHA-384 signature, the
// subject AMD gives it) and reads its KDS extensions.
func EndorsementKey(cert *x509.Certificate, kind string) (*Endorsement, error) {
	bad := func(format string, args ...any) error {
		return fail(StepEndorsementKey, "the %s certificate: "+format, append([]any{strings.ToUpper(kind)}, args...)...)
	}
	if cert.Version != 3 {
		return nil, bad("version %d, want 3", cert.Version)
	}
	if cert.SignatureAlgorithm != x509.SHA384WithRSAPSS {
		return nil, bad("signature algorithm %s, want SHA-384 with RSA-PSS", cert.SignatureAlgorithm)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P384() {
		return nil, bad("its key is not ECDSA P-384")
	}
	wantCN := "SEV-VCEK"
	if kind == KindVLEK {
		wantCN = "SEV-VLEK"
	}
	if cert.Subject.CommonName != wantCN {
		return nil, bad("its subject is %q, not %q: it is not an AMD %s certificate", cert.Subject.CommonName, wantCN, strings.ToUpper(kind))
	}
	e := &Endorsement{Cert: cert, Kind: kind}
	seen := map[string]bool{}
	spl := func(v []byte, dst *uint8, name string) error {
		var n int
		if rest, err := asn1.Unmarshal(v, &n); err != nil || len(rest) != 0 || n < 0 || n > 255 {
			return bad("extension %s is not an integer 0..255", name)
		}
		*dst = uint8(n)
		return nil
	}
	for _, x := range cert.Extensions {
		var err error
		switch {
		case x.Id.Equal(oidProductName):
			var s string
			if _, err2 := asn1.Unmarshal(x.Value, &s); err2 != nil {
				s = string(x.Value) // some KDS certificates carry it raw
			}
			if len(s) > 64 {
				err = bad("product name is too long")
			}
			e.ProductName = s
		case x.Id.Equal(oidBlSPL):
			err = spl(x.Value, &e.TCB.Bootloader, "blSPL")
		case x.Id.Equal(oidTeeSPL):
			err = spl(x.Value, &e.TCB.TEE, "teeSPL")
		case x.Id.Equal(oidSnpSPL):
			err = spl(x.Value, &e.TCB.SNP, "snpSPL")
		case x.Id.Equal(oidUcodeSPL):
			err = spl(x.Value, &e.TCB.Microcode, "ucodeSPL")
		case x.Id.Equal(oidFmcSPL):
			err = spl(x.Value, &e.TCB.FMC, "fmcSPL")
		case x.Id.Equal(oidHWID):
			var h []byte
			if _, err2 := asn1.Unmarshal(x.Value, &h); err2 != nil {
				h = x.Value // the hwID is the raw 64 bytes in AMD's VCEKs
			}
			if len(h) != 64 && len(h) != 8 {
				err = bad("hwID is %d bytes, want 64 (8 on Turin)", len(h))
			}
			e.HWID = h
		case x.Id.Equal(oidCSPID):
			var s string
			if _, err2 := asn1.Unmarshal(x.Value, &s); err2 != nil {
				s = string(x.Value)
			}
			e.CSPID = s
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		if seen[x.Id.String()] {
			return nil, bad("extension %s appears twice", x.Id)
		}
		seen[x.Id.String()] = true
	}
	for _, need := range []asn1.ObjectIdentifier{oidBlSPL, oidTeeSPL, oidSnpSPL, oidUcodeSPL} {
		if !seen[need.String()] {
			return nil, bad("it has no TCB extension %s: it is not a KDS certificate", need)
		}
	}
	if kind == KindVCEK && e.HWID == nil {
		return nil, bad("it has no hwID extension")
	}
	return e, nil
}

// Chain finds the pinned roots of the key's kind whose ASK (ASVK) signed
// the endorsement certificate, checks ASK ← ARK and the validity of all
// three at now, and returns them: which ASK signed it says the product
// line. product, when known from the report, must agree.
func Chain(e *Endorsement, roots []*Roots, product string, now time.Time) (*Roots, error) {
	var found *Roots
	for _, r := range roots {
		if r.Kind != e.Kind || product != "" && r.Product != product {
			continue
		}
		if bytes.Equal(e.Cert.RawIssuer, r.ASK.RawSubject) && signedBy(e.Cert, r.ASK) == nil {
			found = r
			break
		}
	}
	if found == nil {
		where := "any AMD product line"
		if product != "" {
			where = "AMD " + product + " (the report's CPU)"
		}
		return nil, fail(StepChain, "the %s certificate (issuer %q) is not signed by the signing key of %s: it is not a genuine AMD endorsement key", strings.ToUpper(e.Kind), e.Cert.Issuer.CommonName, where)
	}
	if err := signedBy(found.ASK, found.ARK); err != nil || !bytes.Equal(found.ASK.RawIssuer, found.ARK.RawSubject) {
		return nil, fail(StepChain, "the %s certificate is not signed by %s: %v", found.ASK.Subject.CommonName, found.ARK.Subject.CommonName, err)
	}
	if err := signedBy(found.ARK, found.ARK); err != nil {
		return nil, fail(StepChain, "%s is not self-signed: %v", found.ARK.Subject.CommonName, err)
	}
	for _, c := range []struct {
		cert *x509.Certificate
		what string
	}{{found.ARK, "AMD root key certificate"}, {found.ASK, "AMD signing key certificate"}, {e.Cert, strings.ToUpper(e.Kind) + " certificate"}} {
		if now.Before(c.cert.NotBefore) {
			return nil, fail(StepChain, "the %s %q is not valid before %s (verifying at %s)", c.what, c.cert.Subject.CommonName, ts(c.cert.NotBefore), ts(now))
		}
		if now.After(c.cert.NotAfter) {
			return nil, fail(StepChain, "the %s %q expired on %s (verifying at %s); fetch a current one from AMD's KDS", c.what, c.cert.Subject.CommonName, ts(c.cert.NotAfter), ts(now))
		}
	}
	if e.ProductName != "" && !strings.HasPrefix(e.ProductName, found.Product) {
		return nil, fail(StepChain, "the %s certificate names product %q but is signed by the %s signing key", strings.ToUpper(e.Kind), e.ProductName, found.Product)
	}
	return found, nil
}

// Chain signatures (RSA-PSS with 4096-bit keys) are the same for every
// report of a chip; a verified (parent key, signed bytes, signature) triple
// is remembered, so that verification with a known VCEK costs the report
// signature only. Only successes are kept, keyed by a hash of all three
// inputs, so a hit is exactly as strong as verifying again; validity
// windows are never cached.
var (
	sigMu    sync.Mutex
	sigCache = map[[32]byte]struct{}{}
)

const sigCacheMax = 4096

func signedBy(c, parent *x509.Certificate) error {
	return cachedCheck(parent, c.RawTBSCertificate, c.Signature, c.SignatureAlgorithm.String(), func() error { return c.CheckSignatureFrom(parent) })
}

func crlSignedBy(crl *x509.RevocationList, parent *x509.Certificate) error {
	return cachedCheck(parent, crl.RawTBSRevocationList, crl.Signature, "crl "+crl.SignatureAlgorithm.String(), func() error { return crl.CheckSignatureFrom(parent) })
}

func cachedCheck(parent *x509.Certificate, tbs, sig []byte, alg string, check func() error) error {
	h := sha256.New()
	var n [8]byte
	for _, b := range [][]byte{parent.RawSubjectPublicKeyInfo, tbs, sig, []byte(alg)} {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	var k [32]byte
	h.Sum(k[:0])
	sigMu.Lock()
	_, ok := sigCache[k]
	sigMu.Unlock()
	if ok {
		return nil
	}
	if err := check(); err != nil {
		return err
	}
	sigMu.Lock()
	if len(sigCache) >= sigCacheMax {
		clear(sigCache)
	}
	sigCache[k] = struct{}{}
	sigMu.Unlock()
	return nil
}

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// ChipID checks that a VCEK is the one of the report's chip. A VLEK is not
// per chip and passes.
func ChipID(e *Endorsement, r *abi.Report) error {
	if e.Kind != KindVCEK {
		return nil
	}
	if r.MaskChipKey() {
		return fail(StepChipID, "the report masks its chip id (MASK_CHIP_KEY), so it cannot be matched with a VCEK")
	}
	want := r.ChipID[:]
	if len(e.HWID) == 8 {
		want = want[:8]
	}
	if !bytes.Equal(e.HWID, want) {
		return fail(StepChipID, "the VCEK is for chip %s…, but the report comes from chip %s…: use the VCEK of the chip that made the report", hex.EncodeToString(e.HWID[:8]), hex.EncodeToString(r.ChipID[:8]))
	}
	return nil
}

// ReportedTCB checks that the endorsement key was issued for the report's
// REPORTED_TCB: AMD's firmware signs with the key derived for that TCB, so
// any other TCB means the report or the certificate is not what it claims.
func ReportedTCB(e *Endorsement, r *abi.Report, product string) (TCB, error) {
	got := DecodeTCB(r.ReportedTCB, product)
	if got == e.TCB {
		return got, nil
	}
	above := got.Bootloader > e.TCB.Bootloader || got.TEE > e.TCB.TEE || got.SNP > e.TCB.SNP || got.Microcode > e.TCB.Microcode || got.FMC > e.TCB.FMC
	rel := "below"
	if above {
		rel = "above"
	}
	return got, fail(StepReportedTCB, "the report's reported TCB (%s) is %s the TCB the %s was issued for (%s): the report claims a TCB its key does not certify; use the %s for the reported TCB", got, rel, strings.ToUpper(e.Kind), e.TCB, strings.ToUpper(e.Kind))
}

// ReportSignature checks the ECDSA P-384 SHA-384 signature over the report.
func ReportSignature(r *abi.Report, e *Endorsement) error {
	pub := e.Cert.PublicKey.(*ecdsa.PublicKey)
	h := sha512.Sum384(r.Signed)
	rr := new(big.Int).SetBytes(reverse(r.SignatureR[:]))
	ss := new(big.Int).SetBytes(reverse(r.SignatureS[:]))
	if !ecdsa.Verify(pub, h[:], rr, ss) {
		return fail(StepReportSignature, "the report signature does not verify with the %s: the report was altered, or the %s is not the key that signed it", strings.ToUpper(e.Kind), strings.ToUpper(e.Kind))
	}
	return nil
}

func reverse(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[len(b)-1-i] = c
	}
	return out
}

// CRL checks that crl is the CRL of roots' ARK (issuer, signature) and valid at now.
func CRL(crl *x509.RevocationList, roots *Roots, now time.Time) error {
	if !bytes.Equal(crl.RawIssuer, roots.ARK.RawSubject) {
		return fail(StepCRL, "the CRL is issued by %q, not %s: use the CRL of the %s product line", crl.Issuer.CommonName, roots.ARK.Subject.CommonName, roots.Product)
	}
	if err := crlSignedBy(crl, roots.ARK); err != nil {
		return fail(StepCRL, "the CRL's signature does not verify with %s: %v", roots.ARK.Subject.CommonName, err)
	}
	if crl.NextUpdate.IsZero() {
		return fail(StepCRL, "the CRL has no next update")
	}
	if now.Before(crl.ThisUpdate) {
		return fail(StepCRL, "the CRL is not valid before %s (verifying at %s)", ts(crl.ThisUpdate), ts(now))
	}
	if now.After(crl.NextUpdate) {
		return fail(StepCRL, "the CRL expired on %s (verifying at %s); fetch a fresh one from AMD's KDS", ts(crl.NextUpdate), ts(now))
	}
	return nil
}

// NotRevoked checks that none of certs is in crl.
func NotRevoked(crl *x509.RevocationList, certs ...*x509.Certificate) error {
	for _, e := range crl.RevokedCertificateEntries {
		for _, c := range certs {
			if e.SerialNumber != nil && e.SerialNumber.Cmp(c.SerialNumber) == 0 {
				return fail(StepRevoked, "%q (serial %x) is revoked by AMD (CRL of %s, revoked %s): evidence it endorses is refused", c.Subject.CommonName, c.SerialNumber, ts(crl.ThisUpdate), ts(e.RevocationTime))
			}
		}
	}
	return nil
}

// Options configure Report.
type Options struct {
	Now time.Time
	// CRL, when set, returns the CRL of the product line's ARK (known once
	// the chain is verified); nil leaves revocation unchecked.
	CRL func(product, kind string) (*x509.RevocationList, error)
	// Roots replaces the pinned AMD roots; for tests only.
	Roots []*Roots
}

// Result is what verification established.
type Result struct {
	Report      *abi.Report
	Endorsement *Endorsement
	Roots       *Roots
	ReportedTCB TCB
	// RevocationChecked is true when a CRL was checked.
	RevocationChecked bool
}

// Report runs every step on report r with endorsement certificate cert.
func Report(r *abi.Report, cert *x509.Certificate, o Options) (*Result, error) {
	if o.Now.IsZero() {
		return nil, errors.New("snp verify: no time of verification given")
	}
	kind, err := KindOf(r)
	if err != nil {
		return nil, err
	}
	e, err := EndorsementKey(cert, kind)
	if err != nil {
		return nil, err
	}
	roots := o.Roots
	if roots == nil {
		roots = amdRoots
	}
	product := ProductOf(r)
	if r.Version >= 3 && product == "" {
		return nil, fail(StepChain, "the report's CPU (family %#x, model %#x) is not a known SEV-SNP product line (Milan, Genoa, Turin)", r.CPUIDFamily, r.CPUIDModel)
	}
	root, err := Chain(e, roots, product, o.Now)
	if err != nil {
		return nil, err
	}
	if err := ChipID(e, r); err != nil {
		return nil, err
	}
	tcb, err := ReportedTCB(e, r, root.Product)
	if err != nil {
		return nil, err
	}
	if err := ReportSignature(r, e); err != nil {
		return nil, err
	}
	res := &Result{Report: r, Endorsement: e, Roots: root, ReportedTCB: tcb}
	if o.CRL != nil {
		crl, err := o.CRL(root.Product, kind)
		if err != nil {
			return nil, &Error{Step: StepCRL, Err: fmt.Errorf("obtain the CRL of ARK-%s: %w", root.Product, err)}
		}
		if err := CRL(crl, root, o.Now); err != nil {
			return nil, err
		}
		if err := NotRevoked(crl, root.ASK, cert); err != nil {
			return nil, err
		}
		res.RevocationChecked = true
	}
	return res, nil
}

// ProductLines lists the known product lines.
var ProductLines = []string{Milan, Genoa, Turin}

// KnownProduct reports whether p is a known product line.
func KnownProduct(p string) bool { return slices.Contains(ProductLines, p) }
