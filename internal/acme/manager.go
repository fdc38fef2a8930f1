// Package acme obtains and renews, inside the node, the certificate of an
// app in tls_mode acme (docs/tls.md): the node's own TLS key, made in the
// enclave, gets a certificate from the owner's ACME CA over TLS-ALPN-01, so
// browsers trust the key that the node's evidence binds. The key never
// leaves the node: the CA sees only a CSR signed with it.
//
// The client is golang.org/x/crypto/acme. A Manager runs one account (a
// fresh in-memory key per Run), one order for all the app's domains, a
// tls-alpn-01 challenge per authorization (answered through the router's
// SNI passthrough by ChallengeCertificate), and checks what the CA sends
// before it serves it.
package acme

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/acme"
)

// ALPNProto is the ALPN protocol of TLS-ALPN-01 validation connections
// (RFC 8737).
const ALPNProto = acme.ALPNProto

// States of a Manager (Status.State).
const (
	// StateObtaining: no certificate yet; the first one is being obtained.
	StateObtaining = "obtaining"
	// StateValid: a checked certificate is served; the next attempt is its
	// renewal.
	StateValid = "valid"
	// StateRenewing: a new certificate is being obtained while the current
	// one is still valid and served; after a failed renewal, Error says why
	// and NextAttempt when it is tried again.
	StateRenewing = "renewing"
	// StateFailed: the last attempt failed and no valid certificate is held;
	// Error says why, NextAttempt when it is tried again.
	StateFailed = "failed"
)

// Bounds.
const (
	// MaxDomains bounds Config.Domains (Let's Encrypt's limit per order).
	MaxDomains = 100
	// maxChain bounds the certificates the CA may send in a chain.
	maxChain = 8
	// minBackoff and maxBackoff bound the wait after a failed attempt: it
	// doubles from minBackoff up to maxBackoff.
	minBackoff = 30 * time.Second
	maxBackoff = time.Hour
	// attemptTimeout bounds one attempt (order to certificate).
	attemptTimeout = 10 * time.Minute
	// maxDetail bounds what is kept of the CA's problem text.
	maxDetail = 512
)

// Config configures a Manager.
type Config struct {
	// DirectoryURL is the CA's ACME directory (https).
	DirectoryURL string
	// Roots are the roots for the CA's own HTTPS server (nil: the system
	// roots). Ignored when HTTPClient is set.
	Roots *x509.CertPool
	// Email is the account's contact (optional).
	Email string
	// Domains are the names of the certificate (at least one, no
	// wildcards: TLS-ALPN-01 cannot validate them).
	Domains []string
	// Key is the node's own TLS key, made inside the enclave: the
	// certificate is for this key, and the CSR is signed with it.
	Key crypto.Signer
	// HTTPClient talks to the CA (nil: one built with Roots that dials
	// directly; EgressClient builds one through the runner's proxy).
	HTTPClient *http.Client
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives progress and failures (default slog.Default()).
	Logger *slog.Logger
	// RenewBefore is how long before NotAfter the certificate is renewed
	// (default, and when it is not shorter than the lifetime: a third of
	// the certificate's lifetime).
	RenewBefore time.Duration
	// OnChange, when set, is called (from Run's goroutine) after each
	// attempt with the new status: a certificate issued, or a failure.
	OnChange func(Status)
}

// Status is what a Manager reports.
type Status struct {
	State string `json:"state"` // StateObtaining, StateValid, StateRenewing or StateFailed
	// Error is why the last attempt failed ("" after a success).
	Error string `json:"error,omitempty"`
	// NotAfter and Serial (hex) are the current certificate's.
	NotAfter time.Time `json:"not_after,omitzero"`
	Serial   string    `json:"serial,omitempty"`
	// LastAttempt is when the last attempt started; NextAttempt when the next
	// one is due (the renewal, or the retry after a failure).
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
}

// Manager obtains and renews one certificate.
type Manager struct {
	cfg     Config
	domains []string // lowercase
	log     *slog.Logger
	now     func() time.Time
	// tick bounds each sleep, so that a clock that jumps (a suspended
	// machine, a test's clock) is noticed.
	tick time.Duration

	running atomic.Bool
	cert    atomic.Pointer[tls.Certificate]

	mu         sync.Mutex
	status     Status
	challenges map[string]*tls.Certificate // by lowercase domain: pending tls-alpn-01 answers
}

