// Package verify checks that a parsed SGX DCAP quote is genuine, as strictly
// as Intel's quote verification library: the quote's signature by the
// attestation key, the QE report's signature by the PCK certificate and its
// binding of the attestation key, the PCK chain up to the Intel SGX Root CA
// compiled into this package (never the root the quote brings), both CRLs,
// TCB info and QE identity (signatures, chains, validity, identity fields)
// and the TCB status they give. The clock is a parameter.
//
// Each step is its own exported function so that it can be tested alone;
// Quote runs them all in order. Errors are *Error values naming the step.
package verify

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/mse-in-go/mse/internal/attest/sgx/abi"
	"github.com/mse-in-go/mse/internal/attest/sgx/pcs"
)

//go:embed intel_sgx_root_ca.pem
var rootPEM []byte

// IntelRootCASHA256 is the SHA-256 fingerprint of the Intel SGX Root CA
// certificate (DER), as Intel publishes it.
const IntelRootCASHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"

var intelRoot = func() *x509.Certificate {
	blk, _ := pem.Decode(rootPEM)
	if blk == nil {
		panic("verify: embedded Intel SGX Root CA is not PEM")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		panic("verify: embedded Intel SGX Root CA: " + err.Error())
	}
	h := sha256.Sum256(c.Raw)
	if hex.EncodeToString(h[:]) != IntelRootCASHA256 || c.Subject.CommonName != "Intel SGX Root CA" {
		panic("verify: embedded Intel SGX Root CA has the wrong fingerprint")
	}
	return c
}()

// IntelRootCA returns the pinned Intel SGX Root CA certificate.
func IntelRootCA() *x509.Certificate { return intelRoot }

