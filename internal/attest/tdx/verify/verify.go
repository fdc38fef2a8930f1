// Package verify checks that a parsed TDX quote is genuine, as Intel's
// quote verification library does for TDX: the quote's signature by the
// attestation key, the QE report's signature by the PCK certificate and its
// binding of the attestation key, the PCK chain up to the pinned Intel SGX
// Root CA, both CRLs, the TDX TCB info (id "TDX", version 3) and the TD QE
// identity, the TDX module's identity (MRSIGNERSEAM, SEAM attributes) and
// TCB level, and the TCB status they give together. The clock is a
// parameter.
//
// The quote's ECDSA signature data has the SGX layout, and the PKI and
// collateral are SGX's: every step that is the same is package
// attest/sgx/verify's own function, run on the TDX quote's signature data.
// What is TDX's own (TCB info identity, TCB level with TDX components, TDX
// module) is here. Errors are *Error values naming the step.
package verify

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	sgxabi "github.com/mse-in-go/mse/internal/attest/sgx/abi"
	"github.com/mse-in-go/mse/internal/attest/sgx/pcs"
	sgxverify "github.com/mse-in-go/mse/internal/attest/sgx/verify"
	"github.com/mse-in-go/mse/internal/attest/tdx/abi"
)

// Error says which step of verification failed and why. It is the SGX
// verifier's type, so that errors.As and StepOf work on both.
type Error = sgxverify.Error

// Steps, as named in Error.Step: the SGX steps, and those of TDX.
const (
	StepQuoteSignature    = sgxverify.StepQuoteSignature
	StepQEReportSignature = sgxverify.StepQEReportSignature
	StepQEReportData      = sgxverify.StepQEReportData
	StepPCKChain          = sgxverify.StepPCKChain
	StepPCKExtensions     = sgxverify.StepPCKExtensions
	StepRootCACRL         = sgxverify.StepRootCACRL
	StepPCKCRL            = sgxverify.StepPCKCRL
	StepRevoked           = sgxverify.StepRevoked
	StepTCBInfo           = sgxverify.StepTCBInfo
	StepTCBLevel          = sgxverify.StepTCBLevel
	StepQEIdentity        = sgxverify.StepQEIdentity
	StepQEReport          = sgxverify.StepQEReport
	StepQETCBLevel        = sgxverify.StepQETCBLevel
	StepCollateral        = sgxverify.StepCollateral
	// StepTDXModule: the TDX module's identity (MRSIGNERSEAM, SEAM
	// attributes) or TCB level does not match the TCB info.
	StepTDXModule = "tdx_module"
)

// StepOf returns the step of an *Error in err's chain, or "".
func StepOf(err error) string { return sgxverify.StepOf(err) }

func fail(step, format string, args ...any) error {
	return &Error{Step: step, Err: fmt.Errorf(format, args...)}
}

// Options configure verification.
type Options struct {
	// Now is the instant of verification.
	Now time.Time
	// Root replaces the Intel SGX Root CA; for tests only.
	Root *x509.Certificate
}

func (o *Options) root() *x509.Certificate {
	if o.Root != nil {
		return o.Root
	}
	return sgxverify.IntelRootCA()
}

// Result is what verification established.
type Result struct {
	Quote    *abi.Quote
	PCKChain []*x509.Certificate // leaf, PCK CA, root
	PCK      *pcs.PCKExtensions
	PCKCA    string

	// TCB evaluation; empty when no collateral was given.
	TCBStatus         string // platform, QE and TDX module combined
	PlatformTCBStatus string
	QETCBStatus       string
	ModuleTCBStatus   string // empty for TDX module major version 0
	AdvisoryIDs       []string
	TCBDate           time.Time
	// ModuleIdentity is the TDX module identity that matched ("TDX_01"), or
	// "" when the TCB info's tdxModule applied.
	ModuleIdentity          string
	CollateralIssued        time.Time
	CollateralNextUpdate    time.Time
	TCBEvaluationDataNumber int
}