// New checks cfg and returns a Manager; Run obtains the certificate.
func New(cfg Config) (*Manager, error) {
	u, err := url.Parse(cfg.DirectoryURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("acme: directory URL %q is not an https URL", cfg.DirectoryURL)
	}
	if cfg.Key == nil {
		return nil, errors.New("acme: no key: the certificate must be for the node's own TLS key")
	}
	if _, ok := cfg.Key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok {
		return nil, fmt.Errorf("acme: key type %T cannot be compared with the issued certificate's", cfg.Key.Public())
	}
	if len(cfg.Domains) == 0 {
		return nil, errors.New("acme: no domain to get a certificate for")
	}
	if len(cfg.Domains) > MaxDomains {
		return nil, fmt.Errorf("acme: %d domains, more than %d in one certificate", len(cfg.Domains), MaxDomains)
	}
	seen := map[string]bool{}
	var domains []string
	for _, d := range cfg.Domains {
		ld := strings.ToLower(d)
		if err := checkDomain(ld); err != nil {
			return nil, err
		}
		if !seen[ld] {
			seen[ld] = true
			domains = append(domains, ld)
		}
	}
	if len(cfg.Email) > 254 || strings.ContainsAny(cfg.Email, " \t\r\n,:") {
		return nil, fmt.Errorf("acme: email %q is not one address", cfg.Email)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = EgressClient("", cfg.Roots)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RenewBefore < 0 {
		return nil, fmt.Errorf("acme: RenewBefore %v is negative", cfg.RenewBefore)
	}
	return &Manager{cfg: cfg, domains: domains, log: cfg.Logger, now: cfg.Now, tick: time.Minute,
		status: Status{State: StateObtaining}, challenges: map[string]*tls.Certificate{}}, nil
}

// checkDomain accepts a lowercase DNS name that a CA can validate over
// TLS-ALPN-01: LDH labels, no wildcard, no IP address, no trailing dot.
func checkDomain(d string) error {
	bad := func(why string) error { return fmt.Errorf("acme: domain %q %s", d, why) }
	if d == "" || len(d) > 253 {
		return bad("is empty or longer than 253 bytes")
	}
	if strings.HasPrefix(d, "*.") {
		return bad("is a wildcard: TLS-ALPN-01 cannot validate it")
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return bad("has a single label: a CA issues only for names under a public suffix")
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return bad("has an empty, too long or hyphen-edged label")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return bad("has a character other than letters, digits and hyphens")
			}
		}
	}
	if last := labels[len(labels)-1]; last[0] >= '0' && last[0] <= '9' {
		return bad("looks like an IP address")
	}
	return nil
}

// IsChallenge reports whether hello is a TLS-ALPN-01 validation connection:
// it offers the acme-tls/1 protocol.
func IsChallenge(hello *tls.ClientHelloInfo) bool {
	for _, p := range hello.SupportedProtos {
		if p == ALPNProto {
			return true
		}
	}
	return false
}

// ChallengeCertificate returns the TLS-ALPN-01 certificate of the pending
// challenge for hello's server name; an error when hello does not offer
// acme-tls/1 or no challenge is pending for that name.
func (m *Manager) ChallengeCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if !IsChallenge(hello) {
		return nil, errors.New("acme: not a TLS-ALPN-01 connection (acme-tls/1 not offered)")
	}
	name := strings.TrimSuffix(strings.ToLower(hello.ServerName), ".")
	m.mu.Lock()
	c := m.challenges[name]
	m.mu.Unlock()
	if c == nil {
		return nil, fmt.Errorf("acme: no TLS-ALPN-01 challenge is pending for %q", name)
	}
	return c, nil
}

// ChallengeTLSConfig is a tls.Config.GetConfigForClient answer for a
// validation connection: the challenge certificate, and acme-tls/1 the only
// protocol (RFC 8737 section 3).
func (m *Manager) ChallengeTLSConfig(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	c, err := m.ChallengeCertificate(hello)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{*c}, NextProtos: []string{ALPNProto}, MinVersion: tls.VersionTLS12}, nil
}

