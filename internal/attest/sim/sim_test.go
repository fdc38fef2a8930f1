package sim

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
)

// Two platforms shared by the tests (key generation is cheap, but a shared
// pair keeps the tests focused).
var (
	platOnce sync.Once
	platA    *Platform
	platB    *Platform
)

func platforms(t testing.TB) (*Platform, *Platform) {
	t.Helper()
	platOnce.Do(func() {
		var err error
		if platA, err = NewPlatformInMemory(); err != nil {
			panic(err)
		}
		if platB, err = NewPlatformInMemory(); err != nil {
			panic(err)
		}
	})
	return platA, platB
}

func testIdentity() Identity {
	return Identity{
		Measurement: sha256.Sum256([]byte("mse-node executable")),
		Signer:      DevSigner,
		ProductID:   7,
		SVN:         3,
		TCBStatus:   attest.TCBSWHardeningNeeded,
	}
}

func testReportData() [64]byte {
	var rd [64]byte
	for i := range rd {
		rd[i] = byte(i*7 + 1)
	}
	return rd
}

var testNow = time.Now().Truncate(time.Second)

func mustQuote(t testing.TB, p *Platform, id Identity) []byte {
	t.Helper()
	q, err := p.Quote(id, testReportData(), testNow)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func TestRoundTrip(t *testing.T) {
	a, _ := platforms(t)
	for _, debug := range []bool{false, true} {
		id := testIdentity()
		id.Debug = debug
		raw := mustQuote(t, a, id)

		q, err := ParseQuote(raw)
		if err != nil {
			t.Fatal(err)
		}
		again, err := q.Marshal()
		if err != nil || !bytes.Equal(again, raw) {
			t.Fatalf("Marshal(ParseQuote(q)) != q (err %v)", err)
		}
		if sb := q.SignedBytes(); !bytes.Equal(sb, raw[:len(sb)]) || len(sb) != HeaderSize+len(q.AKCert) {
			t.Fatalf("SignedBytes is not the prefix before the signature length")
		}
		if !bytes.Equal(q.AKCert, a.AKCertificate().Raw) {
			t.Fatalf("quote does not carry the platform's AK certificate")
		}

		v := NewVerifier(a.RootCertificate(), nil)
		if v.Type() != attest.TypeSim {
			t.Fatalf("Type() = %q", v.Type())
		}
		got, err := v.Verify(context.Background(), raw)
		if err != nil {
			t.Fatal(err)
		}
		if got.Type != attest.TypeSim || !got.Simulated {
			t.Errorf("type/simulated: %q %v", got.Type, got.Simulated)
		}
		if !bytes.Equal(got.Measurement, id.Measurement[:]) || !bytes.Equal(got.Signer, id.Signer[:]) {
			t.Errorf("measurement/signer mismatch")
		}
		if got.ProductID != 7 || got.SVN != 3 || got.Debug != debug || got.TCBStatus != attest.TCBSWHardeningNeeded {
			t.Errorf("values: %+v", got)
		}
		if got.ReportData != testReportData() {
			t.Errorf("report data mismatch")
		}
		if got.Details["timestamp"] != strconv.FormatInt(testNow.Unix(), 10) {
			t.Errorf("timestamp detail %q", got.Details["timestamp"])
		}
		if got.Details["root_sha256"] != a.RootFingerprint() {
			t.Errorf("root_sha256 detail %q", got.Details["root_sha256"])
		}
	}
}

func TestPlatformCertificates(t *testing.T) {
	a, _ := platforms(t)
	root, ak := a.RootCertificate(), a.AKCertificate()
	if root.Subject.CommonName != RootCommonName || !root.IsCA || root.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("root: %v IsCA=%v KU=%v", root.Subject, root.IsCA, root.KeyUsage)
	}
	if d := root.NotAfter.Sub(root.NotBefore); d < 10*365*24*time.Hour {
		t.Errorf("root validity %v", d)
	}
	if ak.Subject.CommonName != AKCommonName || ak.IsCA || ak.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("ak: %v IsCA=%v KU=%v", ak.Subject, ak.IsCA, ak.KeyUsage)
	}
	if d := ak.NotAfter.Sub(ak.NotBefore); d < 5*365*24*time.Hour {
		t.Errorf("ak validity %v", d)
	}
	fp := sha256.Sum256(root.Raw)
	if a.RootFingerprint() != hex.EncodeToString(fp[:]) {
		t.Errorf("fingerprint")
	}
	if !bytes.Contains(a.RootPEM(), []byte("-----BEGIN CERTIFICATE-----")) {
		t.Errorf("RootPEM")
	}
}

