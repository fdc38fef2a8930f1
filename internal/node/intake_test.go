package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/appverify"
	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sim"
	"github.com/mse-in-go/mse/internal/bundle"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/ratls"
	"github.com/mse-in-go/mse/internal/sealed"
	"github.com/mse-in-go/mse/internal/spec"
)

// TestStage2Refusals: every bad stage-2 request gets its 4xx and a message
// naming the cause, and the node keeps waiting.
func TestStage2Refusals(t *testing.T) {
	b := pyBundle(t, nil)
	tn := startNode(t, b, baseSpec(), func(c *Config) { c.MaxAttempts = 100 })
	otherKey, _ := bundle.NewKey()
	req := func(mod func(*nodeapi.SecretsRequest)) []byte {
		r := tn.request()
		mod(&r)
		out, _ := json.Marshal(r)
		return out
	}
	good := req(func(*nodeapi.SecretsRequest) {})
	huge := append([]byte(`{"uuid":"`+testAppID+`","app_secrets":"`), bytes.Repeat([]byte("a"), 3<<20)...)
	huge = append(huge, `"}`...)
	cases := []struct {
		name string
		body []byte
		ct   string
		code int
		msg  string
	}{
		{"wrong app id", req(func(r *nodeapi.SecretsRequest) { r.UUID = "another-app" }), "", http.StatusForbidden, "wrong app id: this node serves app " + testAppID},
		{"empty app id", req(func(r *nodeapi.SecretsRequest) { r.UUID = "" }), "", http.StatusForbidden, "wrong app id"},
		{"wrong code key", req(func(r *nodeapi.SecretsRequest) { r.CodeSecretKey = otherKey.Hex() }), "", http.StatusUnprocessableEntity, "the code key does not authenticate and decrypt the whole bundle"},
		{"malformed JSON", []byte(`{"uuid":`), "", http.StatusBadRequest, "malformed JSON"},
		{"not JSON", []byte(`uuid=x`), "", http.StatusBadRequest, "malformed JSON: syntax error at byte 1"},
		{"empty body", nil, "", http.StatusBadRequest, "malformed JSON"},
		{"unknown field", []byte(`{"uuid":"` + testAppID + `","code_key":"00"}`), "", http.StatusBadRequest, `unknown field "code_key"`},
		{"wrong type", []byte(`{"uuid":5}`), "", http.StatusBadRequest, `field "uuid" has the wrong type`},
		{"trailing data", append(bytes.Clone(good), []byte(`{"uuid":"x"}`)...), "", http.StatusBadRequest, "trailing data after the object"},
		{"non-hex key", req(func(r *nodeapi.SecretsRequest) { r.CodeSecretKey = strings.Repeat("zz", 32) }), "", http.StatusBadRequest, "code_secret_key: a code key is 64 hexadecimal characters (0-9, a-f)"},
		{"short key", req(func(r *nodeapi.SecretsRequest) { r.CodeSecretKey = b.key.Hex()[:62] }), "", http.StatusBadRequest, "code_secret_key: a code key is 64 hexadecimal characters (32 bytes); got 62 characters"},
		{"zero key", req(func(r *nodeapi.SecretsRequest) { r.CodeSecretKey = strings.Repeat("0", 64) }), "", http.StatusBadRequest, "code_secret_key"},
		{"oversized body", huge, "", http.StatusRequestEntityTooLarge, "request body is larger than 2097152 bytes"},
		{"content type", good, "text/plain", http.StatusUnsupportedMediaType, "Content-Type must be application/json"},
		{"ssl key in self mode", req(func(r *nodeapi.SecretsRequest) { r.SSLPrivateKey = "-----BEGIN PRIVATE KEY-----" }), "", http.StatusBadRequest, `ssl_private_key must not be sent: the app's TLS key is made in the enclave (tls mode "self")`},
		{"sealed to another key", req(func(r *nodeapi.SecretsRequest) {
			k, _ := sealed.NewKey()
			r.SealedSecrets, _ = sealed.Seal(k.Public(), testAppID, []byte(`{"a":1}`))
		}), "", http.StatusUnprocessableEntity, "sealed_secrets: sealed secrets do not open with this enclave's key"},
		{"sealed for another app", req(func(r *nodeapi.SecretsRequest) {
			pub := raClaims(t, tn.peerCert(t)).SealingKey
			r.SealedSecrets, _ = sealed.Seal(pub, "another-app", []byte(`{"a":1}`))
		}), "", http.StatusUnprocessableEntity, "sealed_secrets: sealed secrets do not open"},
		{"sealed not an object", req(func(r *nodeapi.SecretsRequest) {
			pub := raClaims(t, tn.peerCert(t)).SealingKey
			r.SealedSecrets, _ = sealed.Seal(pub, testAppID, []byte(`[1,2]`))
		}), "", http.StatusBadRequest, "sealed_secrets must hold a JSON object"},
		{"app secrets not an object with sealed", req(func(r *nodeapi.SecretsRequest) {
			pub := raClaims(t, tn.peerCert(t)).SealingKey
			r.AppSecrets = json.RawMessage(`"text"`)
			r.SealedSecrets, _ = sealed.Seal(pub, testAppID, []byte(`{"a":1}`))
		}), "", http.StatusBadRequest, "app_secrets must be a JSON object when sealed_secrets are sent"},
		{"app secrets null with sealed", req(func(r *nodeapi.SecretsRequest) {
			pub := raClaims(t, tn.peerCert(t)).SealingKey
			r.AppSecrets = json.RawMessage(`null`)
			r.SealedSecrets, _ = sealed.Seal(pub, testAppID, []byte(`{"a":1}`))
		}), "", http.StatusBadRequest, "app_secrets must be a JSON object when sealed_secrets are sent"},
	}
	// Only a request whose code key authenticates the bundle spends an
	// attempt (docs/protocol.md, "Who can spend what"): anyone can send the
	// others, since app ids are public.
	counted := map[string]bool{
		"ssl key in self mode": true, "sealed to another key": true, "sealed for another app": true,
		"sealed not an object": true, "app secrets not an object with sealed": true, "app secrets null with sealed": true,
	}
	attempts := 0
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hreq, _ := http.NewRequest(http.MethodPost, tn.url("/"), bytes.NewReader(c.body))
			ct := c.ct
			if ct == "" {
				ct = "application/json"
			}
			hreq.Header.Set("Content-Type", ct)
			resp, err := tn.client.Do(hreq)
			if err != nil {
				t.Fatalf("POST: %v", err)
			}
			var r nodeapi.Response
			_ = json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if counted[c.name] {
				attempts++
			}
			if resp.StatusCode != c.code {
				t.Errorf("HTTP %d, want %d (%s)", resp.StatusCode, c.code, r.Error)
			}
			if r.Status != "refused" || !strings.Contains(r.Error, c.msg) {
				t.Errorf("answer %+v, want refused with %q", r, c.msg)
			}
			if r.AttemptsLeft == nil || *r.AttemptsLeft != 100-attempts {
				t.Errorf("attempts_left = %v, want %d", r.AttemptsLeft, 100-attempts)
			}
			// The answer never echoes the key that was sent.
			if strings.Contains(r.Error, b.key.Hex()) || strings.Contains(r.Error, otherKey.Hex()) {
				t.Errorf("the answer echoes a code key: %q", r.Error)
			}
			tn.assertWaiting(t)
		})
	}
	if st := readStatus(t, tn.cfg.StatusFile); st.State != nodeapi.StateWaiting {
		t.Errorf("status = %q, want waiting", st.State)
	}
	// Other methods and paths.
	hreq, _ := http.NewRequest(http.MethodPut, tn.url("/"), nil)
	if resp, err := tn.client.Do(hreq); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PUT / = %v, %v", resp, err)
	}
	hreq, _ = http.NewRequest(http.MethodPost, tn.url("/secrets"), bytes.NewReader(good))
	if resp, err := tn.client.Do(hreq); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST /secrets = %v, %v", resp, err)
	}
	// Finally the right request is accepted.
	if code, r := tn.postRaw(t, good); code != 200 || r.Status != "accepted" {
		t.Fatalf("good request: HTTP %d %+v", code, r)
	}
}