// Steps, as named in Error.Step.
const (
	StepQuoteSignature    = "quote_signature"
	StepQEReportSignature = "qe_report_signature"
	StepQEReportData      = "qe_report_data"
	StepPCKChain          = "pck_chain"
	StepPCKExtensions     = "pck_extensions"
	StepRootCACRL         = "root_ca_crl"
	StepPCKCRL            = "pck_crl"
	StepRevoked           = "revoked"
	StepTCBInfo           = "tcb_info"
	StepTCBLevel          = "tcb_level"
	StepQEIdentity        = "qe_identity"
	StepQEReport          = "qe_report"
	StepQETCBLevel        = "qe_tcb_level"
	StepCollateral        = "collateral"
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

// Options configure Quote.
type Options struct {
	// Now is the instant of verification: every certificate, CRL, TCB info
	// and QE identity must be valid then.
	Now time.Time
	// Collateral evaluates the TCB status. Nil checks the signatures and the
	// PCK chain only, and the result's TCBStatus is empty (unchecked).
	Collateral *pcs.Collateral
	// Root replaces the Intel SGX Root CA; for tests of this package only.
	Root *x509.Certificate
}

// Result is what verification established.
type Result struct {
	Quote    *abi.Quote
	PCKChain []*x509.Certificate // leaf, PCK CA, root
	PCK      *pcs.PCKExtensions
	PCKCA    string // pcs.CAProcessor or pcs.CAPlatform

	// TCB evaluation; empty when no collateral was given.
	TCBStatus         string // combined status of the platform and the QE
	PlatformTCBStatus string
	QETCBStatus       string
	AdvisoryIDs       []string
	TCBDate           time.Time
	// CollateralIssued is the oldest issue date among the collateral used;
	// CollateralNextUpdate the earliest next update.
	CollateralIssued        time.Time
	CollateralNextUpdate    time.Time
	TCBEvaluationDataNumber int
}

// Quote runs every step on a parsed quote: Signatures, then, when
// collateral is given, Evaluate.
func Quote(q *abi.Quote, o Options) (*Result, error) {
	res, err := Signatures(q, o)
	if err != nil || o.Collateral == nil {
		return res, err
	}
	if err := Evaluate(res, o.Collateral, o); err != nil {
		return nil, err
	}
	return res, nil
}

// Signatures runs the steps that need no collateral: the quote signature,
// the QE report data, the PCK chain to the pinned root, the QE report
// signature and the PCK certificate's SGX extensions. Its result says which
// collateral Evaluate needs (PCK.FMSPC, PCKCA). o.Collateral is ignored.
func Signatures(q *abi.Quote, o Options) (*Result, error) {
	root := o.root()
	if o.Now.IsZero() {
		return nil, errors.New("sgx verify: no time of verification given")
	}
	if err := QuoteSignature(q); err != nil {
		return nil, err
	}
	if err := QEReportData(q); err != nil {
		return nil, err
	}
	chain, err := PCKChain(q.CertData, root, o.Now)
	if err != nil {
		return nil, err
	}
	if err := QEReportSignature(q, chain[0]); err != nil {
		return nil, err
	}
	ext, err := pcs.ParsePCKExtensions(chain[0])
	if err != nil {
		return nil, fail(StepPCKExtensions, "%v", err)
	}
	return &Result{Quote: q, PCKChain: chain, PCK: ext, PCKCA: pcs.CAOf(chain[1])}, nil
}

func (o *Options) root() *x509.Certificate {
	if o.Root != nil {
		return o.Root
	}
	return intelRoot
}

// Evaluate checks collateral c for the quote of res (a result of
// Signatures) at o.Now — CRLs and revocation, TCB info, TCB level, QE
// identity — and fills res's TCB fields.
func Evaluate(res *Result, c *pcs.Collateral, o Options) error {
	root := o.root()
	q, chain, ext := res.Quote, res.PCKChain, res.PCK
	if c == nil {
		return fail(StepCollateral, "no collateral")
	}
	if c.RootCACRL == nil || c.PCKCRL == nil || c.TCBInfo == nil || c.QEIdentity == nil {
		return fail(StepCollateral, "collateral is incomplete: root CA CRL, PCK CRL, TCB info and QE identity are all needed")
	}
	// Which platform the collateral is for comes first: it is the most useful
	// message when a bundle for another machine is used, and it accepts nothing.
	if err := TCBInfoMatches(c.TCBInfo, ext); err != nil {
		return err
	}
	if err := RootCACRL(c.RootCACRL, root, o.Now); err != nil {
		return err
	}
	if err := PCKCRL(c.PCKCRL, chain[1], res.PCKCA, o.Now); err != nil {
		return err
	}
	if err := NotRevoked(c.RootCACRL, chain[1], "PCK CA certificate", "root CA CRL"); err != nil {
		return err
	}
	if err := NotRevoked(c.PCKCRL, chain[0], "PCK certificate", "PCK CA CRL"); err != nil {
		return err
	}
	if err := TCBInfo(c, root, o.Now); err != nil {
		return err
	}
	level, err := TCBLevel(c.TCBInfo, ext)
	if err != nil {
		return err
	}
	if err := QEIdentity(c, root, o.Now); err != nil {
		return err
	}
	qeLevel, err := QEReport(c.QEIdentity, &q.QEReport)
	if err != nil {
		return err
	}
	res.PlatformTCBStatus = level.TCBStatus
	res.QETCBStatus = qeLevel.TCBStatus
	res.TCBStatus = Converge(level.TCBStatus, qeLevel.TCBStatus)
	res.AdvisoryIDs = mergeAdvisories(level.AdvisoryIDs, qeLevel.AdvisoryIDs)
	res.TCBDate = level.TCBDate
	res.CollateralIssued = c.Issued()
	res.CollateralNextUpdate = c.NextUpdate()
	res.TCBEvaluationDataNumber = c.TCBInfo.TCBEvaluationDataNumber
	return nil
}

func mergeAdvisories(a, b []string) []string {
	out := make([]string, 0, len(a)+len(b))
	for _, l := range [][]string{a, b} {
		for _, s := range l {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// ecdsaVerify checks a raw r‖s P-256 signature over SHA-256(msg).
func ecdsaVerify(pub *ecdsa.PublicKey, msg, sig []byte) bool {
	if len(sig) != 64 || pub == nil || pub.Curve != elliptic.P256() {
		return false
	}
	h := sha256.Sum256(msg)
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, h[:], r, s)
}

// AttestationKey returns the quote's attestation key.
func AttestationKey(q *abi.Quote) (*ecdsa.PublicKey, error) {
	k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append([]byte{4}, q.AttestationKey[:]...))
	if err != nil {
		return nil, fail(StepQuoteSignature, "the quote's attestation key is not a P-256 point: the quote is corrupt")
	}
	return k, nil
}

// QuoteSignature checks the attestation key's signature over the header and
// report body.
func QuoteSignature(q *abi.Quote) error {
	k, err := AttestationKey(q)
	if err != nil {
		return err
	}
	if !ecdsaVerify(k, q.Signed, q.Signature[:]) {
		return fail(StepQuoteSignature, "the quote signature does not verify with the quote's attestation key: the header or report body was altered after the quoting enclave signed them")
	}
	return nil
}

// QEReportData checks that the QE report binds the attestation key:
// report data = SHA-256(attestation key ‖ QE authentication data) ‖ 32 zero bytes.
func QEReportData(q *abi.Quote) error {
	h := sha256.New()
	h.Write(q.AttestationKey[:])
	h.Write(q.QEAuthData)
	want := h.Sum(nil)
	rd := q.QEReport.ReportData
	if !bytes.Equal(rd[:32], want) {
		return fail(StepQEReportData, "the QE report data is not SHA-256(attestation key ‖ QE authentication data): the attestation key or authentication data was not certified by the quoting enclave")
	}
	if [32]byte(rd[32:]) != [32]byte{} {
		return fail(StepQEReportData, "the QE report data [32:64] is not zero")
	}
	return nil
}

// QEReportSignature checks the PCK certificate's signature over the QE report.
func QEReportSignature(q *abi.Quote, pck *x509.Certificate) error {
	pub, ok := pck.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return fail(StepQEReportSignature, "the PCK certificate's key is not ECDSA P-256")
	}
	if !ecdsaVerify(pub, q.QEReportRaw, q.QEReportSignature[:]) {
		return fail(StepQEReportSignature, "the QE report signature does not verify with the PCK certificate's key: the QE report was altered or the PCK certificate belongs to another platform")
	}
	return nil
}

func validAt(c *x509.Certificate, now time.Time, what string) error {
	if now.Before(c.NotBefore) {
		return fmt.Errorf("%s %q is not valid before %s (verifying at %s)", what, c.Subject.CommonName, ts(c.NotBefore), ts(now))
	}
	if now.After(c.NotAfter) {
		return fmt.Errorf("%s %q expired on %s (verifying at %s)", what, c.Subject.CommonName, ts(c.NotAfter), ts(now))
	}
	return nil
}

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// PCKChain parses the quote's certification data and verifies the chain
// PCK certificate → PCK CA → the pinned root at now. The root the quote
// carries must be the pinned root itself.
func PCKChain(certData []byte, root *x509.Certificate, now time.Time) ([]*x509.Certificate, error) {
	chain, err := abi.ParsePCKChain(certData)
	if err != nil {
		return nil, fail(StepPCKChain, "%v", err)
	}
	leaf, inter, qroot := chain[0], chain[1], chain[2]
	if !bytes.Equal(qroot.Raw, root.Raw) {
		h := sha256.Sum256(qroot.Raw)
		return nil, fail(StepPCKChain, "the PCK chain ends in %q (SHA-256 %s…), not the Intel SGX Root CA: the quote was not certified by Intel", qroot.Subject.CommonName, hex.EncodeToString(h[:8]))
	}
	if cn := inter.Subject.CommonName; cn != "Intel SGX PCK Processor CA" && cn != "Intel SGX PCK Platform CA" {
		return nil, fail(StepPCKChain, "the PCK chain's intermediate is %q, not an Intel SGX PCK Processor or Platform CA", cn)
	}
	if cn := leaf.Subject.CommonName; cn != "Intel SGX PCK Certificate" {
		return nil, fail(StepPCKChain, "the PCK chain's leaf is %q, not an Intel SGX PCK Certificate", cn)
	}
	if err := certSignedBy(inter, root); err != nil || !bytes.Equal(inter.RawIssuer, root.RawSubject) {
		return nil, fail(StepPCKChain, "the PCK CA certificate %q is not signed by the Intel SGX Root CA: %v", inter.Subject.CommonName, orIssuer(err))
	}
	if err := leaf.CheckSignatureFrom(inter); err != nil || !bytes.Equal(leaf.RawIssuer, inter.RawSubject) {
		return nil, fail(StepPCKChain, "the PCK certificate is not signed by %q: %v", inter.Subject.CommonName, orIssuer(err))
	}
	for _, c := range []struct {
		cert *x509.Certificate
		what string
	}{{root, "root CA certificate"}, {inter, "PCK CA certificate"}, {leaf, "PCK certificate"}} {
		if err := validAt(c.cert, now, c.what); err != nil {
			return nil, fail(StepPCKChain, "%v", err)
		}
	}
	return chain, nil
}

func orIssuer(err error) error {
	if err == nil {
		return errors.New("issuer name does not match")
	}
	return err
}

func crlValid(crl *x509.RevocationList, now time.Time, what string) error {
	if crl.NextUpdate.IsZero() {
		return fmt.Errorf("the %s has no next update", what)
	}
	if now.Before(crl.ThisUpdate) {
		return fmt.Errorf("the %s is not valid before %s (verifying at %s)", what, ts(crl.ThisUpdate), ts(now))
	}
	if now.After(crl.NextUpdate) {
		return fmt.Errorf("the %s expired on %s (verifying at %s); fetch fresh collateral", what, ts(crl.NextUpdate), ts(now))
	}
	return nil
}

// RootCACRL checks the root CA CRL's signature by the pinned root and its
// validity at now.
func RootCACRL(crl *x509.RevocationList, root *x509.Certificate, now time.Time) error {
	if !bytes.Equal(crl.RawIssuer, root.RawSubject) {
		return fail(StepRootCACRL, "the root CA CRL is issued by %q, not the Intel SGX Root CA", crl.Issuer.CommonName)
	}
	if err := crlSignedBy(crl, root); err != nil {
		return fail(StepRootCACRL, "the root CA CRL's signature does not verify with the Intel SGX Root CA: %v", err)
	}
	if err := crlValid(crl, now, "root CA CRL"); err != nil {
		return fail(StepRootCACRL, "%v", err)
	}
	return nil
}

// PCKCRL checks the PCK CRL's signature by the quote's PCK CA and its
// validity at now.
func PCKCRL(crl *x509.RevocationList, pckCA *x509.Certificate, ca string, now time.Time) error {
	if !bytes.Equal(crl.RawIssuer, pckCA.RawSubject) {
		return fail(StepPCKCRL, "the PCK CRL is issued by %q, but the quote's PCK certificate by %q: use the CRL for ca=%s", crl.Issuer.CommonName, pckCA.Subject.CommonName, ca)
	}
	if err := crlSignedBy(crl, pckCA); err != nil {
		return fail(StepPCKCRL, "the PCK CRL's signature does not verify with %q: %v", pckCA.Subject.CommonName, err)
	}
	if err := crlValid(crl, now, "PCK CRL"); err != nil {
		return fail(StepPCKCRL, "%v", err)
	}
	return nil
}

// NotRevoked checks that cert's serial number is not in crl.
func NotRevoked(crl *x509.RevocationList, cert *x509.Certificate, what, crlName string) error {
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber != nil && e.SerialNumber.Cmp(cert.SerialNumber) == 0 {
			return fail(StepRevoked, "%s is revoked (serial %s in the %s issued %s, revoked %s); the platform must be re-provisioned or the evidence refused",
				what, shortSerial(cert.SerialNumber), crlName, crl.ThisUpdate.UTC().Format("2006-01-02"), e.RevocationTime.UTC().Format("2006-01-02"))
		}
	}
	return nil
}

