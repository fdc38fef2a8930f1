package node

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/bundle"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/ratls"
	"github.com/mse-in-go/mse/internal/spec"
)

// maxRequest bounds a stage-2 request body.
const maxRequest = 2 << 20

// ServeHTTP serves the configuration endpoint while waiting, then the app.
func (n *Node) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == nodeapi.PathAttestation && r.Method == http.MethodGet {
		n.serveAttestation(w, r)
		return
	}
	switch n.phase.Load().(string) {
	case nodeapi.StateRunning:
		// Run stores the proxy before it enters this phase.
		(*n.proxy.Load()).ServeHTTP(w, r)
	case nodeapi.StateLaunching:
		if r.Method == http.MethodPost {
			// Stage 2 is over: say so, rather than "starting", to a client
			// that repeats its request.
			writeAlreadyAccepted(w)
			return
		}
		w.Header().Set(nodeapi.HeaderStatus, nodeapi.StatusStarting)
		writeJSON(w, http.StatusServiceUnavailable, nodeapi.Response{Status: "starting", Error: "the app is starting"})
	case nodeapi.StateWaiting:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			w.Header().Set(nodeapi.HeaderStatus, nodeapi.StatusWaiting)
			writeJSON(w, http.StatusOK, map[string]string{"status": "waiting", "app_id": n.cfg.Spec.AppID})
		case http.MethodPost:
			if r.URL.Path != "/" {
				writeJSON(w, http.StatusNotFound, nodeapi.Response{Status: "refused", Error: "POST the secrets to /"})
				return
			}
			n.serveSecrets(w, r)
		default:
			writeJSON(w, http.StatusMethodNotAllowed, nodeapi.Response{Status: "refused", Error: "use GET or POST"})
		}
	default:
		writeJSON(w, http.StatusServiceUnavailable, nodeapi.Response{Status: "starting"})
	}
}

