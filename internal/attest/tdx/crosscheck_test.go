package tdx

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	gabi "github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	gverify "github.com/google/go-tdx-guest/verify"

	"github.com/mse-in-go/mse/internal/attest/sgx/pcs"
	"github.com/mse-in-go/mse/internal/attest/tdx/abi"
)

// pcsGetter answers go-tdx-guest's requests to Intel's PCS from an offline
// bundle, the way Intel's PCS does.
type pcsGetter struct {
	b     pcs.BundleJSON
	crl   []byte
	calls []string
}

func (g *pcsGetter) Get(u string) (map[string][]string, []byte, error) {
	g.calls = append(g.calls, u)
	chain := func(name, pem string) map[string][]string {
		return map[string][]string{name: {url.QueryEscape(pem)}}
	}
	switch {
	case strings.Contains(u, "/tdx/certification/v4/tcb?fmspc="):
		return chain("Tcb-Info-Issuer-Chain", g.b.TCBInfoIssuerChain), []byte(fmt.Sprintf(`{"tcbInfo":%s,"signature":"%s"}`, g.b.TCBInfo, g.b.TCBInfoSignature)), nil
	case strings.HasSuffix(u, "/tdx/certification/v4/qe/identity"):
		return chain("Sgx-Enclave-Identity-Issuer-Chain", g.b.QEIdentityIssuerChain), []byte(fmt.Sprintf(`{"enclaveIdentity":%s,"signature":"%s"}`, g.b.QEIdentity, g.b.QEIdentitySignature)), nil
	case strings.Contains(u, "/pckcrl?ca=platform"):
		der, err := hex.DecodeString(g.b.PCKCRL)
		return chain("Sgx-Pck-Crl-Issuer-Chain", g.b.PCKCRLIssuerChain), der, err
	case strings.HasSuffix(u, "IntelSGXRootCA.der"):
		der, err := hex.DecodeString(g.b.RootCACRL)
		return nil, der, err
	}
	return nil, nil, fmt.Errorf("unexpected URL %s", u)
}

// TestCrossCheckGoTDXGuest checks the v4 vector with google/go-tdx-guest
// (which supports quote v4 only) at the same time, and compares its parse
// of the quote with ours. go-tdx-guest v0.3.1 compares the PCK
// certificate's FMSPC (which it writes in lower case) with the TCB info's
// case-sensitively, and Intel's TCB info spells it in upper case under its
// signature, so it cannot evaluate this collateral: the cross-check covers
// signatures, the QE report, the PCK chain and the parse, and that it
// fetches the same four collateral items.
func TestCrossCheckGoTDXGuest(t *testing.T) {
	raw := read(t, goodQuote)
	var b pcs.BundleJSON
	if err := json.Unmarshal(read(t, goodCollateral), &b); err != nil {
		t.Fatal(err)
	}
	check := func(quote []byte, now time.Time) error {
		return gverify.RawTdxQuote(quote, &gverify.Options{Now: now})
	}
	if err := check(raw, goodAt); err != nil {
		t.Fatalf("go-tdx-guest refuses the quote we accept: %v", err)
	}
	// Both refuse it after the PCK certificate expired.
	if err := check(raw, time.Date(2033, 1, 1, 0, 0, 0, 0, time.UTC)); err == nil {
		t.Error("go-tdx-guest accepts an expired PCK certificate")
	}
	g := &pcsGetter{b: b}
	err := gverify.RawTdxQuote(raw, &gverify.Options{GetCollateral: true, CheckRevocations: true, Getter: g, Now: goodAt})
	if err == nil || !strings.Contains(err.Error(), "FMSPC") {
		t.Logf("go-tdx-guest with collateral: %v", err)
	}
	if len(g.calls) != 4 {
		t.Errorf("go-tdx-guest fetched %v, want TCB info, QE identity and both CRLs", g.calls)
	}
	// The same fields, parsed twice.
	pq, err := gabi.QuoteToProto(raw)
	if err != nil {
		t.Fatal(err)
	}
	gq := pq.(*pb.QuoteV4)
	q, err := abi.ParseQuote(raw)
	if err != nil {
		t.Fatal(err)
	}
	gb := gq.GetTdQuoteBody()
	for _, f := range []struct {
		name     string
		ours, gt []byte
	}{
		{"TEE_TCB_SVN", q.Body.TEETCBSVN[:], gb.GetTeeTcbSvn()},
		{"MRSEAM", q.Body.MRSEAM[:], gb.GetMrSeam()},
		{"MRSIGNERSEAM", q.Body.MRSignerSEAM[:], gb.GetMrSignerSeam()},
		{"SEAMATTRIBUTES", q.Body.SEAMAttributes[:], gb.GetSeamAttributes()},
		{"TDATTRIBUTES", q.Body.TDAttributes[:], gb.GetTdAttributes()},
		{"XFAM", q.Body.XFAM[:], gb.GetXfam()},
		{"MRTD", q.Body.MRTD[:], gb.GetMrTd()},
		{"MRCONFIGID", q.Body.MRConfigID[:], gb.GetMrConfigId()},
		{"MROWNER", q.Body.MROwner[:], gb.GetMrOwner()},
		{"MROWNERCONFIG", q.Body.MROwnerConfig[:], gb.GetMrOwnerConfig()},
		{"RTMR0", q.Body.RTMR[0][:], gb.GetRtmrs()[0]},
		{"RTMR1", q.Body.RTMR[1][:], gb.GetRtmrs()[1]},
		{"RTMR2", q.Body.RTMR[2][:], gb.GetRtmrs()[2]},
		{"RTMR3", q.Body.RTMR[3][:], gb.GetRtmrs()[3]},
		{"REPORTDATA", q.Body.ReportData[:], gb.GetReportData()},
		{"signature", q.Signature[:], gq.GetSignedData().GetSignature()},
		{"attestation key", q.AttestationKey[:], gq.GetSignedData().GetEcdsaAttestationKey()},
		{"QE auth data", q.QEAuthData, gq.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetQeAuthData().GetData()},
		{"PCK chain", q.CertData, gq.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()},
	} {
		if !bytes.Equal(f.ours, f.gt) {
			t.Errorf("%s: ours %x, go-tdx-guest %x", f.name, f.ours, f.gt)
		}
	}
	// Flipping a signed byte makes both refuse.
	for _, off := range []int{48 + 136, len(q.Signed) + 4 + 10, len(q.Signed) + 4 + 134 + 100} {
		c := append([]byte(nil), raw...)
		c[off] ^= 1
		if err := check(c, goodAt); err == nil {
			t.Errorf("go-tdx-guest accepts a flip at %d", off)
		}
		if _, err := NewVerifier(Options{SkipCollateral: true, Now: at(goodAt)}).Verify(context.Background(), c); err == nil {
			t.Errorf("we accept a flip at %d", off)
		}
	}
}
