package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/mse-in-go/mse/internal/appverify"
	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/policyfile"
	"github.com/mse-in-go/mse/internal/attest/sgx/pcs"
	"github.com/mse-in-go/mse/internal/attest/sim"
	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/ratls"
)

// NodeMeasurement is the measurement of the mse-node runtime released with
// this CLI, set at build time (-ldflags -X). The default trust policy accepts
// it and nothing else.
var NodeMeasurement = ""

// DefaultPCS is where the default policy gets SGX collateral: Intel's
// Provisioning Certification Service (v4 API).
const DefaultPCS = pcs.IntelPCS

// trustFlags select the owner's trust policy.
type trustFlags struct {
	policyFile string
	simulation bool
	simRoot    string
}

func (f *trustFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.policyFile, "policy", "", "trust policy file (TOML, docs/trust-policy.md); default: TEE sgx and the mse-node measurement this CLI was released with")
	fs.BoolVar(&f.simulation, "simulation", false, "accept the simulated TEE (sim), which proves nothing about the hardware; for development")
	fs.StringVar(&f.simRoot, "sim-root", "", "PEM root of the simulated platform to trust (default: the one the backend publishes)")
}

// policy returns the effective policy.
func (f *trustFlags) policy() (*attest.Policy, error) {
	var p *attest.Policy
	if f.policyFile != "" {
		var err error
		if p, err = policyfile.Load(f.policyFile); err != nil {
			return nil, err
		}
	} else {
		// SGX collateral from Intel's PCS, as a user on SGX hardware expects.
		p = &attest.Policy{TEETypes: []string{attest.TypeSGX}, Collateral: attest.CollateralSource{PCCS: DefaultPCS}}
		if NodeMeasurement != "" {
			p.Measurements = []string{NodeMeasurement}
		}
	}
	if f.simulation {
		if !slices.Contains(p.TEETypes, attest.TypeSim) {
			p.TEETypes = append(p.TEETypes, attest.TypeSim)
		}
		p.AllowSimulation = true
	}
	return p, nil
}

// checkRuntimeKnown refuses early, with a useful message, when the policy
// names no runtime: this mse was built without the node measurement.
func checkRuntimeKnown(ctx context.Context, p *attest.Policy, c *client.Client) error {
	if len(p.Measurements) > 0 || len(p.Signers) > 0 {
		return nil
	}
	hint := ""
	if c != nil {
		if pl, err := c.Platform(ctx); err == nil && pl.NodeMeasurement != "" {
			hint = fmt.Sprintf(" The operator says its nodes run measurement %s: if that is the mse-node you trust (its SHA-256), put it in a policy file as measurements = [\"%s\"].", pl.NodeMeasurement, pl.NodeMeasurement)
		}
	}
	return fmt.Errorf("the trust policy accepts no runtime: this mse was built without the measurement of its mse-node (use `make build`), and no --policy names one.%s See docs/trust-policy.md", hint)
}

func simAccepted(p *attest.Policy) bool {
	return p.AllowSimulation && slices.Contains(p.TEETypes, attest.TypeSim)
}

// verifiers builds the verifier for each TEE type the policy may meet.
// Each verifier is built once per command, so that its caches (the sim
// attestation-key chain, SGX collateral from a PCCS) serve every check of
// the session: the handshake's and the fresh evidence's.
type verifiers struct {
	simRoot *x509.Certificate
	policy  *attest.Policy
	now     attest.Clock

	mu    sync.Mutex
	built map[string]attest.Verifier
}

func (v *verifiers) For(teeType string) (attest.Verifier, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if vf, ok := v.built[teeType]; ok {
		return vf, nil
	}
	var vf attest.Verifier
	switch teeType {
	case attest.TypeSim:
		if v.simRoot == nil {
			return nil, errors.New("the node presents simulated (sim) evidence and simulation is not accepted: pass --simulation to accept it for development")
		}
		vf = sim.NewVerifier(v.simRoot, v.now)
	default:
		var err error
		if vf, err = newPlatformVerifier(teeType, v.policy, v.now); err != nil {
			return nil, err
		}
	}
	if v.built == nil {
		v.built = map[string]attest.Verifier{}
	}
	v.built[teeType] = vf
	return vf, nil
}

