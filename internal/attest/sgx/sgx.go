// Package sgx is the Intel SGX TEE type: DCAP quote v3 verification in pure
// Go (attest.Verifier) and a node-side issuer over Gramine's /dev/attestation
// (attest.Issuer).
//
// It is layered like google/go-tdx-guest: package abi parses quotes, package
// pcs holds collateral (offline bundles, a PCS/PCCS client), package verify
// checks signatures, chains, CRLs, TCB info and QE identity, and the owner's
// policy (attest.Policy.Check) validates the values that come out. This
// package wires them together. See docs/sgx.md.
package sgx

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sgx/abi"
	"github.com/mse-in-go/mse/internal/attest/sgx/pcs"
	"github.com/mse-in-go/mse/internal/attest/sgx/verify"
)

// Options configure a Verifier.
type Options struct {
	// Collateral provides TCB info, QE identity and CRLs: pcs.LoadBundle for
	// an offline file, pcs.NewClient for a PCS or PCCS.
	Collateral pcs.Source
	// SkipCollateral verifies the quote's signatures and PCK chain only;
	// the TCB status is then attest.TCBUnchecked, which a policy accepts only
	// when it names it. Without it, a nil Collateral is an error.
	SkipCollateral bool
	// Now is the clock; nil means time.Now.
	Now attest.Clock
}

// Verifier verifies SGX DCAP quotes. It implements attest.Verifier.
type Verifier struct{ o Options }

// NewVerifier returns a verifier of SGX quotes.
func NewVerifier(o Options) *Verifier { return &Verifier{o: o} }

var _ attest.Verifier = (*Verifier)(nil)

// Type implements attest.Verifier.
func (v *Verifier) Type() string { return attest.TypeSGX }

// Verify implements attest.Verifier: the quote must be genuine (signatures,
// PCK chain to the Intel SGX Root CA, CRLs, TCB info and QE identity). The
// TCB status, advisories and debug flag are reported in the result, for the
// policy to judge.
func (v *Verifier) Verify(ctx context.Context, evidence []byte) (*attest.Verified, error) {
	res, err := v.VerifyQuote(ctx, evidence)
	if err != nil {
		return nil, err
	}
	return ToVerified(res), nil
}

// VerifyQuote is Verify returning the full result (PCK certificate,
// separate platform and QE statuses, collateral dates).
func (v *Verifier) VerifyQuote(ctx context.Context, evidence []byte) (*verify.Result, error) {
	now := time.Now()
	if v.o.Now != nil {
		now = v.o.Now()
	}
	q, err := abi.ParseQuote(evidence)
	if err != nil {
		return nil, err
	}
	o := verify.Options{Now: now}
	if !v.o.SkipCollateral && v.o.Collateral == nil {
		return nil, errors.New("sgx: no collateral source configured (an offline bundle or a PCCS); TCB status cannot be evaluated")
	}
	// Signatures and the PCK chain first: collateral is fetched only for a
	// quote that is genuine, and the PCK certificate says which collateral.
	res, err := verify.Signatures(q, o)
	if err != nil || v.o.SkipCollateral {
		return res, err
	}
	c, err := v.o.Collateral.Collateral(ctx, res.PCK.FMSPCHex(), res.PCKCA)
	if err != nil {
		return nil, &verify.Error{Step: verify.StepCollateral, Err: fmt.Errorf("obtain collateral for FMSPC %s (PCK %s CA): %w", res.PCK.FMSPCHex(), res.PCKCA, err)}
	}
	if err := verify.Evaluate(res, c, o); err != nil {
		return nil, err
	}
	return res, nil
}

// ToVerified turns a verification result into the platform's Verified.
func ToVerified(r *verify.Result) *attest.Verified {
	q := r.Quote
	v := &attest.Verified{
		Type:        attest.TypeSGX,
		Measurement: append([]byte(nil), q.Body.MREnclave[:]...),
		Signer:      append([]byte(nil), q.Body.MRSigner[:]...),
		ProductID:   q.Body.ISVProdID,
		SVN:         q.Body.ISVSVN,
		Debug:       q.Body.Debug(),
		TCBStatus:   r.TCBStatus,
		AdvisoryIDs: append([]string{}, r.AdvisoryIDs...),
		ReportData:  q.Body.ReportData,
		Details: map[string]string{
			"quote_version": strconv.Itoa(int(q.Header.Version)),
			"attributes":    hex.EncodeToString(q.Body.Attributes[:]),
			"misc_select":   fmt.Sprintf("%08x", q.Body.MiscSelect),
			"cpu_svn":       hex.EncodeToString(q.Body.CPUSVN[:]),
			"config_svn":    strconv.Itoa(int(q.Body.ConfigSVN)),
			"qe_svn":        strconv.Itoa(int(q.Header.QESVN)),
			"pce_svn":       strconv.Itoa(int(q.Header.PCESVN)),
			"fmspc":         hex.EncodeToString(r.PCK.FMSPC[:]),
			"pce_id":        hex.EncodeToString(r.PCK.PCEID[:]),
			"pck_ca":        r.PCKCA,
			"pck_serial":    hex.EncodeToString(r.PCKChain[0].SerialNumber.Bytes()),
		},
	}
	if r.TCBStatus == "" {
		v.TCBStatus = attest.TCBUnchecked
		return v
	}
	v.CollateralIssued = r.CollateralIssued
	v.Details["platform_tcb_status"] = r.PlatformTCBStatus
	v.Details["qe_tcb_status"] = r.QETCBStatus
	v.Details["tcb_date"] = r.TCBDate.UTC().Format(time.RFC3339)
	v.Details["tcb_evaluation_data_number"] = strconv.Itoa(r.TCBEvaluationDataNumber)
	v.Details["collateral_issued"] = r.CollateralIssued.UTC().Format(time.RFC3339)
	v.Details["collateral_next_update"] = r.CollateralNextUpdate.UTC().Format(time.RFC3339)
	return v
}
