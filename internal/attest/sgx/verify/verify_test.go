package verify

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"math/big"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest/sgx/abi"
	"github.com/mse-in-go/mse/internal/attest/sgx/pcs"
)

const testdata = "../testdata/"

var (
	phalaAt = time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)
	oasisAt = time.Unix(1671497404, 0).UTC()
)

func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(testdata + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func phala(t testing.TB) (*abi.Quote, *pcs.Collateral) {
	t.Helper()
	q, err := abi.ParseQuote(read(t, "good_phala_quote.bin"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := pcs.ParseBundle(read(t, "good_phala_collateral.json"))
	if err != nil {
		t.Fatal(err)
	}
	return q, c
}

// oasisCollateral is the oasis TCB info and QE identity, with no CRLs.
func oasisCollateral(t testing.TB, certsFile string) *pcs.Collateral {
	t.Helper()
	c := &pcs.Collateral{}
	var err error
	if c.TCBInfoRaw, c.TCBInfoSignature, err = pcs.SignedBody(read(t, "oasis_tcb_info.json"), "tcbInfo"); err != nil {
		t.Fatal(err)
	}
	if c.TCBInfo, err = pcs.ParseTCBInfo(c.TCBInfoRaw); err != nil {
		t.Fatal(err)
	}
	if c.TCBInfoIssuerChain, err = abi.ParsePEMChain(read(t, certsFile), 0, "chain"); err != nil {
		t.Fatal(err)
	}
	if c.QEIdentityRaw, c.QEIdentitySignature, err = pcs.SignedBody(read(t, "oasis_qe_identity.json"), "enclaveIdentity"); err != nil {
		t.Fatal(err)
	}
	if c.QEIdentity, err = pcs.ParseEnclaveIdentity(c.QEIdentityRaw); err != nil {
		t.Fatal(err)
	}
	c.QEIdentityIssuerChain, _ = abi.ParsePEMChain(read(t, "oasis_tcb_info_certs.pem"), 0, "chain")
	c.RootCACRL = &x509.RevocationList{} // no entries: nothing revoked
	return c
}

func TestRootCA(t *testing.T) {
	r := IntelRootCA()
	h := sha256.Sum256(r.Raw)
	if hex.EncodeToString(h[:]) != IntelRootCASHA256 || r.Subject.CommonName != "Intel SGX Root CA" {
		t.Fatalf("root CA: %s %x", r.Subject, h)
	}
}

func TestPhala(t *testing.T) {
	q, c := phala(t)
	for _, at := range []time.Time{
		time.Date(2025, 6, 20, 0, 0, 0, 0, time.UTC), phalaAt, time.Date(2025, 7, 18, 23, 59, 59, 0, time.UTC),
	} {
		r, err := Quote(q, Options{Now: at, Collateral: c})
		if err != nil {
			t.Fatalf("at %s: %v", at, err)
		}
		if r.TCBStatus != pcs.StatusConfigurationAndSWHardeningNeeded || r.PlatformTCBStatus != r.TCBStatus || r.QETCBStatus != pcs.StatusUpToDate {
			t.Errorf("status %s (platform %s, QE %s)", r.TCBStatus, r.PlatformTCBStatus, r.QETCBStatus)
		}
		if !slices.Equal(r.AdvisoryIDs, []string{"INTEL-SA-00289", "INTEL-SA-00615"}) {
			t.Errorf("advisories %v", r.AdvisoryIDs)
		}
		if r.PCK.FMSPCHex() != "00A067110000" || r.PCKCA != pcs.CAProcessor || r.TCBEvaluationDataNumber != 17 {
			t.Errorf("FMSPC %s CA %s eval %d", r.PCK.FMSPCHex(), r.PCKCA, r.TCBEvaluationDataNumber)
		}
		if want := time.Date(2025, 3, 20, 11, 21, 57, 0, time.UTC); !r.CollateralIssued.Equal(want) {
			t.Errorf("collateral issued %s, want %s (root CA CRL)", r.CollateralIssued, want)
		}
	}
}

func TestNoCollateral(t *testing.T) {
	q, _ := phala(t)
	r, err := Quote(q, Options{Now: phalaAt})
	if err != nil {
		t.Fatal(err)
	}
	if r.TCBStatus != "" || r.PCK == nil {
		t.Fatalf("status %q without collateral", r.TCBStatus)
	}
	if _, err := Quote(q, Options{}); err == nil {
		t.Fatal("verification without a time accepted")
	}
}

func TestOasis(t *testing.T) {
	q, err := abi.ParseQuote(read(t, "good_oasis_quote.bin"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Quote(q, Options{Now: oasisAt})
	if err != nil {
		t.Fatal(err)
	}
	c := oasisCollateral(t, "oasis_tcb_info_certs.pem")
	if err := TCBInfoMatches(c.TCBInfo, r.PCK); err != nil {
		t.Fatal(err)
	}
	if err := TCBInfo(c, IntelRootCA(), oasisAt); err != nil {
		t.Fatal(err)
	}
	level, err := TCBLevel(c.TCBInfo, r.PCK)
	if err != nil {
		t.Fatal(err)
	}
	if err := QEIdentity(c, IntelRootCA(), oasisAt); err != nil {
		t.Fatal(err)
	}
	qe, err := QEReport(c.QEIdentity, &q.QEReport)
	if err != nil {
		t.Fatal(err)
	}
	if level.TCBStatus != pcs.StatusSWHardeningNeeded || !slices.Equal(level.AdvisoryIDs, []string{"INTEL-SA-00615", "INTEL-SA-00657"}) || qe.TCBStatus != pcs.StatusUpToDate {
		t.Errorf("oasis: platform %s %v, QE %s", level.TCBStatus, level.AdvisoryIDs, qe.TCBStatus)
	}

	// The bad TCB signing chain (a PCK Platform CA in place of the TCB
	// signing certificate) must be refused.
	bad := oasisCollateral(t, "fail_oasis_tcb_info_certs_bad.pem")
	if err := TCBInfo(bad, IntelRootCA(), oasisAt); StepOf(err) != StepTCBInfo {
		t.Fatalf("bad TCB signing chain: %v", err)
	}
	// A TCB signing certificate that is not the one that signed.
	bad = oasisCollateral(t, "oasis_tcb_info_certs.pem")
	bad.TCBInfoSignature[5] ^= 1
	if err := TCBInfo(bad, IntelRootCA(), oasisAt); StepOf(err) != StepTCBInfo || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("altered TCB info signature: %v", err)
	}
}

// Flipping any byte of the quote makes verification fail, each region at the
// step that protects it.
func TestFlipEveryByte(t *testing.T) {
	good := read(t, "good_phala_quote.bin")
	_, c := phala(t)
	const sd = abi.SignedSize + 4
	qeRep := sd + 128
	regions := []struct {
		name     string
		from, to int
		step     string // "" when parsing or any step may refuse
	}{
		{"header", 0, abi.HeaderSize, ""},
		{"report body", abi.HeaderSize, abi.SignedSize, StepQuoteSignature},
		{"signature length", abi.SignedSize, sd, ""},
		{"quote signature", sd, sd + 64, StepQuoteSignature},
		{"attestation key", sd + 64, sd + 128, StepQuoteSignature},
		{"QE report", qeRep, qeRep + 320, StepQEReportSignature},
		{"QE report data", qeRep + 320, qeRep + 384, StepQEReportData},
		{"QE report signature", qeRep + 384, qeRep + 448, StepQEReportSignature},
		{"QE auth data length", qeRep + 448, qeRep + 450, ""},
		{"QE auth data", qeRep + 450, qeRep + 482, StepQEReportData},
		{"certification data", qeRep + 482, len(good), ""},
	}
	for _, r := range regions {
		t.Run(r.name, func(t *testing.T) {
			for i := r.from; i < r.to; i++ {
				b := append([]byte{}, good...)
				b[i] ^= 0x01
				q, err := abi.ParseQuote(b)
				if err == nil {
					_, err = Quote(q, Options{Now: phalaAt, Collateral: c})
				}
				if err == nil {
					t.Fatalf("byte %d flipped: accepted", i)
				}
				if r.step != "" && StepOf(err) != r.step {
					t.Fatalf("byte %d flipped: step %q (%v), want %q", i, StepOf(err), err, r.step)
				}
			}
		})
	}
}

func TestValidityWindows(t *testing.T) {
	q, c := phala(t)
	chain, err := abi.ParsePCKChain(q.CertData)
	if err != nil {
		t.Fatal(err)
	}
	root := IntelRootCA()
	sec := time.Second
	type check func(now time.Time) error
	pckChain := func(now time.Time) error { _, err := PCKChain(q.CertData, root, now); return err }
	tcbInfo := func(now time.Time) error { return TCBInfo(c, root, now) }
	qeID := func(now time.Time) error { return QEIdentity(c, root, now) }
	for _, tc := range []struct {
		name     string
		from, to time.Time
		run      check
		step     string
	}{
		{"PCK certificate", chain[0].NotBefore, chain[0].NotAfter, pckChain, StepPCKChain},
		{"PCK CA certificate", chain[1].NotBefore, chain[1].NotAfter, pckChain, StepPCKChain},
		{"root CA certificate", chain[2].NotBefore, chain[2].NotAfter, pckChain, StepPCKChain},
		{"root CA CRL", c.RootCACRL.ThisUpdate, c.RootCACRL.NextUpdate, func(now time.Time) error { return RootCACRL(c.RootCACRL, root, now) }, StepRootCACRL},
		{"PCK CRL", c.PCKCRL.ThisUpdate, c.PCKCRL.NextUpdate, func(now time.Time) error { return PCKCRL(c.PCKCRL, chain[1], pcs.CAProcessor, now) }, StepPCKCRL},
		{"TCB info", c.TCBInfo.IssueDate, c.TCBInfo.NextUpdate, tcbInfo, StepTCBInfo},
		{"TCB signing certificate", c.TCBInfoIssuerChain[0].NotBefore, c.TCBInfoIssuerChain[0].NotAfter, tcbInfo, StepTCBInfo},
		{"QE identity", c.QEIdentity.IssueDate, c.QEIdentity.NextUpdate, qeID, StepQEIdentity},
		{"QE identity signing certificate", c.QEIdentityIssuerChain[0].NotBefore, c.QEIdentityIssuerChain[0].NotAfter, qeID, StepQEIdentity},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.run(tc.from.Add(-sec)); StepOf(err) != tc.step {
				t.Errorf("1s before %s: %v", tc.from, err)
			}
			if err := tc.run(tc.to.Add(sec)); StepOf(err) != tc.step {
				t.Errorf("1s after %s: %v", tc.to, err)
			}
			// Full verification refuses both instants too.
			for _, at := range []time.Time{tc.from.Add(-sec), tc.to.Add(sec)} {
				if _, err := Quote(q, Options{Now: at, Collateral: c}); err == nil {
					t.Errorf("full verification at %s accepted", at)
				}
			}
		})
	}
}

func TestOtherFMSPC(t *testing.T) {
	q, c := phala(t)
	o := oasisCollateral(t, "oasis_tcb_info_certs.pem")
	mixed := *c
	mixed.TCBInfo, mixed.TCBInfoRaw, mixed.TCBInfoSignature, mixed.TCBInfoIssuerChain = o.TCBInfo, o.TCBInfoRaw, o.TCBInfoSignature, o.TCBInfoIssuerChain
	_, err := Quote(q, Options{Now: phalaAt, Collateral: &mixed})
	if StepOf(err) != StepTCBInfo || !strings.Contains(err.Error(), "FMSPC 00606A000000") || !strings.Contains(err.Error(), "FMSPC 00A067110000") {
		t.Fatalf("collateral for another FMSPC: %v", err)
	}
}

func TestCollateralTampered(t *testing.T) {
	q, c := phala(t)
	for _, tc := range []struct {
		name string
		edit func(c *pcs.Collateral)
		step string
	}{
		{"TCB info byte", func(c *pcs.Collateral) { c.TCBInfoRaw = flip(c.TCBInfoRaw, 100) }, StepTCBInfo},
		{"TCB info signature", func(c *pcs.Collateral) { c.TCBInfoSignature = flip(c.TCBInfoSignature, 0) }, StepTCBInfo},
		{"QE identity byte", func(c *pcs.Collateral) { c.QEIdentityRaw = flip(c.QEIdentityRaw, 100) }, StepQEIdentity},
		{"QE identity signature", func(c *pcs.Collateral) { c.QEIdentitySignature = flip(c.QEIdentitySignature, 63) }, StepQEIdentity},
		{"root CA CRL", func(c *pcs.Collateral) { c.RootCACRL = reparseCRL(t, flip(c.RootCACRL.Raw, len(c.RootCACRL.Raw)-3)) }, StepRootCACRL},
		{"PCK CRL", func(c *pcs.Collateral) { c.PCKCRL = reparseCRL(t, flip(c.PCKCRL.Raw, len(c.PCKCRL.Raw)-3)) }, StepPCKCRL},
		{"PCK CRL of the wrong CA", func(c *pcs.Collateral) { c.PCKCRL = c.RootCACRL }, StepPCKCRL},
		{"TCB chain with a foreign root", func(c *pcs.Collateral) {
			c.TCBInfoIssuerChain = append(c.TCBInfoIssuerChain[:1:1], c.PCKCRLIssuerChain[0])
		}, StepTCBInfo},
		{"TDX QE identity", func(c *pcs.Collateral) { id := *c.QEIdentity; id.ID = "TD_QE"; c.QEIdentity = &id }, StepQEIdentity},
		{"TDX TCB info", func(c *pcs.Collateral) { i := *c.TCBInfo; i.ID = "TDX"; c.TCBInfo = &i }, StepTCBInfo},
		{"incomplete", func(c *pcs.Collateral) { c.PCKCRL = nil }, StepCollateral},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc := *c
			tc.edit(&cc)
			_, err := Quote(q, Options{Now: phalaAt, Collateral: &cc})
			if StepOf(err) != tc.step {
				t.Fatalf("step %q (%v), want %q", StepOf(err), err, tc.step)
			}
		})
	}
}

