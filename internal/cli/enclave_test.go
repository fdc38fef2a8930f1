package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sim"
	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/ratls"
	"github.com/mse-in-go/mse/internal/runtimes"
	"github.com/mse-in-go/mse/internal/spec"
)

// A simulated enclave behind the evil backend: the node makes its key,
// attests (sim evidence from an in-memory platform) the spec the backend
// gives it, serves its RA-TLS certificate on direct connections (ALPN
// mse-ratls/1) and, on the connections the app's users make, the
// certificate of its TLS mode. So deploy runs with verification, and what
// the operator changes in the spec shows in the config digest.

// evilRuntime is the runtime the evil backend's catalog offers.
var evilRuntime = runtimes.Entry{Name: "flask", Image: "mse/flask:bookworm", Digest: "sha256:" + strings.Repeat("ab", 32), Kind: runtimes.KindWSGI}

var simMeasurement = sha256.Sum256([]byte("mse-node, as the evil backend's enclave reports it"))

type simEnclave struct {
	plat *sim.Platform
	id   sim.Identity
	key  *ecdsa.PrivateKey

	// spec is what the node was given (after evilBackend.nodeSpec).
	spec   *spec.Spec
	claims attest.Claims
	ra     *tls.Certificate

	// served is the certificate of the app's users' connections (no ALPN
	// mse-ratls/1); nil: the RA-TLS certificate. Before servedFrom, when
	// set, the RA-TLS certificate (the CA has not issued served yet).
	served     *tls.Certificate
	servedFrom time.Time
	// relayed: the users' connections end before the node (operator mode:
	// the router terminates them and forwards over its own connection), so
	// fresh evidence asked on them carries another connection's exporter.
	relayed bool
}

type simIssuer struct {
	p  *sim.Platform
	id sim.Identity
}

func (i simIssuer) Type() string { return attest.TypeSim }
func (i simIssuer) Issue(_ context.Context, rd [64]byte) ([]byte, error) {
	return i.p.Quote(i.id, rd, time.Now())
}

// newAttestedBackend is an evil backend whose node is a simulated enclave.
// Deploy against it with attestedDeploy.
func newAttestedBackend(t *testing.T) *evilBackend {
	t.Helper()
	e := newEvilBackend(t)
	plat, err := sim.NewPlatformInMemory()
	if err != nil {
		t.Fatal(err)
	}
	rd, err := runtimes.DigestBytes(evilRuntime.Digest)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := sim.Identity{Measurement: simMeasurement, Signer: sim.DevSigner}
	copy(id.RuntimeDigest[:], rd)
	e.enclave = &simEnclave{plat: plat, id: id, key: key}
	e.node.Close()
	e.node = e.newAttestedNode()
	return e
}

// attestedDeploy runs deploy with verification of the simulated enclave
// (the policy accepts its measurement; the sim root comes from the backend).
func (e *evilBackend) attestedDeploy(t *testing.T, path string, extra ...string) (string, string, int) {
	t.Helper()
	pol := filepath.Join(t.TempDir(), "policy.toml")
	body := fmt.Sprintf("tee_types = [\"sim\"]\nallow_simulation = true\nmeasurements = [%q]\n", hex.EncodeToString(simMeasurement[:]))
	if err := os.WriteFile(pol, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if path == "" {
		path = helloworldToml(t)
	}
	return mse(t, append([]string{"cloud", "deploy", "-y", "--timeout", "20s", "--path", path, "--policy", pol, "--simulation"}, extra...)...)
}

// readCreate reads POST /v1/apps as the backend does: the request, then
// the bundle, whose digest must be the one announced. With an enclave, it
// builds the spec the node is given and the node's RA-TLS certificate.
func (e *evilBackend) readCreate(r *http.Request) error {
	_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return err
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	var req client.CreateAppRequest
	h := sha256.New()
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		switch part.FormName() {
		case "config":
			if err := json.NewDecoder(part).Decode(&req); err != nil {
				return err
			}
		case "bundle":
			if _, err := io.Copy(h, part); err != nil {
				return err
			}
		}
	}
	e.received = &req
	if hex.EncodeToString(h.Sum(nil)) != req.CodeDigest {
		return errors.New("the bundle's digest is not code_digest")
	}
	if e.enclave == nil {
		return nil
	}
	sp := &spec.Spec{AppID: evilAppID, Name: req.Name, Domains: []string{e.domain}, Entrypoint: req.Entrypoint, PythonApplication: req.PythonApplication,
		HealthcheckEndpoint: req.HealthcheckEndpoint, ExpiresAt: req.ExpiresAt, TLSMode: req.TLSMode, OwnerCertificate: req.OwnerCertificate,
		Runtime:             spec.Runtime{Name: evilRuntime.Name, Image: evilRuntime.Image, Digest: evilRuntime.Digest, Kind: evilRuntime.Kind},
		StartTimeoutSeconds: req.StartTimeoutSeconds, ACME: req.ACME}
	if e.nodeSpec != nil {
		e.nodeSpec(sp)
	}
	return e.enclave.start(sp, h.Sum(nil))
}

