package sim

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
)

// Errors the verifier wraps, so that callers can tell causes apart with
// errors.Is. ParseQuote's errors wrap ErrMalformed.
var (
	// ErrAKCertificate: the quote's attestation key certificate cannot be
	// parsed or is not fit to sign quotes.
	ErrAKCertificate = errors.New("bad sim attestation key certificate")
	// ErrUntrustedPlatform: the attestation key is not certified by the
	// trusted sim root: the quote comes from another simulated platform.
	ErrUntrustedPlatform = errors.New("sim quote from an untrusted simulated platform")
	// ErrCertificateValidity: a certificate of the chain is expired or not
	// yet valid at the verifier's clock.
	ErrCertificateValidity = errors.New("sim certificate not valid at this time")
	// ErrSignature: the quote's signature does not verify.
	ErrSignature = errors.New("sim quote signature does not verify")
)

type verifier struct {
	root   *x509.Certificate
	roots  *x509.CertPool
	rootFP string
	now    attest.Clock

	mu    sync.Mutex
	cache map[string]*x509.Certificate // AK certificates (by DER) that chain to root
}

// NewVerifier returns the verifier of sim quotes whose attestation key is
// certified by root, checking certificate validity at now() (time.Now when
// nil). Verify parses the quote, checks that its attestation key certificate
// chains to root and is valid, and that the quote's signature verifies with
// that key; it returns the quote's values with Simulated set. It does not
// apply the owner's policy (attest.Policy.Check does) and does not compare
// the root with a pinned fingerprint (the caller chooses root).
func NewVerifier(root *x509.Certificate, now attest.Clock) attest.Verifier {
	if now == nil {
		now = time.Now
	}
	v := &verifier{root: root, now: now, cache: make(map[string]*x509.Certificate)}
	if root != nil {
		v.roots = x509.NewCertPool()
		v.roots.AddCert(root)
		v.rootFP = fingerprint(root)
	}
	return v
}

func (v *verifier) Type() string { return attest.TypeSim }

func shortFP(fp string) string {
	if len(fp) > 16 {
		return fp[:16] + "…"
	}
	return fp
}

func (v *verifier) Verify(ctx context.Context, evidence []byte) (*attest.Verified, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if v.root == nil {
		return nil, errors.New("sim verifier has no trusted sim root: configure the simulated platform's root certificate")
	}
	q, err := ParseQuote(evidence)
	if err != nil {
		return nil, err
	}
	ak, err := v.checkAK(q.AKCert)
	if err != nil {
		return nil, err
	}
	d := q.digest()
	if !ecdsa.VerifyASN1(ak.PublicKey.(*ecdsa.PublicKey), d[:], q.Signature) {
		return nil, fail(ErrSignature, "sim quote signature does not verify with the attestation key: the quote was altered or forged")
	}
	var runtime []byte
	if q.RuntimeDigest != ([32]byte{}) {
		runtime = append([]byte(nil), q.RuntimeDigest[:]...)
	}
	return &attest.Verified{
		RuntimeDigest: runtime,
		Type:          attest.TypeSim,
		Simulated:     true,
		Measurement:   append([]byte(nil), q.Measurement[:]...),
		Signer:        append([]byte(nil), q.Signer[:]...),
		ProductID:     q.ProductID,
		SVN:           q.SVN,
		Debug:         q.Debug(),
		TCBStatus:     q.TCBStatus,
		ReportData:    q.ReportData,
		Details: map[string]string{
			"timestamp":   strconv.FormatInt(q.Timestamp, 10),
			"root_sha256": v.rootFP,
			"ak_serial":   fmt.Sprintf("%x", ak.SerialNumber),
		},
	}, nil
}

func validAt(c *x509.Certificate, what string, now time.Time) error {
	const f = time.RFC3339
	if now.Before(c.NotBefore) {
		return fail(ErrCertificateValidity, "%s is not yet valid at %s (valid from %s)", what, now.UTC().Format(f), c.NotBefore.UTC().Format(f))
	}
	if now.After(c.NotAfter) {
		return fail(ErrCertificateValidity, "%s expired at %s (the verifier's clock says %s)", what, c.NotAfter.UTC().Format(f), now.UTC().Format(f))
	}
	return nil
}

// verifyError carries a complete message and the sentinel it belongs to.
type verifyError struct {
	kind error
	msg  string
}

func (e *verifyError) Error() string { return e.msg }
func (e *verifyError) Unwrap() error { return e.kind }

func fail(kind error, format string, args ...any) error {
	return &verifyError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// maxCachedAKs bounds the cache of attestation key certificates already
// found to chain to the root.
const maxCachedAKs = 64

// checkAK parses an attestation key certificate and checks it against the
// root at the verifier's clock. The outcome of the time-independent checks
// (parsing, key, usage, signature by the root, path validation) is cached per
// certificate; validity periods are checked on every call.
func (v *verifier) checkAK(der []byte) (*x509.Certificate, error) {
	now := v.now()
	v.mu.Lock()
	ak := v.cache[string(der)]
	v.mu.Unlock()
	if ak != nil {
		if err := v.validity(ak, now); err != nil {
			return nil, err
		}
		return ak, nil
	}
	ak, err := v.chainAK(der, now) // checks validity too
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	if len(v.cache) >= maxCachedAKs {
		clear(v.cache)
	}
	v.cache[string(der)] = ak
	v.mu.Unlock()
	return ak, nil
}

// validity checks the validity periods of the attestation key certificate
// and of the root at now.
func (v *verifier) validity(ak *x509.Certificate, now time.Time) error {
	if err := validAt(ak, "sim attestation key certificate", now); err != nil {
		return err
	}
	return validAt(v.root, fmt.Sprintf("trusted sim root (fingerprint %s)", shortFP(v.rootFP)), now)
}

func (v *verifier) chainAK(der []byte, now time.Time) (*x509.Certificate, error) {
	ak, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fail(ErrAKCertificate, "sim attestation key certificate in the quote cannot be parsed: %v", err)
	}
	if !isP256(ak) {
		return nil, fail(ErrAKCertificate, "sim attestation key certificate does not hold an ECDSA P-256 key")
	}
	if ak.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, fail(ErrAKCertificate, "sim attestation key certificate's key usage does not include digitalSignature")
	}
	// Chain first, independent of time, so that a foreign quote is named as such.
	if err := ak.CheckSignatureFrom(v.root); err != nil {
		return nil, fail(ErrUntrustedPlatform, "sim attestation key certificate does not chain to the trusted sim root (fingerprint %s): the quote comes from another simulated platform",
			shortFP(v.rootFP))
	}
	// Validity before the path validation, which would also refuse an
	// expired certificate, but with a less precise message.
	if err := v.validity(ak, now); err != nil {
		return nil, err
	}
	// The complete path validation (names, constraints, validity) as a library would do it.
	if _, err := ak.Verify(x509.VerifyOptions{
		Roots:       v.roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fail(ErrUntrustedPlatform, "sim attestation key certificate does not chain to the trusted sim root (fingerprint %s): %v",
			shortFP(v.rootFP), err)
	}
	return ak, nil
}