func shortSerial(n *big.Int) string {
	s := hex.EncodeToString(n.Bytes())
	if len(s) > 8 {
		return s[:8] + "…"
	}
	return s
}

// signingChain verifies the chain that signs TCB info or QE identity: a
// leaf "Intel SGX TCB Signing" certificate signed by the pinned root (a root
// in the chain, if any, must be the pinned root), valid at now.
func signingChain(chain []*x509.Certificate, root *x509.Certificate, now time.Time, step, what string) (*ecdsa.PublicKey, *x509.Certificate, error) {
	if len(chain) == 0 || len(chain) > 2 {
		return nil, nil, fail(step, "the %s issuer chain holds %d certificates, want the TCB signing certificate and the root CA", what, len(chain))
	}
	leaf := chain[0]
	if len(chain) == 2 && !bytes.Equal(chain[1].Raw, root.Raw) {
		return nil, nil, fail(step, "the %s issuer chain ends in %q, not the Intel SGX Root CA", what, chain[1].Subject.CommonName)
	}
	if leaf.Subject.CommonName != "Intel SGX TCB Signing" {
		return nil, nil, fail(step, "the %s is signed by %q, not \"Intel SGX TCB Signing\"", what, leaf.Subject.CommonName)
	}
	if err := certSignedBy(leaf, root); err != nil || !bytes.Equal(leaf.RawIssuer, root.RawSubject) {
		return nil, nil, fail(step, "the %s signing certificate is not signed by the Intel SGX Root CA: %v", what, orIssuer(err))
	}
	if err := validAt(leaf, now, what+" signing certificate"); err != nil {
		return nil, nil, fail(step, "%v", err)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, nil, fail(step, "the %s signing key is not ECDSA P-256", what)
	}
	return pub, leaf, nil
}