func flip(b []byte, i int) []byte {
	b = append([]byte{}, b...)
	b[i] ^= 1
	return b
}

func reparseCRL(t *testing.T, der []byte) *x509.RevocationList {
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

func TestQEReport(t *testing.T) {
	q, c := phala(t)
	for _, tc := range []struct {
		name string
		edit func(r *abi.ReportBody)
		step string
		want string
	}{
		{"good", func(r *abi.ReportBody) {}, "", pcs.StatusUpToDate},
		{"MRSIGNER", func(r *abi.ReportBody) { r.MRSigner[0] ^= 1 }, StepQEReport, ""},
		{"ISVPRODID", func(r *abi.ReportBody) { r.ISVProdID++ }, StepQEReport, ""},
		{"MISCSELECT", func(r *abi.ReportBody) { r.MiscSelect |= 1 }, StepQEReport, ""},
		{"debug QE", func(r *abi.ReportBody) { r.Attributes[0] |= abi.AttributeDebug }, StepQEReport, ""},
		{"masked attribute", func(r *abi.ReportBody) { r.Attributes[0] ^= abi.AttributeMode64 }, "", pcs.StatusUpToDate},
		{"old QE", func(r *abi.ReportBody) { r.ISVSVN = 6 }, "", pcs.StatusOutOfDate},
		{"unknown QE", func(r *abi.ReportBody) { r.ISVSVN = 0 }, StepQETCBLevel, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := q.QEReport
			tc.edit(&r)
			l, err := QEReport(c.QEIdentity, &r)
			if StepOf(err) != tc.step {
				t.Fatalf("step %q (%v), want %q", StepOf(err), err, tc.step)
			}
			if err == nil && l.TCBStatus != tc.want {
				t.Fatalf("QE status %s, want %s", l.TCBStatus, tc.want)
			}
		})
	}
}

