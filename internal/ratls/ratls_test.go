package ratls

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sim"
	"github.com/mse-in-go/mse/internal/testenv/ciskip"
)

// simIssuer issues sim quotes straight from an in-memory platform.
type simIssuer struct {
	p  *sim.Platform
	id sim.Identity
}

func (i simIssuer) Type() string { return attest.TypeSim }
func (i simIssuer) Issue(_ context.Context, rd [64]byte) ([]byte, error) {
	return i.p.Quote(i.id, rd, time.Now())
}

var (
	testMeasurement = sha256.Sum256([]byte("mse-node test build"))
	otherHash       = sha256.Sum256([]byte("something else"))
	codeDigest      = sha256.Sum256([]byte("bundle"))
	confDigest      = sha256.Sum256([]byte("spec"))
)

type fixture struct {
	plat   *sim.Platform
	issuer simIssuer
	key    *ecdsa.PrivateKey
	now    time.Time
	claims attest.Claims
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	p, err := sim.NewPlatformInMemory()
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{
		plat:   p,
		issuer: simIssuer{p: p, id: sim.Identity{Measurement: testMeasurement, Signer: sim.DevSigner}},
		key:    key,
		now:    time.Now(),
		claims: attest.Claims{AppID: "app-1", CodeDigest: codeDigest[:], ConfigDigest: confDigest[:], SealingKey: bytes.Repeat([]byte{7}, 32)},
	}
}

func (f *fixture) template() Template {
	return Template{DNSNames: []string{"app.example"}, NotBefore: f.now.Add(-time.Hour), NotAfter: f.now.Add(time.Hour), Claims: f.claims}
}

// cert makes an RA-TLS certificate with NewCertificate.
func (f *fixture) cert(t testing.TB, iss attest.Issuer) *x509.Certificate {
	t.Helper()
	der, cb, err := NewCertificate(context.Background(), f.key, iss, f.template())
	if err != nil {
		t.Fatal(err)
	}
	if len(cb) == 0 {
		t.Fatal("NewCertificate returned no claims bytes")
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *fixture) policy() *attest.Policy {
	return &attest.Policy{
		TEETypes:        []string{attest.TypeSim},
		AllowSimulation: true,
		Measurements:    []string{hex.EncodeToString(testMeasurement[:])},
		Signers:         []string{hex.EncodeToString(sim.DevSigner[:])},
	}
}

func (f *fixture) options() Options {
	v := sim.NewVerifier(f.plat.RootCertificate(), nil)
	return Options{
		Verifiers: func(tt string) (attest.Verifier, error) {
			if tt != attest.TypeSim {
				return nil, fmt.Errorf("no verifier for %s", tt)
			}
			return v, nil
		},
		Policy: f.policy(),
		Now:    f.now,
		Expect: Expect{AppID: "app-1", CodeDigest: codeDigest[:], ConfigDigest: confDigest[:]},
	}
}

// rawCert makes a certificate for key, signed by signer/parent (self-signed
// when parent is nil), carrying the given extensions.
func rawCert(t testing.TB, key *ecdsa.PrivateKey, parent *x509.Certificate, signer *ecdsa.PrivateKey, nb, na time.Time, exts ...pkix.Extension) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "app.example"},
		NotBefore:             nb,
		NotAfter:              na,
		DNSNames:              []string{"app.example"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		ExtraExtensions:       exts,
	}
	if parent == nil {
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func evidenceExt(t testing.TB, c *x509.Certificate) pkix.Extension {
	t.Helper()
	for _, e := range c.Extensions {
		if e.Id.Equal(OIDTaggedEvidence) {
			return pkix.Extension{Id: e.Id, Value: e.Value}
		}
	}
	t.Fatal("no evidence extension")
	return pkix.Extension{}
}

// taggedExt builds an evidence extension from a sim quote over quoted and the
// claims bytes carried (which may differ, to test the binding).
func (f *fixture) taggedExt(t testing.TB, iss simIssuer, quoted, carried []byte) pkix.Extension {
	t.Helper()
	ev, err := iss.Issue(context.Background(), attest.ReportData(quoted))
	if err != nil {
		t.Fatal(err)
	}
	v, err := EncodeTagged(attest.TypeSim, ev, carried)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: OIDTaggedEvidence, Value: v}
}

