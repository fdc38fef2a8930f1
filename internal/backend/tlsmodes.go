package backend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sim"
	"github.com/mse-in-go/mse/internal/backend/router"
	"github.com/mse-in-go/mse/internal/spec"
)

// The operator's side of the TLS modes (docs/router.md "Operator mode", docs/api.md "Domains"): the
// roots owner-mode certificates must chain to, the ACME CAs nodes may use, and the certificate the
// router terminates operator-mode apps with.

// acmeSettings checks --acme-directory and reads --acme-roots.
func acmeSettings(dirs []string, rootsFile string) (rootsPEM string, err error) {
	for _, d := range dirs {
		if e := spec.ACMEDirectoryRule(d); e != "" {
			return "", fmt.Errorf("--acme-directory %s", e)
		}
	}
	if rootsFile == "" {
		return "", nil
	}
	if len(dirs) == 0 {
		return "", errors.New("--acme-roots without --acme-directory: name the CA whose roots these are")
	}
	b, err := readPEMRoots(rootsFile, "--acme-roots")
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// readPEMRoots reads a PEM file of CA certificates, bounded as spec.ACME.RootsPEM is.
func readPEMRoots(path, flag string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	if st.Size() > spec.MaxACMERootsSize {
		return nil, fmt.Errorf("%s: %s is %d bytes, more than %d", flag, path, st.Size(), spec.MaxACMERootsSize)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	if _, err := spec.ParseCertificatesPEM(b, path); err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	return b, nil
}

// operatorTLS builds the router's Operator from --operator-cert/--operator-key or
// --operator-acme-directory; nil when neither is set (tls_mode operator is then refused).
func operatorTLS(cfg Config, platform *sim.Platform, measurement string, lookup func(context.Context, string) (router.Route, error), log *slog.Logger) (*router.Operator, error) {
	fileSet := cfg.OperatorCert != "" || cfg.OperatorKey != ""
	acmeSet := cfg.OperatorACMEDirectory != ""
	switch {
	case fileSet && acmeSet:
		return nil, errors.New("--operator-cert and --operator-acme-directory are two sources of the operator's certificate: choose one")
	case !fileSet && !acmeSet:
		if cfg.OperatorACMERoots != "" || cfg.OperatorACMEEmail != "" {
			return nil, errors.New("--operator-acme-roots and --operator-acme-email need --operator-acme-directory")
		}
		return nil, nil
	}
	// VerifyTTL and Now keep their defaults: a verified node certificate is trusted for
	// router.DefaultVerifyTTL by the wall clock (the router's TestOperatorVerifyCache tests both).
	op := &router.Operator{VerifyNode: nodeVerifier(platform, measurement)}
	if fileSet {
		if cfg.OperatorCert == "" || cfg.OperatorKey == "" {
			return nil, errors.New("--operator-cert and --operator-key go together")
		}
		cert, err := tls.LoadX509KeyPair(cfg.OperatorCert, cfg.OperatorKey)
		if err != nil {
			return nil, fmt.Errorf("--operator-cert/--operator-key: %w", err)
		}
		probe := "app." + cfg.BaseDomain
		if err := cert.Leaf.VerifyHostname(probe); err != nil {
			log.Warn("the operator certificate does not cover the app domains under the base domain: clients of operator-mode apps will refuse it; use a wildcard certificate for *."+cfg.BaseDomain,
				"file", cfg.OperatorCert, "error", err)
		}
		if time.Now().After(cert.Leaf.NotAfter) {
			log.Warn("the operator certificate has expired", "file", cfg.OperatorCert, "not_after", cert.Leaf.NotAfter)
		}
		op.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }
		return op, nil
	}
	if e := spec.ACMEDirectoryRule(cfg.OperatorACMEDirectory); e != "" {
		return nil, fmt.Errorf("--operator-acme-directory %s", e)
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	if cfg.OperatorACMERoots != "" {
		b, err := readPEMRoots(cfg.OperatorACMERoots, "--operator-acme-roots")
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(b)
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, Proxy: http.ProxyFromEnvironment}
	}
	m := &autocert.Manager{
		Prompt: autocert.AcceptTOS,
		Cache:  autocert.DirCache(filepath.Join(cfg.DataDir, "acme")),
		Email:  cfg.OperatorACMEEmail,
		Client: &acme.Client{DirectoryURL: cfg.OperatorACMEDirectory, HTTPClient: hc},
		// Only the domains of active operator-mode apps: nobody makes the router ask the CA for others.
		HostPolicy: func(ctx context.Context, host string) error {
			rt, err := lookup(ctx, host)
			if err != nil {
				return fmt.Errorf("no active app serves %s", host)
			}
			if rt.TLSMode != spec.TLSOperator {
				return fmt.Errorf("%s is not an operator-mode app", host)
			}
			return nil
		},
	}
	op.GetCertificate, op.ACME = m.GetCertificate, true
	return op, nil
}

// nodeVerifier verifies a node's RA-TLS certificate as the owner's CLI would with a policy that accepts
// this backend's own nodes: the simulated platform's root, and the measurement of the mse-node its
// runner launches.
func nodeVerifier(platform *sim.Platform, measurement string) func(context.Context, *x509.Certificate, router.Route) error {
	v := sim.NewVerifier(platform.RootCertificate(), nil)
	verifiers := func(teeType string) (attest.Verifier, error) {
		if teeType != attest.TypeSim {
			return nil, fmt.Errorf("this backend's nodes are sim nodes; a %s node is not one of them", teeType)
		}
		return v, nil
	}
	policy := &attest.Policy{TEETypes: []string{attest.TypeSim}, AllowSimulation: true, Measurements: []string{measurement}}
	return router.RATLSVerifier(verifiers, policy, nil)
}