// TestStage2Success: the app starts from the bundle, is served through the
// node's TLS port, gets its environment and secrets (sealed ones merged), and
// a second POST is refused.
func TestStage2Success(t *testing.T) {
	needPython(t)
	b := pyBundle(t, map[string]string{"slow": "1.5"})
	tn := startNode(t, b, baseSpec())
	ra := tn.peerCert(t)
	claims := raClaims(t, ra)
	if !bytes.Equal(claims.CodeDigest, b.digest[:]) {
		t.Errorf("claimed code digest %x, want %x", claims.CodeDigest, b.digest)
	}
	spec := baseSpec()
	spec.ExpiresAt = tn.cfg.Spec.ExpiresAt
	cd, _ := spec.Digest()
	if !bytes.Equal(claims.ConfigDigest, cd) || claims.AppID != testAppID || len(claims.SealingKey) != 32 {
		t.Errorf("claims = %+v", claims)
	}
	// The node answers "Waiting" a moment before its status file says so.
	st := waitStatus(t, tn.cfg.StatusFile, nodeapi.StateWaiting, 5*time.Second)
	if st.State != nodeapi.StateWaiting || st.Fingerprint != ratls.Fingerprint(ra) {
		t.Errorf("status = %+v, want waiting with fingerprint %s", st, ratls.Fingerprint(ra))
	}

	sealedCT, err := sealed.Seal(claims.SealingKey, testAppID, []byte(`{"db_password":"s3cret","api":"sealed wins"}`))
	if err != nil {
		t.Fatal(err)
	}
	req := tn.request()
	req.AppSecrets = json.RawMessage(`{"api":"plain","token":"t0k"}`)
	req.SealedSecrets = sealedCT
	if code, r := tn.post(t, req); code != 200 || r.Status != "accepted" {
		t.Fatalf("POST: HTTP %d %+v", code, r)
	}
	// The app sleeps 1.5 s before it listens: the node is launching.
	waitStatus(t, tn.cfg.StatusFile, nodeapi.StateLaunching, 5*time.Second)
	code, h, _ := tn.get(t, "/")
	if code != http.StatusServiceUnavailable || h.Get(nodeapi.HeaderStatus) != nodeapi.StatusStarting {
		t.Errorf("GET while launching: HTTP %d %q", code, h.Get(nodeapi.HeaderStatus))
	}
	if code, r := tn.post(t, req); code != http.StatusConflict || !strings.Contains(r.Error, "secrets were already accepted") {
		t.Errorf("second POST while launching: HTTP %d %+v, want 409", code, r)
	}

	env := tn.waitApp(t, "/env?x=1")
	waitStatus(t, tn.cfg.StatusFile, nodeapi.StateRunning, 5*time.Second)
	if env["path"] != "/env" || env["method"] != "GET" || env["host"] != tn.addr || env["xff"] != "127.0.0.1" {
		t.Errorf("proxied request: %v", env)
	}
	codeDir := tn.cfg.WorkDir + "/code"
	if env["PORT"] == "" || env["PORT"] == strings.Split(tn.addr, ":")[1] {
		t.Errorf("PORT = %q", env["PORT"])
	}
	if env["MODULE_PATH"] != codeDir || env["cwd"] != codeDir {
		t.Errorf("MODULE_PATH = %q cwd %q, want %s", env["MODULE_PATH"], env["cwd"], codeDir)
	}
	if env["SECRETS_PATH"] != tn.cfg.WorkDir+"/secrets.json" || env["secrets_mode"] != "0o600" {
		t.Errorf("SECRETS_PATH = %q mode %s", env["SECRETS_PATH"], env["secrets_mode"])
	}
	fi, err := os.Stat(env["SECRETS_PATH"])
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secrets file: %v %v", fi, err)
	}
	var secrets map[string]string
	if err := json.Unmarshal([]byte(env["secrets"]), &secrets); err != nil {
		t.Fatalf("secrets %q: %v", env["secrets"], err)
	}
	want := map[string]string{"api": "sealed wins", "token": "t0k", "db_password": "s3cret"}
	for k, v := range want {
		if secrets[k] != v {
			t.Errorf("secrets[%s] = %q, want %q (all: %v)", k, secrets[k], v, secrets)
		}
	}
	if len(secrets) != len(want) {
		t.Errorf("secrets = %v", secrets)
	}
	// Self mode keeps serving the RA-TLS certificate.
	if got := tn.peerCert(t); !got.Equal(ra) {
		t.Error("the running app is not served with the RA-TLS certificate")
	}
	// Once running, POST / is the app's.
	code, r := tn.post(t, req)
	if code != 200 || r.Status != "" {
		t.Errorf("POST / once running: HTTP %d %+v, want the app's answer", code, r)
	}
	// Fresh evidence is still served by the node.
	if code, _, _ := tn.get(t, nodeapi.PathAttestation+"?nonce=00"); code != 200 {
		t.Errorf("attestation once running: HTTP %d", code)
	}
	tn.cancel()
	if err := tn.wait(t, 15*time.Second); err != nil {
		t.Errorf("Run after cancel = %v", err)
	}
	if st := readStatus(t, tn.cfg.StatusFile); st.State != nodeapi.StateStopped {
		t.Errorf("status after cancel = %+v", st)
	}
}

