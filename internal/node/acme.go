package node

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/mse-in-go/mse/internal/acme"
	"github.com/mse-in-go/mse/internal/spec"
)

// tls_mode acme: the node gets a certificate for its own key, made in the
// enclave, from the ACME CA the spec names (docs/tls.md). Until it has one it
// serves its RA-TLS certificate; ordinary clients then get the CA's chain,
// direct connections still the RA-TLS certificate, and fresh evidence
// attests the served key (the same key) on every connection.

// newACME makes the manager; the CA is reached through the runner's egress
// proxy (Config.Egress) when there is one.
func (n *Node) newACME() (*acme.Manager, error) {
	a := n.cfg.Spec.ACME
	var roots *x509.CertPool
	if a.RootsPEM != "" {
		certs, err := spec.ParseCertificatesPEM([]byte(a.RootsPEM), "the ACME CA's roots")
		if err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
		roots = x509.NewCertPool()
		for _, c := range certs {
			roots.AddCert(c)
		}
	}
	m, err := acme.New(acme.Config{
		DirectoryURL: a.DirectoryURL, Email: a.Email, Domains: n.cfg.Spec.Domains,
		Key: n.tlsKey, HTTPClient: acme.EgressClient(n.cfg.Egress, roots), Now: n.cfg.Now,
		Logger: n.log.With("component", "acme"),
		// What the node serves changed: say so in the status file.
		OnChange: func(acme.Status) { n.writeStatus(n.phase.Load().(string), "") },
	})
	if err != nil {
		return nil, fmt.Errorf("node: acme: %w", err)
	}
	return m, nil
}

// runACME obtains and renews the certificate until ctx ends (the manager
// logs each attempt; OnChange writes the status file).
func (n *Node) runACME(ctx context.Context) {
	if err := n.acme.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		n.log.Error("acme stopped", "err", err)
	}
}
