// Package appverify verifies a running app, in every TLS mode, as any of its
// clients can (docs/protocol.md "Verifying a running app"): it reads the
// certificate that ordinary clients of the domain get, asks the node for
// fresh evidence on that same connection, and checks that the evidence is
// genuine, under the client's policy, made for that connection (TLS
// exporter) and for the key that connection presented. Where the operator
// terminates TLS (operator mode) it says so, and checks the enclave behind
// over a direct connection (ALPN mse-ratls/1).
package appverify

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/ratls"
	"github.com/mse-in-go/mse/internal/spec"
)

// Options configure Verify.
type Options struct {
	// Domain is the app's domain (SNI, Host, and the name certificates must carry).
	Domain string
	// Addr is the host:port to connect to (default Domain:443), e.g. the
	// operator's router.
	Addr string
	// RATLS verifies the RA-TLS certificate and the fresh evidence
	// (verifiers, policy, expected app, code and config digests).
	RATLS ratls.Options
	// Roots verify the served certificate chain in acme and owner modes, as
	// browsers would (nil: the system roots).
	Roots *x509.CertPool
	// Precheck, when set, runs on the RA-TLS certificate before anything
	// else (e.g. the fingerprint the owner published).
	Precheck func(*x509.Certificate) error
	// Dial connects (default: a net.Dialer).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Timeout bounds each connection (default 30 s).
	Timeout time.Duration
}

// Result is what Verify established.
type Result struct {
	// Identity is the enclave: its RA-TLS certificate, verified, and the
	// claims of the fresh evidence.
	Identity *ratls.Identity
	// Mode is the TLS mode the enclave attests (mse-tls-mode).
	Mode string
	// Served is the certificate chain ordinary clients of the domain get.
	Served []*x509.Certificate
	// ServedTrusted says whether Served verifies to Options.Roots for the
	// domain (what a browser checks); ServedTrustError says why not.
	ServedTrusted    bool
	ServedTrustError string
	// TerminatedInEnclave: the ordinary connection ends in the enclave (the
	// fresh evidence carries that connection's TLS exporter).
	TerminatedInEnclave bool
	// Direct: the enclave was checked over a direct connection, because the
	// ordinary one ends before it (operator mode).
	Direct bool
	// Proves are plain statements of what this verification proves and
	// does not, in the order to print them.
	Proves []string
}

