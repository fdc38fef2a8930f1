package service

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/spec"
)

// Domain control (docs/api.md "Domains"): which domain an app is served on,
// by TLS mode, and who may use a custom one.
//
//   - self, operator: the domain the platform generates under its base domain;
//     a custom domain is refused.
//   - owner: the owner's domain, proved by a certificate chain that verifies
//     to a root the operator trusts (OwnerRoots). The first such app of a
//     tenant reserves the domain for that tenant (proof "certificate"); no
//     other tenant can use it afterwards.
//   - acme: the generated domain, or a custom one the tenant has reserved.

// OwnerRoots are the roots owner-mode certificates must chain to, and how
// to name them in errors.
type OwnerRoots struct {
	Pool *x509.CertPool
	// Desc names the roots ("system roots + 1 CA file"), never their content.
	Desc string
}

// LoadOwnerRoots returns the system roots plus the PEM roots of files
// (mse-backend serve --owner-ca-file).
func LoadOwnerRoots(files []string) (OwnerRoots, error) {
	pool, err := x509.SystemCertPool()
	desc := "system roots"
	if err != nil || pool == nil {
		pool, desc = x509.NewCertPool(), "no system roots"
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return OwnerRoots{}, fmt.Errorf("--owner-ca-file: %w", err)
		}
		certs, err := spec.ParseCertificatesPEM(b, f)
		if err != nil {
			return OwnerRoots{}, fmt.Errorf("--owner-ca-file: %w", err)
		}
		for _, c := range certs {
			pool.AddCert(c)
		}
	}
	if n := len(files); n == 1 {
		desc += " + 1 CA file"
	} else if n > 1 {
		desc += fmt.Sprintf(" + %d CA files", n)
	}
	return OwnerRoots{Pool: pool, Desc: desc}, nil
}

// verifyOwnerChain checks an owner-mode certificate chain (PEM, leaf first)
// as a browser would: it verifies to one of roots, names domain, is for TLS
// servers, at now. The error names the cause and the fix.
func verifyOwnerChain(chainPEM, domain string, roots OwnerRoots, now time.Time) error {
	chain, err := spec.ParseCertificateChainPEM([]byte(chainPEM), "owner_certificate")
	if err != nil {
		return errf(ErrInvalid, "%v", err)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err = chain[0].Verify(x509.VerifyOptions{
		DNSName: domain, Roots: roots.Pool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err == nil {
		return nil
	}
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &hostname):
		names := chain[0].DNSNames
		if len(names) == 0 {
			names = []string{"no DNS name"}
		}
		return errf(ErrInvalid, "the owner certificate is not for %s (it names %s); use a certificate whose names cover the domain",
			domain, strings.Join(names, ", "))
	case errors.As(err, &unknown):
		return errf(ErrInvalid, "the owner certificate for %s does not chain to a root this operator trusts (%s); use a certificate from a public CA, or ask the operator to add your CA with --owner-ca-file",
			domain, roots.Desc)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return errf(ErrInvalid, "the owner certificate chain for %s is not valid at %s (%v); renew the certificate", domain, now.UTC().Format(time.RFC3339), err)
	case errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage:
		return errf(ErrInvalid, "the owner certificate for %s is not for TLS servers (its extended key usage excludes serverAuth); use a server certificate", domain)
	}
	return errf(ErrInvalid, "the owner certificate chain for %s does not verify (%v); use a certificate from a public CA, or ask the operator to add your CA with --owner-ca-file", domain, err)
}

// reservedElsewhere is the refusal of a domain another tenant reserved: it
// says nothing of who.
func reservedElsewhere(domain string) error {
	return errf(ErrConflict, "domain %s is reserved by another account; if it is yours, ask the operator", domain)
}

// checkReservation refuses a domain another tenant reserved; held reports
// whether u holds it.
func (s *Service) checkReservation(ctx context.Context, u *store.User, domain string) (held bool, err error) {
	r, err := s.st.DomainReservation(ctx, domain)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	case r.UserID != u.ID:
		return false, reservedElsewhere(domain)
	}
	return true, nil
}

// reserveDomain reserves domain for u with proof (a no-op if u holds it).
func (s *Service) reserveDomain(ctx context.Context, u *store.User, domain, proof string) error {
	err := s.st.ReserveDomain(ctx, &store.DomainReservation{Domain: domain, UserID: u.ID, Proof: proof, CreatedAt: s.cfg.Now().UTC()})
	if errors.Is(err, store.ErrConflict) {
		return reservedElsewhere(domain)
	}
	return err
}

