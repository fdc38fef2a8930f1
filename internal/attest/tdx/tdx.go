// Package tdx is the Intel TDX TEE type: DCAP quote v4/v5 verification in
// pure Go (attest.Verifier). The node obtains TDX quotes through the Linux
// configfs-tsm interface (package attest/tsm).
//
// It is layered like attest/sgx and google/go-tdx-guest: package abi parses
// quotes, package verify checks signatures, the PCK chain, CRLs, TDX TCB
// info, the TD QE identity and the TDX module, and the owner's policy
// (attest.Policy.Check, with its [tdx] section) validates the values that
// come out. Collateral is SGX's (package attest/sgx/pcs): the same PCS
// client and cache, the same offline bundle layout. See docs/tdx.md.
package tdx

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sgx/pcs"
	"github.com/mse-in-go/mse/internal/attest/tdx/abi"
	"github.com/mse-in-go/mse/internal/attest/tdx/verify"
)

// Options configure a Verifier.
type Options struct {
	// Collateral provides TDX TCB info, the TD QE identity and CRLs:
	// pcs.LoadBundle for an offline file, pcs.NewClient for a PCS or PCCS.
	Collateral pcs.TDXSource
	// SkipCollateral verifies the quote's signatures and PCK chain only; the
	// TCB status is then attest.TCBUnchecked.
	SkipCollateral bool
	// Now is the clock; nil means time.Now.
	Now attest.Clock
}

// Verifier verifies TDX quotes. It implements attest.Verifier.
type Verifier struct{ o Options }

// NewVerifier returns a verifier of TDX quotes.
func NewVerifier(o Options) *Verifier { return &Verifier{o: o} }

var _ attest.Verifier = (*Verifier)(nil)

// Type implements attest.Verifier.
func (v *Verifier) Type() string { return attest.TypeTDX }

// Verify implements attest.Verifier.
func (v *Verifier) Verify(ctx context.Context, evidence []byte) (*attest.Verified, error) {
	res, err := v.VerifyQuote(ctx, evidence)
	if err != nil {
		return nil, err
	}
	return ToVerified(res), nil
}

// VerifyQuote is Verify returning the full result.
func (v *Verifier) VerifyQuote(ctx context.Context, evidence []byte) (*verify.Result, error) {
	now := time.Now()
	if v.o.Now != nil {
		now = v.o.Now()
	}
	q, err := abi.ParseQuote(evidence)
	if err != nil {
		return nil, err
	}
	if !v.o.SkipCollateral && v.o.Collateral == nil {
		return nil, errors.New("tdx: no collateral source configured (an offline bundle or a PCCS); TCB status cannot be evaluated")
	}
	o := verify.Options{Now: now}
	res, err := verify.Signatures(q, o)
	if err != nil || v.o.SkipCollateral {
		return res, err
	}
	c, err := v.o.Collateral.TDXCollateral(ctx, res.PCK.FMSPCHex(), res.PCKCA)
	if err != nil {
		return nil, &verify.Error{Step: verify.StepCollateral, Err: fmt.Errorf("obtain TDX collateral for FMSPC %s (PCK %s CA): %w", res.PCK.FMSPCHex(), res.PCKCA, err)}
	}
	if err := verify.Evaluate(res, c, o); err != nil {
		return nil, err
	}
	return res, nil
}

// ToVerified turns a verification result into the platform's Verified. The
// measurement is MRTD; there is no signer.
func ToVerified(r *verify.Result) *attest.Verified {
	b := &r.Quote.Body
	h := hex.EncodeToString
	v := &attest.Verified{
		Type:        attest.TypeTDX,
		Measurement: append([]byte(nil), b.MRTD[:]...),
		Debug:       b.Debug(),
		TCBStatus:   r.TCBStatus,
		AdvisoryIDs: append([]string{}, r.AdvisoryIDs...),
		ReportData:  b.ReportData,
		Details: map[string]string{
			"quote_version":            strconv.Itoa(int(r.Quote.Header.Version)),
			"body_type":                strconv.Itoa(int(r.Quote.BodyType)),
			attest.DetailMRTD:          h(b.MRTD[:]),
			attest.DetailRTMR0:         h(b.RTMR[0][:]),
			attest.DetailRTMR1:         h(b.RTMR[1][:]),
			attest.DetailRTMR2:         h(b.RTMR[2][:]),
			attest.DetailRTMR3:         h(b.RTMR[3][:]),
			attest.DetailMRConfigID:    h(b.MRConfigID[:]),
			attest.DetailMROwner:       h(b.MROwner[:]),
			attest.DetailMROwnerConfig: h(b.MROwnerConfig[:]),
			attest.DetailXFAM:          h(b.XFAM[:]),
			attest.DetailTDAttributes:  h(b.TDAttributes[:]),
			attest.DetailTEETCBSVN:     h(b.TEETCBSVN[:]),
			attest.DetailMRSEAM:        h(b.MRSEAM[:]),
			attest.DetailMRSignerSEAM:  h(b.MRSignerSEAM[:]),
			"seam_attributes":          h(b.SEAMAttributes[:]),
			attest.DetailSEPTVEDisable: strconv.FormatBool(b.SEPTVEDisable()),
			"fmspc":                    h(r.PCK.FMSPC[:]),
			"pce_id":                   h(r.PCK.PCEID[:]),
			"pck_ca":                   r.PCKCA,
			"pck_serial":               h(r.PCKChain[0].SerialNumber.Bytes()),
			"qe_svn":                   strconv.Itoa(int(r.Quote.QEReport.ISVSVN)),
		},
	}
	if r.Quote.BodyType == abi.BodyTypeTD15 {
		v.Details["tee_tcb_svn2"] = h(b.TEETCBSVN2[:])
		v.Details["mrservicetd"] = h(b.MRServiceTD[:])
	}
	if r.TCBStatus == "" {
		v.TCBStatus = attest.TCBUnchecked
		return v
	}
	v.CollateralIssued = r.CollateralIssued
	v.Details["platform_tcb_status"] = r.PlatformTCBStatus
	v.Details["qe_tcb_status"] = r.QETCBStatus
	if r.ModuleTCBStatus != "" {
		v.Details["tdx_module_tcb_status"] = r.ModuleTCBStatus
		v.Details["tdx_module_identity"] = r.ModuleIdentity
	}
	v.Details["tcb_date"] = r.TCBDate.UTC().Format(time.RFC3339)
	v.Details["tcb_evaluation_data_number"] = strconv.Itoa(r.TCBEvaluationDataNumber)
	v.Details["collateral_issued"] = r.CollateralIssued.UTC().Format(time.RFC3339)
	v.Details["collateral_next_update"] = r.CollateralNextUpdate.UTC().Format(time.RFC3339)
	return v
}