func TestQuoteRefusesBadIdentity(t *testing.T) {
	a, _ := platforms(t)
	for _, s := range []string{"Bogus", attest.TCBUnchecked} {
		id := testIdentity()
		id.TCBStatus = s
		if _, err := a.Quote(id, [64]byte{}, testNow); err == nil || !strings.Contains(err.Error(), "cannot be stated") {
			t.Errorf("TCB status %q: err %v", s, err)
		}
	}
	id := testIdentity()
	id.TCBStatus = ""
	raw := mustQuote(t, a, id)
	q, _ := ParseQuote(raw)
	if q.TCBStatus != attest.TCBUpToDate {
		t.Errorf("empty TCB status became %q", q.TCBStatus)
	}
	for code, name := range tcbCodes {
		id.TCBStatus = name
		q, err := ParseQuote(mustQuote(t, a, id))
		if err != nil || q.TCBStatus != name {
			t.Errorf("tcb code %d: %v %v", code, q, err)
		}
	}
}

// regions of a quote whose AK certificate is n bytes long.
type layout struct{ akLen, ak, sigLen, sig, end int }

func layoutOf(t testing.TB, raw []byte) layout {
	n := int(binary.BigEndian.Uint16(raw[offAKCertLen:]))
	l := layout{akLen: offAKCertLen, ak: HeaderSize, sigLen: HeaderSize + n, sig: HeaderSize + n + 2, end: len(raw)}
	if int(binary.BigEndian.Uint16(raw[l.sigLen:]))+l.sig != l.end {
		t.Fatal("layout")
	}
	return l
}

func flip(off int, mask byte) func([]byte, layout) []byte {
	return func(b []byte, _ layout) []byte { b[off] ^= mask; return b }
}

