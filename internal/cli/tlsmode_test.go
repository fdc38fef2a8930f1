package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/config"
	"github.com/mse-in-go/mse/internal/spec"
)

const (
	operatorCA   = "https://acme.operator.example/directory"
	otherCA      = "https://acme.elsewhere.example/directory"
	ownersCA     = "https://acme.owner.example/directory"
	warningStart = "WARNING: --untrusted-ssl: the operator terminates TLS for this app with its own certificate, so the operator can read and change ALL traffic"
)

// acmePlatform is a backend that offers tls_mode acme with operatorCA (and
// roots for its HTTPS server) as its default.
func acmePlatform(t *testing.T) client.Platform {
	roots := string(newTestCA(t, "operator's ACME CA HTTPS root").pem)
	return client.Platform{TEE: "sim", TLSModes: []string{"self", "owner", "acme"},
		ACME: &spec.ACME{DirectoryURL: operatorCA, RootsPEM: roots}, ACMEDirectories: []string{operatorCA, ownersCA}}
}

// acmeProject is helloworld with a [cloud.acme] table.
func acmeProject(t *testing.T, table string) string {
	t.Helper()
	src := filepath.Dir(helloworldToml(t))
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join(src, "mse.toml"))
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(string(b), `code = "mse_src"`, `code = "`+filepath.ToSlash(filepath.Join(src, "mse_src"))+`"`, 1)
	doc = strings.Replace(doc, `tests = "tests"`, "", 1)
	p := filepath.Join(dir, "mse.toml")
	if err := os.WriteFile(p, []byte(doc+"\n[cloud.acme]\n"+table), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func contextOf(t *testing.T) *AppContext {
	t.Helper()
	ac, err := readContextFile(filepath.Join(os.Getenv("MSE_CONFIG_DIR"), "contexts", evilAppID+".toml"))
	if err != nil {
		t.Fatal(err)
	}
	return ac
}

// TestAttestedDeploySelf: the simulated enclave behind the evil backend
// passes a deploy with verification when the operator changes nothing (so
// the tests below fail for the reason they name).
func TestAttestedDeploySelf(t *testing.T) {
	e := newAttestedBackend(t)
	out, errs, code := e.attestedDeploy(t, "")
	if code != 0 {
		t.Fatalf("deploy failed:\n%s\n%s", out, errs)
	}
	for _, want := range []string{"✔ Verified the enclave: TEE sim (SIMULATED)", "✔ Fresh evidence over a random nonce verified", "✔ The app answers over TLS (HTTP 200, 12 bytes from /)"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
	if !strings.Contains(out, "  curl --cacert ") || !strings.Contains(out, "mse cloud verify "+e.domain) {
		t.Errorf("stdout:\n%s", out)
	}
}

// TestDeployACMEDefaultCA: --acme takes the operator's default CA and its
// roots, says so, sends them in the request, and the node's attested config
// digest covers them. The app serves a CA's certificate for the enclave's
// key: deploy accepts it by that key and prints a plain curl line.
func TestDeployACMEDefaultCA(t *testing.T) {
	e := newAttestedBackend(t)
	e.platform, e.mode = acmePlatform(t), "acme"
	ca := newTestCA(t, "Test ACME issuing CA")
	e.enclave.served = ca.issue(t, e.domain, e.enclave.key)
	caFile := writeTemp(t, "ca.pem", ca.pem)
	out, errs, code := e.attestedDeploy(t, "", "--acme", "--cacert", caFile)
	if code != 0 {
		t.Fatalf("deploy failed:\n%s\n%s", out, errs)
	}
	req := e.received
	if req.TLSMode != "acme" || req.ACME == nil || *req.ACME != *e.platform.ACME || req.Domain != "" {
		t.Fatalf("request: tls_mode %q, acme %+v, domain %q", req.TLSMode, req.ACME, req.Domain)
	}
	for _, want := range []string{
		"✔ Read " + helloworldToml(t) + `: app "helloworld" (python_application app:app), TLS acme`,
		"✔ ACME CA " + operatorCA + " (the operator's default); the node reaches it over HTTPS trusting roots the operator gives (1 certificates), and your config digest covers it",
		"with a certificate from CN=Test ACME issuing CA for the enclave's own key",
		"it chains to your trusted roots for " + e.domain,
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
	port := e.node.URL[strings.LastIndex(e.node.URL, ":")+1:]
	words, err := shellWords(lineAfter(out, "Try it:"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"curl", "--cacert", caFile, "--resolve", e.domain + ":" + port + ":127.0.0.1", "https://" + e.domain + ":" + port + "/"}
	if strings.Join(words, " ") != strings.Join(want, " ") {
		t.Errorf("curl line %q, want %q", words, want)
	}
	if strings.Contains(out, "may take a moment") {
		t.Errorf("the issuance note is printed though the certificate is issued:\n%s", out)
	}
	if ac := contextOf(t); ac.TLSMode != "acme" || ac.ACMEDirectory != operatorCA {
		t.Errorf("context: tls_mode %q, acme_directory %q", ac.TLSMode, ac.ACMEDirectory)
	}
}

// TestDeployACMEWaitsForIssuance: the CA's certificate comes a moment
// after the app runs; deploy waits for it and reports it.
func TestDeployACMEWaitsForIssuance(t *testing.T) {
	e := newAttestedBackend(t)
	e.platform, e.mode = acmePlatform(t), "acme"
	ca := newTestCA(t, "Slow ACME CA")
	e.enclave.served = ca.issue(t, e.domain, e.enclave.key)
	e.enclave.servedFrom = time.Now().Add(3 * time.Second)
	out, errs, code := e.attestedDeploy(t, "", "--acme")
	if code != 0 {
		t.Fatalf("deploy failed:\n%s\n%s", out, errs)
	}
	if !strings.Contains(errs, "with a certificate from CN=Slow ACME CA for the enclave's own key") || strings.Contains(out, "may take a moment") {
		t.Fatalf("deploy did not wait for the CA's certificate:\n%s\n%s", out, errs)
	}
	// Without --cacert the test CA is not trusted: said, not fatal.
	if !strings.Contains(errs, "WARNING: the CA's certificate for "+e.domain+" does not chain to your trusted roots") {
		t.Errorf("stderr:\n%s", errs)
	}
}

// TestDeployACMEFromMseToml: the CA, its roots and the email come from
// [cloud.acme]; the custom domain goes in the request and the backend must
// assign exactly it.
func TestDeployACMEFromMseToml(t *testing.T) {
	roots := writeTemp(t, "roots.pem", newTestCA(t, "owner's CA HTTPS root").pem)
	path := acmeProject(t, `directory_url = "`+ownersCA+`"`+"\nroots = \""+filepath.ToSlash(roots)+"\"\nemail = \"ops@example.com\"\n")
	e := newAttestedBackend(t)
	e.platform, e.mode = acmePlatform(t), "acme"
	old := acmeIssueWait
	acmeIssueWait = 1500 * time.Millisecond
	t.Cleanup(func() { acmeIssueWait = old })
	start := time.Now()
	out, errs, code := e.attestedDeploy(t, path)
	if code != 0 {
		t.Fatalf("deploy failed:\n%s\n%s", out, errs)
	}
	rootsPEM, _ := os.ReadFile(roots)
	if a := e.received.ACME; a == nil || a.DirectoryURL != ownersCA || a.RootsPEM != string(rootsPEM) || a.Email != "ops@example.com" {
		t.Fatalf("request acme %+v", a)
	}
	if !strings.Contains(errs, "✔ ACME CA "+ownersCA+" (from mse.toml); the node reaches it over HTTPS trusting roots from mse.toml (1 certificates)") {
		t.Errorf("stderr:\n%s", errs)
	}
	// Before the CA issued its certificate, the node serves its RA-TLS
	// certificate: deploy waits acmeIssueWait for the CA's, then accepts
	// the RA-TLS certificate, and says so.
	if time.Since(start) < acmeIssueWait {
		t.Errorf("deploy did not wait for the CA's certificate")
	}
	if !strings.Contains(errs, "still with the enclave's RA-TLS certificate: the CA has not issued its certificate yet") ||
		!strings.Contains(out, "the CA's certificate may take a moment to be issued") {
		t.Errorf("no word of the pending issuance:\n%s\n%s", out, errs)
	}

	// A custom domain: sent, and the backend may assign no other.
	path = acmeProject(t, "domain_name = \"shop.example.com\"\n")
	e = newEvilBackend(t)
	e.platform, e.mode = acmePlatform(t), "acme"
	_, errs, code = e.deploy(t, "--path", path)
	if code == 0 || !strings.Contains(errs, "not your domain shop.example.com; refusing to continue") || e.keyAccepted {
		t.Fatalf("deploy: exit %d, key accepted %v\n%s", code, e.keyAccepted, errs)
	}
	if e.received.Domain != "shop.example.com" || e.received.ACME == nil || e.received.ACME.DirectoryURL != operatorCA {
		t.Fatalf("request domain %q, acme %+v", e.received.Domain, e.received.ACME)
	}
}

// TestMaliciousBackendSwapsACME: an operator that sends the node to
// another CA (or changes its roots or contact, or drops acme), whatever it
// shows in its answers, is caught by the config digest before any secret
// is sent, and the app is stopped.
func TestMaliciousBackendSwapsACME(t *testing.T) {
	otherRoots := string(newTestCA(t, "operator's own root").pem)
	cases := []struct {
		name string
		swap func(*spec.Spec)
	}{
		{"another directory", func(s *spec.Spec) { s.ACME.DirectoryURL = otherCA }},
		{"other roots", func(s *spec.Spec) { s.ACME.RootsPEM = otherRoots }},
		{"no roots (system roots)", func(s *spec.Spec) { s.ACME.RootsPEM = "" }},
		{"another contact", func(s *spec.Spec) { s.ACME.Email = "operator@evil.example" }},
		{"tls_mode self", func(s *spec.Spec) { s.TLSMode, s.ACME = spec.TLSSelf, nil }},
		{"tls_mode operator", func(s *spec.Spec) { s.TLSMode, s.ACME = spec.TLSOperator, nil }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newAttestedBackend(t)
			e.platform, e.mode = acmePlatform(t), "acme"
			e.nodeSpec = func(s *spec.Spec) {
				a := *s.ACME
				s.ACME = &a
				c.swap(s)
			}
			// Its answers show the CA the owner asked for.
			e.answerSpec = func(s *spec.Spec) {
				s.TLSMode = "acme"
				s.ACME = e.received.ACME
			}
			out, errs, code := e.attestedDeploy(t, "", "--acme")
			if code == 0 {
				t.Fatalf("deploy succeeded:\n%s\n%s", out, errs)
			}
			if !strings.Contains(errs, "Error: verification failed: the node attests config digest ") || !strings.Contains(errs, "the operator changed the app's configuration") {
				t.Fatalf("not refused by the config digest:\n%s", errs)
			}
			if e.keyAccepted || strings.Contains(errs, "Sent the code key") || !e.stopped {
				t.Fatalf("key accepted %v, app stopped %v:\n%s", e.keyAccepted, e.stopped, errs)
			}
			if _, err := os.Stat(filepath.Join(os.Getenv("MSE_CONFIG_DIR"), "contexts", evilAppID+".toml")); err == nil {
				t.Fatal("a context was saved")
			}
		})
	}
}

// TestMaliciousRouterACMECertificate: the router serves, for the app's
// domain, a certificate for a key that is not the enclave's (one the
// operator got from a CA): deploy refuses it, naming the cause.
func TestMaliciousRouterACMECertificate(t *testing.T) {
	e := newAttestedBackend(t)
	e.platform, e.mode = acmePlatform(t), "acme"
	ca := newTestCA(t, "Public CA")
	operatorKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	e.enclave.served = ca.issue(t, e.domain, operatorKey)
	_, errs, code := e.attestedDeploy(t, "", "--acme", "--cacert", writeTemp(t, "ca.pem", ca.pem))
	if code == 0 {
		t.Fatalf("deploy accepted the operator's certificate:\n%s", errs)
	}
	if !strings.Contains(errs, "is not for the key the enclave attested; in tls_mode acme the app serves only the enclave's own key") {
		t.Fatalf("error:\n%s", errs)
	}
	assertInert(t, "stderr", errs)
}

// TestDeployOperator: --untrusted-ssl asks for tls_mode operator, warns
// before anything is uploaded and again at the end, verifies the enclave
// over its own TLS, checks the enclave behind the router with fresh
// evidence over a direct connection, and the operator's certificate with
// the system roots plus --cacert; it says what was not checked.
func TestDeployOperator(t *testing.T) {
	for _, withCA := range []bool{true, false} {
		t.Run(map[bool]string{true: "with --cacert", false: "system roots"}[withCA], func(t *testing.T) {
			e := newAttestedBackend(t)
			e.platform = client.Platform{TEE: "sim", TLSModes: []string{"self", "owner", "operator"}}
			e.mode = "operator"
			ca := newTestCA(t, "Operator CA")
			routerKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			e.enclave.served, e.enclave.relayed = ca.issue(t, e.domain, routerKey), true
			args := []string{"--untrusted-ssl"}
			caFile := writeTemp(t, "ca.pem", ca.pem)
			if withCA {
				args = append(args, "--cacert", caFile)
			}
			out, errs, code := e.attestedDeploy(t, "", args...)
			if code != 0 {
				t.Fatalf("deploy failed:\n%s\n%s", out, errs)
			}
			if e.received.TLSMode != "operator" || e.received.ACME != nil {
				t.Fatalf("request tls_mode %q acme %+v", e.received.TLSMode, e.received.ACME)
			}
			if n := strings.Count(errs, warningStart); n != 2 {
				t.Errorf("the warning is printed %d times, want 2 (before the upload and at the end):\n%s", n, errs)
			}
			if i, j := strings.Index(errs, warningStart), strings.Index(errs, "Uploaded the encrypted code"); i < 0 || j < 0 || i > j {
				t.Errorf("the warning does not come before the upload:\n%s", errs)
			}
			if !strings.HasSuffix(strings.TrimRight(errs, "\n"), "Use it only for development, or when you trust the operator with that traffic.") {
				t.Errorf("the warning is not the last thing said:\n%s", errs)
			}
			for _, want := range []string{
				"✔ Verified the enclave: TEE sim (SIMULATED)",
				"✔ The enclave behind the router is the one you verified (fresh evidence over a direct connection, ALPN mse-ratls/1)",
				"✔ The app answers through the operator's TLS (HTTP 200, 12 bytes from /); the operator's certificate sha256 ",
				"not checked, and it cannot be: what the operator does with the traffic it decrypts",
			} {
				if !strings.Contains(errs, want) {
					t.Errorf("stderr lacks %q:\n%s", want, errs)
				}
			}
			trusted := "checked: the operator's certificate chains to your trusted roots for " + e.domain
			untrusted := "WARNING: the operator's certificate for " + e.domain + " does not chain to your trusted roots"
			if withCA != strings.Contains(errs, trusted) || withCA == strings.Contains(errs, untrusted) {
				t.Errorf("trust of the operator's certificate (--cacert %v):\n%s", withCA, errs)
			}
			curl := lineAfter(out, "Try it:")
			if strings.Contains(curl, "--cacert") != withCA || !strings.HasPrefix(curl, "curl ") || !strings.Contains(curl, "--resolve "+e.domain) {
				t.Errorf("curl line %q", curl)
			}
			if ac := contextOf(t); ac.TLSMode != "operator" {
				t.Errorf("context tls_mode %q", ac.TLSMode)
			}
		})
	}
}

// TestDeployOperatorEnclaveSwapped: in operator mode the router sends the
// direct connections of the final check to another enclave than the one
// deploy verified: refused.
func TestDeployOperatorEnclaveSwapped(t *testing.T) {
	e := newAttestedBackend(t)
	e.platform = client.Platform{TEE: "sim", TLSModes: []string{"self", "operator"}}
	e.mode = "operator"
	ca := newTestCA(t, "Operator CA")
	routerKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	e.enclave.served, e.enclave.relayed = ca.issue(t, e.domain, routerKey), true
	// Once the key is accepted, the node's RA-TLS certificate is another one.
	swapped := false
	e.app = func(a *client.App) {
		if e.keyAccepted && !swapped {
			swapped = true
			_ = e.enclave.start(e.enclave.spec, e.enclave.claims.CodeDigest)
		}
	}
	_, errs, code := e.attestedDeploy(t, "", "--untrusted-ssl")
	if code == 0 {
		t.Fatalf("deploy accepted another enclave:\n%s", errs)
	}
	if !strings.Contains(errs, "presents the RA-TLS certificate sha256") || !strings.Contains(errs, "not the one deploy verified") {
		t.Fatalf("error:\n%s", errs)
	}
}

// TestDeployTLSRefusedEarly: what the backend does not offer is refused
// before anything is uploaded.
func TestDeployTLSRefusedEarly(t *testing.T) {
	cases := []struct {
		name     string
		platform client.Platform
		path     string
		args     []string
		want     string
	}{
		{"operator not offered", client.Platform{TLSModes: []string{"self", "owner"}}, "", []string{"--untrusted-ssl"},
			"this backend does not offer tls_mode operator (it offers self, owner): its operator configured no certificate to terminate TLS with; deploy without --untrusted-ssl"},
		{"acme not offered", client.Platform{TLSModes: []string{"self", "owner"}}, "", []string{"--acme"},
			"this backend does not offer tls_mode acme (it offers self, owner): its operator configured no ACME CA"},
		{"no ACME CA", client.Platform{}, "", []string{"--acme"},
			"this backend offers no ACME CA, so tls_mode acme (--acme, [cloud.acme]) cannot be used here"},
		{"directory not allowed", client.Platform{TLSModes: []string{"acme"}, ACMEDirectories: []string{operatorCA}}, "directory_url = \"" + otherCA + "\"\n", nil,
			"cloud.acme.directory_url " + otherCA + " is not a CA this operator lets nodes reach (it allows " + operatorCA + ")"},
		{"bad default directory", client.Platform{TLSModes: []string{"acme"}, ACME: &spec.ACME{DirectoryURL: "http://acme.operator.example/\x1b[2J"}}, "", []string{"--acme"},
			"the operator's default ACME CA is not valid: directory"},
		{"bad default roots", client.Platform{TLSModes: []string{"acme"}, ACME: &spec.ACME{DirectoryURL: operatorCA, RootsPEM: "not PEM"}}, "", []string{"--acme"},
			"the operator's roots for its ACME CA is not a PEM certificate chain"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEvilBackend(t)
			e.platform = c.platform
			path := helloworldToml(t)
			if c.path != "" {
				path = acmeProject(t, c.path)
			}
			_, errs, code := e.deploy(t, append([]string{"--path", path}, c.args...)...)
			if code == 0 || !strings.Contains(errs, c.want) {
				t.Fatalf("exit %d, stderr lacks %q:\n%s", code, c.want, errs)
			}
			assertInert(t, "stderr", errs)
			if e.posts != 0 {
				t.Fatal("the app was uploaded")
			}
		})
	}
}

// TestTLSModeFlags: the flags and mse.toml, as deploy combines them.
func TestTLSModeFlags(t *testing.T) {
	self := &config.AppConfig{}
	acme := &config.AppConfig{Cloud: config.CloudConfig{ACME: &config.ACMEConfig{}}}
	owner := &config.AppConfig{Cloud: config.CloudConfig{SSL: &config.SSLConfig{}}}
	cases := []struct {
		conf       *config.AppConfig
		o          deployOpts
		mode, fail string
	}{
		{self, deployOpts{}, "self", ""},
		{owner, deployOpts{}, "owner", ""},
		{acme, deployOpts{}, "acme", ""},
		{acme, deployOpts{acme: true}, "acme", ""},
		{self, deployOpts{acme: true}, "acme", ""},
		{self, deployOpts{untrustedSSL: true}, "operator", ""},
		{self, deployOpts{untrustedSSL: true, cacert: "ca.pem"}, "operator", ""},
		{acme, deployOpts{cacert: "ca.pem"}, "acme", ""},
		{self, deployOpts{untrustedSSL: true, acme: true}, "", "--untrusted-ssl (tls_mode operator: the operator terminates TLS) and --acme (tls_mode acme: a CA's certificate for the enclave's own key) choose two TLS modes; keep one of them"},
		{owner, deployOpts{untrustedSSL: true}, "", "--untrusted-ssl (tls_mode operator: the operator terminates TLS) contradicts [cloud.ssl] in mse.toml (tls_mode owner); remove one of them"},
		{acme, deployOpts{untrustedSSL: true}, "", "--untrusted-ssl (tls_mode operator: the operator terminates TLS) contradicts [cloud.acme] in mse.toml (tls_mode acme); remove one of them"},
		{owner, deployOpts{acme: true}, "", "--acme (tls_mode acme: a CA's certificate for the enclave's own key) contradicts [cloud.ssl] in mse.toml (tls_mode owner: your own certificate); remove one of them"},
		{self, deployOpts{cacert: "ca.pem"}, "", "--cacert is for tls_mode acme and operator"},
		{owner, deployOpts{cacert: "ca.pem"}, "", "in tls_mode owner deploy checks the app by the certificate it pins"},
	}
	for i, c := range cases {
		c.o.path = "mse.toml"
		mode, err := tlsMode(c.conf, &c.o)
		if c.fail != "" {
			if err == nil || !strings.Contains(err.Error(), c.fail) {
				t.Errorf("%d: %+v: err %v, want %q", i, c.o, err, c.fail)
			}
			continue
		}
		if err != nil || mode != c.mode {
			t.Errorf("%d: %+v: mode %q, err %v; want %q", i, c.o, mode, err, c.mode)
		}
	}
}

// TestPublicCurlLine: acme and operator apps get a plain curl line, with
// --resolve only when the domain does not lead to the router.
func TestPublicCurlLine(t *testing.T) {
	old := lookupHost
	t.Cleanup(func() { lookupHost = old })
	lookupHost = fakeDNS(map[string][]string{"app.example.com": {"192.0.2.7"}, "router.example.net": {"192.0.2.7"}, "elsewhere.example.com": {"198.51.100.1"}})
	for _, c := range []struct {
		domain, router string
		resolve        bool
	}{
		{"app.example.com", "192.0.2.7:443", false},
		{"app.example.com", "router.example.net:443", false},
		{"app.example.com", "192.0.2.7:8443", true},
		{"elsewhere.example.com", "192.0.2.7:443", true},
		{"unknown.example.com", "192.0.2.7:443", true},
	} {
		if got := !routerIsDomainAddress(t.Context(), c.domain, c.router); got != c.resolve {
			t.Errorf("%s via %s: resolve %v, want %v", c.domain, c.router, got, c.resolve)
		}
	}
	line, err := publicCurlLine("app.example.com", "192.0.2.7:443", "", false)
	if err != nil || line != "curl https://app.example.com/" {
		t.Errorf("%q %v", line, err)
	}
	line, err = publicCurlLine("app.example.com", "[::1]:8443", "/my ca.pem", true)
	if err != nil || line != "curl --cacert '/my ca.pem' --resolve 'app.example.com:8443:[::1]' https://app.example.com:8443/" {
		t.Errorf("%q %v", line, err)
	}
}

// TestTestRoots: mse cloud test never trusts the RA-TLS certificate for an
// app that serves a CA's certificate.
func TestTestRoots(t *testing.T) {
	ca := writeTemp(t, "ca.pem", newTestCA(t, "Test CA").pem)
	for _, c := range []struct {
		mode, cacert string
		want         string
		fail         bool
	}{
		{"self", "", "REQUESTS_CA_BUNDLE=/ra.pem SSL_CERT_FILE=/ra.pem", false},
		{"owner", "", "", false},
		{"acme", "", "", false},
		{"operator", "", "", false},
		{"acme", ca, "REQUESTS_CA_BUNDLE=" + ca + " SSL_CERT_FILE=" + ca, false},
		{"operator", ca, "REQUESTS_CA_BUNDLE=" + ca + " SSL_CERT_FILE=" + ca, false},
		{"self", ca, "", true},
		{"owner", ca, "", true},
		{"acme", "/nope.pem", "", true},
	} {
		env, err := testRoots(c.mode, "/ra.pem", c.cacert)
		if (err != nil) != c.fail || strings.Join(env, " ") != c.want {
			t.Errorf("%s %q: %q, %v; want %q (fail %v)", c.mode, c.cacert, env, err, c.want, c.fail)
		}
	}
}

func lineAfter(out, header string) string {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if l == header && i+1 < len(lines) {
			return strings.TrimPrefix(lines[i+1], "  ")
		}
	}
	return ""
}

// fakeDNS answers lookups from m (no network).
func fakeDNS(m map[string][]string) func(context.Context, string) ([]string, error) {
	return func(_ context.Context, host string) ([]string, error) {
		if a, ok := m[host]; ok {
			return a, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
}