// Certificate is the current checked certificate (its Leaf parsed), nil
// until one was issued.
func (m *Manager) Certificate() *tls.Certificate { return m.cert.Load() }

// Status reports the state, the current certificate and the attempts.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status
}

// Run obtains the certificate, then renews it at NotAfter-RenewBefore, until
// ctx ends (it returns ctx's error). A failed attempt is retried after a
// bounded exponential backoff (30 s doubling to 1 h, or the CA's
// Retry-After when it rate-limits, up to 1 h); Status says why it failed.
// Run may be called once.
func (m *Manager) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("acme: Run was already called on this Manager")
	}
	accountKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("acme: make the account key: %w", err)
	}
	client := &acme.Client{Key: accountKey, HTTPClient: m.cfg.HTTPClient, DirectoryURL: m.cfg.DirectoryURL, UserAgent: "mse-node"}
	registered := false
	backoff := minBackoff
	for {
		start := m.now()
		m.mu.Lock()
		m.status.LastAttempt, m.status.NextAttempt = start, time.Time{}
		if m.cert.Load() != nil {
			m.status.State = StateRenewing
		}
		m.mu.Unlock()

		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		c, err := m.obtain(actx, client, &registered)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var next time.Time
		if err != nil {
			wait := backoff
			if d, ok := acme.RateLimit(unwrapACME(err)); ok && d > wait {
				wait = min(d, maxBackoff)
			}
			backoff = min(2*backoff, maxBackoff)
			var ae *acme.Error
			if errors.As(err, &ae) && strings.HasSuffix(ae.ProblemType, ":accountDoesNotExist") {
				registered = false // the CA forgot the account: register it again
			}
			next = m.now().Add(wait)
			m.failed(err, next)
		} else {
			backoff = minBackoff
			next = renewalTime(c.Leaf, m.cfg.RenewBefore)
			m.issued(c, start, next)
		}
		if err := m.sleepUntil(ctx, next); err != nil {
			return err
		}
	}
}

// renewalTime is when leaf is renewed: renewBefore before its NotAfter, or
// a third of its lifetime before when renewBefore is 0 or not shorter than
// the lifetime.
func renewalTime(leaf *x509.Certificate, renewBefore time.Duration) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	if renewBefore <= 0 || renewBefore >= life {
		renewBefore = life / 3
	}
	return leaf.NotAfter.Add(-renewBefore)
}

