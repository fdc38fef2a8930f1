package node

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

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
		DirectoryURL: a.DirectoryURL, Roots: roots, Email: a.Email, Domains: n.cfg.Spec.Domains,
		Key: n.tlsKey, HTTPClient: acme.EgressClient(n.cfg.Egress, roots), Now: n.cfg.Now,
		Logger: n.log.With("component", "acme"),
	})
	if err != nil {
		return nil, fmt.Errorf("node: acme: %w", err)
	}
	return m, nil
}

// runACME obtains and renews the certificate until ctx ends, and writes the
// status file whenever what the node serves, or the ACME state, changes.
func (n *Node) runACME(ctx context.Context) {
	done := make(chan error, 1)
	go func() { done <- n.acme.Run(ctx) }()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	last := n.acme.Status()
	for {
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				n.log.Error("acme stopped", "err", err)
			}
			return
		case <-t.C:
			if st := n.acme.Status(); st != last {
				last = st
				if st.Error != "" {
					n.log.Warn("acme: no certificate yet; serving the RA-TLS certificate", "state", st.State, "err", st.Error, "next_attempt", st.NextAttempt)
				} else if st.State == acme.StateValid {
					n.log.Info("acme: serving the CA's certificate for the enclave key", "not_after", st.NotAfter, "serial", st.Serial)
				}
				n.writeStatus(n.phase.Load().(string), "")
			}
		}
	}
}
