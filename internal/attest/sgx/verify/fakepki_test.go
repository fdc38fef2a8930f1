package verify

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest/sgx/abi"
	"github.com/mse-in-go/mse/internal/attest/sgx/pcs"
)

// fakePKI re-creates Intel's PKI with test keys, so that tests can sign
// what Intel signs: revoked certificates, QE identities, debug enclaves.
// The PCK certificate copies the SGX extension of the phala vector's, and
// the phala TCB info and QE identity are re-signed, so TCB evaluation gives
// the phala results unless a test changes something.
type fakePKI struct {
	now                          time.Time
	root, pckCA, leaf, tcbSigner *x509.Certificate
	rootKey, caKey, leafKey      *ecdsa.PrivateKey
	tcbKey, attKey               *ecdsa.PrivateKey
	template                     *abi.Quote
	tcbInfoRaw, qeIdentityRaw    []byte
	revokedByRoot, revokedByCA   []*big.Int
}

func key(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newFakePKI(t *testing.T) *fakePKI {
	q, c := phala(t)
	p := &fakePKI{now: phalaAt, template: q, tcbInfoRaw: c.TCBInfoRaw, qeIdentityRaw: c.QEIdentityRaw,
		rootKey: key(t), caKey: key(t), leafKey: key(t), tcbKey: key(t), attKey: key(t)}
	realLeaf, err := abi.ParsePCKChain(q.CertData)
	if err != nil {
		t.Fatal(err)
	}
	var sgxExt pkix.Extension
	for _, e := range realLeaf[0].Extensions {
		if e.Id.Equal(pcs.OIDSGXExtensions) {
			sgxExt = e
		}
	}
	name := func(cn string) pkix.Name {
		return pkix.Name{CommonName: cn, Organization: []string{"Intel Corporation"}}
	}
	mk := func(serial int64, subject string, pub *ecdsa.PublicKey, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, ca bool, exts ...pkix.Extension) *x509.Certificate {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: name(subject), NotBefore: p.now.Add(-365 * 24 * time.Hour), NotAfter: p.now.Add(365 * 24 * time.Hour),
			BasicConstraintsValid: true, IsCA: ca, ExtraExtensions: exts}
		if ca {
			tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		} else {
			tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		}
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	p.root = mk(1, "Intel SGX Root CA", &p.rootKey.PublicKey, nil, p.rootKey, true)
	p.pckCA = mk(2, "Intel SGX PCK Processor CA", &p.caKey.PublicKey, p.root, p.rootKey, true)
	p.leaf = mk(3, "Intel SGX PCK Certificate", &p.leafKey.PublicKey, p.pckCA, p.caKey, false, sgxExt)
	p.tcbSigner = mk(4, "Intel SGX TCB Signing", &p.tcbKey.PublicKey, p.root, p.rootKey, false)
	return p
}

func rawSign(t *testing.T, k *ecdsa.PrivateKey, msg []byte) []byte {
	h := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, k, h[:])
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out
}

// quote builds a quote signed by the fake PKI; edit may change the report body.
func (p *fakePKI) quote(t *testing.T, edit func(body []byte)) []byte {
	tq := p.template
	signed := append([]byte{}, tq.Signed...)
	if edit != nil {
		edit(signed[abi.HeaderSize:])
	}
	ek, err := p.attKey.PublicKey.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	att := ek.Bytes()[1:] // raw x‖y
	auth := tq.QEAuthData
	qeRep := append([]byte{}, tq.QEReportRaw...)
	h := sha256.Sum256(append(append([]byte{}, att...), auth...))
	copy(qeRep[320:], h[:])
	clear(qeRep[352:384])
	var chain bytes.Buffer
	for _, c := range []*x509.Certificate{p.leaf, p.pckCA, p.root} {
		pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	chain.WriteByte(0)
	var sd bytes.Buffer
	sd.Write(rawSign(t, p.attKey, signed))
	sd.Write(att)
	sd.Write(qeRep)
	sd.Write(rawSign(t, p.leafKey, qeRep))
	binary.Write(&sd, binary.LittleEndian, uint16(len(auth)))
	sd.Write(auth)
	binary.Write(&sd, binary.LittleEndian, uint16(abi.CertDataPCKChain))
	binary.Write(&sd, binary.LittleEndian, uint32(chain.Len()))
	sd.Write(chain.Bytes())
	out := append(signed, binary.LittleEndian.AppendUint32(nil, uint32(sd.Len()))...)
	return append(out, sd.Bytes()...)
}

func (p *fakePKI) crl(t *testing.T, issuer *x509.Certificate, k *ecdsa.PrivateKey, revoked []*big.Int) *x509.RevocationList {
	var entries []x509.RevocationListEntry
	for _, s := range revoked {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: p.now.Add(-time.Hour)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: p.now.Add(-time.Hour), NextUpdate: p.now.Add(24 * time.Hour),
		RevokedCertificateEntries: entries}, issuer, k)
	if err != nil {
		t.Fatal(err)
	}
	return reparseCRL(t, der)
}

