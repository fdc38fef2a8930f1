package pcs

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mse-in-go/mse/internal/attest/sgx/abi"
)

// PCK CA names, as the PCS "ca" parameter spells them.
const (
	CAProcessor = "processor"
	CAPlatform  = "platform"
)

// CAOf names the PCK CA whose certificate is pckCA (the intermediate of a
// PCK chain): CAPlatform for the "Intel SGX PCK Platform CA", else
// CAProcessor. It checks nothing; package verify checks the chain.
func CAOf(pckCA *x509.Certificate) string {
	if pckCA.Subject.CommonName == "Intel SGX PCK Platform CA" {
		return CAPlatform
	}
	return CAProcessor
}

// Collateral is everything needed to evaluate a quote's TCB status besides
// the quote: CRLs, TCB info and QE identity, each with the chain that signed
// it. Raw fields keep the exact signed bytes.
type Collateral struct {
	RootCACRL         *x509.RevocationList
	PCKCRL            *x509.RevocationList
	PCKCRLIssuerChain []*x509.Certificate

	TCBInfoRaw         []byte // the tcbInfo object as signed
	TCBInfoSignature   []byte // ECDSA r‖s, 64 bytes
	TCBInfo            *TCBInfo
	TCBInfoIssuerChain []*x509.Certificate

	QEIdentityRaw         []byte // the enclaveIdentity object as signed
	QEIdentitySignature   []byte
	QEIdentity            *EnclaveIdentity
	QEIdentityIssuerChain []*x509.Certificate
}

// Issued is the oldest issue date among the collateral (TCB info, QE
// identity, CRLs): how old the evidence about the platform is.
func (c *Collateral) Issued() time.Time {
	t := c.TCBInfo.IssueDate
	for _, u := range []time.Time{c.QEIdentity.IssueDate, c.RootCACRL.ThisUpdate, c.PCKCRL.ThisUpdate} {
		if u.Before(t) {
			t = u
		}
	}
	return t
}

// NextUpdate is the earliest next-update date among the collateral: after it,
// the collateral is stale and must be fetched again.
func (c *Collateral) NextUpdate() time.Time {
	t := c.TCBInfo.NextUpdate
	for _, u := range []time.Time{c.QEIdentity.NextUpdate, c.RootCACRL.NextUpdate, c.PCKCRL.NextUpdate} {
		if u.Before(t) {
			t = u
		}
	}
	return t
}

// Source provides collateral for a platform: fmspc is the PCK certificate's
// FMSPC (upper-case hex) and ca the PCK CA that issued it (CAProcessor or
// CAPlatform). Implementations: *Bundle (offline file) and *Client (PCS/PCCS).
type Source interface {
	Collateral(ctx context.Context, fmspc, ca string) (*Collateral, error)
}

// TDXSource provides TDX collateral (TDX TCB info, TD QE identity, the
// same CRLs) for a platform; *Bundle and *Client implement it.
type TDXSource interface {
	TDXCollateral(ctx context.Context, fmspc, ca string) (*Collateral, error)
}

// Bundle is an offline collateral bundle. Its JSON layout is the one of
// Phala's dcap-qvl (field names below); CRLs may be hex DER, PEM or base64
// DER, TCB info and QE identity are the signed JSON objects as strings.
type Bundle struct{ c *Collateral }

// BundleJSON is the file layout of an offline bundle.
type BundleJSON struct {
	PCKCRLIssuerChain     string `json:"pck_crl_issuer_chain"`
	RootCACRL             string `json:"root_ca_crl"`
	PCKCRL                string `json:"pck_crl"`
	TCBInfoIssuerChain    string `json:"tcb_info_issuer_chain"`
	TCBInfo               string `json:"tcb_info"`
	TCBInfoSignature      string `json:"tcb_info_signature"`
	QEIdentityIssuerChain string `json:"qe_identity_issuer_chain"`
	QEIdentity            string `json:"qe_identity"`
	QEIdentitySignature   string `json:"qe_identity_signature"`
}

// LoadBundle reads an offline collateral bundle file.
func LoadBundle(path string) (*Bundle, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read collateral bundle: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxBundleSize+1))
	if err != nil {
		return nil, fmt.Errorf("read collateral bundle: %w", err)
	}
	if len(b) > MaxBundleSize {
		return nil, fmt.Errorf("collateral bundle %s is larger than %d bytes", path, MaxBundleSize)
	}
	c, err := ParseBundle(b)
	if err != nil {
		return nil, fmt.Errorf("collateral bundle %s: %w", path, err)
	}
	return &Bundle{c: c}, nil
}

// Collateral implements Source. A bundle holds collateral for one platform
// model; verification refuses it when the FMSPC or PCK CA differ, naming both.
func (b *Bundle) Collateral(ctx context.Context, fmspc, ca string) (*Collateral, error) {
	return b.c, nil
}

// TDXCollateral implements TDXSource: a bundle written for a TDX quote
// holds TDX TCB info and the TD QE identity in the same layout; verification
// refuses SGX collateral for a TDX quote and the reverse, naming the id.
func (b *Bundle) TDXCollateral(ctx context.Context, fmspc, ca string) (*Collateral, error) {
	return b.c, nil
}

// Contents returns the bundle's collateral.
func (b *Bundle) Contents() *Collateral { return b.c }

// ParseBundle parses the JSON of an offline bundle.
func ParseBundle(data []byte) (*Collateral, error) {
	if len(data) > MaxBundleSize {
		return nil, fmt.Errorf("%d bytes, more than %d", len(data), MaxBundleSize)
	}
	var j BundleJSON
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(&j); err != nil {
		return nil, fmt.Errorf("not a collateral bundle (JSON object with pck_crl, root_ca_crl, tcb_info, qe_identity, ... as written by dcap-qvl): %v", err)
	}
	return j.Parse()
}