func writeAlreadyAccepted(w http.ResponseWriter) {
	writeJSON(w, http.StatusConflict, alreadyAccepted)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// refusal is a stage-2 request the node refuses.
type refusal struct {
	code int
	msg  string
	// notCounted: the refusal does not use up an attempt, because the
	// sender did not prove it holds the code key (anyone can send it), or
	// the failure is not the sender's (e.g. the node cannot read its bundle).
	notCounted bool
}

// Stage 2 in three steps (docs/protocol.md, "Who can spend what"):
// readSecrets reads and parses the request under a deadline, checkKey proves
// the code key on the bundle's first segment, both without the node's lock
// and without spending an attempt; only then does a request that holds the
// key take the lock for check, which decrypts the whole bundle and checks the
// rest. A stranger's request never waits for, nor holds, the lock.
func (n *Node) serveSecrets(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	// Recorders in unit tests support no deadlines; real connections do.
	_ = rc.SetReadDeadline(time.Now().Add(n.cfg.RequestTimeout))
	answer := func(code int, v any) {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		writeJSON(w, code, v)
	}
	n.mu.Lock()
	accepted, spent, left := n.accepted, n.attempts >= n.cfg.MaxAttempts, n.cfg.MaxAttempts-n.attempts
	n.mu.Unlock()
	if accepted {
		answer(http.StatusConflict, alreadyAccepted)
		return
	}
	if spent {
		answer(http.StatusTooManyRequests, tooManyAttempts)
		return
	}
	req, key, ref := n.readSecrets(r)
	if ref == nil {
		ref = n.checkKey(key)
	}
	if ref != nil {
		n.logFree(ref)
		answer(ref.code, nodeapi.Response{Status: "refused", Error: ref.msg, AttemptsLeft: &left})
		return
	}
	// The request can no longer be slow: it has been read. Its connection
	// must not be evicted while the bundle is checked.
	_ = rc.SetReadDeadline(time.Time{})
	if lc := connOf(r.Context()); lc != nil {
		lc.busy.Add(1)
		defer lc.busy.Add(-1)
	}

	n.mu.Lock()
	defer n.mu.Unlock()
	if n.accepted { // a POST that waited for the lock while another was accepted
		answer(http.StatusConflict, alreadyAccepted)
		return
	}
	if n.attempts >= n.cfg.MaxAttempts {
		answer(http.StatusTooManyRequests, tooManyAttempts)
		return
	}
	in, ref := n.check(req, key)
	if ref != nil {
		if !ref.notCounted {
			n.attempts++
		}
		left := n.cfg.MaxAttempts - n.attempts
		// The message names the failed check; it never echoes what was sent.
		n.log.Warn("refused stage-2 request", "reason", ref.msg, "attempts_left", left)
		answer(ref.code, nodeapi.Response{Status: "refused", Error: ref.msg, AttemptsLeft: &left})
		if left == 0 {
			select {
			case n.fatal <- fmt.Errorf("node: %d failed stage-2 attempts by a holder of the code key, the last: %s", n.attempts, ref.msg):
			default:
			}
		}
		return
	}
	n.accepted = true
	// Leave the waiting phase before answering: a request that follows the
	// answer must not see "Waiting" (200) as if it came from the app.
	n.phase.Store(nodeapi.StateLaunching)
	answer(http.StatusOK, nodeapi.Response{Status: "accepted"})
	n.secrets <- in
}

var (
	alreadyAccepted = nodeapi.Response{Status: "refused", Error: "secrets were already accepted"}
	tooManyAttempts = nodeapi.Response{Status: "refused", Error: "too many failed attempts; the node stopped accepting secrets"}
)

// logFree logs a refusal that spent no attempt, at most one line a second:
// anyone can send those.
func (n *Node) logFree(ref *refusal) {
	ok, suppressed := n.freeLog.allow(time.Now())
	if !ok {
		return
	}
	n.log.Info("refused stage-2 request (no attempt spent)", "reason", ref.msg, "suppressed_since_last", suppressed)
}

// readSecrets reads, bounds and parses a stage-2 request, and checks what
// needs no key: the app id and the form of the code key. Every refusal here
// is free (notCounted).
func (n *Node) readSecrets(r *http.Request) (req *nodeapi.SecretsRequest, key bundle.Key, ref *refusal) {
	bad := func(code int, format string, args ...any) (*nodeapi.SecretsRequest, bundle.Key, *refusal) {
		return nil, bundle.Key{}, &refusal{code: code, msg: fmt.Sprintf(format, args...), notCounted: true}
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return bad(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	}
	body, done, err := readBody(r.Body, maxRequest, n.bodies)
	defer done()
	switch {
	case errors.Is(err, errTooLarge):
		return bad(http.StatusRequestEntityTooLarge, "request body is larger than %d bytes", maxRequest)
	case errors.Is(err, errBusy):
		return bad(http.StatusServiceUnavailable, "%v; retry in a few seconds", errBusy)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return bad(http.StatusRequestTimeout, "the request body was not received within %s", n.cfg.RequestTimeout)
	case err != nil:
		return bad(http.StatusBadRequest, "could not read the request body")
	}
	req = &nodeapi.SecretsRequest{}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(req); err != nil {
		return bad(http.StatusBadRequest, "malformed JSON: %v", jsonErr(err))
	}
	if dec.More() {
		return bad(http.StatusBadRequest, "malformed JSON: trailing data after the object")
	}
	if req.UUID != n.cfg.Spec.AppID {
		return bad(http.StatusForbidden, "wrong app id: this node serves app %s", n.cfg.Spec.AppID)
	}
	if key, err = bundle.ParseKey(req.CodeSecretKey); err != nil {
		return bad(http.StatusBadRequest, "code_secret_key: %v", err)
	}
	return req, key, nil
}

// checkKey proves the code key: it authenticates the bundle's first segment
// (one segment of work, at most 8 MiB). A key that does not is refused
// without spending an attempt: it shows nothing of its sender.
func (n *Node) checkKey(key bundle.Key) *refusal {
	f, err := n.openBundle()
	if err != nil {
		return &refusal{code: http.StatusInternalServerError, msg: "the node cannot read its bundle", notCounted: true}
	}
	defer f.Close()
	if _, err := bundle.Decrypt(f, key); err != nil {
		return &refusal{code: http.StatusUnprocessableEntity, msg: fmt.Sprintf("the code key does not authenticate and decrypt the whole bundle: %v", err), notCounted: true}
	}
	return nil
}

// check checks a stage-2 request whose key authenticated the bundle's first
// segment. On the way it decrypts the bundle and unpacks it into the node's
// private code directory: the key is accepted only if it authenticates and
// decrypts the whole bundle, and launch then needs no second pass. A refusal
// removes what was unpacked. Refusals here are counted: only a holder of the
// code key gets this far.
func (n *Node) check(req *nodeapi.SecretsRequest, key bundle.Key) (in *intake, ref *refusal) {
	bad := func(code int, format string, args ...any) (*intake, *refusal) {
		return nil, &refusal{code: code, msg: fmt.Sprintf(format, args...)}
	}
	codeDir := n.codeDir()
	defer func() {
		if ref != nil {
			_ = os.RemoveAll(codeDir)
		}
	}()
	app := n.cfg.Spec
	in = &intake{}
	f, err := n.openBundle()
	if err != nil {
		return nil, &refusal{code: http.StatusInternalServerError, msg: "the node cannot read its bundle", notCounted: true}
	}
	defer f.Close()
	if err := os.RemoveAll(codeDir); err != nil {
		return nil, &refusal{code: http.StatusInternalServerError, msg: "the node cannot prepare its code directory", notCounted: true}
	}
	if _, err := bundle.Open(f, key, codeDir, n.cfg.Limits); err != nil {
		return bad(http.StatusUnprocessableEntity, "the code key does not authenticate and decrypt the whole bundle: %v", err)
	}
	switch app.TLSMode {
	case spec.TLSOwner:
		if req.SSLPrivateKey == "" {
			return bad(http.StatusBadRequest, "ssl_private_key is required: the app uses the owner's certificate (scenario 2)")
		}
		cert, err := ownerCertificate(app.OwnerCertificate, req.SSLPrivateKey, app.Domains, n.cfg.Now())
		if err != nil {
			return bad(http.StatusUnprocessableEntity, "ssl_private_key: %v", err)
		}
		in.ownerCert = cert
	default:
		if req.SSLPrivateKey != "" {
			return bad(http.StatusBadRequest, "ssl_private_key must not be sent: the app's TLS key is made in the enclave (tls mode %q)", app.TLSMode)
		}
	}
	secrets := []byte(req.AppSecrets)
	if len(req.SealedSecrets) > 0 {
		pt, err := n.sealKey.Open(app.AppID, req.SealedSecrets)
		if err != nil {
			return bad(http.StatusUnprocessableEntity, "sealed_secrets: %v", err)
		}
		if secrets, err = nodeapi.MergeSecrets(secrets, pt); err != nil {
			return bad(http.StatusBadRequest, "%v", err)
		}
		in.sealedSecrets = pt
	}
	in.appSecrets = secrets
	return in, nil
}

func jsonErr(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %q has the wrong type", te.Field)
	}
	// Unknown-field errors name the field, never a value.
	return err.Error()
}

// parseOwnerChain checks the owner's PEM chain with the rules mse.toml's
// cloud.ssl.certificate follows (spec.ParseCertificateChainPEM), and that
// the leaf is valid now and for every domain.
func parseOwnerChain(chainPEM string, domains []string, now time.Time) ([]*x509.Certificate, error) {
	certs, err := spec.ParseCertificateChainPEM([]byte(chainPEM), "the owner certificate")
	if err != nil {
		return nil, err
	}
	leaf := certs[0]
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("the certificate is not valid now (valid %s to %s)", leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	for _, d := range domains {
		if err := leaf.VerifyHostname(d); err != nil {
			return nil, fmt.Errorf("the certificate is not valid for %s: %v", d, err)
		}
	}
	return certs, nil
}

// ownerCertificate pairs the owner's chain with the private key from stage 2.
func ownerCertificate(chainPEM, keyPEM string, domains []string, now time.Time) (*tls.Certificate, error) {
	certs, err := parseOwnerChain(chainPEM, domains, now)
	if err != nil {
		return nil, err
	}
	key, err := spec.ParsePrivateKeyPEM([]byte(keyPEM))
	if err != nil {
		return nil, err
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(certs[0].PublicKey) {
		return nil, errors.New("the private key does not match the owner certificate's public key")
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, c := range certs {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc, nil
}

// serveAttestation answers fresh evidence over a verifier's nonce
// (docs/protocol.md "Verifying a running app"): the claims of the RA-TLS
// certificate plus the nonce, the exporter of the asking connection and the
// hash of the key the node serves, with the RA-TLS certificate beside them.
func (n *Node) serveAttestation(w http.ResponseWriter, r *http.Request) {
	nonce, err := hex.DecodeString(r.URL.Query().Get("nonce"))
	if err != nil || len(nonce) == 0 || len(nonce) > nodeapi.MaxNonceSize {
		writeJSON(w, http.StatusBadRequest, nodeapi.Response{Status: "refused", Error: fmt.Sprintf("nonce must be 1 to %d bytes of hex", nodeapi.MaxNonceSize)})
		return
	}
	cs, err := tlsState(r)
	var ekm []byte
	if err == nil {
		ekm, err = cs.ExportKeyingMaterial(nodeapi.ExporterLabel, nonce, nodeapi.ExporterSize)
	}
	if err != nil {
		// TLS 1.2 without extended master secret cannot export.
		writeJSON(w, http.StatusBadRequest, nodeapi.Response{Status: "refused", Error: "this connection cannot bind evidence (no TLS exporter: " + err.Error() + "); connect with TLS 1.3"})
		return
	}
	select {
	case n.quoteSem <- struct{}{}:
		defer func() { <-n.quoteSem }()
	case <-r.Context().Done():
		return
	}
	claims := n.claims
	claims.PubkeyHash = ratls.PubkeyHash(n.raCert.Leaf)
	claims.Nonce = nonce
	claims.TLSExporter = ekm
	claims.ServedKey = n.servedKeyHash()
	cb, err := claims.Marshal()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, nodeapi.Response{Status: "error", Error: "encode claims"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	ev, err := n.cfg.Issuer.Issue(ctx, attest.ReportData(cb))
	if err != nil {
		n.log.Error("fresh evidence", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, nodeapi.Response{Status: "error", Error: "the node could not obtain evidence"})
		return
	}
	tagged, err := ratls.EncodeTagged(n.cfg.Issuer.Type(), ev, cb)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, nodeapi.Response{Status: "error", Error: "encode evidence"})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, nodeapi.Attestation{Version: 1, Certificate: n.raCert.Leaf.Raw, Evidence: tagged})
}
