package cli

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/config"
	"github.com/mse-in-go/mse/internal/ratls"
	"github.com/mse-in-go/mse/internal/spec"
)

// The owner's side of the four TLS modes (docs/cli.md "TLS modes"): which
// mode a deploy asks for, which ACME CA the node is sent to, and what deploy
// can check of the app through the router in each mode.

// operatorWarning is MSE's --untrusted-ssl warning, said plainly: printed
// before anything is uploaded, and again at the end.
const operatorWarning = "--untrusted-ssl: the operator terminates TLS for this app with its own certificate, so the operator can read and change ALL traffic between the app's users and the app. " +
	"The enclave still protects your code and secrets, and deploy still verifies it over its own TLS before sending them; but the users' connections are not zero trust. Use it only for development, or when you trust the operator with that traffic."

// tlsMode is the TLS mode a deploy asks for: mse.toml's ([cloud.ssl]
// owner, [cloud.acme] acme, else self), or the flags' (--untrusted-ssl
// operator, --acme acme). Flags that contradict the file are refused.
func tlsMode(conf *config.AppConfig, o *deployOpts) (string, error) {
	file := conf.TLSMode()
	table := map[string]string{config.TLSOwner: "[cloud.ssl]", config.TLSACME: "[cloud.acme]"}[file]
	switch {
	case o.untrustedSSL && o.acme:
		return "", errors.New("--untrusted-ssl (tls_mode operator: the operator terminates TLS) and --acme (tls_mode acme: a CA's certificate for the enclave's own key) choose two TLS modes; keep one of them")
	case o.untrustedSSL && file != config.TLSSelf:
		return "", fmt.Errorf("--untrusted-ssl (tls_mode operator: the operator terminates TLS) contradicts %s in %s (tls_mode %s); remove one of them", table, o.path, file)
	case o.untrustedSSL:
		return config.TLSOperator, nil
	case o.acme && file == config.TLSOwner:
		return "", fmt.Errorf("--acme (tls_mode acme: a CA's certificate for the enclave's own key) contradicts [cloud.ssl] in %s (tls_mode owner: your own certificate); remove one of them", o.path)
	case o.acme:
		return config.TLSACME, nil
	}
	if o.cacert != "" && file != config.TLSACME {
		return "", fmt.Errorf("--cacert is for tls_mode acme and operator (--acme, [cloud.acme], --untrusted-ssl), where the app serves a CA's certificate; in tls_mode %s deploy checks the app by the certificate it pins", file)
	}
	return file, nil
}

// resolveTLS checks, before anything is uploaded, that the backend offers
// the TLS mode, and in acme mode decides the CA the node is sent to: the
// one mse.toml names, or the operator's default. The CA goes into the
// request and into the config digest deploy recomputes, so the operator
// cannot send the node to another CA.
func (d *deployment) resolveTLS(ctx context.Context) error {
	if d.mode != config.TLSACME && d.mode != config.TLSOperator {
		return nil
	}
	p, err := d.c.Platform(ctx)
	if err != nil {
		return fmt.Errorf("ask the backend which TLS modes it offers: %w", err)
	}
	if len(p.TLSModes) > 0 && !slices.Contains(p.TLSModes, d.mode) {
		why := map[string]string{
			config.TLSOperator: "its operator configured no certificate to terminate TLS with; deploy without --untrusted-ssl",
			config.TLSACME:     "its operator configured no ACME CA; deploy without --acme and [cloud.acme] (tls_mode self)",
		}[d.mode]
		return fmt.Errorf("this backend does not offer tls_mode %s (it offers %s): %s", d.mode, sanitize(strings.Join(p.TLSModes, ", ")), why)
	}
	if d.mode == config.TLSOperator {
		return nil
	}
	a, err := chooseACME(d.conf, p)
	if err != nil {
		return err
	}
	d.acme = a
	roots := "the system roots"
	if a.RootsPEM != "" {
		roots = "roots from mse.toml"
		if d.conf.Cloud.ACME == nil || d.conf.Cloud.ACME.DirectoryURL == "" {
			roots = "roots the operator gives"
		}
		certs, _ := spec.ParseCertificatesPEM([]byte(a.RootsPEM), "roots")
		roots += fmt.Sprintf(" (%d certificates)", len(certs))
	}
	from := "from mse.toml"
	if d.conf.Cloud.ACME == nil || d.conf.Cloud.ACME.DirectoryURL == "" {
		from = "the operator's default"
	}
	d.u.step("ACME CA %s (%s); the node reaches it over HTTPS trusting %s, and your config digest covers it", sanitize(a.DirectoryURL), from, roots)
	return nil
}