func (p *fakePKI) collateral(t *testing.T) *pcs.Collateral {
	c := &pcs.Collateral{
		RootCACRL:         p.crl(t, p.root, p.rootKey, p.revokedByRoot),
		PCKCRL:            p.crl(t, p.pckCA, p.caKey, p.revokedByCA),
		PCKCRLIssuerChain: []*x509.Certificate{p.pckCA, p.root},
		TCBInfoRaw:        p.tcbInfoRaw, TCBInfoSignature: rawSign(t, p.tcbKey, p.tcbInfoRaw),
		TCBInfoIssuerChain: []*x509.Certificate{p.tcbSigner, p.root},
		QEIdentityRaw:      p.qeIdentityRaw, QEIdentitySignature: rawSign(t, p.tcbKey, p.qeIdentityRaw),
		QEIdentityIssuerChain: []*x509.Certificate{p.tcbSigner, p.root},
	}
	var err error
	if c.TCBInfo, err = pcs.ParseTCBInfo(c.TCBInfoRaw); err != nil {
		t.Fatal(err)
	}
	if c.QEIdentity, err = pcs.ParseEnclaveIdentity(c.QEIdentityRaw); err != nil {
		t.Fatal(err)
	}
	return c
}

func (p *fakePKI) verify(t *testing.T, quote []byte) (*Result, error) {
	q, err := abi.ParseQuote(quote)
	if err != nil {
		t.Fatal(err)
	}
	return Quote(q, Options{Now: p.now, Collateral: p.collateral(t), Root: p.root})
}

func TestFakePKI(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(p *fakePKI)
		edit   func(body []byte)
		step   string
		errHas string
		check  func(t *testing.T, r *Result)
	}{
		{name: "good", check: func(t *testing.T, r *Result) {
			if r.TCBStatus != pcs.StatusConfigurationAndSWHardeningNeeded || r.Quote.Body.Debug() {
				t.Errorf("%s debug %v", r.TCBStatus, r.Quote.Body.Debug())
			}
		}},
		{name: "debug enclave is reported, not refused", edit: func(b []byte) { b[48] |= abi.AttributeDebug }, check: func(t *testing.T, r *Result) {
			if !r.Quote.Body.Debug() {
				t.Error("debug bit not reported")
			}
		}},
		{name: "PCK certificate revoked", setup: func(p *fakePKI) { p.revokedByCA = []*big.Int{big.NewInt(9), p.leaf.SerialNumber} },
			step: StepRevoked, errHas: "PCK certificate is revoked (serial 03 in the PCK CA CRL issued 2025-06-30"},
		{name: "PCK CA revoked", setup: func(p *fakePKI) { p.revokedByRoot = []*big.Int{p.pckCA.SerialNumber} },
			step: StepRevoked, errHas: "PCK CA certificate is revoked"},
		{name: "TCB signing certificate revoked", setup: func(p *fakePKI) { p.revokedByRoot = []*big.Int{p.tcbSigner.SerialNumber} },
			step: StepRevoked, errHas: "TCB signing certificate is revoked"},
		{name: "QE out of date", setup: func(p *fakePKI) {
			p.qeIdentityRaw = []byte(strings.Replace(string(p.qeIdentityRaw), `{"isvsvn":8}`, `{"isvsvn":200}`, 1))
		}, check: func(t *testing.T, r *Result) {
			if r.QETCBStatus != pcs.StatusOutOfDate || r.TCBStatus != pcs.StatusOutOfDateConfigurationNeeded ||
				!slices.Equal(r.AdvisoryIDs, []string{"INTEL-SA-00289", "INTEL-SA-00615"}) {
				t.Errorf("QE %s combined %s %v", r.QETCBStatus, r.TCBStatus, r.AdvisoryIDs)
			}
		}},
		{name: "platform up to date", setup: func(p *fakePKI) {
			p.tcbInfoRaw = []byte(strings.Replace(string(p.tcbInfoRaw), `"tcbStatus":"ConfigurationAndSWHardeningNeeded","advisoryIDs":["INTEL-SA-00289","INTEL-SA-00615"]`, `"tcbStatus":"UpToDate"`, 1))
		}, check: func(t *testing.T, r *Result) {
			if r.TCBStatus != pcs.StatusUpToDate || len(r.AdvisoryIDs) != 0 {
				t.Errorf("%s %v", r.TCBStatus, r.AdvisoryIDs)
			}
		}},
		{name: "TCB level revoked", setup: func(p *fakePKI) {
			p.tcbInfoRaw = []byte(strings.Replace(string(p.tcbInfoRaw), `"tcbStatus":"ConfigurationAndSWHardeningNeeded"`, `"tcbStatus":"Revoked"`, 1))
		}, check: func(t *testing.T, r *Result) {
			if r.TCBStatus != pcs.StatusRevoked {
				t.Errorf("%s", r.TCBStatus)
			}
		}},
		{name: "TCB signing certificate is a CA of the PCK chain", setup: func(p *fakePKI) { p.tcbSigner = p.pckCA },
			step: StepTCBInfo, errHas: "not \"Intel SGX TCB Signing\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newFakePKI(t)
			if tc.setup != nil {
				tc.setup(p)
			}
			r, err := p.verify(t, p.quote(t, tc.edit))
			if StepOf(err) != tc.step || (tc.step == "" && err != nil) {
				t.Fatalf("step %q (%v), want %q", StepOf(err), err, tc.step)
			}
			if tc.errHas != "" && !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("error %q does not contain %q", err, tc.errHas)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
	// The real verifier refuses the fake PKI's quotes: the root is pinned.
	p := newFakePKI(t)
	q, _ := abi.ParseQuote(p.quote(t, nil))
	if _, err := Quote(q, Options{Now: p.now, Collateral: p.collateral(t)}); StepOf(err) != StepPCKChain {
		t.Fatalf("fake root accepted by the real verifier: %v", err)
	}
}