func TestTCBLevel(t *testing.T) {
	_, c := phala(t)
	base := pcs.PCKExtensions{CompSVN: [16]byte{11, 11, 2, 2, 255, 1, 12}, PCESVN: 13}
	for _, tc := range []struct {
		name string
		edit func(p *pcs.PCKExtensions)
		want string // "" = no level
	}{
		{"newest", func(p *pcs.PCKExtensions) {}, pcs.StatusSWHardeningNeeded},
		{"higher than newest", func(p *pcs.PCKExtensions) { p.CompSVN[0] = 20; p.PCESVN = 20 }, pcs.StatusSWHardeningNeeded},
		{"component 7 low", func(p *pcs.PCKExtensions) { p.CompSVN[6] = 0 }, pcs.StatusConfigurationAndSWHardeningNeeded},
		{"component 1 low", func(p *pcs.PCKExtensions) { p.CompSVN[0] = 10 }, pcs.StatusOutOfDate},
		{"PCESVN low", func(p *pcs.PCKExtensions) { p.PCESVN = 11 }, pcs.StatusOutOfDate},
		{"below all", func(p *pcs.PCKExtensions) { p.PCESVN = 4 }, ""},
	} {
		p := base
		tc.edit(&p)
		l, err := TCBLevel(c.TCBInfo, &p)
		switch {
		case tc.want == "" && StepOf(err) != StepTCBLevel:
			t.Errorf("%s: %v, want no level", tc.name, err)
		case tc.want != "" && (err != nil || l.TCBStatus != tc.want):
			t.Errorf("%s: %v %v, want %s", tc.name, l, err, tc.want)
		}
	}
}