// chooseACME is the CA of an acme-mode deploy. A directory in mse.toml must
// be one the operator lets nodes reach (when the backend says which); no
// directory means the operator's default, which is checked as mse.toml's
// would be.
func chooseACME(conf *config.AppConfig, p *client.Platform) (*spec.ACME, error) {
	ac := conf.Cloud.ACME
	if ac == nil {
		ac = &config.ACMEConfig{} // --acme: an empty [cloud.acme]
	}
	if ac.DirectoryURL != "" {
		if len(p.ACMEDirectories) > 0 && !slices.Contains(p.ACMEDirectories, ac.DirectoryURL) {
			return nil, fmt.Errorf("cloud.acme.directory_url %s is not a CA this operator lets nodes reach (it allows %s); use one of those, or remove directory_url for the operator's default",
				ac.DirectoryURL, sanitize(strings.Join(p.ACMEDirectories, ", ")))
		}
		roots, err := ac.ReadRoots()
		if err != nil {
			return nil, fmt.Errorf("cloud.acme.roots: %w", err)
		}
		return &spec.ACME{DirectoryURL: ac.DirectoryURL, RootsPEM: string(roots), Email: ac.Email}, nil
	}
	var def spec.ACME
	switch {
	case p.ACME != nil:
		def = *p.ACME
	case len(p.ACMEDirectories) > 0:
		def = spec.ACME{DirectoryURL: p.ACMEDirectories[0]}
	default:
		return nil, errors.New("this backend offers no ACME CA, so tls_mode acme (--acme, [cloud.acme]) cannot be used here: ask the operator to configure one (mse-backend serve --acme-directory URL), " +
			"or name your own CA with [cloud.acme] directory_url if the operator lets nodes reach it, or deploy without --acme and [cloud.acme] (tls_mode self)")
	}
	if e := config.ACMEDirectoryRule(def.DirectoryURL); e != "" {
		return nil, fmt.Errorf("the operator's default ACME CA is not valid: directory %s; report this to the operator, or set [cloud.acme] directory_url", sanitize(e))
	}
	if len(def.RootsPEM) > config.MaxACMERootsSize {
		return nil, fmt.Errorf("the operator's roots for its ACME CA are %d bytes, more than %d; report this to the operator", len(def.RootsPEM), config.MaxACMERootsSize)
	}
	if def.RootsPEM != "" {
		if _, err := spec.ParseCertificatesPEM([]byte(def.RootsPEM), "the operator's roots for its ACME CA"); err != nil {
			return nil, fmt.Errorf("%s; report this to the operator", sanitize(err.Error()))
		}
	}
	return &spec.ACME{DirectoryURL: def.DirectoryURL, RootsPEM: def.RootsPEM, Email: ac.Email}, nil
}

// served is what deploy saw of the certificate the app serves through the
// router.
type served struct {
	chain []*x509.Certificate
	// isRATLS: the node still serves its RA-TLS certificate (acme mode,
	// before the CA issued one).
	isRATLS bool
	// trusted says whether chain verifies to the owner's roots for the
	// domain (acme, operator); trustErr says why not.
	trusted  bool
	trustErr string
}

// pinCert accepts exactly the certificate der (self: the verified RA-TLS
// certificate; owner: the owner's).
func pinCert(der []byte) func([]*x509.Certificate) error {
	return func(chain []*x509.Certificate) error {
		if !bytes.Equal(chain[0].Raw, der) {
			return fmt.Errorf("the server's certificate (sha256 %s…) is not the expected one", ratls.Fingerprint(chain[0])[:12])
		}
		return nil
	}
}