// start makes the node's RA-TLS certificate for sp and the bundle digest.
func (n *simEnclave) start(sp *spec.Spec, codeDigest []byte) error {
	cd, err := sp.Digest()
	if err != nil {
		return err
	}
	rd, _ := runtimes.DigestBytes(sp.Runtime.Digest)
	n.spec = sp
	n.claims = attest.Claims{AppID: sp.AppID, CodeDigest: codeDigest, ConfigDigest: cd, RuntimeDigest: rd, TLSMode: sp.TLSMode}
	now := time.Now()
	der, _, err := ratls.NewCertificate(context.Background(), n.key, simIssuer{n.plat, n.id},
		ratls.Template{DNSNames: sp.Domains, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), Claims: n.claims})
	if err != nil {
		return err
	}
	n.ra = &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: n.key}
	return nil
}

// newAttestedNode is the node's TLS server: direct connections get the
// RA-TLS certificate and the node's own endpoints (stage 2, fresh
// evidence), with their TLS state at hand for the exporter; other
// connections get the certificate of the TLS mode.
func (e *evilBackend) newAttestedNode() *httptest.Server {
	h := http.HandlerFunc(e.serveNode)
	srv := httptest.NewUnstartedServer(h)
	inner := &http.Server{Handler: h, ConnContext: func(ctx context.Context, c net.Conn) context.Context {
		if cn, ok := c.(*closeNotify); ok {
			if pc, ok := cn.Conn.(plainConn); ok {
				if tc, ok := pc.Conn.(*tls.Conn); ok {
					st := tc.ConnectionState()
					return context.WithValue(ctx, directStateKey{}, &st)
				}
			}
		}
		return ctx
	}}
	srv.Config.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){
		nodeapi.ALPNRATLS: func(_ *http.Server, c *tls.Conn, _ http.Handler) {
			ln := &oneConnListener{c: plainConn{c}, done: make(chan struct{})}
			go inner.Serve(ln)
			<-ln.done
		},
	}
	srv.TLS = &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		n := e.enclave
		if n.ra == nil {
			return nil, errors.New("no app yet")
		}
		if slices.Contains(hello.SupportedProtos, nodeapi.ALPNRATLS) {
			return &tls.Config{Certificates: []tls.Certificate{*n.ra}, NextProtos: []string{nodeapi.ALPNRATLS}}, nil
		}
		c := n.ra
		if n.served != nil && time.Now().After(n.servedFrom) {
			c = n.served
		}
		return &tls.Config{Certificates: []tls.Certificate{*c}, NextProtos: []string{"http/1.1"}}, nil
	}}
	srv.StartTLS()
	return srv
}

type directStateKey struct{}

// directState is the TLS state of a direct connection's request (put in
// its context by newAttestedNode: direct requests reach the handler with
// r.TLS nil).
func directState(r *http.Request) *tls.ConnectionState {
	st, _ := r.Context().Value(directStateKey{}).(*tls.ConnectionState)
	return st
}

// serveAttestation answers fresh evidence as the node does: the claims of
// the certificate plus the nonce, the asking connection's exporter and the
// served key. Relayed connections (operator mode) get the exporter of
// another connection: the router's own, to the node.
func (n *simEnclave) serveAttestation(w http.ResponseWriter, r *http.Request) {
	nonce, err := hex.DecodeString(r.URL.Query().Get("nonce"))
	if err != nil || len(nonce) == 0 || len(nonce) > nodeapi.MaxNonceSize {
		http.Error(w, "bad nonce", 400)
		return
	}
	st := r.TLS
	direct := st == nil
	if direct {
		st = directState(r)
	}
	if st == nil {
		http.Error(w, "no TLS state", 500)
		return
	}
	ekm, err := st.ExportKeyingMaterial(nodeapi.ExporterLabel, nonce, nodeapi.ExporterSize)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	if n.relayed && !direct {
		ekm = make([]byte, nodeapi.ExporterSize)
		rand.Read(ekm)
	}
	claims := n.claims
	leaf, _ := x509.ParseCertificate(n.ra.Certificate[0])
	claims.PubkeyHash = ratls.PubkeyHash(leaf)
	claims.Nonce, claims.TLSExporter = nonce, ekm
	if n.spec.TLSMode != spec.TLSOperator {
		servedLeaf := leaf
		if n.served != nil {
			servedLeaf, _ = x509.ParseCertificate(n.served.Certificate[0])
		}
		sk := sha256.Sum256(servedLeaf.RawSubjectPublicKeyInfo)
		claims.ServedKey = sk[:]
	}
	cb, err := claims.Marshal()
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	ev, err := simIssuer{n.plat, n.id}.Issue(r.Context(), attest.ReportData(cb))
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	tagged, err := ratls.EncodeTagged(attest.TypeSim, ev, cb)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(nodeapi.Attestation{Version: 1, Certificate: n.ra.Certificate[0], Evidence: tagged})
}

// testCA is a CA that issues server certificates (an ACME CA's issuing
// root, or the operator's CA).
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a server certificate for domain and key's public key.
func (ca *testCA) issue(t *testing.T, domain string, key *ecdsa.PrivateKey) *tls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: domain}, DNSNames: []string{domain},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(12 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key}
}

func writeTemp(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