func TestStage2NoSecrets(t *testing.T) {
	needPython(t)
	tn := startNode(t, pyBundle(t, nil), baseSpec())
	if code, r := tn.post(t, tn.request()); code != 200 {
		t.Fatalf("HTTP %d %+v", code, r)
	}
	// Right after the answer, the node no longer says it waits.
	if code, h, body := tn.get(t, "/"); h.Get(nodeapi.HeaderStatus) == nodeapi.StatusWaiting || strings.Contains(string(body), `"waiting"`) {
		t.Errorf("GET / right after acceptance: HTTP %d %s %s", code, h.Get(nodeapi.HeaderStatus), body)
	}
	env := tn.waitApp(t, "/")
	if env["secrets"] != "{}" {
		t.Errorf("secrets without app_secrets = %q, want {}", env["secrets"])
	}
}

// TestOwnerTLS is scenario 2: the owner's certificate and key.
func TestOwnerTLS(t *testing.T) {
	needPython(t)
	chain, keyPEM, leaf := ownerPKI(t, []string{"app.example"}, time.Now().Add(24*time.Hour))
	otherChain, otherKey, _ := ownerPKI(t, []string{"app.example"}, time.Now().Add(24*time.Hour))
	_ = otherChain
	s := baseSpec()
	s.TLSMode = spec.TLSOwner
	s.OwnerCertificate = chain
	b := pyBundle(t, nil)
	tn := startNode(t, b, s, func(c *Config) { c.MaxAttempts = 20 })
	ra := tn.peerCert(t)
	if ra.Equal(leaf) {
		t.Fatal("the configuration endpoint serves the owner's certificate")
	}
	rsaKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	kb, _ := x509.MarshalECPrivateKey(rsaKey)
	sec1 := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
	other, _ := bundle.NewKey()
	cases := []struct {
		name string
		mod  func(*nodeapi.SecretsRequest)
		code int
		msg  string
	}{
		{"missing key", func(r *nodeapi.SecretsRequest) {}, 400, "ssl_private_key is required: the app uses the owner's certificate (scenario 2)"},
		{"key of another certificate", func(r *nodeapi.SecretsRequest) { r.SSLPrivateKey = otherKey }, 422, "ssl_private_key: the private key does not match the owner certificate's public key"},
		{"another SEC 1 key", func(r *nodeapi.SecretsRequest) { r.SSLPrivateKey = sec1 }, 422, "does not match"},
		{"not PEM", func(r *nodeapi.SecretsRequest) { r.SSLPrivateKey = "hello" }, 422, "ssl_private_key: not a PEM private key"},
		{"PEM junk", func(r *nodeapi.SecretsRequest) {
			r.SSLPrivateKey = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("junk")}))
		}, 422, "the PRIVATE KEY does not parse"},
		{"wrong code key first", func(r *nodeapi.SecretsRequest) { r.CodeSecretKey = other.Hex(); r.SSLPrivateKey = keyPEM }, 422, "the code key does not authenticate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := tn.request()
			c.mod(&r)
			code, resp := tn.post(t, r)
			if code != c.code || !strings.Contains(resp.Error, c.msg) {
				t.Errorf("HTTP %d %q, want %d %q", code, resp.Error, c.code, c.msg)
			}
			if strings.Contains(resp.Error, "BEGIN") {
				t.Errorf("the answer echoes the key: %q", resp.Error)
			}
			tn.assertWaiting(t)
		})
	}
	r := tn.request()
	r.SSLPrivateKey = keyPEM
	if code, resp := tn.post(t, r); code != 200 {
		t.Fatalf("right key: HTTP %d %+v", code, resp)
	}
	tn.waitApp(t, "/")
	got := tn.peerCert(t)
	if !got.Equal(leaf) {
		t.Errorf("the app is served with %q, not the owner's certificate", got.Subject)
	}
	// The whole chain is served and verifies for the domain with the owner's CA.
	chainCerts := tn.peerChain(t)
	if len(chainCerts) != 2 {
		t.Fatalf("served chain has %d certificates, want 2", len(chainCerts))
	}
	roots := x509.NewCertPool()
	roots.AddCert(chainCerts[1])
	if _, err := chainCerts[0].Verify(x509.VerifyOptions{DNSName: "app.example", Roots: roots}); err != nil {
		t.Errorf("served chain does not verify: %v", err)
	}
}