// SignatureData returns the quote's ECDSA signature data in the SGX
// quote's structure, which the SGX steps take: the signed bytes are the TDX
// header and TD report.
func SignatureData(q *abi.Quote) *sgxabi.Quote {
	return &sgxabi.Quote{
		Signed:            q.Signed,
		Signature:         q.Signature,
		AttestationKey:    q.AttestationKey,
		QEReport:          q.QEReport,
		QEReportRaw:       q.QEReportRaw,
		QEReportSignature: q.QEReportSignature,
		QEAuthData:        q.QEAuthData,
		CertDataType:      sgxabi.CertDataPCKChain,
		CertData:          q.CertData,
	}
}

// Signatures checks the quote's signatures and its PCK chain at o.Now: the
// attestation key's signature over header and TD report, the QE report's
// binding of that key, the PCK chain to the pinned root, the PCK key's
// signature over the QE report, and the PCK certificate's SGX extensions.
func Signatures(q *abi.Quote, o Options) (*Result, error) {
	if o.Now.IsZero() {
		return nil, errors.New("tdx verify: no time of verification given")
	}
	sq := SignatureData(q)
	if err := sgxverify.QuoteSignature(sq); err != nil {
		return nil, err
	}
	if err := sgxverify.QEReportData(sq); err != nil {
		return nil, err
	}
	chain, err := sgxverify.PCKChain(q.CertData, o.root(), o.Now)
	if err != nil {
		return nil, err
	}
	if err := sgxverify.QEReportSignature(sq, chain[0]); err != nil {
		return nil, err
	}
	ext, err := pcs.ParsePCKExtensions(chain[0])
	if err != nil {
		return nil, fail(StepPCKExtensions, "%v", err)
	}
	return &Result{Quote: q, PCKChain: chain, PCK: ext, PCKCA: pcs.CAOf(chain[1])}, nil
}

// Evaluate checks collateral c for the quote of res (a result of
// Signatures) at o.Now and fills res's TCB fields: CRLs and revocation,
// TDX TCB info, TD QE identity and QE report, TDX module, TCB level.
func Evaluate(res *Result, c *pcs.Collateral, o Options) error {
	root := o.root()
	q, chain, ext := res.Quote, res.PCKChain, res.PCK
	if c == nil {
		return fail(StepCollateral, "no collateral")
	}
	if c.RootCACRL == nil || c.PCKCRL == nil || c.TCBInfo == nil || c.QEIdentity == nil {
		return fail(StepCollateral, "collateral is incomplete: root CA CRL, PCK CRL, TCB info and QE identity are all needed")
	}
	if err := TCBInfoMatches(c.TCBInfo, ext); err != nil {
		return err
	}
	if err := sgxverify.RootCACRL(c.RootCACRL, root, o.Now); err != nil {
		return err
	}
	if err := sgxverify.PCKCRL(c.PCKCRL, chain[1], res.PCKCA, o.Now); err != nil {
		return err
	}
	if err := sgxverify.NotRevoked(c.RootCACRL, chain[1], "PCK CA certificate", "root CA CRL"); err != nil {
		return err
	}
	if err := sgxverify.NotRevoked(c.PCKCRL, chain[0], "PCK certificate", "PCK CA CRL"); err != nil {
		return err
	}
	if err := sgxverify.TCBInfo(c, root, o.Now); err != nil {
		return err
	}
	if err := sgxverify.EnclaveIdentity(c, root, o.Now, "TD_QE"); err != nil {
		return err
	}
	qeLevel, err := sgxverify.QEReport(c.QEIdentity, &q.QEReport)
	if err != nil {
		return err
	}
	module, moduleLevel, err := Module(c.TCBInfo, &q.Body)
	if err != nil {
		return err
	}
	level, err := TCBLevel(c.TCBInfo, ext, &q.Body)
	if err != nil {
		return err
	}
	res.PlatformTCBStatus = level.TCBStatus
	res.QETCBStatus = qeLevel.TCBStatus
	status := sgxverify.Converge(level.TCBStatus, qeLevel.TCBStatus)
	adv := merge(level.AdvisoryIDs, qeLevel.AdvisoryIDs)
	if moduleLevel != nil {
		res.ModuleTCBStatus = moduleLevel.TCBStatus
		res.ModuleIdentity = module
		status = ConvergeModule(status, moduleLevel.TCBStatus)
		adv = merge(adv, moduleLevel.AdvisoryIDs)
	}
	res.TCBStatus = status
	res.AdvisoryIDs = adv
	res.TCBDate = level.TCBDate
	res.CollateralIssued = c.Issued()
	res.CollateralNextUpdate = c.NextUpdate()
	res.TCBEvaluationDataNumber = c.TCBInfo.TCBEvaluationDataNumber
	return nil
}