// sleepUntil waits until the clock reaches t, or ctx ends.
func (m *Manager) sleepUntil(ctx context.Context, t time.Time) error {
	for {
		d := t.Sub(m.now())
		if d <= 0 {
			return nil
		}
		timer := time.NewTimer(min(d, m.tick))
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}

func (m *Manager) changed(st Status) {
	if m.cfg.OnChange != nil {
		m.cfg.OnChange(st)
	}
}

func (m *Manager) issued(c *tls.Certificate, start, next time.Time) {
	m.cert.Store(c)
	m.mu.Lock()
	m.status = Status{State: StateValid, NotAfter: c.Leaf.NotAfter, Serial: c.Leaf.SerialNumber.Text(16), LastAttempt: start, NextAttempt: next}
	st := m.status
	m.mu.Unlock()
	defer m.changed(st)
	m.log.Info("acme: certificate obtained", "domains", strings.Join(m.domains, ","), "serial", c.Leaf.SerialNumber.Text(16),
		"not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339), "renew_at", next.UTC().Format(time.RFC3339), "took", m.now().Sub(start).Round(time.Millisecond))
}

func (m *Manager) failed(err error, next time.Time) {
	m.mu.Lock()
	m.status.Error = err.Error()
	m.status.NextAttempt = next
	if c := m.cert.Load(); c != nil && m.now().Before(c.Leaf.NotAfter) {
		m.status.State = StateRenewing
	} else {
		m.status.State = StateFailed
	}
	st := m.status
	state := st.State
	m.mu.Unlock()
	defer m.changed(st)
	m.log.Warn("acme: no certificate from the CA this time", "state", state, "err", err, "retry_at", next.UTC().Format(time.RFC3339))
}

// obtain runs one attempt: account (once), order, challenges, CSR,
// finalization, and the check of what the CA sent.
func (m *Manager) obtain(ctx context.Context, client *acme.Client, registered *bool) (*tls.Certificate, error) {
	if !*registered {
		acct := &acme.Account{}
		if m.cfg.Email != "" {
			acct.Contact = []string{"mailto:" + m.cfg.Email}
		}
		if _, err := client.Register(ctx, acct, acme.AcceptTOS); err != nil && !errors.Is(err, acme.ErrAccountAlreadyExists) {
			return nil, stepError("register an account", "", err)
		}
		*registered = true
	}
	order, err := client.AuthorizeOrder(ctx, acme.DomainIDs(m.domains...))
	if err != nil {
		return nil, stepError("create the order", strings.Join(m.domains, ","), err)
	}
	defer m.clearChallenges()
	if err := m.authorize(ctx, client, order); err != nil {
		return nil, err
	}
	if order, err = client.WaitOrder(ctx, order.URI); err != nil {
		return nil, stepError("wait for the order to be ready", strings.Join(m.domains, ","), err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: m.domains}, m.cfg.Key)
	if err != nil {
		return nil, stepError("sign the CSR with the node's key", "", err)
	}
	der, _, err := client.CreateCertFromOrder(ctx, order, csr, true)
	if err != nil {
		// Some CAs (Pebble) answer the finalization in a way the client
		// does not take; the order itself then says where the certificate is.
		o, werr := client.WaitOrder(ctx, order.URI)
		if werr != nil || o.Status != acme.StatusValid || o.CertURL == "" {
			return nil, stepError("finalize the order", strings.Join(m.domains, ","), err)
		}
		if der, err = client.FetchCert(ctx, o.CertURL, true); err != nil {
			return nil, stepError("fetch the certificate", strings.Join(m.domains, ","), err)
		}
	}
	leaf, err := checkChain(der, m.cfg.Key.Public(), m.domains, m.now())
	if err != nil {
		return nil, &Error{Step: "check the issued certificate", Domain: strings.Join(m.domains, ","), Cause: err.Error(), err: err}
	}
	return &tls.Certificate{Certificate: der, PrivateKey: m.cfg.Key, Leaf: leaf}, nil
}

// authorize answers the tls-alpn-01 challenge of each pending authorization
// of order and waits until the CA has validated them all.
func (m *Manager) authorize(ctx context.Context, client *acme.Client, order *acme.Order) error {
	var pending []*acme.Authorization
	for _, u := range order.AuthzURLs {
		z, err := client.GetAuthorization(ctx, u)
		if err != nil {
			return stepError("read an authorization", "", err)
		}
		domain := strings.ToLower(z.Identifier.Value)
		switch z.Status {
		case acme.StatusValid:
			continue
		case acme.StatusPending:
		default:
			return &Error{Step: "read an authorization", Domain: domain, Cause: "the CA says it is " + z.Status}
		}
		var chal *acme.Challenge
		var offered []string
		for _, c := range z.Challenges {
			offered = append(offered, c.Type)
			if c.Type == "tls-alpn-01" {
				chal = c
			}
		}
		if chal == nil {
			return &Error{Step: "choose a challenge", Domain: domain,
				Cause: fmt.Sprintf("the CA offers no tls-alpn-01 challenge (it offers %s); the node can answer only tls-alpn-01", strings.Join(offered, ", "))}
		}
		cert, err := client.TLSALPN01ChallengeCert(chal.Token, domain)
		if err != nil {
			return stepError("make the challenge certificate", domain, err)
		}
		m.mu.Lock()
		m.challenges[domain] = &cert
		m.mu.Unlock()
		if _, err := client.Accept(ctx, chal); err != nil {
			return stepError("accept the tls-alpn-01 challenge", domain, err)
		}
		pending = append(pending, z)
	}
	for _, z := range pending {
		if _, err := client.WaitAuthorization(ctx, z.URI); err != nil {
			return stepError("validate the tls-alpn-01 challenge", strings.ToLower(z.Identifier.Value), err)
		}
	}
	return nil
}

func (m *Manager) clearChallenges() {
	m.mu.Lock()
	clear(m.challenges)
	m.mu.Unlock()
}

// checkChain parses what the CA sent and checks it before the node serves
// it: a leaf (not a CA) for key, valid at now for every domain, chaining
// through the certificates sent after it (the last one taken as the anchor:
// relying parties check the root).
func checkChain(der [][]byte, key crypto.PublicKey, domains []string, now time.Time) (*x509.Certificate, error) {
	if len(der) == 0 {
		return nil, errors.New("the CA sent no certificate")
	}
	if len(der) > maxChain {
		return nil, fmt.Errorf("the CA sent %d certificates, more than %d", len(der), maxChain)
	}
	certs := make([]*x509.Certificate, len(der))
	for i, b := range der {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return nil, fmt.Errorf("certificate %d of the chain does not parse: %v", i, err)
		}
		certs[i] = c
	}
	leaf := certs[0]
	if k, ok := key.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(leaf.PublicKey) {
		return nil, errors.New("the certificate is not for this node's key: refused")
	}
	if leaf.IsCA {
		return nil, errors.New("the leaf certificate is a CA: refused")
	}
	if len(certs) < 2 {
		return nil, errors.New("the CA sent the leaf without its issuer")
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(certs[len(certs)-1])
	for _, c := range certs[1 : len(certs)-1] {
		inter.AddCert(c)
	}
	for _, d := range domains {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: d, Roots: roots, Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return nil, fmt.Errorf("for %s: %v", d, err)
		}
	}
	return leaf, nil
}

// Error is a failed step of obtaining the certificate.
type Error struct {
	Step   string // what the node was doing ("validate the tls-alpn-01 challenge")
	Domain string // the domain(s) concerned, if any
	// Cause is what went wrong; the CA's problem type and detail when it
	// answered with one.
	Cause string
	err   error
}

func (e *Error) Error() string {
	s := "acme: " + e.Step
	if e.Domain != "" {
		s += " for " + e.Domain
	}
	return s + ": " + e.Cause
}

func (e *Error) Unwrap() error { return e.err }

// stepError names step and domain, and says what the CA answered.
func stepError(step, domain string, err error) *Error {
	return &Error{Step: step, Domain: domain, Cause: describe(err), err: err}
}

// unwrapACME finds the CA's *acme.Error in err (for RateLimit).
func unwrapACME(err error) error {
	var ae *acme.Error
	if errors.As(err, &ae) {
		return ae
	}
	return err
}

// describe says what the CA answered, from its problem documents.
func describe(err error) string {
	var (
		ae *acme.Error
		ze *acme.AuthorizationError
		oe *acme.OrderError
	)
	switch {
	case errors.As(err, &ze):
		var parts []string
		for _, e := range ze.Errors {
			parts = append(parts, describe(e))
		}
		if len(parts) == 0 {
			parts = []string{"no reason given"}
		}
		return "the CA refused the authorization: " + strings.Join(parts, "; ")
	case errors.As(err, &oe):
		s := "the order is " + oe.Status
		if oe.Problem != nil {
			s += ": " + problem(oe.Problem)
		}
		return s
	case errors.As(err, &ae):
		return problem(ae)
	case errors.Is(err, context.DeadlineExceeded):
		return "no answer from the CA in time"
	}
	return clean(err.Error())
}

// problem renders a CA's problem document: type, detail, subproblems.
func problem(e *acme.Error) string {
	s := strings.TrimPrefix(e.ProblemType, "urn:ietf:params:acme:error:")
	if e.StatusCode != 0 {
		s = fmt.Sprintf("%s (HTTP %d)", s, e.StatusCode)
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	for i, sp := range e.Subproblems {
		if i == 4 {
			s += fmt.Sprintf("; and %d more", len(e.Subproblems)-i)
			break
		}
		s += "; " + sp.String()
	}
	return clean(s)
}

// clean bounds text that came from the CA and drops control characters.
func clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxDetail {
		n := maxDetail
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n] + "…"
	}
	return s
}