func TestNegative(t *testing.T) {
	a, b := platforms(t)
	good := mustQuote(t, a, testIdentity())
	l := layoutOf(t, good)
	fromB := mustQuote(t, b, testIdentity())
	akNotBefore, akNotAfter := a.AKCertificate().NotBefore, a.AKCertificate().NotAfter

	// A quote whose AK certificate is B's, without re-signing (a splice).
	spliced := func(_ []byte, _ layout) []byte {
		q, _ := ParseQuote(good)
		q.AKCert = b.AKCertificate().Raw
		out, err := q.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// A quote correctly signed by an AK the root certified for certSign only.
	wrongUsage := func(_ []byte, _ layout) []byte {
		k, _ := ecdsa.GenerateKey(a.akKey.Curve, rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: bigOne(), Subject: pkix.Name{CommonName: "x"},
			NotBefore: akNotBefore, NotAfter: akNotAfter, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, a.root, &k.PublicKey, a.rootKey)
		if err != nil {
			t.Fatal(err)
		}
		q, _ := ParseQuote(good)
		q.AKCert = der
		d := q.digest()
		q.Signature, _ = ecdsa.SignASN1(rand.Reader, k, d[:])
		out, _ := q.Marshal()
		return out
	}
	// A quote signed by a key of the attacker's, carrying A's genuine AK certificate.
	forged := func(_ []byte, _ layout) []byte {
		k, _ := ecdsa.GenerateKey(a.akKey.Curve, rand.Reader)
		q, _ := ParseQuote(good)
		q.Measurement[0] ^= 1
		d := q.digest()
		q.Signature, _ = ecdsa.SignASN1(rand.Reader, k, d[:])
		out, _ := q.Marshal()
		return out
	}
	setTCB := func(v byte) func([]byte, layout) []byte {
		return func(b []byte, _ layout) []byte { b[offTCBStatus] = v; return b }
	}

	cases := []struct {
		name     string
		mod      func([]byte, layout) []byte
		root     *x509.Certificate // default: a's root
		clock    time.Time         // default: now
		sentinel error
		msg      string
	}{
		{name: "magic", mod: flip(0, 0x20), sentinel: ErrMalformed, msg: "bad magic: not a sim quote"},
		{name: "version", mod: flip(7, 0x03), sentinel: ErrMalformed, msg: "unsupported format version 1"},
		{name: "measurement", mod: flip(offMeasurement+5, 0x01), sentinel: ErrSignature, msg: "sim quote signature does not verify with the attestation key"},
		{name: "signer", mod: flip(offSigner+31, 0x80), sentinel: ErrSignature, msg: "does not verify"},
		{name: "product_id", mod: flip(offProductID, 0x01), sentinel: ErrSignature, msg: "does not verify"},
		{name: "svn", mod: flip(offSVN+1, 0x01), sentinel: ErrSignature, msg: "does not verify"},
		{name: "flags debug bit", mod: flip(offFlags, FlagDebug), sentinel: ErrSignature, msg: "does not verify"},
		{name: "flags reserved bits", mod: flip(offFlags, 0xfe), sentinel: ErrMalformed, msg: "flags 0xfe set reserved bits"},
		{name: "flags bit 7", mod: flip(offFlags, 0x80), sentinel: ErrMalformed, msg: "reserved bits"},
		{name: "tcb_status other valid value", mod: setTCB(1), sentinel: ErrSignature, msg: "does not verify"},
		{name: "tcb_status zero", mod: setTCB(0), sentinel: ErrMalformed, msg: "unknown tcb_status 0"},
		{name: "tcb_status unknown", mod: setTCB(99), sentinel: ErrMalformed, msg: "unknown tcb_status 99"},
		{name: "report_data", mod: flip(offReportData+63, 0x01), sentinel: ErrSignature, msg: "does not verify"},
		{name: "timestamp", mod: flip(offTimestamp+7, 0x01), sentinel: ErrSignature, msg: "does not verify"},
		{name: "ak cert length high byte", mod: flip(offAKCertLen, 0xf0), sentinel: ErrMalformed, msg: "out of range"},
		{name: "ak cert length zero", mod: func(b []byte, _ layout) []byte { b[offAKCertLen], b[offAKCertLen+1] = 0, 0; return b }, sentinel: ErrMalformed, msg: "length 0 out of range"},
		{name: "ak cert length low byte", mod: flip(offAKCertLen+1, 0x01), sentinel: ErrMalformed, msg: "malformed sim quote"},
		{name: "ak cert first byte", mod: func(b []byte, l layout) []byte { b[l.ak] ^= 0xff; return b }, sentinel: ErrAKCertificate, msg: "sim attestation key certificate in the quote cannot be parsed"},
		{name: "ak cert last byte (its signature)", mod: func(b []byte, l layout) []byte { b[l.sigLen-1] ^= 0x01; return b }, sentinel: ErrUntrustedPlatform, msg: "does not chain to the trusted sim root (fingerprint " + a.RootFingerprint()[:16] + "…): the quote comes from another simulated platform"},
		{name: "signature length high byte", mod: func(b []byte, l layout) []byte { b[l.sigLen] ^= 0x01; return b }, sentinel: ErrMalformed, msg: "out of range 1..72"},
		{name: "signature length low byte -1", mod: func(b []byte, l layout) []byte { b[l.sigLen+1]--; return b }, sentinel: ErrMalformed, msg: "1 trailing byte(s)"},
		{name: "signature length low byte +1", mod: func(b []byte, l layout) []byte { b[l.sigLen+1]++; return b }, sentinel: ErrMalformed, msg: "malformed sim quote: "}, // truncated, or 73 > 72
		{name: "signature length 73", mod: func(b []byte, l layout) []byte { b[l.sigLen], b[l.sigLen+1] = 0, 73; return b }, sentinel: ErrMalformed, msg: "signature length 73 out of range 1..72"},
		{name: "signature length zero", mod: func(b []byte, l layout) []byte { b[l.sigLen], b[l.sigLen+1] = 0, 0; return b }, sentinel: ErrMalformed, msg: "signature length 0 out of range"},
		{name: "signature shorter than its length", mod: func(b []byte, l layout) []byte { return b[:l.end-1] }, sentinel: ErrMalformed, msg: "truncated: signature needs"},
		{name: "signature first byte", mod: func(b []byte, l layout) []byte { b[l.sig] ^= 0x01; return b }, sentinel: ErrSignature, msg: "does not verify"},
		{name: "signature middle byte", mod: func(b []byte, l layout) []byte { b[(l.sig+l.end)/2] ^= 0x01; return b }, sentinel: ErrSignature, msg: "does not verify"},
		{name: "signature last byte", mod: func(b []byte, l layout) []byte { b[l.end-1] ^= 0x01; return b }, sentinel: ErrSignature, msg: "does not verify"},
		{name: "trailing byte", mod: func(b []byte, _ layout) []byte { return append(b, 0) }, sentinel: ErrMalformed, msg: "1 trailing byte(s) after the signature"},
		{name: "oversize", mod: func(b []byte, _ layout) []byte { return append(b, make([]byte, MaxQuoteSize)...) }, sentinel: ErrMalformed, msg: "more than the 8192-byte maximum"},
		{name: "empty", mod: func([]byte, layout) []byte { return nil }, sentinel: ErrMalformed, msg: "truncated"},
		{name: "other evidence", mod: func([]byte, layout) []byte { return []byte("\x03\x00\x02\x00 an SGX quote perhaps") }, sentinel: ErrMalformed, msg: "bad magic"},
		{name: "AK cert of another platform spliced in", mod: spliced, root: b.RootCertificate(), sentinel: ErrSignature, msg: "does not verify"},
		{name: "AK cert of another platform spliced in, own root", mod: spliced, sentinel: ErrUntrustedPlatform, msg: "the quote comes from another simulated platform"},
		{name: "quote from another platform (root mismatch)", mod: func([]byte, layout) []byte { return bytes.Clone(fromB) }, sentinel: ErrUntrustedPlatform, msg: "does not chain to the trusted sim root (fingerprint " + a.RootFingerprint()[:16]},
		{name: "verifier trusts another root", root: b.RootCertificate(), sentinel: ErrUntrustedPlatform, msg: "fingerprint " + b.RootFingerprint()[:16]},
		{name: "forged signature with genuine AK cert", mod: forged, sentinel: ErrSignature, msg: "does not verify"},
		{name: "AK without digitalSignature usage", mod: wrongUsage, sentinel: ErrAKCertificate, msg: "key usage does not include digitalSignature"},
		{name: "AK expired", clock: akNotAfter.Add(time.Second), sentinel: ErrCertificateValidity, msg: "sim attestation key certificate expired at " + akNotAfter.UTC().Format(time.RFC3339)},
		{name: "AK not yet valid", clock: akNotBefore.Add(-time.Second), sentinel: ErrCertificateValidity, msg: "sim attestation key certificate is not yet valid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := bytes.Clone(good)
			if c.mod != nil {
				raw = c.mod(raw, l)
			}
			root := c.root
			if root == nil {
				root = a.RootCertificate()
			}
			clock := time.Now
			if !c.clock.IsZero() {
				clock = func() time.Time { return c.clock }
			}
			got, err := NewVerifier(root, clock).Verify(context.Background(), raw)
			if err == nil {
				t.Fatalf("verified: %+v", got)
			}
			if !errors.Is(err, c.sentinel) {
				t.Errorf("error %q does not wrap %v", err, c.sentinel)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q does not contain %q", err, c.msg)
			}
		})
	}
	// The good quote still verifies at the edges of the AK's validity.
	for _, at := range []time.Time{akNotBefore, akNotAfter} {
		if _, err := NewVerifier(a.RootCertificate(), func() time.Time { return at }).Verify(context.Background(), good); err != nil {
			t.Errorf("at %v: %v", at, err)
		}
	}
}

