package snp

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/snp/abi"
	"github.com/mse-in-go/mse/internal/attest/snp/snptest"
	"github.com/mse-in-go/mse/internal/attest/snp/verify"
)

// asVersion3 makes base a version 3 report of a CPU of the given family
// and model (so that the report says its product line).
func asVersion3(base []byte, family, model byte) []byte {
	r := append([]byte(nil), base...)
	r[0] = 3
	r[0x188], r[0x189], r[0x18A] = family, model, 1
	return r
}

func TestProductsAndKeys(t *testing.T) {
	base := read(t, reportFile)
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	chip := [64]byte{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99}
	tcb := verify.TCB{Bootloader: 3, SNP: 8, Microcode: 115}
	milan := snptest.New(t, verify.Milan)
	genoa := snptest.New(t, verify.Genoa)
	turin := snptest.New(t, verify.Turin)
	vlek := snptest.NewVLEK(t, verify.Genoa)
	roots := []*verify.Roots{milan.Roots, genoa.Roots, turin.Roots, vlek.Roots}
	turinTCB := verify.TCB{FMC: 1, Bootloader: 2, TEE: 3, SNP: 4, Microcode: 0x40}

	mk := func(pki *snptest.PKI, product string, base []byte, tcb verify.TCB) ([]byte, *snptest.VCEK) {
		k := pki.NewVCEK(t, chip, tcb)
		return snptest.ReportFor(t, base, product, chip, tcb, k), k
	}
	milanV3, milanKey := mk(milan, verify.Milan, asVersion3(base, 0x19, 0x01), tcb)
	genoaV3, genoaKey := mk(genoa, verify.Genoa, asVersion3(base, 0x19, 0x11), tcb)
	turinV3, turinKey := mk(turin, verify.Turin, asVersion3(base, 0x1A, 0x02), turinTCB)
	// A report that says Genoa, signed with a Milan VCEK.
	lying := snptest.ReportFor(t, asVersion3(base, 0x19, 0x11), verify.Milan, chip, tcb, milanKey)
	// A VLEK-signed report: SIGNING_KEY = 1.
	vlekKey := vlek.NewVLEK(t, tcb)
	vlekBase := asVersion3(base, 0x19, 0x11)
	vlekBase[0x48] = 1 << 2
	vlekReport := snptest.ReportFor(t, vlekBase, verify.Genoa, [64]byte{}, tcb, vlekKey)

	for _, tc := range []struct {
		name     string
		evidence []byte
		key      *snptest.VCEK
		product  string
		step     string
		contains string
	}{
		{"Milan v3", milanV3, milanKey, verify.Milan, "", ""},
		{"Genoa v3", genoaV3, genoaKey, verify.Genoa, "", ""},
		{"Turin v3: 8-byte hwID, FMC, Turin TCB layout", turinV3, turinKey, verify.Turin, "", ""},
		{"CPU says Genoa, VCEK is Milan's", lying, milanKey, "", verify.StepChain, "signing key of AMD Genoa (the report's CPU)"},
		{"unknown CPU", snptest.ReportFor(t, asVersion3(base, 0x17, 0x01), verify.Milan, chip, tcb, milanKey), milanKey, "", verify.StepChain, "not a known SEV-SNP product line"},
		{"VLEK in the table", vlekReport, vlekKey, verify.Genoa, "", ""},
		{"VLEK report with a VCEK under the VLEK GUID", snptest.ReportFor(t, vlekBase, verify.Genoa, [64]byte{}, tcb, genoaKey), genoaKey, "", verify.StepEndorsementKey, `subject is "SEV-VCEK", not "SEV-VLEK"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			guid := abi.GUIDVCEK
			if tc.key == vlekKey || strings.HasPrefix(tc.name, "VLEK report") {
				guid = abi.GUIDVLEK
			}
			ev := withTable(t, tc.evidence, abi.CertEntry{GUID: guid, Data: tc.key.Cert.Raw})
			res, err := NewVerifier(Options{SkipCRL: true, Now: at(now), Roots: roots}).VerifyEvidence(context.Background(), ev)
			if tc.step != "" {
				if verify.StepOf(err) != tc.step || !strings.Contains(err.Error(), tc.contains) {
					t.Fatalf("error %v (step %q), want step %s with %q", err, verify.StepOf(err), tc.step, tc.contains)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Roots.Product != tc.product {
				t.Errorf("product %s, want %s", res.Roots.Product, tc.product)
			}
			v := ToVerified(res)
			if tc.product == verify.Turin && (v.Details["reported_tcb_fmc"] != "1" || v.Details["reported_tcb_snp"] != "4" || v.Details["reported_tcb_microcode"] != "64") {
				t.Errorf("Turin TCB %v", v.Details)
			}
			if tc.key == vlekKey {
				if v.Details["signing_key"] != "vlek" {
					t.Errorf("signing key %s", v.Details["signing_key"])
				}
				p := &attest.Policy{TEETypes: []string{attest.TypeSEVSNP}, Measurements: []string{v.Details["measurement"]}, AllowDebug: true,
					AcceptedTCBStatuses: []string{attest.TCBUnchecked}, SEVSNP: attest.SEVSNPPolicy{SigningKeys: []string{"vcek"}}}
				var pe *attest.PolicyError
				if err := p.Check(v, now); !errors.As(err, &pe) || pe.Check != "sev_snp.signing_keys" {
					t.Errorf("VCEK-only policy on a VLEK report: %v", err)
				}
			}
		})
	}
	// A VLEK report without its VLEK anywhere: KDS does not serve VLEKs.
	_, err := NewVerifier(Options{SkipCRL: true, Now: at(now), Roots: roots}).Verify(context.Background(), vlekReport)
	if verify.StepOf(err) != verify.StepEndorsementKey || !strings.Contains(err.Error(), "no VLEK certificate") {
		t.Errorf("VLEK report alone: %v", err)
	}
}