// Verify checks the running app at o.Domain.
func Verify(ctx context.Context, o Options) (*Result, error) {
	if o.Addr == "" {
		o.Addr = net.JoinHostPort(o.Domain, "443")
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	// 1. The connection an ordinary client makes.
	ord, err := o.fetch(ctx, false)
	if err != nil {
		return nil, err
	}
	res := &Result{Served: ord.chain}
	served := ord.chain[0]
	if chains, err := served.Verify(x509.VerifyOptions{Roots: o.Roots, DNSName: o.Domain, Intermediates: pool(ord.chain[1:]), CurrentTime: o.now()}); err == nil && len(chains) > 0 {
		res.ServedTrusted = true
	} else if err != nil {
		res.ServedTrustError = err.Error()
	}

	// 2. The enclave's answer on it: its RA-TLS certificate and fresh
	// evidence. A router that terminates TLS forwards the request to the
	// node, whose answer then carries the exporter of another connection.
	var id *ratls.Identity
	if ord.att != nil {
		id, err = o.check(ctx, ord)
		if err != nil {
			var ve *ratls.VerifyError
			if !errors.As(err, &ve) || ve.Check != "tls_exporter" {
				return nil, err
			}
		} else {
			res.TerminatedInEnclave = true
		}
	}
	if res.TerminatedInEnclave {
		res.Identity, res.Mode = id, id.Claims.TLSMode
		if id.Claims.ServedKey == nil || !bytes.Equal(id.Claims.ServedKey, spkiHash(served)) {
			return nil, fail("served_key", "the node terminates this connection but attests that it serves key %s, not the key %s of the certificate it presented; refusing it",
				short(id.Claims.ServedKey), short(spkiHash(served)))
		}
		if err := o.checkMode(res, served); err != nil {
			return nil, err
		}
		return res, nil
	}

	// 3. The ordinary connection ends before the enclave. Check the enclave
	// over a direct connection, then decide whether that is its mode.
	dir, err := o.fetch(ctx, true)
	if err != nil {
		return nil, fmt.Errorf("the connection to %s is not terminated by the enclave, and a direct connection (ALPN %s) to it failed: %w", o.Domain, nodeapi.ALPNRATLS, err)
	}
	if dir.att == nil {
		return nil, fmt.Errorf("verification failed: %s gave no evidence on a direct connection (ALPN %s): %s", o.Domain, nodeapi.ALPNRATLS, dir.attErr)
	}
	if !bytes.Equal(dir.chain[0].Raw, dir.att.Certificate) {
		return nil, fail("certificate", "on a direct connection the node presented a certificate (sha256 %s) other than the RA-TLS certificate it returned with its evidence", ratls.Fingerprint(dir.chain[0]))
	}
	if id, err = o.check(ctx, dir); err != nil {
		return nil, err
	}
	res.Identity, res.Mode, res.Direct = id, id.Claims.TLSMode, true
	if res.Mode != spec.TLSOperator {
		why := "its evidence is bound to another TLS connection (mse-tls-exporter differs)"
		if ord.att == nil {
			why = "it gave no evidence (" + ord.attErr + ")"
		}
		return nil, fail("served_key", "the connection to %s is terminated before the enclave, with a certificate (sha256 %s, issued by %q) whose key the enclave does not attest (it serves %s), and %s; the app's TLS mode is %s, where the enclave itself terminates TLS: someone between you and the enclave (the operator's router?) interposes on the traffic",
			o.Domain, ratls.Fingerprint(served), served.Issuer.String(), short(id.Claims.ServedKey), why, res.Mode)
	}
	res.Proves = append(res.Proves,
		"the enclave behind "+o.Domain+" is genuine and live (checked over a direct connection, ALPN "+nodeapi.ALPNRATLS+")",
		"TLS mode operator (scenario 3): the operator terminates TLS for "+o.Domain+" with its own certificate (issued by "+served.Issuer.String()+"), so the operator can read and change all traffic between clients and the app")
	return res, nil
}

// checkMode adds what the attested mode proves for a connection that ends
// in the enclave.
func (o *Options) checkMode(res *Result, served *x509.Certificate) error {
	id := res.Identity
	enclave := "the connection ends in a genuine enclave that attests this app, and was checked live (fresh evidence bound to the connection)"
	switch res.Mode {
	case spec.TLSSelf:
		if !bytes.Equal(served.Raw, id.Certificate.Raw) {
			return fail("served_key", "TLS mode self, but the served certificate (sha256 %s) is not the node's RA-TLS certificate (sha256 %s)", ratls.Fingerprint(served), id.Fingerprint)
		}
		res.Proves = append(res.Proves, enclave,
			"TLS mode self (scenario 1): the key was made inside the enclave and never left it; the certificate is self-signed, so browsers do not trust it (clients pin it or verify like this)")
	case spec.TLSACME:
		if !bytes.Equal(spkiHash(served), id.Claims.PubkeyHash) {
			return fail("served_key", "TLS mode acme, but the served certificate's key is not the enclave's RA-TLS key")
		}
		trust := "it chains to your trusted roots, so browsers accept it"
		if !res.ServedTrusted {
			trust = "but it does not chain to your trusted roots (" + res.ServedTrustError + ")"
		}
		res.Proves = append(res.Proves, enclave,
			"TLS mode acme: the certificate (issued by "+served.Issuer.String()+") is for the enclave's own key, made inside it and never out of it; "+trust)
	case spec.TLSOwner:
		trust := "it chains to your trusted roots"
		if !res.ServedTrusted {
			trust = "it does not chain to your trusted roots (" + res.ServedTrustError + ")"
		}
		res.Proves = append(res.Proves, enclave,
			"TLS mode owner (scenario 2): the certificate is the owner's ("+trust+"); the enclave holds its key, and the owner holds it too, so the owner could also impersonate the app")
	case spec.TLSOperator:
		res.Proves = append(res.Proves, enclave, "TLS mode operator: this connection reached the enclave's own TLS")
	default:
		return fail("tls_mode", "the node attests an unknown TLS mode %q", res.Mode)
	}
	return nil
}

// fetched is one connection's certificate chain and attestation answer.
type fetched struct {
	chain  []*x509.Certificate
	nonce  []byte
	ekm    []byte
	att    *nodeapi.Attestation
	attErr string // why att is nil
}

// fetch connects (directly: with ALPN mse-ratls/1) and asks for fresh
// evidence over a new nonce on that connection.
func (o *Options) fetch(ctx context.Context, direct bool) (*fetched, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	dial := o.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	raw, err := dial(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to %s: %w", o.Addr, err)
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	protos := []string{"http/1.1"}
	if direct {
		protos = []string{nodeapi.ALPNRATLS}
	}
	conn := tls.Client(raw, &tls.Config{
		ServerName: o.Domain,
		NextProtos: protos,
		MinVersion: tls.VersionTLS12,
		// Peers are checked below: by evidence, and by Roots for what
		// browsers see.
		InsecureSkipVerify: true,
	})
	if err := conn.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake with %s (SNI %s): %w", o.Addr, o.Domain, err)
	}
	cs := conn.ConnectionState()
	if direct && cs.NegotiatedProtocol != nodeapi.ALPNRATLS {
		return nil, fmt.Errorf("%s did not accept a direct connection (ALPN %s); it is not an MSE node, or something in between does not pass it through", o.Domain, nodeapi.ALPNRATLS)
	}
	f := &fetched{chain: cs.PeerCertificates, nonce: make([]byte, 32)}
	if len(f.chain) == 0 {
		return nil, errors.New("the server sent no certificate")
	}
	if _, err := rand.Read(f.nonce); err != nil {
		return nil, err
	}
	if f.ekm, err = cs.ExportKeyingMaterial(nodeapi.ExporterLabel, f.nonce, nodeapi.ExporterSize); err != nil {
		return nil, fmt.Errorf("the TLS connection to %s cannot export keying material (%v); it must be TLS 1.3 or use extended master secret", o.Domain, err)
	}
	u := url.URL{Scheme: "https", Host: o.Domain, Path: nodeapi.PathAttestation, RawQuery: "nonce=" + hex.EncodeToString(f.nonce)}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	req.Header.Set("Accept", "application/json")
	if err := req.Write(conn); err != nil {
		return nil, fmt.Errorf("ask %s for evidence: %w", o.Domain, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return nil, fmt.Errorf("read %s's evidence answer: %w", o.Domain, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, nodeapi.MaxAttestationSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s's evidence answer: %w", o.Domain, err)
	}
	att, err := ParseAttestation(resp.StatusCode, body)
	if err != nil {
		f.attErr = err.Error()
		return f, nil
	}
	f.att = att
	return f, nil
}

// ParseAttestation reads an answer of GET /.mse/attestation (untrusted bytes).
func ParseAttestation(status int, body []byte) (*nodeapi.Attestation, error) {
	if len(body) > nodeapi.MaxAttestationSize {
		return nil, fmt.Errorf("the evidence answer is larger than %d bytes", nodeapi.MaxAttestationSize)
	}
	if status != http.StatusOK {
		var r nodeapi.Response
		if json.Unmarshal(body, &r) == nil && r.Error != "" {
			return nil, fmt.Errorf("HTTP %d: %s", status, r.Error)
		}
		return nil, fmt.Errorf("HTTP %d, not the node's evidence", status)
	}
	var a nodeapi.Attestation
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return nil, fmt.Errorf("the evidence answer is not the node's JSON: %v", err)
	}
	if a.Version != 1 {
		return nil, fmt.Errorf("the evidence answer has version %d; this client reads version 1", a.Version)
	}
	if len(a.Certificate) == 0 || len(a.Evidence) == 0 {
		return nil, errors.New("the evidence answer lacks its certificate or evidence")
	}
	return &a, nil
}

// check verifies an attestation answer: the RA-TLS certificate, then the
// fresh evidence for its key, the nonce, and the exporter of the connection.
func (o *Options) check(ctx context.Context, f *fetched) (*ratls.Identity, error) {
	cert, err := x509.ParseCertificate(f.att.Certificate)
	if err != nil {
		return nil, fail("certificate", "the node's RA-TLS certificate does not parse: %v", err)
	}
	if o.Precheck != nil {
		if err := o.Precheck(cert); err != nil {
			return nil, err
		}
	}
	ro := o.RATLS
	ro.Now = o.now()
	if _, err := ratls.Verify(ctx, cert, ro); err != nil {
		return nil, err
	}
	return CheckFresh(ctx, cert, f.att.Evidence, f.nonce, f.ekm, ro)
}

// CheckFresh verifies fresh evidence for cert's key over nonce, made for the
// connection whose exporter (label nodeapi.ExporterLabel, context nonce) is
// ekm.
func CheckFresh(ctx context.Context, cert *x509.Certificate, evidence, nonce, ekm []byte, o ratls.Options) (*ratls.Identity, error) {
	o.Expect.Nonce = nonce
	id, err := ratls.VerifyFresh(ctx, cert, evidence, o)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(id.Claims.TLSExporter, ekm) {
		return nil, fail("tls_exporter", "the evidence was made for another TLS connection (mse-tls-exporter %s, this connection's is %s): it was relayed or replayed, or this connection ends before the enclave",
			short(id.Claims.TLSExporter), short(ekm))
	}
	return id, nil
}

func (o *Options) now() time.Time {
	if !o.RATLS.Now.IsZero() {
		return o.RATLS.Now
	}
	return time.Now()
}

func fail(check, format string, args ...any) error {
	return &ratls.VerifyError{Check: check, Err: fmt.Errorf("verification failed: "+format, args...)}
}

func spkiHash(c *x509.Certificate) []byte {
	h := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return h[:]
}

func short(b []byte) string {
	if len(b) == 0 {
		return "(none)"
	}
	h := hex.EncodeToString(b)
	if len(h) > 16 {
		h = h[:16] + "…"
	}
	return h
}

func pool(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}