func (f *fixture) claimsFor(t testing.TB, key *ecdsa.PrivateKey, mod func(*attest.Claims)) []byte {
	t.Helper()
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(spki)
	c := f.claims
	c.PubkeyHash = h[:]
	if mod != nil {
		mod(&c)
	}
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerify(t *testing.T) {
	f := newFixture(t)
	good := f.cert(t, f.issuer)
	nb, na := f.now.Add(-time.Hour), f.now.Add(time.Hour)

	// A certificate carrying good's evidence but signed by another CA.
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := rawCert(t, caKey, nil, nil, nb, na)
	notSelfSigned := rawCert(t, f.key, ca, caKey, nb, na, evidenceExt(t, good))

	// good with its signature altered.
	raw := bytes.Clone(good.Raw)
	raw[len(raw)-3] ^= 0xff
	tampered, err := x509.ParseCertificate(raw)
	if err != nil {
		t.Fatal(err)
	}

	noEvidence := rawCert(t, f.key, nil, nil, nb, na)
	unknownTagValue, _ := attest.CBOREncMode().Marshal(cbor.Tag{Number: 12345, Content: [][]byte{{1}, {2}}})
	unknownTag := rawCert(t, f.key, nil, nil, nb, na, pkix.Extension{Id: OIDTaggedEvidence, Value: unknownTagValue})
	notATag := rawCert(t, f.key, nil, nil, nb, na, pkix.Extension{Id: OIDTaggedEvidence, Value: []byte{0x01}})
	legacyOnly := rawCert(t, f.key, nil, nil, nb, na, pkix.Extension{Id: OIDGramineQuote, Value: []byte("a quote")})

	// Evidence from another simulated platform.
	other, _ := sim.NewPlatformInMemory()
	foreign := f.cert(t, simIssuer{p: other, id: f.issuer.id})

	withID := func(mod func(*sim.Identity)) *x509.Certificate {
		iss := f.issuer
		mod(&iss.id)
		return f.cert(t, iss)
	}
	debug := withID(func(id *sim.Identity) { id.Debug = true })
	badMeasurement := withID(func(id *sim.Identity) { id.Measurement = otherHash })
	badSigner := withID(func(id *sim.Identity) { id.Signer = otherHash })
	outOfDate := withID(func(id *sim.Identity) { id.TCBStatus = attest.TCBOutOfDate })

	// Evidence over one claims map, certificate carrying another (spliced).
	good2 := f.claimsFor(t, f.key, func(c *attest.Claims) { c.AppID = "app-1"; c.Other = map[string]cbor.RawMessage{"x": {0x01}} })
	spliced := rawCert(t, f.key, nil, nil, nb, na, f.taggedExt(t, f.issuer, f.claimsFor(t, f.key, nil), good2))

	// Evidence and claims of good copied into a certificate with another key.
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	copied := rawCert(t, otherKey, nil, nil, nb, na, evidenceExt(t, good))

	// Claims that do not parse, yet bound by the evidence.
	garbage := []byte{0xa1, 0x63, 'f', 'o', 'o'} // map missing its value
	badClaims := rawCert(t, f.key, nil, nil, nb, na, f.taggedExt(t, f.issuer, garbage, garbage))

	cases := []struct {
		name   string
		cert   *x509.Certificate
		mod    func(*Options)
		check  string
		msg    string
		policy string // PolicyError.Check
		is     error
	}{
		{name: "not self-signed", cert: notSelfSigned, check: "certificate", msg: "not validly self-signed"},
		{name: "tampered signature", cert: tampered, check: "certificate", msg: "not validly self-signed"},
		{name: "expired", cert: good, mod: func(o *Options) { o.Now = na.Add(2 * time.Hour) }, check: "certificate", msg: "is not valid at"},
		{name: "not yet valid", cert: good, mod: func(o *Options) { o.Now = nb.Add(-2 * time.Hour) }, check: "certificate", msg: "is not valid at"},
		{name: "no evidence", cert: noEvidence, check: "evidence", msg: "carries no attestation evidence"},
		{name: "unknown tag", cert: unknownTag, check: "evidence", msg: "unknown CBOR tag 12345"},
		{name: "not a tag", cert: notATag, check: "evidence", msg: "is not a CBOR tag"},
		{name: "legacy only", cert: legacyOnly, check: "evidence", msg: "only Gramine's legacy evidence"},
		{name: "no verifier for type", cert: good, mod: func(o *Options) {
			o.Verifiers = func(string) (attest.Verifier, error) { return nil, errors.New("sim is not enabled") }
		}, check: "tee_type", msg: "sim is not enabled"},
		{name: "other platform", cert: foreign, check: "evidence", msg: "sim evidence is not genuine", is: sim.ErrUntrustedPlatform},
		{name: "tee type not in policy", cert: good, mod: func(o *Options) { o.Policy.TEETypes = []string{attest.TypeSGX} }, check: "policy", policy: "tee_type", msg: `TEE type "sim" is not accepted`},
		{name: "simulation not allowed", cert: good, mod: func(o *Options) { o.Policy.AllowSimulation = false }, check: "policy", policy: "simulation", msg: "evidence is simulated"},
		{name: "debug", cert: debug, check: "policy", policy: "debug", msg: "debug mode"},
		{name: "measurement", cert: badMeasurement, check: "policy", policy: "measurement", msg: "measurement " + hex.EncodeToString(otherHash[:4])},
		{name: "signer", cert: badSigner, check: "policy", policy: "signer", msg: "MRSIGNER " + hex.EncodeToString(otherHash[:4])},
		{name: "tcb status", cert: outOfDate, check: "policy", policy: "tcb_status", msg: "TCB status OutOfDate is not accepted"},
		{name: "spliced claims", cert: spliced, check: "report_data", msg: "report data does not match"},
		{name: "claims do not parse", cert: badClaims, check: "claims", msg: "claims are not a CBOR map"},
		{name: "pubkey-hash", cert: copied, check: "pubkey_hash", msg: "pubkey-hash mismatch"},
		{name: "app id", cert: good, mod: func(o *Options) { o.Expect.AppID = "app-2" }, check: "app_id", msg: `attests app id "app-1", not "app-2"`},
		{name: "code digest", cert: good, mod: func(o *Options) { o.Expect.CodeDigest = otherHash[:] }, check: "code_digest", msg: "code digest " + hex.EncodeToString(codeDigest[:6])},
		{name: "config digest", cert: good, mod: func(o *Options) { o.Expect.ConfigDigest = otherHash[:] }, check: "config_digest", msg: "config digest " + hex.EncodeToString(confDigest[:6])},
		{name: "nonce", cert: good, mod: func(o *Options) { o.Expect.Nonce = []byte("fresh") }, check: "nonce", msg: "replay"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := f.options()
			if c.mod != nil {
				c.mod(&o)
			}
			id, err := Verify(context.Background(), c.cert, o)
			if err == nil {
				t.Fatalf("Verify succeeded: %+v", id)
			}
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("error is %T, not *VerifyError: %v", err, err)
			}
			if ve.Check != c.check {
				t.Errorf("Check = %q, want %q (%v)", ve.Check, c.check, err)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q does not contain %q", err, c.msg)
			}
			if !strings.HasPrefix(err.Error(), "verification failed: ") {
				t.Errorf("error %q does not start with \"verification failed: \"", err)
			}
			if c.policy != "" {
				var pe *attest.PolicyError
				if !errors.As(err, &pe) || pe.Check != c.policy {
					t.Errorf("PolicyError check = %v, want %q", pe, c.policy)
				}
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("error %v is not %v", err, c.is)
			}
		})
	}

	t.Run("ok", func(t *testing.T) {
		id, err := Verify(context.Background(), good, f.options())
		if err != nil {
			t.Fatal(err)
		}
		if id.Claims.AppID != "app-1" || !bytes.Equal(id.Claims.CodeDigest, codeDigest[:]) || !bytes.Equal(id.Claims.PubkeyHash, PubkeyHash(good)) {
			t.Errorf("claims = %+v", id.Claims)
		}
		if id.Format != FormatTagged || id.Fingerprint != Fingerprint(good) || id.Verified.Type != attest.TypeSim || !id.Verified.Simulated {
			t.Errorf("identity = %+v", id)
		}
		if !bytes.Equal(id.Verified.Measurement, testMeasurement[:]) {
			t.Errorf("measurement = %x", id.Verified.Measurement)
		}
	})
	t.Run("ok without expectations", func(t *testing.T) {
		o := f.options()
		o.Expect = Expect{}
		if _, err := Verify(context.Background(), good, o); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("no policy", func(t *testing.T) {
		o := f.options()
		o.Policy = nil
		if _, err := Verify(context.Background(), good, o); err == nil || !strings.Contains(err.Error(), "needs a policy") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestVerifyFresh(t *testing.T) {
	f := newFixture(t)
	good := f.cert(t, f.issuer)
	fresh := func(nonce []byte) []byte {
		c := f.claims
		c.PubkeyHash = PubkeyHash(good)
		c.Nonce = nonce
		cb, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		ev, err := f.issuer.Issue(context.Background(), attest.ReportData(cb))
		if err != nil {
			t.Fatal(err)
		}
		out, err := EncodeTagged(attest.TypeSim, ev, cb)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	nonceA, nonceB := []byte("nonce-A"), []byte("nonce-B")
	tagged := fresh(nonceA)
	o := f.options()
	o.Expect.Nonce = nonceA
	id, err := VerifyFresh(context.Background(), good, tagged, o)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(id.Claims.Nonce, nonceA) {
		t.Errorf("nonce = %q", id.Claims.Nonce)
	}
	o.Expect.Nonce = nonceB
	_, err = VerifyFresh(context.Background(), good, tagged, o)
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Check != "nonce" || !strings.Contains(err.Error(), "replay") {
		t.Errorf("nonce B: err = %v", err)
	}
	o.Expect.Nonce = nil
	if _, err := VerifyFresh(context.Background(), good, tagged, o); err == nil || !strings.Contains(err.Error(), "needs a nonce") {
		t.Errorf("no nonce: err = %v", err)
	}
	o.Expect.Nonce = nonceA
	if _, err := VerifyFresh(context.Background(), good, []byte("junk"), o); !errors.As(err, &ve) || ve.Check != "evidence" || !strings.Contains(err.Error(), "fresh evidence") {
		t.Errorf("junk: err = %v", err)
	}
	// Fresh evidence for another certificate's key.
	g := newFixture(t)
	g.plat, g.issuer.p = f.plat, f.plat
	other := g.cert(t, g.issuer)
	if _, err := VerifyFresh(context.Background(), other, tagged, o); !errors.As(err, &ve) || ve.Check != "pubkey_hash" {
		t.Errorf("other certificate: err = %v", err)
	}
}

func TestExtractGramine(t *testing.T) {
	// A real Gramine RA-TLS certificate, kept in the repository (source and
	// license: internal/attest/sgx/testdata/README.md).
	const path = "../attest/sgx/testdata/good_gramine_cert.pem"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the test vector is part of the repository: %v", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("%s: no PEM certificate", path)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := Extract(cert)
	if err != nil {
		t.Fatal(err)
	}
	if ex.Format != FormatTagged || ex.Type != attest.TypeSGX {
		t.Fatalf("Extract = format %q type %q, want tagged sgx", ex.Format, ex.Type)
	}
	claims, err := attest.ParseClaims(ex.Claims)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(claims.PubkeyHash, PubkeyHash(cert)) {
		t.Errorf("pubkey-hash %x, want %x", claims.PubkeyHash, PubkeyHash(cert))
	}
	if len(ex.Evidence) < 432 {
		t.Errorf("evidence is %d bytes; an SGX quote v3 is longer", len(ex.Evidence))
	}
	// Without the tagged extension, the legacy quote is found.
	var legacy *x509.Certificate
	c := *cert
	c.Extensions = nil
	for _, e := range cert.Extensions {
		if !e.Id.Equal(OIDTaggedEvidence) {
			c.Extensions = append(c.Extensions, e)
		}
	}
	legacy = &c
	lx, err := Extract(legacy)
	if err != nil {
		t.Fatal(err)
	}
	if lx.Format != FormatGramineLegacy || lx.Type != attest.TypeSGX || lx.Claims != nil {
		t.Errorf("legacy Extract = %+v", lx)
	}
	if !bytes.Equal(lx.Evidence[:len(ex.Evidence)/2], ex.Evidence[:len(ex.Evidence)/2]) {
		t.Logf("legacy quote differs from tagged evidence (allowed)")
	}
}

func TestParseTagged(t *testing.T) {
	enc := func(v any) []byte {
		b, err := attest.CBOREncMode().Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good, err := EncodeTagged(attest.TypeSim, []byte("ev"), []byte("cl"))
	if err != nil {
		t.Fatal(err)
	}
	ex, err := parseTagged(good)
	if err != nil || ex.Type != attest.TypeSim || string(ex.Evidence) != "ev" || string(ex.Claims) != "cl" {
		t.Fatalf("parseTagged(good) = %+v, %v", ex, err)
	}
	cases := []struct {
		name string
		v    []byte
		msg  string
	}{
		{"empty", nil, "not a CBOR tag"},
		{"not a tag", enc([][]byte{{1}, {2}}), "not a CBOR tag"},
		{"trailing", append(bytes.Clone(good), 0), "not a CBOR tag"},
		{"unknown tag", enc(cbor.Tag{Number: 7, Content: [][]byte{{1}, {2}}}), "unknown CBOR tag 7"},
		{"one element", enc(cbor.Tag{Number: TagSim, Content: [][]byte{{1}}}), "not [evidence bstr, claims bstr]"},
		{"three elements", enc(cbor.Tag{Number: TagSim, Content: [][]byte{{1}, {2}, {3}}}), "not [evidence bstr, claims bstr]"},
		{"not bstrs", enc(cbor.Tag{Number: TagSim, Content: []any{1, 2}}), "not [evidence bstr, claims bstr]"},
		{"empty evidence", enc(cbor.Tag{Number: TagSim, Content: [][]byte{{}, {2}}}), "evidence is 0 bytes"},
		{"big evidence", enc(cbor.Tag{Number: TagSim, Content: [][]byte{make([]byte, MaxEvidenceSize+1), {2}}}), fmt.Sprintf("evidence is %d bytes", MaxEvidenceSize+1)},
		{"big claims", enc(cbor.Tag{Number: TagSim, Content: [][]byte{{1}, make([]byte, attest.MaxClaimsSize+1)}}), "claims are"},
		{"too large", make([]byte, MaxEvidenceSize+attest.MaxClaimsSize+100), "too large"},
	}
	for _, c := range cases {
		_, err := parseTagged(c.v)
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.msg)
		}
	}
	if _, err := TagFor("nitro"); err == nil {
		t.Error("TagFor(nitro) succeeded")
	}
	for tee, want := range map[string]uint64{"sgx": TagSGXQuote, "tdx": TagTDXQuote, "sev-snp": TagSEVSNP, "sim": TagSim} {
		if n, err := TagFor(tee); err != nil || n != want {
			t.Errorf("TagFor(%s) = %d, %v, want %d", tee, n, err, want)
		}
	}
	if _, err := EncodeTagged("nope", nil, nil); err == nil {
		t.Error("EncodeTagged(nope) succeeded")
	}
}

func TestNewCertificate(t *testing.T) {
	f := newFixture(t)
	c := f.cert(t, f.issuer)
	if c.IsCA || !c.BasicConstraintsValid || c.KeyUsage != x509.KeyUsageDigitalSignature || c.Subject.CommonName != "app.example" {
		t.Errorf("certificate: CA %v (constraints %v) usage %v CN %q; want an end-entity certificate", c.IsCA, c.BasicConstraintsValid, c.KeyUsage, c.Subject.CommonName)
	}
	// It is its own trust anchor, for its names only.
	pool := x509.NewCertPool()
	pool.AddCert(c)
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: "app.example", CurrentTime: f.now}); err != nil {
		t.Errorf("the RA-TLS certificate does not verify as its own trust anchor: %v", err)
	}
	ex, err := Extract(c)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := attest.ParseClaims(ex.Claims)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(claims.PubkeyHash, PubkeyHash(c)) {
		t.Error("pubkey-hash does not match the certificate")
	}
	if _, _, err := NewCertificate(context.Background(), f.key, failingIssuer{}, f.template()); err == nil || !strings.Contains(err.Error(), "obtain sim evidence: no quote") {
		t.Errorf("failing issuer: err = %v", err)
	}
}

// TestLeafIssuedByRATLSRefused: a certificate signed by the RA-TLS key, with
// the RA-TLS certificate as its issuer, does not chain to the RA-TLS
// certificate (it is not a CA), for another name nor for the app's own, in
// Go and, when the openssl tool is here, in OpenSSL (what curl and Python use).
func TestLeafIssuedByRATLSRefused(t *testing.T) {
	f := newFixture(t)
	ra := f.cert(t, f.issuer)
	pool := x509.NewCertPool()
	pool.AddCert(ra)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, name := range []string{"bank.example", "app.example"} {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
			NotBefore: f.now.Add(-time.Hour), NotAfter: f.now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ra, &other.PublicKey, f.key)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(der)
		_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, CurrentTime: f.now})
		if err == nil {
			t.Fatalf("a leaf for %s issued by the RA-TLS certificate verified against it", name)
		}
		t.Logf("%s: %v", name, err)
		openSSLRefuses(t, ra, leaf)
	}
}