// pinKey accepts a certificate for the enclave's own key (acme mode): the
// RA-TLS certificate itself, before the CA issued one, or a certificate for
// the same public key that names the domain. Anything else is someone else's
// key: the router (or whoever is in between) interposes.
func pinKey(ra *x509.Certificate, domain string, now func() time.Time) func([]*x509.Certificate) error {
	return func(chain []*x509.Certificate) error {
		leaf := chain[0]
		if !bytes.Equal(leaf.RawSubjectPublicKeyInfo, ra.RawSubjectPublicKeyInfo) {
			return fmt.Errorf("the certificate served for %s (sha256 %s…, issued by %q) is not for the key the enclave attested; in tls_mode acme the app serves only the enclave's own key: someone between you and the enclave (the operator's router?) serves its own certificate",
				domain, ratls.Fingerprint(leaf)[:12], sanitize(leaf.Issuer.String()))
		}
		if err := leaf.VerifyHostname(domain); err != nil {
			return fmt.Errorf("the certificate served for %s, for the enclave's key, does not name it: %v", domain, err)
		}
		if t := now(); t.Before(leaf.NotBefore) || t.After(leaf.NotAfter) {
			return fmt.Errorf("the certificate served for %s is not valid now (valid %s to %s)", domain, leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		return nil
	}
}

// trust checks a served chain against roots for domain, as browsers do.
func (s *served) trust(domain string, roots *x509.CertPool, now time.Time) {
	inter := x509.NewCertPool()
	for _, c := range s.chain[1:] {
		inter.AddCert(c)
	}
	_, err := s.chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: domain, CurrentTime: now})
	s.trusted = err == nil
	if err != nil {
		s.trustErr = err.Error()
	}
}

// systemRootsWith is the system roots plus the PEM roots of path (when
// set): what deploy checks a CA's certificate with.
func systemRootsWith(path string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if path == "" {
		return pool, nil
	}
	if pool, err = appendRoots(pool, path); err != nil {
		return nil, fmt.Errorf("--cacert: %w", err)
	}
	return pool, nil
}

// lookupHost resolves a name (a variable for tests).
var lookupHost = net.DefaultResolver.LookupHost

// routerIsDomainAddress says whether clients reach the router by the
// domain alone: the router listens on 443 and the domain resolves to the
// router's address. Then a curl line needs no --resolve.
func routerIsDomainAddress(ctx context.Context, domain, routerAddr string) bool {
	host, port, err := splitRouterAddr(routerAddr)
	if err != nil || port != "443" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	domainIPs, err := lookupHost(ctx, domain)
	if err != nil {
		return false
	}
	routerIPs := []string{host}
	if net.ParseIP(host) == nil {
		if routerIPs, err = lookupHost(ctx, host); err != nil {
			return false
		}
	}
	for _, a := range domainIPs {
		for _, b := range routerIPs {
			if ia, ib := net.ParseIP(a), net.ParseIP(b); ia != nil && ia.Equal(ib) {
				return true
			}
		}
	}
	return false
}

// publicCurlLine is the curl line of an app whose certificate is a CA's
// (acme, operator): plain, as any client would type it, with --resolve
// only when the domain does not lead to the router, and --cacert only when
// the owner named the CA's root.
func publicCurlLine(domain, routerAddr, cacert string, resolve bool) (string, error) {
	u, err := appURL(domain, routerAddr)
	if err != nil {
		return "", err
	}
	words := []string{"curl"}
	if cacert != "" {
		words = append(words, "--cacert", cacert)
	}
	if resolve {
		host, port, err := splitRouterAddr(routerAddr)
		if err != nil {
			return "", err
		}
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		words = append(words, "--resolve", domain+":"+port+":"+host)
	}
	words = append(words, u)
	return shellJoin(words...), nil
}