func TestTruncatedAtEveryLength(t *testing.T) {
	a, _ := platforms(t)
	good := mustQuote(t, a, testIdentity())
	v := NewVerifier(a.RootCertificate(), nil)
	for i := range len(good) {
		_, err := ParseQuote(good[:i])
		if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "truncated") {
			t.Fatalf("length %d: %v", i, err)
		}
		if _, err := v.Verify(context.Background(), good[:i]); err == nil {
			t.Fatalf("length %d verified", i)
		}
	}
}

func TestVerifierWithoutRoot(t *testing.T) {
	a, _ := platforms(t)
	_, err := NewVerifier(nil, nil).Verify(context.Background(), mustQuote(t, a, testIdentity()))
	if err == nil || !strings.Contains(err.Error(), "no trusted sim root") {
		t.Fatal(err)
	}
}

func TestVerifyHonoursContext(t *testing.T) {
	a, _ := platforms(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := NewVerifier(a.RootCertificate(), nil).Verify(ctx, mustQuote(t, a, testIdentity())); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

func TestPolicyIntegration(t *testing.T) {
	a, _ := platforms(t)
	id := testIdentity()
	id.TCBStatus = ""
	got, err := NewVerifier(a.RootCertificate(), nil).Verify(context.Background(), mustQuote(t, a, id))
	if err != nil {
		t.Fatal(err)
	}
	p := &attest.Policy{TEETypes: []string{attest.TypeSim}, Measurements: []string{hex.EncodeToString(id.Measurement[:])}}
	var pe *attest.PolicyError
	if err := p.Check(got, time.Now()); !errors.As(err, &pe) || pe.Check != "simulation" {
		t.Fatalf("policy without allow_simulation: %v", err)
	}
	p.AllowSimulation = true
	if err := p.Check(got, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseQuote(f *testing.F) {
	a, _ := platforms(f)
	good := mustQuote(f, a, testIdentity())
	id := testIdentity()
	id.Debug = true
	debug := mustQuote(f, a, id)
	f.Add(good)
	f.Add(debug)
	f.Add(good[:HeaderSize])
	f.Add(good[:len(good)-1])
	f.Add(append(bytes.Clone(good), 0))
	f.Add([]byte(Magic))
	f.Add([]byte{})
	v := NewVerifier(a.RootCertificate(), nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := ParseQuote(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		again, err := q.Marshal()
		if err != nil {
			t.Fatalf("parsed quote does not marshal: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("Marshal(ParseQuote(b)) != b")
		}
		// Verification of anything parsed must not panic; only what the
		// platform signed verifies (the seeds are the only quotes it signed).
		if _, err := v.Verify(context.Background(), b); err == nil {
			sb := q.SignedBytes()
			if !bytes.HasPrefix(good, sb) && !bytes.HasPrefix(debug, sb) {
				t.Fatalf("verified a quote whose signed bytes the platform never signed")
			}
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	a, _ := platforms(b)
	raw := mustQuote(b, a, testIdentity())
	v := NewVerifier(a.RootCertificate(), nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, raw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCold verifies with a fresh verifier each time: no cached
// attestation key certificate (3 ECDSA verifications instead of 1).
func BenchmarkVerifyCold(b *testing.B) {
	a, _ := platforms(b)
	raw := mustQuote(b, a, testIdentity())
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewVerifier(a.RootCertificate(), nil).Verify(ctx, raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseQuote(b *testing.B) {
	a, _ := platforms(b)
	raw := mustQuote(b, a, testIdentity())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseQuote(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkQuote(b *testing.B) {
	a, _ := platforms(b)
	id := testIdentity()
	rd := testReportData()
	for b.Loop() {
		if _, err := a.Quote(id, rd, testNow); err != nil {
			b.Fatal(err)
		}
	}
}

// The verifier caches AK certificates that chain to the root; validity must
// still be checked at every call.
func TestVerifierCacheRechecksValidity(t *testing.T) {
	a, b := platforms(t)
	good := mustQuote(t, a, testIdentity())
	at := time.Now()
	v := NewVerifier(a.RootCertificate(), func() time.Time { return at })
	for range 2 {
		if _, err := v.Verify(context.Background(), good); err != nil {
			t.Fatal(err)
		}
	}
	at = a.AKCertificate().NotAfter.Add(time.Second)
	if _, err := v.Verify(context.Background(), good); !errors.Is(err, ErrCertificateValidity) {
		t.Fatalf("expired AK after caching: %v", err)
	}
	at = a.AKCertificate().NotBefore.Add(-time.Second)
	if _, err := v.Verify(context.Background(), good); !errors.Is(err, ErrCertificateValidity) {
		t.Fatalf("not-yet-valid AK after caching: %v", err)
	}
	at = time.Now()
	// Foreign quotes stay refused however often they come.
	for range 2 {
		if _, err := v.Verify(context.Background(), mustQuote(t, b, testIdentity())); !errors.Is(err, ErrUntrustedPlatform) {
			t.Fatal(err)
		}
	}
	// Many distinct AK certificates do not grow the cache without bound.
	vv := v.(*verifier)
	for range maxCachedAKs + 5 {
		p := &Platform{root: a.root, rootKey: a.rootKey}
		if err := p.issueAK(time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(context.Background(), mustQuote(t, p, testIdentity())); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(vv.cache); n > maxCachedAKs {
		t.Fatalf("cache holds %d entries", n)
	}
}

// TestDocumentedFormat builds a quote by hand, following docs/sim.md only,
// and checks that the verifier accepts it with the documented values.
func TestDocumentedFormat(t *testing.T) {
	a, _ := platforms(t)
	var b []byte
	b = append(b, "MSESIMQ"...)
	b = append(b, 0x02)
	b = append(b, bytes.Repeat([]byte{0xaa}, 32)...)              // measurement
	b = append(b, bytes.Repeat([]byte{0xbb}, 32)...)              // signer
	b = append(b, 0x01, 0x02)                                     // product_id 258
	b = append(b, 0x00, 0x09)                                     // svn 9
	b = append(b, 0x01)                                           // flags: debug
	b = append(b, 5)                                              // tcb_status: OutOfDate
	b = append(b, bytes.Repeat([]byte{0xcc}, 64)...)              // report_data
	b = append(b, bytes.Repeat([]byte{0xdd}, 32)...)              // runtime_digest
	b = append(b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe) // timestamp -2
	ak := a.AKCertificate().Raw
	b = append(b, byte(len(ak)>>8), byte(len(ak)))
	b = append(b, ak...)
	if len(b) != 184+len(ak) {
		t.Fatalf("signed part is %d bytes", len(b))
	}
	h := sha256.Sum256(b)
	sig, err := ecdsa.SignASN1(rand.Reader, a.akKey, h[:])
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, byte(len(sig)>>8), byte(len(sig)))
	b = append(b, sig...)

	got, err := NewVerifier(a.RootCertificate(), nil).Verify(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Measurement[0] != 0xaa || got.Signer[31] != 0xbb || got.ProductID != 258 || got.SVN != 9 ||
		!got.Debug || got.TCBStatus != attest.TCBOutOfDate || got.ReportData[63] != 0xcc || got.Details["timestamp"] != "-2" ||
		len(got.RuntimeDigest) != 32 || got.RuntimeDigest[0] != 0xdd {
		t.Fatalf("values: %+v", got)
	}
}