func merge(a, b []string) []string {
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

// TCBInfoMatches checks that the TCB info is TDX TCB info (id "TDX",
// version 3) for the platform of the PCK certificate (FMSPC, PCE ID).
func TCBInfoMatches(info *pcs.TCBInfo, pck *pcs.PCKExtensions) error {
	switch {
	case info.ID != pcs.TCBInfoTDX:
		return fail(StepTCBInfo, "the collateral's TCB info has id %q, want \"TDX\": SGX TCB info cannot verify a TDX quote; use the collateral of the TDX platform (PCS /tdx/certification/v4/tcb)", info.ID)
	case info.Version != 3:
		return fail(StepTCBInfo, "TDX TCB info version %d is not supported (3)", info.Version)
	case info.TCBType != 0:
		return fail(StepTCBInfo, "TCB info tcbType %d is not supported (0)", info.TCBType)
	case info.TDXModule == nil:
		return fail(StepTCBInfo, "the TDX TCB info has no tdxModule: it cannot say which TDX module is genuine")
	}
	if !strings.EqualFold(info.FMSPC, pck.FMSPCHex()) {
		return fail(StepTCBInfo, "the collateral's TCB info is for FMSPC %s, but the quote's PCK certificate has FMSPC %s: use collateral for this platform", strings.ToUpper(info.FMSPC), pck.FMSPCHex())
	}
	if !strings.EqualFold(info.PCEID, pck.PCEIDHex()) {
		return fail(StepTCBInfo, "the collateral's TCB info is for PCE ID %s, but the quote's PCK certificate has PCE ID %s", info.PCEID, pck.PCEIDHex())
	}
	return nil
}

// Module checks the TDX module that runs the TD against the TCB info. For
// module major version 0 (TEE_TCB_SVN[1] = 0) the TCB info's tdxModule
// gives MRSIGNERSEAM and the SEAM attributes, and the module's SVN is one of
// the TCB level's TDX components. For later versions the identity
// "TDX_<version>" of tdxModuleIdentities gives them, and its TCB levels the
// module's status: Module returns that identity's id and level.
func Module(info *pcs.TCBInfo, body *abi.TDReport) (string, *pcs.EnclaveTCBLevel, error) {
	version := body.TEETCBSVN[1]
	m := info.TDXModule
	var id *pcs.TDXModuleIdentity
	if version > 0 {
		want := fmt.Sprintf("TDX_%02X", version)
		for i := range info.TDXModuleIdentities {
			if strings.EqualFold(info.TDXModuleIdentities[i].ID, want) {
				id = &info.TDXModuleIdentities[i]
				break
			}
		}
		if id == nil {
			return "", nil, fail(StepTDXModule, "the TCB info has no identity %s for the TD's TDX module (major version %d, TEE_TCB_SVN %x): the module is not one Intel lists for this platform; fetch fresh collateral or update the module", want, version, body.TEETCBSVN)
		}
		m = &id.TDXModule
	}
	if !bytes.Equal(body.MRSignerSEAM[:], m.MRSigner[:]) {
		return "", nil, fail(StepTDXModule, "the TDX module's MRSIGNERSEAM %s is not the one the TCB info names (%s): the TD does not run on a TDX module signed by Intel", hex.EncodeToString(body.MRSignerSEAM[:8])+"…", hex.EncodeToString(m.MRSigner[:8])+"…")
	}
	for i := range 8 {
		if body.SEAMAttributes[i]&m.AttributesMask[i] != m.Attributes[i]&m.AttributesMask[i] {
			return "", nil, fail(StepTDXModule, "the TDX module's SEAM attributes %x do not match the TCB info (%x under mask %x)", body.SEAMAttributes, m.Attributes, m.AttributesMask)
		}
	}
	if id == nil {
		return "", nil, nil
	}
	svn := int(body.TEETCBSVN[0])
	for i := range id.TCBLevels {
		if svn >= id.TCBLevels[i].TCB.ISVSVN {
			return id.ID, &id.TCBLevels[i], nil
		}
	}
	return "", nil, fail(StepTDXModule, "the TDX module's SVN %d (identity %s) is below every TCB level of the TCB info: the module is not supported; update it", svn, id.ID)
}

// TCBLevel finds the platform's TCB level: the first level whose SGX
// component SVNs and PCESVN are at most the PCK certificate's and whose TDX
// component SVNs are at most the TD report's TEE_TCB_SVN. For a module of
// major version > 0, the first two TDX components (the module's SVN and
// version) are judged by Module instead and skipped here, as Intel's
// library does.
func TCBLevel(info *pcs.TCBInfo, pck *pcs.PCKExtensions, body *abi.TDReport) (*pcs.TCBLevel, error) {
	start := 0
	if body.TEETCBSVN[1] > 0 {
		start = 2
	}
	for i := range info.TCBLevels {
		l := &info.TCBLevels[i]
		ok := l.TCB.HasTDX && pck.PCESVN >= l.TCB.PCESVN
		for j := 0; ok && j < 16; j++ {
			ok = pck.CompSVN[j] >= l.TCB.CompSVN[j]
		}
		for j := start; ok && j < 16; j++ {
			ok = body.TEETCBSVN[j] >= l.TCB.TDXCompSVN[j]
		}
		if ok {
			return l, nil
		}
	}
	why := ""
	if n := len(info.TCBLevels); n > 0 {
		why = " (" + below(&info.TCBLevels[n-1].TCB, pck, body, start) + ", at the lowest level Intel lists)"
	}
	return nil, fail(StepTCBLevel, "the platform's TCB is below every TCB level in the TDX TCB info%s: Intel does not support this platform's TCB; update its microcode/BIOS and TDX module", why)
}

// below names what of the platform's TCB is below level t.
func below(t *pcs.TCB, pck *pcs.PCKExtensions, body *abi.TDReport, start int) string {
	var out []string
	name := func(kind string, i int, typ string) string {
		s := fmt.Sprintf("%s component %d", kind, i+1)
		if typ != "" {
			s += " (" + typ + ")"
		}
		return s
	}
	for j := range 16 {
		if pck.CompSVN[j] < t.CompSVN[j] {
			out = append(out, fmt.Sprintf("%s SVN %d < %d", name("SGX TCB", j, t.CompTypes[j]), pck.CompSVN[j], t.CompSVN[j]))
		}
	}
	if pck.PCESVN < t.PCESVN {
		out = append(out, fmt.Sprintf("PCESVN %d < %d", pck.PCESVN, t.PCESVN))
	}
	for j := start; j < 16; j++ {
		if body.TEETCBSVN[j] < t.TDXCompSVN[j] {
			out = append(out, fmt.Sprintf("%s SVN %d < %d", name("TDX TCB", j, t.TDXCompTypes[j]), body.TEETCBSVN[j], t.TDXCompSVN[j]))
		}
	}
	if len(out) == 0 {
		return "no component is below it"
	}
	return strings.Join(out, ", ")
}

// ConvergeModule combines the platform's status with the TDX module's, as
// Intel's library does: the same rule as for the QE (an out-of-date module
// makes the platform out of date, a revoked one revoked).
func ConvergeModule(platform, module string) string { return sgxverify.Converge(platform, module) }