func TestConverge(t *testing.T) {
	for _, tc := range [][3]string{
		{pcs.StatusUpToDate, pcs.StatusUpToDate, pcs.StatusUpToDate},
		{pcs.StatusSWHardeningNeeded, pcs.StatusUpToDate, pcs.StatusSWHardeningNeeded},
		{pcs.StatusUpToDate, pcs.StatusOutOfDate, pcs.StatusOutOfDate},
		{pcs.StatusSWHardeningNeeded, pcs.StatusOutOfDate, pcs.StatusOutOfDate},
		{pcs.StatusConfigurationNeeded, pcs.StatusOutOfDate, pcs.StatusOutOfDateConfigurationNeeded},
		{pcs.StatusConfigurationAndSWHardeningNeeded, pcs.StatusOutOfDate, pcs.StatusOutOfDateConfigurationNeeded},
		{pcs.StatusOutOfDate, pcs.StatusOutOfDate, pcs.StatusOutOfDate},
		{pcs.StatusUpToDate, pcs.StatusRevoked, pcs.StatusRevoked},
		{pcs.StatusRevoked, pcs.StatusUpToDate, pcs.StatusRevoked},
	} {
		if got := Converge(tc[0], tc[1]); got != tc[2] {
			t.Errorf("Converge(%s, %s) = %s, want %s", tc[0], tc[1], got, tc[2])
		}
	}
}