func (tn *testNode) peerChain(t testing.TB) []*x509.Certificate {
	t.Helper()
	conn, err := tls.Dial("tcp", tn.addr, &tls.Config{InsecureSkipVerify: true, ServerName: "app.example"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates
}

func TestNewOwnerCertificateChecks(t *testing.T) {
	b := pyBundle(t, nil)
	chain, _, _ := ownerPKI(t, []string{"other.example"}, time.Now().Add(time.Hour))
	expired, _, _ := ownerPKI(t, []string{"app.example"}, time.Now().Add(-time.Minute))
	good, _, _ := ownerPKI(t, []string{"app.example"}, time.Now().Add(time.Hour))
	other, _, _ := ownerPKI(t, []string{"app.example"}, time.Now().Add(time.Hour))
	// The leaf of good followed by the CA of other.
	gb, _ := pem.Decode([]byte(good))
	ob, rest := pem.Decode([]byte(other))
	_ = ob
	crossed := string(pem.EncodeToMemory(gb)) + string(rest)
	cases := []struct{ name, chain, msg string }{
		{"wrong domain", chain, "not valid for app.example"},
		{"expired", expired, "not valid now"},
		{"no PEM", "garbage", "is not a PEM certificate chain"},
		{"broken chain", crossed, "certificate 1 (CN=app.example) is not issued by certificate 2"},
	}
	for _, c := range cases {
		s := baseSpec()
		s.TLSMode = spec.TLSOwner
		s.OwnerCertificate = c.chain
		_, err := New(Config{Spec: s, BundlePath: b.path, WorkDir: t.TempDir(), Issuer: simIssuer{}})
		if err == nil || !strings.Contains(err.Error(), "node: owner certificate: ") || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: New = %v, want %q", c.name, err, c.msg)
		}
	}
	// Configuration errors.
	if _, err := New(Config{Spec: baseSpec(), WorkDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "no evidence issuer") {
		t.Errorf("no issuer: %v", err)
	}
	if _, err := New(Config{Spec: baseSpec(), Issuer: simIssuer{}}); err == nil || !strings.Contains(err.Error(), "no work directory") {
		t.Errorf("no workdir: %v", err)
	}
	bad := baseSpec()
	bad.TLSMode = "nope"
	if _, err := New(Config{Spec: bad, Issuer: simIssuer{}, WorkDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "unknown tls_mode") {
		t.Errorf("bad spec: %v", err)
	}
}

// TestAttemptsBounded: after MaxAttempts failures the node gives up.
func TestAttemptsBounded(t *testing.T) {
	b := pyBundle(t, nil)
	tn := startNode(t, b, baseSpec(), func(c *Config) { c.MaxAttempts = 3 })
	// A holder of the code key who sends what this app refuses.
	r := tn.request()
	r.SSLPrivateKey = "-----BEGIN PRIVATE KEY-----"
	for i := 1; i <= 3; i++ {
		code, resp := tn.post(t, r)
		if code != 400 || resp.AttemptsLeft == nil || *resp.AttemptsLeft != 3-i {
			t.Errorf("attempt %d: HTTP %d %+v", i, code, resp)
		}
	}
	err := tn.wait(t, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "3 failed stage-2 attempts by a holder of the code key, the last: ssl_private_key must not be sent") {
		t.Fatalf("Run = %v, want the failed attempts named", err)
	}
	st := readStatus(t, tn.cfg.StatusFile)
	if st.State != nodeapi.StateError || !strings.Contains(st.Error, "3 failed stage-2 attempts") {
		t.Errorf("status = %+v", st)
	}
}

// TestTooManyAttemptsAnswer: once the attempts are spent, requests get 429
// (served directly, before Run notices).
func TestTooManyAttemptsAnswer(t *testing.T) {
	b := pyBundle(t, nil)
	n := &Node{cfg: Config{Spec: baseSpec(), BundlePath: b.path, MaxAttempts: 1}, fatal: make(chan error, 1), secrets: make(chan *intake, 1)}
	n.attempts = 1
	w := httptest.NewRecorder()
	n.serveSecrets(w, httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{}`)))
	if w.Code != http.StatusTooManyRequests || !strings.Contains(w.Body.String(), "too many failed attempts") {
		t.Errorf("HTTP %d %s", w.Code, w.Body.String())
	}
}

// TestTamperedBundle: a bundle changed after the node hashed it is refused.
func TestTamperedBundle(t *testing.T) {
	b := pyBundle(t, nil)
	tn := startNode(t, b, baseSpec())
	data, err := os.ReadFile(b.path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x01
	if err := os.WriteFile(b.path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	code, r := tn.post(t, tn.request())
	if code != http.StatusUnprocessableEntity || !strings.Contains(r.Error, "the code key does not authenticate and decrypt the whole bundle") {
		t.Errorf("HTTP %d %+v, want 422", code, r)
	}
	tn.assertWaiting(t)
	// Truncated.
	if err := os.WriteFile(b.path, data[:len(data)-10], 0o644); err != nil {
		t.Fatal(err)
	}
	if code, r := tn.post(t, tn.request()); code != http.StatusUnprocessableEntity {
		t.Errorf("truncated: HTTP %d %+v, want 422", code, r)
	}
	// Gone.
	os.Remove(b.path)
	if code, r := tn.post(t, tn.request()); code != http.StatusInternalServerError || !strings.Contains(r.Error, "cannot read its bundle") {
		t.Errorf("missing bundle: HTTP %d %+v", code, r)
	}
}

// TestAppExit: the app's exit ends Run.
func TestAppExit(t *testing.T) {
	needPython(t)
	tn := startNode(t, pyBundle(t, nil), baseSpec())
	if code, r := tn.post(t, tn.request()); code != 200 {
		t.Fatalf("HTTP %d %+v", code, r)
	}
	tn.waitApp(t, "/")
	code, _, body := tn.get(t, "/exit")
	if code != http.StatusBadGateway {
		t.Errorf("GET /exit: HTTP %d %s, want 502", code, body)
	}
	err := tn.wait(t, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "node: the app exited: exit status 3") {
		t.Fatalf("Run = %v", err)
	}
	if st := readStatus(t, tn.cfg.StatusFile); st.State != nodeapi.StateError || !strings.Contains(st.Error, "the app exited") {
		t.Errorf("status = %+v", st)
	}
}

// TestAppExitsAtStart: an app that exits before answering.
func TestAppExitsAtStart(t *testing.T) {
	spec := baseSpec()
	spec.PythonApplication = ""
	spec.Entrypoint = []string{"./run.sh"}
	tn := startNode(t, makeBundle(t, map[string]string{"run.sh": "#!/bin/sh\nexit 7\n"}), spec)
	if code, r := tn.post(t, tn.request()); code != 200 {
		t.Fatalf("HTTP %d %+v", code, r)
	}
	err := tn.wait(t, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "the app exited before it answered its health check: exit status 7") {
		t.Fatalf("Run = %v", err)
	}
}

// TestEntrypointScript: an entrypoint script from the bundle is started with
// PORT set.
func TestEntrypointScript(t *testing.T) {
	needPython(t)
	spec := baseSpec()
	spec.PythonApplication = ""
	spec.Entrypoint = []string{"./bin/run.sh", "x"}
	b := makeBundle(t, map[string]string{
		"bin/run.sh": "#!/bin/sh\n[ \"$1\" = x ] || exit 9\nexec python3 -m http.server \"$PORT\" --bind 127.0.0.1\n",
		"index.html": "hello from the bundle\n",
	})
	tn := startNode(t, b, spec)
	if code, r := tn.post(t, tn.request()); code != 200 {
		t.Fatalf("HTTP %d %+v", code, r)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, _, body := tn.get(t, "/index.html")
		if code == 200 {
			if string(body) != "hello from the bundle\n" {
				t.Errorf("body %q", body)
			}
			break
		}
		if !tn.running() || time.Now().After(deadline) {
			t.Fatalf("the app never answered: HTTP %d, Run: %v", code, tn.runErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The secrets file is not in the served code directory.
	if code, _, _ := tn.get(t, "/secrets.json"); code != 404 {
		t.Errorf("GET /secrets.json: HTTP %d", code)
	}
}

// TestHealthTimeout: an app that never passes its health check fails the
// node within HealthTimeout.
func TestHealthTimeout(t *testing.T) {
	needPython(t)
	for _, path := range []string{"/unhealthy", "/hang"} {
		t.Run(path, func(t *testing.T) {
			spec := baseSpec()
			spec.HealthcheckEndpoint = path
			tn := startNode(t, pyBundle(t, nil), spec, func(c *Config) { c.HealthTimeout = 3 * time.Second })
			start := time.Now()
			if code, r := tn.post(t, tn.request()); code != 200 {
				t.Fatalf("HTTP %d %+v", code, r)
			}
			err := tn.wait(t, 20*time.Second)
			if err == nil || !strings.Contains(err.Error(), "the app did not answer its health check within 3s") {
				t.Fatalf("Run = %v", err)
			}
			if path == "/unhealthy" && !strings.Contains(err.Error(), "health check GET /unhealthy answered HTTP 500") {
				t.Errorf("Run = %v, want the last health answer", err)
			}
			if el := time.Since(start); el > 3*time.Second+1500*time.Millisecond {
				t.Errorf("Run returned after %s, HealthTimeout is 3s", el)
			}
			if st := readStatus(t, tn.cfg.StatusFile); st.State != nodeapi.StateError {
				t.Errorf("status = %+v", st)
			}
		})
	}
}

// TestHealthFailsWhileRunning: three failed health checks in a row stop the node.
func TestHealthFailsWhileRunning(t *testing.T) {
	needPython(t)
	spec := baseSpec()
	spec.HealthcheckEndpoint = "/health"
	tn := startNode(t, pyBundle(t, nil), spec, func(c *Config) { c.HealthInterval = 100 * time.Millisecond })
	if code, r := tn.post(t, tn.request()); code != 200 {
		t.Fatalf("HTTP %d %+v", code, r)
	}
	tn.waitApp(t, "/")
	tn.get(t, "/sick")
	err := tn.wait(t, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "the app failed its health check 3 times in a row: health check GET /health answered HTTP 500") {
		t.Fatalf("Run = %v", err)
	}
}

// TestExpiry: the node stops at the app's expiry, waiting or running.
func TestExpiry(t *testing.T) {
	t.Run("waiting", func(t *testing.T) {
		spec := baseSpec()
		spec.ExpiresAt = time.Now().Add(2 * time.Second)
		tn := startNode(t, pyBundle(t, nil), spec)
		err := tn.wait(t, 10*time.Second)
		if !errors.Is(err, ErrExpired) {
			t.Fatalf("Run = %v, want ErrExpired", err)
		}
		if st := readStatus(t, tn.cfg.StatusFile); st.State != nodeapi.StateStopped || st.Error != ErrExpired.Error() {
			t.Errorf("status = %+v", st)
		}
	})
	t.Run("running", func(t *testing.T) {
		needPython(t)
		spec := baseSpec()
		spec.ExpiresAt = time.Now().Add(3 * time.Second)
		tn := startNode(t, pyBundle(t, nil), spec)
		if code, r := tn.post(t, tn.request()); code != 200 {
			t.Fatalf("HTTP %d %+v", code, r)
		}
		tn.waitApp(t, "/")
		if err := tn.wait(t, 15*time.Second); !errors.Is(err, ErrExpired) {
			t.Fatalf("Run = %v, want ErrExpired", err)
		}
	})
	t.Run("already expired", func(t *testing.T) {
		spec := baseSpec()
		spec.ExpiresAt = time.Now().Add(-time.Second)
		b := pyBundle(t, nil)
		n, err := New(Config{Spec: spec, BundlePath: b.path, WorkDir: t.TempDir(), Issuer: simIssuer{}})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Run(context.Background()); !errors.Is(err, ErrExpired) {
			t.Fatalf("Run = %v", err)
		}
	})
}

// TestAttestationEndpoint: fresh evidence over a nonce, for the connection
// that asked (docs/protocol.md "Verifying a running app"), on ordinary and
// direct (ALPN mse-ratls/1) connections; a relayed or replayed answer is
// refused.
func TestAttestationEndpoint(t *testing.T) {
	b := pyBundle(t, nil)
	tn := startNode(t, b, baseSpec())
	for _, q := range []string{"", "?nonce=", "?nonce=abc", "?nonce=zz", "?nonce=" + strings.Repeat("ab", nodeapi.MaxNonceSize+1)} {
		code, _, body := tn.get(t, nodeapi.PathAttestation+q)
		if code != http.StatusBadRequest || !strings.Contains(string(body), "nonce must be 1 to 64 bytes of hex") {
			t.Errorf("%q: HTTP %d %s", q, code, body)
		}
	}
	ra := tn.peerCert(t)
	opts := tn.ratlsOptions(t)
	// The RA-TLS certificate itself verifies, and says its TLS mode.
	id, err := ratls.Verify(context.Background(), ra, opts)
	if err != nil {
		t.Fatalf("the node's certificate does not verify: %v", err)
	}
	if id.Claims.TLSMode != spec.TLSSelf || id.Claims.ServedKey != nil || id.Claims.TLSExporter != nil {
		t.Errorf("certificate claims: mode %q served %x exporter %x", id.Claims.TLSMode, id.Claims.ServedKey, id.Claims.TLSExporter)
	}

	// A verifier of the running app, as `mse cloud verify` is.
	vo := appverify.Options{Domain: "app.example", Addr: tn.addr, RATLS: opts, Roots: x509.NewCertPool()}
	res, err := appverify.Verify(context.Background(), vo)
	if err != nil {
		t.Fatalf("appverify: %v", err)
	}
	if !res.TerminatedInEnclave || res.Direct || res.Mode != spec.TLSSelf || !bytes.Equal(res.Identity.Certificate.Raw, ra.Raw) {
		t.Errorf("result %+v", res)
	}
	fc := res.Identity.Claims
	if !bytes.Equal(fc.ServedKey, ratls.PubkeyHash(ra)) || len(fc.TLSExporter) != 32 || len(fc.Nonce) != 32 {
		t.Errorf("fresh claims: served %x exporter %x nonce %x", fc.ServedKey, fc.TLSExporter, fc.Nonce)
	}

	// On a direct connection the node presents its RA-TLS certificate and
	// serves its own endpoints.
	dc, err := tls.Dial("tcp", tn.addr, &tls.Config{InsecureSkipVerify: true, ServerName: "app.example", NextProtos: []string{nodeapi.ALPNRATLS}})
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	if cs := dc.ConnectionState(); cs.NegotiatedProtocol != nodeapi.ALPNRATLS || !bytes.Equal(cs.PeerCertificates[0].Raw, ra.Raw) {
		t.Fatalf("direct connection: ALPN %q", cs.NegotiatedProtocol)
	}
	nonce := bytes.Repeat([]byte{0xa}, nodeapi.MaxNonceSize)
	att, ekm := getAttestation(t, dc, nonce)
	if _, err := appverify.CheckFresh(context.Background(), ra, att.Evidence, nonce, ekm, opts); err != nil {
		t.Fatalf("fresh evidence on a direct connection: %v", err)
	}

	// Relay: a client's nonce asked by someone else on their own connection
	// (a router that terminates TLS) gives evidence for that connection.
	other, err := tls.Dial("tcp", tn.addr, &tls.Config{InsecureSkipVerify: true, ServerName: "app.example", NextProtos: []string{nodeapi.ALPNRATLS}})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	relayed, _ := getAttestation(t, other, nonce)
	var ve *ratls.VerifyError
	if _, err := appverify.CheckFresh(context.Background(), ra, relayed.Evidence, nonce, ekm, opts); !errors.As(err, &ve) || ve.Check != "tls_exporter" || !strings.Contains(err.Error(), "made for another TLS connection") {
		t.Errorf("relayed evidence: %v", err)
	}
	// Replay: an old answer for another nonce.
	if _, err := appverify.CheckFresh(context.Background(), ra, att.Evidence, []byte{0xb}, ekm, opts); !errors.As(err, &ve) || ve.Check != "nonce" {
		t.Errorf("evidence for nonce A verified for nonce B: %v", err)
	}
	// A policy that does not accept the measurement refuses it.
	o := opts
	o.Policy = &attest.Policy{TEETypes: []string{attest.TypeSim}, AllowSimulation: true, Measurements: []string{strings.Repeat("00", 32)}}
	if _, err := appverify.CheckFresh(context.Background(), ra, att.Evidence, nonce, ekm, o); !errors.As(err, &ve) || ve.Check != "policy" {
		t.Errorf("measurement outside policy: %v", err)
	}
	// The node keeps waiting.
	tn.assertWaiting(t)
}

// getAttestation asks for fresh evidence on conn and returns the answer and
// the connection's exporter for the nonce.
func getAttestation(t testing.TB, conn *tls.Conn, nonce []byte) (*nodeapi.Attestation, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", "https://app.example"+nodeapi.PathAttestation+"?nonce="+hex.EncodeToString(nonce), nil)
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	att, err := appverify.ParseAttestation(resp.StatusCode, body)
	if err != nil {
		t.Fatalf("attestation answer: %v", err)
	}
	cs := conn.ConnectionState()
	ekm, err := cs.ExportKeyingMaterial(nodeapi.ExporterLabel, nonce, nodeapi.ExporterSize)
	if err != nil {
		t.Fatal(err)
	}
	return att, ekm
}

// ratlsOptions verify this test node's evidence.
func (tn *testNode) ratlsOptions(t testing.TB) ratls.Options {
	cd, err := tn.cfg.Spec.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return ratls.Options{
		Verifiers: func(string) (attest.Verifier, error) { return sim.NewVerifier(tn.plat.RootCertificate(), nil), nil },
		Policy: &attest.Policy{TEETypes: []string{attest.TypeSim}, AllowSimulation: true,
			Measurements: []string{hex.EncodeToString(testMeasurement[:])}},
		Now:    time.Now(),
		Expect: ratls.Expect{Domain: "app.example", AppID: testAppID, CodeDigest: tn.bundle.digest[:], ConfigDigest: cd},
	}
}

// TestSpecDigest: the config digest is stable and covers every field.
func TestSpecDigest(t *testing.T) {
	chain, _, _ := ownerPKI(t, []string{"app.example"}, time.Now().Add(time.Hour))
	base := spec.Spec{
		AppID: "a", Name: "n", Domains: []string{"b.example", "a.example"}, PythonApplication: "app:app",
		HealthcheckEndpoint: "/h", ExpiresAt: time.Unix(2000000000, 0), TLSMode: spec.TLSSelf,
	}
	d0, err := base.Digest()
	if err != nil {
		t.Fatal(err)
	}
	same := base
	same.Domains = []string{"A.example", "b.example"}
	same.ExpiresAt = base.ExpiresAt.Add(300 * time.Millisecond).In(time.FixedZone("x", 3600))
	same.Name = "other name" // the display name is not part of the configuration
	if d, _ := same.Digest(); !bytes.Equal(d, d0) {
		t.Error("the digest depends on domain order/case, sub-second expiry or time zone")
	}
	if d, _ := base.Digest(); !bytes.Equal(d, d0) {
		t.Error("the digest is not stable")
	}
	changes := map[string]func(*spec.Spec){
		"app_id":               func(s *spec.Spec) { s.AppID = "b" },
		"domains":              func(s *spec.Spec) { s.Domains = []string{"a.example"} },
		"domain added":         func(s *spec.Spec) { s.Domains = append(s.Domains, "c.example") },
		"entrypoint":           func(s *spec.Spec) { s.PythonApplication = ""; s.Entrypoint = []string{"./run"} },
		"python_application":   func(s *spec.Spec) { s.PythonApplication = "app:other" },
		"healthcheck_endpoint": func(s *spec.Spec) { s.HealthcheckEndpoint = "/" },
		"expires_at":           func(s *spec.Spec) { s.ExpiresAt = s.ExpiresAt.Add(time.Second) },
		"tls_mode":             func(s *spec.Spec) { s.TLSMode = spec.TLSOperator },
		"owner_certificate":    func(s *spec.Spec) { s.TLSMode = spec.TLSOwner; s.OwnerCertificate = chain },
	}
	seen := map[string]string{}
	for name, mod := range changes {
		s := base
		s.Domains = append([]string(nil), base.Domains...)
		mod(&s)
		d, err := s.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(d, d0) {
			t.Errorf("changing %s does not change the digest", name)
		}
		if prev, ok := seen[string(d)]; ok {
			t.Errorf("%s and %s give the same digest", name, prev)
		}
		seen[string(d)] = name
	}
	// Entrypoint argv boundaries matter.
	e1, e2 := base, base
	e1.PythonApplication, e2.PythonApplication = "", ""
	e1.Entrypoint, e2.Entrypoint = []string{"a b", "c"}, []string{"a", "b c"}
	d1, _ := e1.Digest()
	d2, _ := e2.Digest()
	if bytes.Equal(d1, d2) {
		t.Error("entrypoint argv boundaries are not covered by the digest")
	}
}

// TestConcurrentPosts: of simultaneous good requests exactly one is accepted;
// the others get 409.
func TestConcurrentPosts(t *testing.T) {
	needPython(t)
	tn := startNode(t, pyBundle(t, map[string]string{"slow": "1"}), baseSpec())
	body, _ := json.Marshal(tn.request())
	const n = 6
	codes := make(chan int, n)
	for i := 0; i < n; i++ {
		go func() {
			req, _ := http.NewRequest(http.MethodPost, tn.url("/"), bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := tn.client.Do(req)
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	count := map[int]int{}
	for i := 0; i < n; i++ {
		count[<-codes]++
	}
	if count[200] != 1 || count[409] != n-1 {
		t.Errorf("answers: %v, want one 200 and %d 409", count, n-1)
	}
	tn.waitApp(t, "/")
}

// TestAcceptLeavesWaiting: once the node answered "accepted", it no longer
// says it waits, even before Run picked the secrets up (deterministic, no Run).
func TestAcceptLeavesWaiting(t *testing.T) {
	b := pyBundle(t, nil)
	n, err := New(Config{Spec: baseSpec(), BundlePath: b.path, WorkDir: t.TempDir(), Issuer: simIssuer{}})
	if err != nil {
		t.Fatal(err)
	}
	n.phase.Store(nodeapi.StateWaiting)
	body, _ := json.Marshal(nodeapi.SecretsRequest{UUID: testAppID, CodeSecretKey: b.key.Hex()})
	w := httptest.NewRecorder()
	n.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body)))
	if w.Code != 200 {
		t.Fatalf("POST: HTTP %d %s", w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	n.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
	if w.Code == 200 || w.Header().Get(nodeapi.HeaderStatus) == nodeapi.StatusWaiting {
		t.Errorf("GET after acceptance: HTTP %d %s %s", w.Code, w.Header().Get(nodeapi.HeaderStatus), w.Body)
	}
	w = httptest.NewRecorder()
	n.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body)))
	if w.Code != http.StatusConflict || !strings.Contains(w.Body.String(), "secrets were already accepted") {
		t.Errorf("second POST: HTTP %d %s", w.Code, w.Body)
	}
	select {
	case <-n.secrets:
		// The accepted key unpacked the code, in the node's private directory.
		if _, err := os.Stat(filepath.Join(n.codeDir(), "app.py")); err != nil {
			t.Errorf("the code was not unpacked on acceptance: %v", err)
		}
	default:
		t.Error("nothing was handed to Run")
	}
}
