// Package spec is what the node is told to run: the Spec of one app, its
// config digest, and the rules the node applies again to what the owner
// checked on their side (the owner certificate and key, domain names).
//
// It is the part of the app configuration that the node links. The owner's
// mse.toml parser is package internal/config, which the node never imports
// (see internal/node's deps_test.go).
package spec

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/runtimes"
)

// Bounds of an app's start, until its health check answers.
const (
	// DefaultStartTimeout is how long an app has to answer its health check
	// when its start timeout is not set (mse.toml: cloud.start_timeout absent).
	DefaultStartTimeout = 2 * time.Minute
	// MaxStartTimeout is the largest start timeout an app may ask for
	// (operators may allow less).
	MaxStartTimeout = 24 * time.Hour
)

// TLS modes (docs/DESIGN "TLS scenarios").
const (
	TLSSelf     = "self"     // scenario 1: RA-TLS certificate made inside the enclave
	TLSOwner    = "owner"    // scenario 2: the owner's certificate; its key arrives in stage 2
	TLSOperator = "operator" // scenario 3: the operator terminates TLS; it can read the traffic
	// TLSACME: zero trust that browsers accept: the node makes its key inside
	// the enclave and gets a certificate for it from an ACME CA (docs/tls.md).
	TLSACME = "acme"
)

// TLSModes lists the TLS modes, in the order documentation shows them.
var TLSModes = []string{TLSSelf, TLSOwner, TLSOperator, TLSACME}

// Spec is the runtime configuration of one app: what the node is told to run
// and how. The operator passes it to the node, so everything in it is covered
// by the config digest that the node binds into its evidence and that the
// owner recomputes from what they sent.
type Spec struct {
	AppID               string    `json:"app_id"`
	Name                string    `json:"name"`
	Domains             []string  `json:"domains"`
	Entrypoint          []string  `json:"entrypoint,omitempty"`
	PythonApplication   string    `json:"python_application,omitempty"`
	HealthcheckEndpoint string    `json:"healthcheck_endpoint,omitempty"`
	ExpiresAt           time.Time `json:"expires_at"`
	TLSMode             string    `json:"tls_mode"`
	// OwnerCertificate is the owner's PEM certificate chain (scenario 2 only;
	// public). Its private key is never here: it goes to the node in stage 2.
	OwnerCertificate string `json:"owner_certificate,omitempty"`
	// Runtime is the runtime image the node runs in.
	Runtime Runtime `json:"runtime"`
	// StartTimeoutSeconds bounds the app's start until its health check
	// answers (0: DefaultStartTimeout).
	StartTimeoutSeconds int64 `json:"start_timeout_s,omitempty"`
	// ACME is the CA the node gets its certificate from (tls_mode acme only).
	ACME *ACME `json:"acme,omitempty"`
}

// ACME says which ACME CA a node in tls_mode acme uses. The owner chooses
// it (mse.toml [cloud.acme]) or takes the operator's default; the config
// digest covers it, so the operator cannot send the node to another CA.
type ACME struct {
	// DirectoryURL is the CA's ACME directory (https).
	DirectoryURL string `json:"directory_url"`
	// RootsPEM, when set, are the only roots the node trusts for the CA's
	// own HTTPS server; empty means the runtime's system roots.
	RootsPEM string `json:"roots_pem,omitempty"`
	// Email is the ACME account contact (optional).
	Email string `json:"email,omitempty"`
}

// MaxACMERootsSize bounds ACME.RootsPEM.
const MaxACMERootsSize = 256 << 10

// Runtime names the runtime image of an app (runtimes.Entry, as the owner
// resolved it against the operator's catalog).
type Runtime struct {
	Name   string `json:"name"`
	Image  string `json:"image"`
	Digest string `json:"digest"` // "sha256:" + 64 lowercase hex
	Kind   string `json:"kind"`   // wsgi, asgi or any
}

// StartTimeout is the app's start bound.
func (s *Spec) StartTimeout() time.Duration {
	if s.StartTimeoutSeconds <= 0 {
		return DefaultStartTimeout
	}
	return time.Duration(s.StartTimeoutSeconds) * time.Second
}

// Validate checks a spec's own consistency (the node does this before anything).
func (s *Spec) Validate() error {
	if s.AppID == "" {
		return errors.New("spec: app_id is empty")
	}
	if len(s.Domains) == 0 {
		return errors.New("spec: no domain")
	}
	if (len(s.Entrypoint) == 0) == (s.PythonApplication == "") {
		return errors.New("spec: exactly one of entrypoint and python_application must be set")
	}
	switch s.TLSMode {
	case TLSSelf, TLSOperator, TLSACME:
		if s.OwnerCertificate != "" {
			return fmt.Errorf("spec: owner_certificate is set but tls_mode is %q", s.TLSMode)
		}
	case TLSOwner:
		if s.OwnerCertificate == "" {
			return errors.New("spec: tls_mode owner needs owner_certificate")
		}
	default:
		return fmt.Errorf("spec: unknown tls_mode %q (%s)", s.TLSMode, strings.Join(TLSModes, ", "))
	}
	if (s.TLSMode == TLSACME) != (s.ACME != nil) {
		return fmt.Errorf("spec: acme is set if and only if tls_mode is acme (tls_mode %q)", s.TLSMode)
	}
	if s.ACME != nil {
		if err := s.ACME.validate(); err != nil {
			return err
		}
	}
	if s.ExpiresAt.IsZero() {
		return errors.New("spec: expires_at is not set")
	}
	if !runtimes.ValidDigest(s.Runtime.Digest) {
		return fmt.Errorf("spec: runtime digest %q is not sha256: and 64 lowercase hex digits", s.Runtime.Digest)
	}
	switch s.Runtime.Kind {
	case runtimes.KindWSGI, runtimes.KindASGI, runtimes.KindAny:
	default:
		return fmt.Errorf("spec: runtime kind %q is not wsgi, asgi or any", s.Runtime.Kind)
	}
	if s.StartTimeoutSeconds < 0 || s.StartTimeoutSeconds > int64(MaxStartTimeout/time.Second) {
		return fmt.Errorf("spec: start_timeout_s %d is out of range 0..%d", s.StartTimeoutSeconds, int64(MaxStartTimeout/time.Second))
	}
	return nil
}