func openSSLRefuses(t *testing.T, root, leaf *x509.Certificate) {
	path, err := exec.LookPath("openssl")
	if err != nil {
		if ciskip.CI() {
			t.Fatal("openssl is not installed (apt-get install openssl): CI=true checks the chain with OpenSSL's verifier too")
		}
		t.Log("openssl not installed: checked with Go's verifier only")
		return
	}
	dir := t.TempDir()
	write := func(name string, c *x509.Certificate) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	out, err := exec.Command(path, "verify", "-CAfile", write("ra.pem", root), write("leaf.pem", leaf)).CombinedOutput()
	if err == nil {
		t.Fatalf("OpenSSL accepted a leaf issued by the RA-TLS certificate:\n%s", out)
	}
	t.Logf("openssl: %s", strings.TrimSpace(string(out)))
}

type failingIssuer struct{}

func (failingIssuer) Type() string { return attest.TypeSim }
func (failingIssuer) Issue(context.Context, [64]byte) ([]byte, error) {
	return nil, errors.New("no quote")
}

// FuzzExtract feeds arbitrary extension values to the tagged-evidence parser,
// both directly and through a certificate.
func FuzzExtract(f *testing.F) {
	good, _ := EncodeTagged(attest.TypeSim, []byte("evidence"), []byte{0xa0})
	f.Add(good)
	sgx, _ := EncodeTagged(attest.TypeSGX, []byte("q"), []byte("c"))
	f.Add(sgx)
	f.Add([]byte{})
	f.Add([]byte{0xd9, 0xea, 0x60, 0x82, 0x41, 0x01, 0x40})
	f.Add([]byte{0xc1, 0x80})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	f.Fuzz(func(t *testing.T, v []byte) {
		ex, err := parseTagged(v)
		if err == nil {
			if ex.Format != FormatTagged || len(ex.Evidence) == 0 || len(ex.Evidence) > MaxEvidenceSize || len(ex.Claims) > attest.MaxClaimsSize {
				t.Fatalf("parseTagged accepted out-of-bounds evidence: %+v", ex)
			}
			if _, err := TagFor(ex.Type); err != nil {
				t.Fatalf("parseTagged returned unknown type %q", ex.Type)
			}
			re, err := EncodeTagged(ex.Type, ex.Evidence, ex.Claims)
			if err != nil {
				t.Fatal(err)
			}
			ex2, err := parseTagged(re)
			if err != nil || !bytes.Equal(ex2.Evidence, ex.Evidence) || !bytes.Equal(ex2.Claims, ex.Claims) {
				t.Fatalf("re-encoded evidence does not parse back: %v", err)
			}
		}
		if len(v) > 4096 {
			return // certificates are slow to make; the direct call covered it
		}
		c := rawCert(t, key, nil, nil, now.Add(-time.Hour), now.Add(time.Hour), pkix.Extension{Id: OIDTaggedEvidence, Value: v})
		ex3, err3 := Extract(c)
		if (err == nil) != (err3 == nil) {
			t.Fatalf("Extract and parseTagged disagree: %v / %v", err, err3)
		}
		if err3 == nil && (!bytes.Equal(ex3.Evidence, ex.Evidence) || ex3.Type != ex.Type) {
			t.Fatal("Extract and parseTagged disagree on the evidence")
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	f := newFixture(b)
	c := f.cert(b, f.issuer)
	o := f.options()
	ctx := context.Background()
	if _, err := Verify(ctx, c, o); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := Verify(ctx, c, o); err != nil {
			b.Fatal(err)
		}
	}
}
