// Package snp is the AMD SEV-SNP TEE type: attestation report verification
// in pure Go (attest.Verifier). The node obtains reports and the host's
// certificate table through the Linux configfs-tsm interface (package
// attest/tsm).
//
// It is layered like attest/sgx and google/go-sev-guest: package abi
// parses reports and certificate tables, package verify checks the VCEK or
// VLEK chain to a pinned AMD root, the chip, the TCB, the signature and
// revocation, package kds fetches VCEKs and CRLs (or reads an offline CRL
// bundle), and the owner's policy (attest.Policy.Check, with its [sev_snp]
// section) validates the values that come out. See docs/sev-snp.md.
package snp

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/snp/abi"
	"github.com/mse-in-go/mse/internal/attest/snp/kds"
	"github.com/mse-in-go/mse/internal/attest/snp/verify"
)

// Options configure a Verifier.
type Options struct {
	// EndorsementKey is the VCEK or VLEK certificate to verify with; it wins
	// over the one in the evidence's certificate table.
	EndorsementKey *x509.Certificate
	// KDS fetches the VCEK when neither EndorsementKey nor the evidence
	// has one; nil means no fetching.
	KDS *kds.Client
	// CRLs provides the ARK's CRL (a *kds.Client, or an offline
	// *kds.Bundle). Nil is an error unless SkipCRL.
	CRLs kds.CRLSource
	// SkipCRL leaves revocation unchecked: the status is then
	// attest.TCBUnchecked, which a policy accepts only when it names it.
	SkipCRL bool
	// Now is the clock; nil means time.Now.
	Now attest.Clock
	// Roots replaces the pinned AMD roots; for tests only.
	Roots []*verify.Roots
}

// Verifier verifies SEV-SNP evidence. It implements attest.Verifier.
type Verifier struct{ o Options }

// NewVerifier returns a verifier of SEV-SNP evidence.
func NewVerifier(o Options) *Verifier { return &Verifier{o: o} }

var _ attest.Verifier = (*Verifier)(nil)

// Type implements attest.Verifier.
func (v *Verifier) Type() string { return attest.TypeSEVSNP }

// Verify implements attest.Verifier. The evidence is a report, optionally
// followed by its certificate table.
func (v *Verifier) Verify(ctx context.Context, evidence []byte) (*attest.Verified, error) {
	res, err := v.VerifyEvidence(ctx, evidence)
	if err != nil {
		return nil, err
	}
	return ToVerified(res), nil
}

// Result is verify.Result with where the endorsement key came from.
type Result struct {
	*verify.Result
	// KeySource is "given", "certificate table" or "kds".
	KeySource string
}

// VerifyEvidence is Verify returning the full result.
func (v *Verifier) VerifyEvidence(ctx context.Context, evidence []byte) (*Result, error) {
	now := time.Now()
	if v.o.Now != nil {
		now = v.o.Now()
	}
	ev, err := abi.ParseEvidence(evidence)
	if err != nil {
		return nil, err
	}
	if !v.o.SkipCRL && v.o.CRLs == nil {
		return nil, errors.New("sev-snp: no CRL source configured (AMD's KDS or an offline CRL bundle); revocation cannot be checked")
	}
	kind, err := verify.KindOf(ev.Report)
	if err != nil {
		return nil, err
	}
	cert, source, err := v.endorsementKey(ctx, ev, kind)
	if err != nil {
		return nil, err
	}
	o := verify.Options{Now: now, Roots: v.o.Roots}
	if !v.o.SkipCRL {
		o.CRL = func(product, kind string) (*x509.RevocationList, error) { return v.o.CRLs.CRL(ctx, product, kind) }
	}
	res, err := verify.Report(ev.Report, cert, o)
	if err != nil {
		return nil, err
	}
	return &Result{Result: res, KeySource: source}, nil
}