// loadSimRoot returns the simulated platform's root: from --sim-root, else
// from the backend; it must match the policy's pin when there is one.
func (f *trustFlags) loadSimRoot(ctx context.Context, ui *ui, p *attest.Policy, c *client.Client) (*x509.Certificate, error) {
	var pemBytes []byte
	var from string
	switch {
	case f.simRoot != "":
		b, err := os.ReadFile(f.simRoot)
		if err != nil {
			return nil, fmt.Errorf("--sim-root: %w", err)
		}
		pemBytes, from = b, f.simRoot
	case c != nil:
		b, err := c.SimRoot(ctx)
		if err != nil {
			return nil, fmt.Errorf("fetch the simulated platform's root from the backend: %w", err)
		}
		pemBytes, from = b, "the operator's backend"
	default:
		return nil, errors.New("simulation is accepted but no simulated root is known: pass --sim-root FILE (the backend serves it at /v1/sim/root)")
	}
	blk, _ := pem.Decode(pemBytes)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("the simulated root from %s is not a PEM certificate", from)
	}
	root, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the simulated root from %s does not parse: %w", from, err)
	}
	fph := ratls.Fingerprint(root)
	if pin := p.Simulation.RootSHA256; pin != "" {
		if pin != fph {
			return nil, fmt.Errorf("verification failed: the simulated root from %s (sha256 %s…) is not the one your policy pins (%s…)", from, fph[:12], pin[:12])
		}
	} else {
		ui.warn("trusting the simulated root from %s (sha256 %s…); pin it with simulation.root_sha256 in a policy", from, fph[:16])
	}
	return root, nil
}

// pinned verifies the first certificate it sees and then only accepts that
// same certificate, so that every request of a session goes to the node
// that was verified.
type pinned struct {
	verify func(*x509.Certificate) (*ratls.Identity, error)

	mu   sync.Mutex
	cert *x509.Certificate
	id   *ratls.Identity
	err  error
}

// tlsConfig verifies peers itself in VerifyConnection: the node's RA-TLS
// certificate is self-signed, so web PKI does not apply; evidence does.
//
// protos are the ALPN protocols to offer: []string{nodeapi.ALPNRATLS} for a
// direct connection to the enclave (the node's own endpoints, passed through
// by the router in every TLS mode), nil for the app.
func (p *pinned) tlsConfig(serverName string, protos []string) *tls.Config {
	return &tls.Config{
		ServerName:         serverName,
		NextProtos:         protos,
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the node sent no certificate")
			}
			leaf := cs.PeerCertificates[0]
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.cert == nil {
				id, err := p.verify(leaf)
				if err != nil {
					p.err = err
					return err
				}
				p.cert, p.id = leaf, id
				return nil
			}
			if !bytes.Equal(leaf.Raw, p.cert.Raw) {
				return fmt.Errorf("the node's certificate changed since it was verified (sha256 %s…, verified %s…); refusing to talk to it",
					ratls.Fingerprint(leaf)[:12], ratls.Fingerprint(p.cert)[:12])
			}
			return nil
		},
	}
}

func (p *pinned) identity() (*ratls.Identity, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.id, p.err
}

// httpClient sends every request to addr with SNI serverName over a
// connection checked by p, offering ALPN protos (see tlsConfig).
func httpClient(addr, serverName string, p *pinned, protos []string, timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
			TLSClientConfig:     p.tlsConfig(serverName, protos),
			TLSHandshakeTimeout: 10 * time.Second,
			ForceAttemptHTTP2:   false,
		},
	}
}

// verifyError returns the verification error behind a failed request, if any.
func (p *pinned) verifyError(err error) error {
	if _, verr := p.identity(); verr != nil {
		return verr
	}
	return err
}

// nodeURL is the node's base URL (the host only matters for SNI and Host).
func nodeURL(domain string) string { return "https://" + domain }

// checkFresh asks the node for evidence over a fresh nonce, on the pinned
// session, and checks that it was made for this very connection (its TLS
// exporter) and for the verified certificate's key.
func checkFresh(ctx context.Context, hc *http.Client, domain string, p *pinned, opts ratls.Options) (*ratls.Identity, error) {
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, "GET", nodeURL(domain)+nodeapi.PathAttestation+"?nonce="+url.QueryEscape(hex.EncodeToString(nonce)), nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, p.verifyError(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, nodeapi.MaxAttestationSize+1))
	if err != nil {
		return nil, err
	}
	att, err := appverify.ParseAttestation(resp.StatusCode, body)
	if err != nil {
		return nil, fmt.Errorf("the node did not give fresh evidence: %s", sanitize(err.Error()))
	}
	id, _ := p.identity()
	if !bytes.Equal(att.Certificate, id.Certificate.Raw) {
		return nil, errors.New("verification failed: the node answered with another RA-TLS certificate than the one it presented")
	}
	if resp.TLS == nil {
		return nil, errors.New("the answer came on no TLS connection")
	}
	ekm, err := resp.TLS.ExportKeyingMaterial(nodeapi.ExporterLabel, nonce, nodeapi.ExporterSize)
	if err != nil {
		return nil, fmt.Errorf("the TLS connection cannot bind evidence: %w", err)
	}
	return appverify.CheckFresh(ctx, id.Certificate, att.Evidence, nonce, ekm, opts)
}

// getRoot does GET / on the pinned session, whose first handshake verifies
// the node. It returns the answer (body drained), or the verification error
// when that is why the request failed.
func (p *pinned) getRoot(ctx context.Context, hc *http.Client, domain string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", nodeURL(domain)+"/", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, p.verifyError(err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	return resp, nil
}
