// Package snptest is a fake AMD SEV-SNP PKI for tests: an ARK and ASK of
// its own (RSA-PSS, like AMD's), VCEKs with KDS extensions for any chip and
// TCB, report signing and CRLs. Verifiers take its roots in place of the
// pinned AMD roots (snp.Options.Roots), which they never do otherwise.
package snptest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"math/big"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest/snp/abi"
	"github.com/mse-in-go/mse/internal/attest/snp/verify"
)

// PKI is a fake ARK and ASK of one product line.
type PKI struct {
	Roots   *verify.Roots
	arkKey  *rsa.PrivateKey
	askKey  *rsa.PrivateKey
	serial  int64
	Product string
	kind    string
}

var (
	oidBase = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1}
	pss     = x509.SHA384WithRSAPSS
)

func oid(tail ...int) asn1.ObjectIdentifier {
	return append(append(asn1.ObjectIdentifier{}, oidBase...), tail...)
}

// New makes a VCEK PKI (ARK, ASK) valid from 2020 to 2040.
func New(t testing.TB, product string) *PKI { return newPKI(t, product, verify.KindVCEK) }

// NewVLEK makes a VLEK PKI (ARK, ASVK) valid from 2020 to 2040.
func NewVLEK(t testing.TB, product string) *PKI { return newPKI(t, product, verify.KindVLEK) }

func newPKI(t testing.TB, product, kind string) *PKI {
	t.Helper()
	p := &PKI{Product: product, kind: kind}
	var err error
	if p.arkKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if p.askKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	ca := func(cn string, pub, signKey crypto.Signer, parent *x509.Certificate) *x509.Certificate {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(p.next()), Subject: pkix.Name{CommonName: cn, Organization: []string{"Fake Micro Devices"}},
			NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, SignatureAlgorithm: pss,
		}
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub.Public(), signKey)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ark := ca("ARK-"+product, p.arkKey, p.arkKey, nil)
	askName := "SEV-" + product
	if kind == verify.KindVLEK {
		askName = "SEV-VLEK-" + product
	}
	ask := ca(askName, p.askKey, p.arkKey, ark)
	p.Roots = &verify.Roots{Product: product, Kind: kind, ARK: ark, ASK: ask}
	return p
}

func (p *PKI) next() int64 { p.serial++; return p.serial }

// VCEK is a fake endorsement key and its certificate.
type VCEK struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewVCEK issues a VCEK for chipID at TCB tcb (valid 2022 to 2032). On
// Turin its hwID is the chip id's first 8 bytes and it has an FMC SPL.
func (p *PKI) NewVCEK(t testing.TB, chipID [64]byte, tcb verify.TCB) *VCEK {
	t.Helper()
	hwid := chipID[:]
	if p.Product == verify.Turin {
		hwid = chipID[:8]
	}
	return p.issue(t, "SEV-VCEK", tcb, pkix.Extension{Id: oid(4), Value: hwid})
}

// NewVLEK issues a VLEK at TCB tcb for a cloud provider (a VLEK PKI only).
func (p *PKI) NewVLEK(t testing.TB, tcb verify.TCB) *VCEK {
	t.Helper()
	csp, _ := asn1.Marshal("fake-cloud")
	return p.issue(t, "SEV-VLEK", tcb, pkix.Extension{Id: oid(5), Value: csp})
}

func (p *PKI) issue(t testing.TB, cn string, tcb verify.TCB, id pkix.Extension) *VCEK {
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	intExt := func(o asn1.ObjectIdentifier, v uint8) pkix.Extension {
		b, _ := asn1.Marshal(int(v))
		return pkix.Extension{Id: o, Value: b}
	}
	name, _ := asn1.Marshal(p.Product + "-B0")
	exts := []pkix.Extension{
		{Id: oid(2), Value: name},
		intExt(oid(3, 1), tcb.Bootloader), intExt(oid(3, 2), tcb.TEE), intExt(oid(3, 3), tcb.SNP), intExt(oid(3, 8), tcb.Microcode),
		id,
	}
	if p.Product == verify.Turin {
		exts = append(exts, intExt(oid(3, 9), tcb.FMC))
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.next()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2032, 1, 1, 0, 0, 0, 0, time.UTC),
		SignatureAlgorithm: pss, ExtraExtensions: exts,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.Roots.ASK, key.Public(), p.askKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &VCEK{Cert: c, Key: key}
}

// Sign signs report (0x4A0 bytes, edited in place) with the VCEK.
func (v *VCEK) Sign(t testing.TB, report []byte) {
	t.Helper()
	h := sha512.Sum384(report[:abi.SignedSize])
	r, s, err := ecdsa.Sign(rand.Reader, v.Key, h[:])
	if err != nil {
		t.Fatal(err)
	}
	put := func(off int, n *big.Int) {
		clear(report[off : off+72])
		b := n.FillBytes(make([]byte, 48))
		for i := range b {
			report[off+i] = b[len(b)-1-i]
		}
	}
	put(abi.SignedSize, r)
	put(abi.SignedSize+72, s)
}

// Report returns a copy of base (a real report) made to come from chip
// chipID at TCB tcb (Milan layout), signed by v.
func Report(t testing.TB, base []byte, chipID [64]byte, tcb verify.TCB, v *VCEK) []byte {
	t.Helper()
	return ReportFor(t, base, verify.Milan, chipID, tcb, v)
}

// ReportFor is Report with the TCB in the layout of product.
func ReportFor(t testing.TB, base []byte, product string, chipID [64]byte, tcb verify.TCB, v *VCEK) []byte {
	t.Helper()
	r := append([]byte(nil), base...)
	copy(r[0x1A0:0x1E0], chipID[:])
	binary.LittleEndian.PutUint64(r[0x180:], EncodeTCB(tcb, product))
	v.Sign(t, r)
	return r
}

// EncodeTCB is verify.DecodeTCB's inverse.
func EncodeTCB(t verify.TCB, product string) uint64 {
	if product == verify.Turin {
		return uint64(t.FMC) | uint64(t.Bootloader)<<8 | uint64(t.TEE)<<16 | uint64(t.SNP)<<24 | uint64(t.Microcode)<<56
	}
	return uint64(t.Bootloader) | uint64(t.TEE)<<8 | uint64(t.SNP)<<48 | uint64(t.Microcode)<<56
}

// CRL is a CRL of the ARK valid from thisUpdate to nextUpdate revoking
// the given certificates.
func (p *PKI) CRL(t testing.TB, thisUpdate, nextUpdate time.Time, revoked ...*x509.Certificate) *x509.RevocationList {
	t.Helper()
	return p.crlSignedBy(t, p.arkKey, thisUpdate, nextUpdate, revoked...)
}

// ForeignCRL is a CRL naming the ARK as issuer but signed by another key.
func (p *PKI) ForeignCRL(t testing.TB, thisUpdate, nextUpdate time.Time) *x509.RevocationList {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return p.crlSignedBy(t, k, thisUpdate, nextUpdate)
}

func (p *PKI) crlSignedBy(t testing.TB, key *rsa.PrivateKey, thisUpdate, nextUpdate time.Time, revoked ...*x509.Certificate) *x509.RevocationList {
	var entries []x509.RevocationListEntry
	for _, c := range revoked {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: thisUpdate})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(p.next()), ThisUpdate: thisUpdate, NextUpdate: nextUpdate,
		RevokedCertificateEntries: entries, SignatureAlgorithm: pss,
	}, p.Roots.ARK, key)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}