func (v *Verifier) endorsementKey(ctx context.Context, ev *abi.Evidence, kind string) (*x509.Certificate, string, error) {
	if v.o.EndorsementKey != nil {
		return v.o.EndorsementKey, "given", nil
	}
	guid := abi.GUIDVCEK
	if kind == verify.KindVLEK {
		guid = abi.GUIDVLEK
	}
	if der := ev.Certs.Get(guid); der != nil {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, "", &verify.Error{Step: verify.StepEndorsementKey, Err: fmt.Errorf("the %s in the evidence's certificate table does not parse: %v", kind, err)}
		}
		return c, "certificate table", nil
	}
	if kind == verify.KindVLEK {
		return nil, "", &verify.Error{Step: verify.StepEndorsementKey, Err: errors.New("the report is signed by a VLEK, and the evidence carries no VLEK certificate (KDS serves VLEKs only to cloud providers): pass it with --vcek")}
	}
	if v.o.KDS == nil {
		return nil, "", &verify.Error{Step: verify.StepEndorsementKey, Err: errors.New("the evidence carries no VCEK certificate and fetching from AMD's KDS is off: pass the VCEK with --vcek (DER or PEM)")}
	}
	products := []string{verify.ProductOf(ev.Report)}
	if products[0] == "" { // a version 2 report does not say its CPU
		products = []string{verify.Milan, verify.Genoa}
	}
	var errs []error
	for _, p := range products {
		t := verify.DecodeTCB(ev.Report.ReportedTCB, p)
		c, err := v.o.KDS.VCEK(ctx, p, ev.Report.ChipID[:], kds.TCB(t))
		if err == nil {
			return c, "kds", nil
		}
		errs = append(errs, err)
	}
	return nil, "", &verify.Error{Step: verify.StepEndorsementKey, Err: fmt.Errorf("fetch the VCEK from KDS: %w", errors.Join(errs...))}
}

// ToVerified turns a verification result into the platform's Verified. The
// measurement is the launch measurement; there is no signer.
func ToVerified(res *Result) *attest.Verified {
	r := res.Report
	h := hex.EncodeToString
	t := res.ReportedTCB
	v := &attest.Verified{
		Type:        attest.TypeSEVSNP,
		Measurement: append([]byte(nil), r.Measurement[:]...),
		Debug:       r.Debug(),
		AdvisoryIDs: []string{},
		ReportData:  r.ReportData,
		Details: map[string]string{
			"report_version":                   strconv.Itoa(int(r.Version)),
			"measurement":                      h(r.Measurement[:]),
			attest.DetailHostData:              h(r.HostData[:]),
			attest.DetailIDKeyDigest:           h(r.IDKeyDigest[:]),
			attest.DetailAuthorKeyDigest:       h(r.AuthorKeyDigest[:]),
			attest.DetailGuestPolicy:           strconv.FormatUint(r.Policy, 16),
			attest.DetailVMPL:                  strconv.Itoa(int(r.VMPL)),
			attest.DetailChipID:                h(r.ChipID[:]),
			attest.DetailGuestSVN:              strconv.FormatUint(uint64(r.GuestSVN), 10),
			attest.DetailSigningKey:            res.Endorsement.Kind,
			attest.DetailReportedTCBBootloader: strconv.Itoa(int(t.Bootloader)),
			attest.DetailReportedTCBTEE:        strconv.Itoa(int(t.TEE)),
			attest.DetailReportedTCBSNP:        strconv.Itoa(int(t.SNP)),
			attest.DetailReportedTCBMicrocode:  strconv.Itoa(int(t.Microcode)),
			attest.DetailReportedTCBFMC:        strconv.Itoa(int(t.FMC)),
			"reported_tcb":                     fmt.Sprintf("%016x", r.ReportedTCB),
			"current_tcb":                      fmt.Sprintf("%016x", r.CurrentTCB),
			"committed_tcb":                    fmt.Sprintf("%016x", r.CommittedTCB),
			"launch_tcb":                       fmt.Sprintf("%016x", r.LaunchTCB),
			"platform_info":                    fmt.Sprintf("%016x", r.PlatformInfo),
			"family_id":                        h(r.FamilyID[:]),
			"image_id":                         h(r.ImageID[:]),
			"firmware":                         fmt.Sprintf("%d.%d.%d", r.CurrentMajor, r.CurrentMinor, r.CurrentBuild),
			"product":                          res.Roots.Product,
			"endorsement_key_source":           res.KeySource,
			"endorsement_key_serial":           res.Endorsement.Cert.SerialNumber.Text(16),
		},
	}
	if res.RevocationChecked {
		v.Details["revocation"] = "checked"
	} else {
		v.TCBStatus = attest.TCBUnchecked
		v.Details["revocation"] = "unchecked"
	}
	return v
}