// TCBInfoMatches checks that TCB info is SGX TCB info for the platform of
// the PCK certificate (FMSPC and PCE ID).
func TCBInfoMatches(info *pcs.TCBInfo, pck *pcs.PCKExtensions) error {
	switch {
	case info.Version == 3 && info.ID != "SGX":
		return fail(StepTCBInfo, "TCB info id is %q, want \"SGX\" (TDX TCB info cannot verify an SGX quote)", info.ID)
	case info.Version != 2 && info.Version != 3:
		return fail(StepTCBInfo, "TCB info version %d is not supported (2 or 3)", info.Version)
	case info.TCBType != 0:
		return fail(StepTCBInfo, "TCB info tcbType %d is not supported (0)", info.TCBType)
	}
	if !strings.EqualFold(info.FMSPC, pck.FMSPCHex()) {
		return fail(StepTCBInfo, "the collateral's TCB info is for FMSPC %s, but the quote's PCK certificate has FMSPC %s: use collateral for this platform", strings.ToUpper(info.FMSPC), pck.FMSPCHex())
	}
	if !strings.EqualFold(info.PCEID, pck.PCEIDHex()) {
		return fail(StepTCBInfo, "the collateral's TCB info is for PCE ID %s, but the quote's PCK certificate has PCE ID %s", info.PCEID, pck.PCEIDHex())
	}
	return nil
}