// Revocation: a CRL listing the PCK certificate's serial refuses it, with
// the serial and the CRL's date in the message.
func TestRevoked(t *testing.T) {
	q, _ := phala(t)
	chain, _ := abi.ParsePCKChain(q.CertData)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCRLSign | x509.KeyUsageCertSign, NotBefore: phalaAt.Add(-time.Hour), NotAfter: phalaAt.Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, ca, ca, key.Public(), key)
	ca, _ = x509.ParseCertificate(der)
	crlDER, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: phalaAt, NextUpdate: phalaAt.Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: chain[0].SerialNumber, RevocationTime: phalaAt}},
	}, ca, key)
	if err != nil {
		t.Fatal(err)
	}
	crl := reparseCRL(t, crlDER)
	err = NotRevoked(crl, chain[0], "PCK certificate", "PCK CA CRL")
	if StepOf(err) != StepRevoked || !strings.Contains(err.Error(), "PCK certificate is revoked (serial 81b77732… in the PCK CA CRL issued 2025-07-01") {
		t.Fatalf("revoked: %v", err)
	}
	if err := NotRevoked(crl, chain[1], "PCK CA certificate", "root CA CRL"); err != nil {
		t.Fatal(err)
	}
	// A CRL that the quote's PCK CA did not sign is refused.
	if err := PCKCRL(crl, chain[1], pcs.CAProcessor, phalaAt); StepOf(err) != StepPCKCRL {
		t.Fatalf("foreign PCK CRL: %v", err)
	}
}

// A quote whose PCK chain brings its own root is refused even if the chain
// is internally consistent.
func TestForeignRoot(t *testing.T) {
	q, _ := phala(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Intel SGX Root CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: phalaAt.Add(-time.Hour), NotAfter: phalaAt.Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	fake, _ := x509.ParseCertificate(der)
	if _, err := PCKChain(q.CertData, fake, phalaAt); StepOf(err) != StepPCKChain || !strings.Contains(err.Error(), "not the Intel SGX Root CA") {
		t.Fatalf("foreign root: %v", err)
	}
}