// Parse decodes and checks every field of the bundle.
func (j *BundleJSON) Parse() (*Collateral, error) {
	var c Collateral
	var err error
	missing := func(name, v string) error {
		if strings.TrimSpace(v) == "" {
			return fmt.Errorf("%s is missing", name)
		}
		return nil
	}
	for _, f := range [][2]string{
		{"pck_crl_issuer_chain", j.PCKCRLIssuerChain}, {"root_ca_crl", j.RootCACRL}, {"pck_crl", j.PCKCRL},
		{"tcb_info_issuer_chain", j.TCBInfoIssuerChain}, {"tcb_info", j.TCBInfo}, {"tcb_info_signature", j.TCBInfoSignature},
		{"qe_identity_issuer_chain", j.QEIdentityIssuerChain}, {"qe_identity", j.QEIdentity}, {"qe_identity_signature", j.QEIdentitySignature},
	} {
		if err := missing(f[0], f[1]); err != nil {
			return nil, err
		}
	}
	if c.PCKCRLIssuerChain, err = abi.ParsePEMChain([]byte(j.PCKCRLIssuerChain), 0, "pck_crl_issuer_chain"); err != nil {
		return nil, err
	}
	if c.RootCACRL, err = ParseCRL([]byte(j.RootCACRL)); err != nil {
		return nil, fmt.Errorf("root_ca_crl: %w", err)
	}
	if c.PCKCRL, err = ParseCRL([]byte(j.PCKCRL)); err != nil {
		return nil, fmt.Errorf("pck_crl: %w", err)
	}
	if c.TCBInfoIssuerChain, err = abi.ParsePEMChain([]byte(j.TCBInfoIssuerChain), 0, "tcb_info_issuer_chain"); err != nil {
		return nil, err
	}
	c.TCBInfoRaw = []byte(strings.TrimSpace(j.TCBInfo))
	if c.TCBInfo, err = ParseTCBInfo(c.TCBInfoRaw); err != nil {
		return nil, fmt.Errorf("tcb_info: %w", err)
	}
	if c.TCBInfoSignature, err = hexBytes(j.TCBInfoSignature, 64, "tcb_info_signature"); err != nil {
		return nil, err
	}
	if c.QEIdentityIssuerChain, err = abi.ParsePEMChain([]byte(j.QEIdentityIssuerChain), 0, "qe_identity_issuer_chain"); err != nil {
		return nil, err
	}
	c.QEIdentityRaw = []byte(strings.TrimSpace(j.QEIdentity))
	if c.QEIdentity, err = ParseEnclaveIdentity(c.QEIdentityRaw); err != nil {
		return nil, fmt.Errorf("qe_identity: %w", err)
	}
	if c.QEIdentitySignature, err = hexBytes(j.QEIdentitySignature, 64, "qe_identity_signature"); err != nil {
		return nil, err
	}
	return &c, nil
}

// MarshalBundle writes collateral in the bundle layout (CRLs as hex DER).
func MarshalBundle(c *Collateral) ([]byte, error) {
	chain := func(certs []*x509.Certificate) string {
		var b strings.Builder
		for _, c := range certs {
			b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
		}
		return b.String()
	}
	j := BundleJSON{
		PCKCRLIssuerChain:     chain(c.PCKCRLIssuerChain),
		RootCACRL:             hex.EncodeToString(c.RootCACRL.Raw),
		PCKCRL:                hex.EncodeToString(c.PCKCRL.Raw),
		TCBInfoIssuerChain:    chain(c.TCBInfoIssuerChain),
		TCBInfo:               string(c.TCBInfoRaw),
		TCBInfoSignature:      hex.EncodeToString(c.TCBInfoSignature),
		QEIdentityIssuerChain: chain(c.QEIdentityIssuerChain),
		QEIdentity:            string(c.QEIdentityRaw),
		QEIdentitySignature:   hex.EncodeToString(c.QEIdentitySignature),
	}
	return json.MarshalIndent(j, "", "  ")
}

// ParseCRL reads a CRL in DER, PEM ("X509 CRL"), hex of DER or base64 of DER
// (PCS and PCCS serve all of these depending on version and parameters).
func ParseCRL(b []byte) (*x509.RevocationList, error) {
	if len(b) > MaxCRLSize {
		return nil, fmt.Errorf("CRL is %d bytes, more than %d", len(b), MaxCRLSize)
	}
	der := b
	t := bytes.TrimSpace(b)
	switch {
	case len(t) > 0 && t[0] == 0x30:
		der = t
	case bytes.HasPrefix(t, []byte("-----BEGIN")):
		blk, _ := pem.Decode(t)
		if blk == nil || blk.Type != "X509 CRL" {
			return nil, fmt.Errorf("PEM that is not an X509 CRL")
		}
		der = blk.Bytes
	default:
		if h, err := hex.DecodeString(string(t)); err == nil {
			der = h
		} else if d, err := decodeBase64(t); err == nil {
			der = d
		} else {
			return nil, fmt.Errorf("neither DER, PEM, hex nor base64")
		}
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("not a CRL: %v", err)
	}
	return crl, nil
}

func decodeBase64(b []byte) ([]byte, error) {
	s := strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == ' ' {
			return -1
		}
		return r
	}, string(b))
	if d, err := base64.StdEncoding.DecodeString(s); err == nil {
		return d, nil
	}
	return base64.URLEncoding.DecodeString(s)
}