// TCBInfo checks the TCB info's signing chain, revocation of its signing
// certificate, its signature and its validity window at now. Identity
// fields are checked by TCBInfoMatches.
func TCBInfo(c *pcs.Collateral, root *x509.Certificate, now time.Time) error {
	pub, leaf, err := signingChain(c.TCBInfoIssuerChain, root, now, StepTCBInfo, "TCB info")
	if err != nil {
		return err
	}
	if err := NotRevoked(c.RootCACRL, leaf, "TCB signing certificate", "root CA CRL"); err != nil {
		return err
	}
	if !collateralSigs.verify(pub, leaf.RawSubjectPublicKeyInfo, c.TCBInfoRaw, c.TCBInfoSignature, false) {
		return fail(StepTCBInfo, "the TCB info signature does not verify with the TCB signing certificate: the TCB info was altered")
	}
	i := c.TCBInfo
	if now.Before(i.IssueDate) {
		return fail(StepTCBInfo, "the TCB info was issued %s, after the time of verification %s", ts(i.IssueDate), ts(now))
	}
	if now.After(i.NextUpdate) {
		return fail(StepTCBInfo, "the TCB info expired on %s (next update; verifying at %s): fetch fresh collateral", ts(i.NextUpdate), ts(now))
	}
	return nil
}

// TCBLevel finds the platform's TCB level: the first level whose 16
// component SVNs and PCESVN are all at most the PCK certificate's.
func TCBLevel(info *pcs.TCBInfo, pck *pcs.PCKExtensions) (*pcs.TCBLevel, error) {
	for i := range info.TCBLevels {
		l := &info.TCBLevels[i]
		ok := pck.PCESVN >= l.TCB.PCESVN
		for j := 0; ok && j < 16; j++ {
			ok = pck.CompSVN[j] >= l.TCB.CompSVN[j]
		}
		if ok {
			return l, nil
		}
	}
	return nil, fail(StepTCBLevel, "the platform's TCB (component SVNs %v, PCESVN %d) is below every TCB level in the TCB info: the platform is not supported; update its microcode/BIOS", pck.CompSVN, pck.PCESVN)
}

// QEIdentity checks the QE identity's chain, revocation of its signing
// certificate, its signature, id, version and validity window at now.
func QEIdentity(c *pcs.Collateral, root *x509.Certificate, now time.Time) error {
	return EnclaveIdentity(c, root, now, "QE")
}