// Digest is the config digest: SHA-256 of the deterministic CBOR encoding of
// the fields that decide what the node runs and how it serves (docs/protocol.md).
// Domains are sorted; the expiry is in Unix seconds; the owner certificate is
// included by its SHA-256.
func (s *Spec) Digest() ([]byte, error) {
	domains := slices.Clone(s.Domains)
	for i := range domains {
		domains[i] = strings.ToLower(domains[i])
	}
	slices.Sort(domains)
	entry := s.Entrypoint
	if entry == nil {
		entry = []string{}
	}
	var certHash []byte
	if s.OwnerCertificate != "" {
		h := sha256.Sum256([]byte(s.OwnerCertificate))
		certHash = h[:]
	} else {
		certHash = []byte{}
	}
	acmeDir, acmeRoots := "", []byte{}
	if s.ACME != nil {
		acmeDir = s.ACME.DirectoryURL
		if s.ACME.RootsPEM != "" {
			h := sha256.Sum256([]byte(s.ACME.RootsPEM))
			acmeRoots = h[:]
		}
	}
	m := map[string]any{
		"v":                    3,
		"app_id":               s.AppID,
		"domains":              domains,
		"entrypoint":           entry,
		"python_application":   s.PythonApplication,
		"healthcheck_endpoint": s.HealthcheckEndpoint,
		"expires_at":           s.ExpiresAt.Unix(),
		"tls_mode":             s.TLSMode,
		"owner_cert_sha256":    certHash,
		"runtime_digest":       s.Runtime.Digest,
		"runtime_kind":         s.Runtime.Kind,
		"start_timeout_s":      int64(s.StartTimeout() / time.Second),
		"acme_directory":       acmeDir,
		"acme_roots_sha256":    acmeRoots,
		"acme_email":           acmeEmail(s.ACME),
	}
	b, err := attest.CBOREncMode().Marshal(m)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256(b)
	return h[:], nil
}

func acmeEmail(a *ACME) string {
	if a == nil {
		return ""
	}
	return a.Email
}

// MaxACMEDirectoryURL bounds ACME.DirectoryURL.
const MaxACMEDirectoryURL = 2048

// ACMEDirectoryRule says what is wrong with u as the directory URL of an
// ACME CA (an https URL with a host, no user or fragment, at most 2048
// bytes), or "" if nothing is. mse.toml, the backend's
// flags and spec.Validate all apply it.
func ACMEDirectoryRule(u string) string {
	if len(u) > MaxACMEDirectoryURL {
		return fmt.Sprintf("is %d bytes long; the maximum is %d", len(u), MaxACMEDirectoryURL)
	}
	if strings.IndexFunc(u, unicode.IsControl) >= 0 || strings.ContainsAny(u, " \t") {
		return fmt.Sprintf("%q must not contain spaces or control characters", u)
	}
	p, err := url.Parse(u)
	switch {
	case err != nil:
		return fmt.Sprintf("%q is not a URL; give the CA's ACME directory, e.g. \"https://acme-v02.api.letsencrypt.org/directory\"", u)
	case p.Scheme != "https":
		return fmt.Sprintf("%q is not an https URL: the node reaches its CA over HTTPS only, e.g. \"https://acme-v02.api.letsencrypt.org/directory\"", u)
	case p.Host == "" || p.Hostname() == "":
		return fmt.Sprintf("%q names no host", u)
	case p.User != nil:
		return fmt.Sprintf("%q must not carry a user name or password", u)
	case p.Fragment != "" || strings.Contains(u, "#"):
		return fmt.Sprintf("%q must not have a #fragment", u)
	}
	return ""
}

func (a *ACME) validate() error {
	if e := ACMEDirectoryRule(a.DirectoryURL); e != "" {
		return fmt.Errorf("spec: acme directory_url %s", e)
	}
	if len(a.RootsPEM) > MaxACMERootsSize {
		return fmt.Errorf("spec: acme roots_pem is %d bytes, more than %d", len(a.RootsPEM), MaxACMERootsSize)
	}
	if a.RootsPEM != "" {
		if _, err := ParseCertificatesPEM([]byte(a.RootsPEM), "acme roots_pem"); err != nil {
			return fmt.Errorf("spec: %w", err)
		}
	}
	if len(a.Email) > 254 || strings.ContainsAny(a.Email, " \t\r\n,") {
		return fmt.Errorf("spec: acme email %q is not one address", a.Email)
	}
	return nil
}
