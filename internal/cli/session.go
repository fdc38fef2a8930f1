package cli

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"time"

	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/ratls"
)

// session is one client of one node, through addr with SNI domain, shared
// by deploy and verify: the first TLS handshake verifies the node's
// certificate (ratls.Verify under opts), every later one must present that
// same certificate, so that fresh evidence and secrets go to the node that
// was verified.
type session struct {
	domain string
	opts   ratls.Options
	p      *pinned
	hc     *http.Client
}

// sessionOptions adjust openSession.
type sessionOptions struct {
	// precheck runs on the certificate before verification (e.g. the
	// fingerprint the owner published).
	precheck func(*x509.Certificate) error
	// noVerify pins the first certificate without verifying it
	// (deploy --no-verify).
	noVerify bool
	timeout  time.Duration
}

func openSession(ctx context.Context, addr, domain string, opts ratls.Options, so sessionOptions) *session {
	s := &session{domain: domain, opts: opts}
	s.p = &pinned{verify: func(cert *x509.Certificate) (*ratls.Identity, error) {
		if so.precheck != nil {
			if err := so.precheck(cert); err != nil {
				return nil, err
			}
		}
		if so.noVerify {
			return &ratls.Identity{Certificate: cert, Fingerprint: ratls.Fingerprint(cert)}, nil
		}
		o := s.opts
		o.Now = time.Now()
		return ratls.Verify(ctx, cert, o)
	}}
	s.hc = httpClient(addr, domain, s.p, []string{nodeapi.ALPNRATLS}, so.timeout)
	return s
}

// identity is the verified (or, with noVerify, pinned) node.
func (s *session) identity() (*ratls.Identity, error) { return s.p.identity() }

// connect makes one request (GET /), whose handshake verifies the node, and
// returns its answer; a failed verification is the error.
func (s *session) connect(ctx context.Context) (*http.Response, error) {
	return s.p.getRoot(ctx, s.hc, s.domain)
}

// verifyPeer connects once and returns the verified identity.
func (s *session) verifyPeer(ctx context.Context) (*ratls.Identity, error) {
	if _, err := s.connect(ctx); err != nil {
		if _, verr := s.p.identity(); verr != nil {
			return nil, verr
		}
		return nil, fmt.Errorf("cannot connect to %s: %w", s.domain, err)
	}
	return s.p.identity()
}

// fresh asks the node for evidence over a fresh nonce on the pinned session.
func (s *session) fresh(ctx context.Context) (*ratls.Identity, error) {
	return checkFresh(ctx, s.hc, s.domain, s.p, s.opts)
}