// EnclaveIdentity is QEIdentity for the quoting enclave identity wantID:
// "QE" for SGX quotes, "TD_QE" for TDX quotes.
func EnclaveIdentity(c *pcs.Collateral, root *x509.Certificate, now time.Time, wantID string) error {
	id := c.QEIdentity
	pub, leaf, err := signingChain(c.QEIdentityIssuerChain, root, now, StepQEIdentity, "QE identity")
	if err != nil {
		return err
	}
	if err := NotRevoked(c.RootCACRL, leaf, "QE identity signing certificate", "root CA CRL"); err != nil {
		return err
	}
	if !collateralSigs.verify(pub, leaf.RawSubjectPublicKeyInfo, c.QEIdentityRaw, c.QEIdentitySignature, false) {
		return fail(StepQEIdentity, "the QE identity signature does not verify with the TCB signing certificate: the QE identity was altered")
	}
	if id.ID != wantID || id.Version != 2 {
		return fail(StepQEIdentity, "QE identity is id %q version %d, want %s version 2 (the QE identity of SGX (QE) and of TDX (TD_QE) differ: use the collateral for this quote's TEE)", id.ID, id.Version, wantID)
	}
	if now.Before(id.IssueDate) {
		return fail(StepQEIdentity, "the QE identity was issued %s, after the time of verification %s", ts(id.IssueDate), ts(now))
	}
	if now.After(id.NextUpdate) {
		return fail(StepQEIdentity, "the QE identity expired on %s (next update; verifying at %s): fetch fresh collateral", ts(id.NextUpdate), ts(now))
	}
	return nil
}

// QEReport checks the QE report against a verified QE identity (MRSIGNER,
// ISVPRODID, masked MISCSELECT and ATTRIBUTES) and returns the QE's TCB
// level, the first whose ISVSVN is at most the QE's.
func QEReport(id *pcs.EnclaveIdentity, qe *abi.ReportBody) (*pcs.EnclaveTCBLevel, error) {
	if qe.MRSigner != id.MRSigner {
		return nil, fail(StepQEReport, "the quoting enclave's MRSIGNER %x is not Intel's (%x): the quote was not made by Intel's quoting enclave", qe.MRSigner[:8], id.MRSigner[:8])
	}
	if int(qe.ISVProdID) != id.ISVProdID {
		return nil, fail(StepQEReport, "the quoting enclave's ISVPRODID %d is not %d", qe.ISVProdID, id.ISVProdID)
	}
	mask := binary.BigEndian.Uint32(id.MiscSelectMask[:])
	if qe.MiscSelect&mask != binary.BigEndian.Uint32(id.MiscSelect[:])&mask {
		return nil, fail(StepQEReport, "the quoting enclave's MISCSELECT %08x does not match the QE identity (%08x under mask %08x)", qe.MiscSelect, binary.BigEndian.Uint32(id.MiscSelect[:]), mask)
	}
	for i := range 16 {
		if qe.Attributes[i]&id.AttributesMask[i] != id.Attributes[i]&id.AttributesMask[i] {
			return nil, fail(StepQEReport, "the quoting enclave's ATTRIBUTES %x do not match the QE identity (%x under mask %x)", qe.Attributes, id.Attributes, id.AttributesMask)
		}
	}
	for i := range id.TCBLevels {
		l := &id.TCBLevels[i]
		if int(qe.ISVSVN) >= l.TCB.ISVSVN {
			return l, nil
		}
	}
	return nil, fail(StepQETCBLevel, "the quoting enclave's ISVSVN %d is below every TCB level of the QE identity: the QE is not supported", qe.ISVSVN)
}

// Converge combines the platform's TCB status with the QE's, as Intel's
// library does: an out-of-date QE makes the platform out of date, a revoked
// QE makes it revoked.
func Converge(platform, qe string) string {
	switch qe {
	case pcs.StatusOutOfDate:
		switch platform {
		case pcs.StatusUpToDate, pcs.StatusSWHardeningNeeded:
			return pcs.StatusOutOfDate
		case pcs.StatusConfigurationNeeded, pcs.StatusConfigurationAndSWHardeningNeeded:
			return pcs.StatusOutOfDateConfigurationNeeded
		}
	case pcs.StatusRevoked:
		return pcs.StatusRevoked
	}
	return platform
}