// appDomain decides the domain of a new app in spec's TLS mode and checks
// what the mode asks of the request. reserve, when true, means the domain
// must be reserved for u (proof "certificate") before the app is recorded.
func (s *Service) appDomain(ctx context.Context, u *store.User, req client.CreateAppRequest, sp *spec.Spec) (reserve bool, err error) {
	generated := domainLabel(req.Name) + "-" + strings.ReplaceAll(sp.AppID, "-", "")[:12] + "." + s.cfg.BaseDomain
	if req.ACME != nil && req.TLSMode != spec.TLSACME {
		return false, errf(ErrInvalid, "acme is only for tls_mode acme (tls_mode is %q)", req.TLSMode)
	}
	switch req.TLSMode {
	case spec.TLSSelf:
		if req.Domain != "" {
			return false, errf(ErrInvalid, "domain is only for tls_mode owner (your own certificate) or acme; with tls_mode self the platform assigns the domain")
		}
		sp.Domains = []string{generated}
	case spec.TLSOperator:
		if !s.cfg.OperatorTLS {
			return false, errf(ErrInvalid, "tls_mode operator is not offered by this backend: the operator configured no certificate to terminate TLS with "+
				"(mse-backend serve --operator-cert FILE --operator-key FILE, or --operator-acme-directory URL); use self (default), owner or acme")
		}
		if req.Domain != "" {
			return false, errf(ErrInvalid, "domain is not for tls_mode operator: the operator's certificate covers the domain the platform assigns (under %s)", s.cfg.BaseDomain)
		}
		sp.Domains = []string{generated}
	case spec.TLSOwner:
		d, err := customDomain(req.Domain)
		if err != nil {
			return false, err
		}
		if err := verifyOwnerChain(req.OwnerCertificate, d, s.ownerRoots(), s.cfg.Now()); err != nil {
			return false, err
		}
		if _, err := s.checkReservation(ctx, u, d); err != nil {
			return false, err
		}
		sp.Domains = []string{d}
		reserve = true
	case spec.TLSACME:
		if len(s.cfg.ACMEDirectories) == 0 {
			return false, errf(ErrInvalid, "tls_mode acme is not offered by this backend (no --acme-directory)")
		}
		if req.ACME == nil {
			return false, errf(ErrInvalid, "tls_mode acme needs acme.directory_url, the CA the node gets its certificate from; this backend allows %s (GET /v1/platform names the default)",
				strings.Join(s.cfg.ACMEDirectories, ", "))
		}
		if !slices.Contains(s.cfg.ACMEDirectories, req.ACME.DirectoryURL) {
			return false, errf(ErrInvalid, "acme directory %q is not one this operator allows (nodes reach only those): use one of %s",
				req.ACME.DirectoryURL, strings.Join(s.cfg.ACMEDirectories, ", "))
		}
		// Unchanged: the owner's config digest covers it.
		sp.ACME = req.ACME
		sp.Domains = []string{generated}
		if req.Domain != "" {
			d, err := customDomain(req.Domain)
			if err != nil {
				return false, err
			}
			held, err := s.checkReservation(ctx, u, d)
			if err != nil {
				return false, err
			}
			if !held {
				return false, errf(ErrInvalid, "domain %s is not reserved by your account, and tls_mode acme serves a custom domain only to the account that holds it: "+
					"deploy it once with tls_mode owner and a certificate for it from a CA this operator trusts, or ask the operator to run `mse-backend domain reserve %s --user %s`; "+
					"or leave domain unset for the domain the platform assigns", d, d, u.Name)
			}
			sp.Domains = []string{d}
		}
	default:
		return false, errf(ErrInvalid, "unknown tls_mode %q (%s)", req.TLSMode, strings.Join(spec.TLSModes, ", "))
	}
	return reserve, nil
}

// customDomain validates an owner's domain (mse.toml's cloud.ssl.domain_name
// rule) and returns it as stored: lowercase, no trailing dot.
func customDomain(d string) (string, error) {
	if err := spec.ValidateDomain(d); err != nil {
		return "", errf(ErrInvalid, "%v", err)
	}
	return strings.TrimSuffix(strings.ToLower(d), "."), nil
}

func (s *Service) ownerRoots() OwnerRoots {
	s.rootsOnce.Do(func() {
		if s.cfg.OwnerRoots.Pool != nil {
			s.roots = s.cfg.OwnerRoots
			return
		}
		r, err := LoadOwnerRoots(nil)
		if err != nil { // no files: cannot fail
			r = OwnerRoots{Pool: x509.NewCertPool(), Desc: "no roots"}
		}
		s.roots = r
	})
	return s.roots
}

// ReserveDomain reserves a domain for the user named userName (the
// operator's `mse-backend domain reserve`), with proof "admin". A domain
// that user holds already stays as it was.
func ReserveDomain(ctx context.Context, st store.Store, domain, userName string, now time.Time) (*store.DomainReservation, *store.User, error) {
	d, err := customDomain(domain)
	if err != nil {
		return nil, nil, err
	}
	u, err := st.GetUserByName(ctx, userName)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, errf(ErrNotFound, "no user %q (see `mse-backend user list`)", userName)
	} else if err != nil {
		return nil, nil, err
	}
	r := &store.DomainReservation{Domain: d, UserID: u.ID, Proof: store.ProofAdmin, CreatedAt: now.UTC()}
	if err := st.ReserveDomain(ctx, r); errors.Is(err, store.ErrConflict) {
		// The operator may know who: the message names the holder.
		cur, gerr := st.DomainReservation(ctx, d)
		if gerr == nil {
			if h, herr := st.GetUser(ctx, cur.UserID); herr == nil {
				return nil, nil, errf(ErrConflict, "domain %s is reserved by user %s (since %s); release it first with `mse-backend domain release %s`",
					d, h.Name, cur.CreatedAt.Format(time.RFC3339), d)
			}
		}
		return nil, nil, errf(ErrConflict, "domain %s is reserved by another user; release it first with `mse-backend domain release %s`", d, d)
	} else if err != nil {
		return nil, nil, err
	}
	return r, u, nil
}
