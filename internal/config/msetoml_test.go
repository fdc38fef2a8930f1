package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/spec"
)

// now is the fixed clock of these tests; certificates are made around it.
var now = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

type pki struct {
	caKey, leafKey, otherKey *ecdsa.PrivateKey
	ca, leaf                 *x509.Certificate
	leafDER, caDER           []byte
}

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mkCert(t testing.TB, tmpl, parent *x509.Certificate, pub any, signer *ecdsa.PrivateKey) ([]byte, *x509.Certificate) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return der, c
}

func newPKI(t testing.TB, dns []string, notBefore, notAfter time.Time) *pki {
	p := &pki{caKey: mustKey(t), leafKey: mustKey(t), otherKey: mustKey(t)}
	caT := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test CA"},
		NotBefore: now.AddDate(-1, 0, 0), NotAfter: now.AddDate(5, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	p.caDER, p.ca = mkCert(t, caT, caT, &p.caKey.PublicKey, p.caKey)
	leafT := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: dns[0]}, DNSNames: dns,
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	p.leafDER, p.leaf = mkCert(t, leafT, p.ca, &p.leafKey.PublicKey, p.caKey)
	return p
}

func pemOf(typ string, b []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}) }

func keyPEM(t testing.TB, k *ecdsa.PrivateKey) []byte {
	b, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pemOf("PRIVATE KEY", b)
}

func write(t testing.TB, dir, name string, b []byte, mode os.FileMode) {
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
}

// project makes a directory with everything an mse.toml may point to.
func project(t testing.TB) (string, *pki) {
	dir := t.TempDir()
	p := newPKI(t, []string{"app.example.com"}, now.Add(-time.Hour), now.AddDate(0, 3, 0))
	write(t, dir, "code/app.py", []byte("app = None\n"), 0o644)
	write(t, dir, "code/server", []byte("#!/bin/sh\n"), 0o755)
	write(t, dir, "code/notexec", []byte("#!/bin/sh\n"), 0o644)
	write(t, dir, "code/bin/srv", []byte("#!/bin/sh\n"), 0o755)
	write(t, dir, "tests/test_app.py", nil, 0o644)
	write(t, dir, "afile", nil, 0o644)
	write(t, dir, "secrets.json", []byte(`{"login": "user", "password": "azerty"}`), 0o600)
	write(t, dir, "array.json", []byte(`["not", "an", "object"]`), 0o600)
	chain := append(pemOf("CERTIFICATE", p.leafDER), pemOf("CERTIFICATE", p.caDER)...)
	write(t, dir, "cert.pem", chain, 0o644)
	write(t, dir, "key.pem", keyPEM(t, p.leafKey), 0o600)
	write(t, dir, "other-key.pem", keyPEM(t, p.otherKey), 0o600)
	ecDER, _ := x509.MarshalECPrivateKey(p.leafKey)
	write(t, dir, "key-sec1.pem", pemOf("EC PRIVATE KEY", ecDER), 0o600)
	write(t, dir, "key-encrypted.pem", pemOf("ENCRYPTED PRIVATE KEY", []byte{1, 2, 3}), 0o600)
	write(t, dir, "reversed.pem", append(pemOf("CERTIFICATE", p.caDER), pemOf("CERTIFICATE", p.leafDER)...), 0o644)
	write(t, dir, "with-key.pem", append(pemOf("CERTIFICATE", p.leafDER), keyPEM(t, p.leafKey)...), 0o644)
	write(t, dir, "garbage.pem", []byte("hello\n"), 0o644)
	exp := newPKI(t, []string{"app.example.com"}, now.AddDate(-1, 0, 0), now.Add(-time.Hour))
	write(t, dir, "expired.pem", pemOf("CERTIFICATE", exp.leafDER), 0o644)
	write(t, dir, "expired-key.pem", keyPEM(t, exp.leafKey), 0o600)
	wild := newPKI(t, []string{"*.example.com"}, now.Add(-time.Hour), now.AddDate(0, 3, 0))
	write(t, dir, "wild.pem", pemOf("CERTIFICATE", wild.leafDER), 0o644)
	write(t, dir, "wild-key.pem", keyPEM(t, wild.leafKey), 0o600)
	write(t, dir, "acme-roots.pem", pemOf("CERTIFICATE", p.caDER), 0o644)
	write(t, dir, "roots-with-key.pem", append(pemOf("CERTIFICATE", p.caDER), keyPEM(t, p.caKey)...), 0o644)
	write(t, dir, "huge-roots.pem", []byte(strings.Repeat("#", MaxACMERootsSize+1)), 0o644)
	return dir, p
}

const (
	topPy    = "name = \"app\"\npython_application = \"app:app\"\nhealthcheck_endpoint = \"/health\"\n"
	cloudMin = "[cloud]\ncode = \"code\"\n"
	sslOK    = "[cloud.ssl]\ndomain_name = \"app.example.com\"\ncertificate = \"cert.pem\"\nprivate_key = \"key.pem\"\n"
	acmeDir  = "https://acme.example.net/directory"
)

// acme is a [cloud.acme] table with the keys of kv ("key = value" lines).
func acme(kv ...string) string {
	s := "[cloud.acme]\n"
	for _, l := range kv {
		s += l + "\n"
	}
	return s
}

func ssl(domain, cert, key string) string {
	return "[cloud.ssl]\ndomain_name = \"" + domain + "\"\ncertificate = \"" + cert + "\"\nprivate_key = \"" + key + "\"\n"
}

func TestInvalid(t *testing.T) {
	dir, _ := project(t)
	top := func(name, py, hc string) string {
		return "name = " + name + "\npython_application = " + py + "\nhealthcheck_endpoint = " + hc + "\n"
	}
	rows := []struct {
		desc, doc, field, rule string
	}{
		// name
		{"empty name", top(`""`, `"app:app"`, `"/h"`) + cloudMin, "name", "must not be empty"},
		{"blank name", top(`"   "`, `"app:app"`, `"/h"`) + cloudMin, "name", "must not be empty"},
		{"name with space", top(`"my app"`, `"app:app"`, `"/h"`) + cloudMin, "name", "use letters, digits"},
		{"name with slash", top(`"a/b"`, `"app:app"`, `"/h"`) + cloudMin, "name", "use letters, digits"},
		{"name too long", top(`"`+strings.Repeat("a", 256)+`"`, `"app:app"`, `"/h"`) + cloudMin, "name", "the maximum is 255"},
		{"name missing", "python_application = \"app:app\"\nhealthcheck_endpoint = \"/h\"\n" + cloudMin, "name", "is required"},
		{"name not a string", top(`5`, `"app:app"`, `"/h"`) + cloudMin, "name", "must be a string, not an integer"},
		// python_application
		{"py no colon", top(`"app"`, `"app"`, `"/h"`) + cloudMin, "python_application", "expected format: module:variable"},
		{"py two colons", top(`"app"`, `"a:b:c"`, `"/h"`) + cloudMin, "python_application", "expected format: module:variable"},
		{"py empty variable", top(`"app"`, `"app:"`, `"/h"`) + cloudMin, "python_application", "is not a Python identifier"},
		{"py bad module", top(`"app"`, `"1app.x:app"`, `"/h"`) + cloudMin, "python_application", "is not a Python module path"},
		{"py too long", top(`"app"`, `"a:`+strings.Repeat("b", 300)+`"`, `"/h"`) + cloudMin, "python_application", "the maximum is 255"},
		// python_application / entrypoint
		{"both", topPy + "entrypoint = [\"./server\"]\n" + cloudMin, "entrypoint", "cannot be used together with python_application"},
		{"neither", "name = \"app\"\nhealthcheck_endpoint = \"/h\"\n" + cloudMin, "python_application", "one of python_application"},
		{"entrypoint empty", "name = \"app\"\nentrypoint = []\nhealthcheck_endpoint = \"/h\"\n" + cloudMin, "entrypoint", "must not be empty"},
		{"entrypoint not array", "name = \"app\"\nentrypoint = \"./server\"\nhealthcheck_endpoint = \"/h\"\n" + cloudMin, "entrypoint", "must be an array of strings, not a string"},
		{"entrypoint element type", "name = \"app\"\nentrypoint = [1]\nhealthcheck_endpoint = \"/h\"\n" + cloudMin, "entrypoint[0]", "must be a string, not an integer"},
		{"entrypoint empty program", "name = \"app\"\nentrypoint = [\"\"]\nhealthcheck_endpoint = \"/h\"\n" + cloudMin, "entrypoint[0]", "the program must not be empty"},
		{"entrypoint NUL", "name = \"app\"\nentrypoint = [\"./server\", \"a\\u0000b\"]\nhealthcheck_endpoint = \"/h\"\n" + cloudMin, "entrypoint[1]", "must not contain a NUL"},
		{"entrypoint missing program", "name = \"app\"\nentrypoint = [\"./missing\"]\nhealthcheck_endpoint = \"/h\"\n" + cloudMin, "entrypoint[0]", "is not in the code directory"},
		{"entrypoint escapes", "name = \"app\"\nentrypoint = [\"../afile\"]\nhealthcheck_endpoint = \"/h\"\n" + cloudMin, "entrypoint[0]", "leaves the code directory"},
		{"entrypoint not executable", "name = \"app\"\nentrypoint = [\"./notexec\"]\nhealthcheck_endpoint = \"/h\"\n" + cloudMin, "entrypoint[0]", "is not executable"},
		{"entrypoint directory", "name = \"app\"\nentrypoint = [\"./bin\"]\nhealthcheck_endpoint = \"/h\"\n" + cloudMin, "entrypoint[0]", "is not a regular file"},
		// healthcheck_endpoint
		{"healthcheck no slash", top(`"app"`, `"app:app"`, `"health"`) + cloudMin, "healthcheck_endpoint", `should start with a "/"`},
		{"healthcheck missing", "name = \"app\"\npython_application = \"app:app\"\n" + cloudMin, "healthcheck_endpoint", "is required"},
		{"healthcheck empty", top(`"app"`, `"app:app"`, `""`) + cloudMin, "healthcheck_endpoint", "must not be empty"},
		{"healthcheck space", top(`"app"`, `"app:app"`, `"/a b"`) + cloudMin, "healthcheck_endpoint", "must not contain spaces"},
		{"healthcheck double slash", top(`"app"`, `"app:app"`, `"//evil.com/x"`) + cloudMin, "healthcheck_endpoint", `must not start with "//"`},
		// tests
		{"tests_requirements empty item", topPy + "tests_requirements = [\"pytest\", \"\"]\n" + cloudMin, "tests_requirements[1]", "must not be empty"},
		{"tests_requirements type", topPy + "tests_requirements = \"pytest\"\n" + cloudMin, "tests_requirements", "must be an array of strings"},
		{"tests_cmd type", topPy + "tests_cmd = [\"pytest\"]\n" + cloudMin, "tests_cmd", "must be a string, not an array"},
		// unknown keys
		{"unknown top key", topPy + "colour = \"blue\"\n" + cloudMin, "colour", "unknown key; valid keys at the top level: name,"},
		{"unknown cloud key", topPy + cloudMin + "region = \"eu\"\n", "cloud.region", "unknown key; valid keys in [cloud]: code,"},
		{"docker pin", topPy + cloudMin + "docker = \"mse/flask@sha256:abc\"\n", "cloud.docker", "must be sha256: and 64 lowercase hex"},
		{"docker empty pin", topPy + cloudMin + "docker = \"@sha256:" + strings.Repeat("a", 64) + "\"\n", "cloud.docker", "names no image"},
		{"docker and runtime", topPy + cloudMin + "docker = \"a\"\nruntime = \"b\"\n", "cloud.runtime", "alias of cloud.docker"},
		{"start timeout word", topPy + cloudMin + "start_timeout = \"soon\"\n", "cloud.start_timeout", "is not a duration"},
		{"start timeout zero", topPy + cloudMin + "start_timeout = 0\n", "cloud.start_timeout", "between 1 and"},
		{"start timeout huge", topPy + cloudMin + "start_timeout = \"48h\"\n", "cloud.start_timeout", "out of range"},
		{"start timeout type", topPy + cloudMin + "start_timeout = true\n", "cloud.start_timeout", "not a boolean"},
		{"unknown ssl key", topPy + cloudMin + sslOK + "chain = \"x\"\n", "cloud.ssl.chain", "unknown key; valid keys in [cloud.ssl]: domain_name"},
		{"old layout", "name = \"app\"\nproject = \"default\"\n[code]\nlocation = \"code\"\n", "code", "old MSE layout"},
		// cloud
		{"cloud missing", topPy, "cloud", "is required: add a [cloud] table"},
		{"cloud not table", topPy + "cloud = \"code\"\n", "cloud", "must be a table"},
		{"code missing", topPy + "[cloud]\nproject = \"p\"\n", "cloud.code", "is required"},
		{"code does not exist", topPy + "[cloud]\ncode = \"nope\"\n", "cloud.code", "does not exist"},
		{"code is a file", topPy + "[cloud]\ncode = \"afile\"\n", "cloud.code", "is not a directory"},
		{"tests does not exist", topPy + cloudMin + "tests = \"nope\"\n", "cloud.tests", "does not exist"},
		{"project empty", topPy + cloudMin + "project = \" \"\n", "cloud.project", "must not be empty"},
		{"project too long", topPy + cloudMin + "project = \"" + strings.Repeat("p", 256) + "\"\n", "cloud.project", "the maximum is 255"},
		{"hardware empty", topPy + cloudMin + "hardware = \"\"\n", "cloud.hardware", "must not be empty"},
		{"hardware too long", topPy + cloudMin + "hardware = \"" + strings.Repeat("g", 17) + "\"\n", "cloud.hardware", "the maximum is 16"},
		{"hardware chars", topPy + cloudMin + "hardware = \"4 g\"\n", "cloud.hardware", "use letters, digits"},
		{"hardware type", topPy + cloudMin + "hardware = 4\n", "cloud.hardware", "must be a string, not an integer"},
		{"secrets missing", topPy + cloudMin + "secrets = \"nope.json\"\n", "cloud.secrets", "does not exist"},
		{"secrets not object", topPy + cloudMin + "secrets = \"array.json\"\n", "cloud.secrets", "is not a JSON object"},
		{"secrets is dir", topPy + cloudMin + "secrets = \"code\"\n", "cloud.secrets", "is not a regular file"},
		// expiration_date
		{"expiration past", topPy + cloudMin + "expiration_date = 2020-01-01T00:00:00Z\n", "cloud.expiration_date", "2020-01-01T00:00:00Z is in the past; set a future date or remove it"},
		{"expiration now", topPy + cloudMin + "expiration_date = 2030-06-01T12:00:00Z\n", "cloud.expiration_date", "is in the past"},
		{"expiration past local", topPy + cloudMin + "expiration_date = 2020-01-01\n", "cloud.expiration_date", "2020-01-01T00:00:00Z is in the past"},
		{"expiration bad string", topPy + cloudMin + "expiration_date = \"next year\"\n", "cloud.expiration_date", "is not a date"},
		{"expiration integer", topPy + cloudMin + "expiration_date = 1\n", "cloud.expiration_date", "must be a TOML datetime"},
		{"expiration time only", topPy + cloudMin + "expiration_date = 12:00:00\n", "cloud.expiration_date", "not a time"},
		// [cloud.ssl]
		{"ssl not table", topPy + cloudMin + "ssl = \"x\"\n", "cloud.ssl", "must be a table"},
		{"ssl key missing", topPy + cloudMin + "[cloud.ssl]\ndomain_name = \"app.example.com\"\ncertificate = \"cert.pem\"\n", "cloud.ssl.private_key", "is required when [cloud.ssl] is set"},
		{"ssl domain not in cert", topPy + cloudMin + ssl("other.example.com", "cert.pem", "key.pem"), "cloud.ssl.domain_name", "other.example.com should be present in the SSL certificate as a Subject Alternative Name (the certificate names app.example.com)"},
		{"ssl domain wildcard", topPy + cloudMin + ssl("*.example.com", "wild.pem", "wild-key.pem"), "cloud.ssl.domain_name", "is a wildcard"},
		{"ssl domain not fqdn", topPy + cloudMin + ssl("localhost", "cert.pem", "key.pem"), "cloud.ssl.domain_name", "is not a fully qualified domain name"},
		{"ssl domain bad chars", topPy + cloudMin + ssl("app_1.example.com", "cert.pem", "key.pem"), "cloud.ssl.domain_name", "is not a valid domain name"},
		{"ssl domain empty", topPy + cloudMin + ssl("", "cert.pem", "key.pem"), "cloud.ssl.domain_name", "must not be empty"},
		{"ssl wildcard too deep", topPy + cloudMin + ssl("a.b.example.com", "wild.pem", "wild-key.pem"), "cloud.ssl.domain_name", "should be present in the SSL certificate"},
		{"ssl cert missing", topPy + cloudMin + ssl("app.example.com", "nope.pem", "key.pem"), "cloud.ssl.certificate", "does not exist"},
		{"ssl cert not pem", topPy + cloudMin + ssl("app.example.com", "garbage.pem", "key.pem"), "cloud.ssl.certificate", "is not a PEM certificate chain"},
		{"ssl cert holds key", topPy + cloudMin + ssl("app.example.com", "with-key.pem", "key.pem"), "cloud.ssl.certificate", "the private key belongs in cloud.ssl.private_key"},
		{"ssl chain order", topPy + cloudMin + ssl("app.example.com", "reversed.pem", "key.pem"), "cloud.ssl.certificate", "order the chain leaf first"},
		{"ssl cert expired", topPy + cloudMin + ssl("app.example.com", "expired.pem", "expired-key.pem"), "cloud.ssl.certificate", "the certificate expired on"},
		{"ssl expiration after cert", topPy + cloudMin + "expiration_date = 2031-01-01T00:00:00Z\n" + sslOK, "cloud.expiration_date", "2031-01-01T00:00:00Z can't be after the certificate expiration date"},
		{"ssl key mismatch", topPy + cloudMin + ssl("app.example.com", "cert.pem", "other-key.pem"), "cloud.ssl.private_key", "does not match the public key of the certificate"},
		{"ssl key not pem", topPy + cloudMin + ssl("app.example.com", "cert.pem", "garbage.pem"), "cloud.ssl.private_key", "not a PEM private key"},
		{"ssl key is cert", topPy + cloudMin + ssl("app.example.com", "cert.pem", "cert.pem"), "cloud.ssl.private_key", "contains a CERTIFICATE, not a private key"},
		{"ssl key encrypted", topPy + cloudMin + ssl("app.example.com", "cert.pem", "key-encrypted.pem"), "cloud.ssl.private_key", "the private key is encrypted"},
		{"ssl key missing file", topPy + cloudMin + ssl("app.example.com", "cert.pem", "nope.pem"), "cloud.ssl.private_key", "does not exist"},
		// [cloud.acme]
		{"acme not table", topPy + cloudMin + "acme = true\n", "cloud.acme", "must be a table ([cloud.acme]), not a boolean"},
		{"acme and ssl", topPy + cloudMin + sslOK + acme(), "cloud.acme", "cannot be used together with [cloud.ssl]; keep one of them"},
		{"acme unknown key", topPy + cloudMin + acme(`server = "x"`), "cloud.acme.server", "unknown key; valid keys in [cloud.acme]: directory_url, roots, email, domain_name"},
		{"acme url http", topPy + cloudMin + acme(`directory_url = "http://acme.example.net/directory"`), "cloud.acme.directory_url", "is not an https URL"},
		{"acme url no scheme", topPy + cloudMin + acme(`directory_url = "acme.example.net/directory"`), "cloud.acme.directory_url", "is not an https URL"},
		{"acme url no host", topPy + cloudMin + acme(`directory_url = "https:///directory"`), "cloud.acme.directory_url", "names no host"},
		{"acme url user", topPy + cloudMin + acme(`directory_url = "https://me:pw@acme.example.net/directory"`), "cloud.acme.directory_url", "must not carry a user name"},
		{"acme url fragment", topPy + cloudMin + acme(`directory_url = "https://acme.example.net/directory#x"`), "cloud.acme.directory_url", "must not have a #fragment"},
		{"acme url space", topPy + cloudMin + acme(`directory_url = "https://acme.example.net/a b"`), "cloud.acme.directory_url", "must not contain spaces"},
		{"acme url not a URL", topPy + cloudMin + acme(`directory_url = "https://[::1"`), "cloud.acme.directory_url", "is not a URL"},
		{"acme url too long", topPy + cloudMin + acme(`directory_url = "https://acme.example.net/`+strings.Repeat("d", 2048)+`"`), "cloud.acme.directory_url", "the maximum is 2048"},
		{"acme url type", topPy + cloudMin + acme(`directory_url = 1`), "cloud.acme.directory_url", "must be a string, not an integer"},
		{"acme roots without url", topPy + cloudMin + acme(`roots = "acme-roots.pem"`), "cloud.acme.roots", "needs cloud.acme.directory_url"},
		{"acme roots missing", topPy + cloudMin + acme(`directory_url = "`+acmeDir+`"`, `roots = "nope.pem"`), "cloud.acme.roots", "does not exist"},
		{"acme roots not pem", topPy + cloudMin + acme(`directory_url = "`+acmeDir+`"`, `roots = "garbage.pem"`), "cloud.acme.roots", "is not a PEM certificate chain"},
		{"acme roots hold a key", topPy + cloudMin + acme(`directory_url = "`+acmeDir+`"`, `roots = "roots-with-key.pem"`), "cloud.acme.roots", "holds a PRIVATE KEY: only the root certificates"},
		{"acme roots too large", topPy + cloudMin + acme(`directory_url = "`+acmeDir+`"`, `roots = "huge-roots.pem"`), "cloud.acme.roots", "is larger than 262144 bytes"},
		{"acme roots dir", topPy + cloudMin + acme(`directory_url = "`+acmeDir+`"`, `roots = "code"`), "cloud.acme.roots", "is not a regular file"},
		{"acme email two", topPy + cloudMin + acme(`email = "a@example.com, b@example.com"`), "cloud.acme.email", "is not one e-mail address"},
		{"acme email name", topPy + cloudMin + acme(`email = "Ops <ops@example.com>"`), "cloud.acme.email", "is not one e-mail address"},
		{"acme email no at", topPy + cloudMin + acme(`email = "ops"`), "cloud.acme.email", "is not one e-mail address"},
		{"acme email no dot", topPy + cloudMin + acme(`email = "ops@localhost"`), "cloud.acme.email", "is not one e-mail address"},
		{"acme email too long", topPy + cloudMin + acme(`email = "`+strings.Repeat("a", 250)+`@example.com"`), "cloud.acme.email", "the maximum is 254"},
		{"acme domain wildcard", topPy + cloudMin + acme(`domain_name = "*.example.com"`), "cloud.acme.domain_name", "is a wildcard"},
		{"acme domain not fqdn", topPy + cloudMin + acme(`domain_name = "shop"`), "cloud.acme.domain_name", "is not a fully qualified domain name"},
		{"acme domain port", topPy + cloudMin + acme(`domain_name = "shop.example.com:443"`), "cloud.acme.domain_name", "is not a valid domain name"},
		{"acme domain too long", topPy + cloudMin + acme(`domain_name = "`+strings.Repeat("a.", 130)+`com"`), "cloud.acme.domain_name", "the maximum is 255"},
		{"tls_mode key", topPy + cloudMin + "tls_mode = \"acme\"\n", "cloud.tls_mode", "[cloud.acme] tls_mode acme"},
		{"dev_mode key", topPy + cloudMin + "dev_mode = true\n", "cloud.dev_mode", "--untrusted-ssl"},
		// file
		{"syntax", "name = \n", "", "line 1, column"},
		{"duplicate key", topPy + "name = \"again\"\n" + cloudMin, "name", "key name is already defined"},
		{"not utf-8", "name = \"\xff\"\n", "", "not valid UTF-8"},
	}
	seen := map[string]bool{}
	for _, r := range rows {
		if seen[r.desc] {
			t.Fatalf("duplicate row %q", r.desc)
		}
		seen[r.desc] = true
		t.Run(r.desc, func(t *testing.T) {
			c, err := Parse([]byte(r.doc), dir, now)
			if err == nil {
				t.Fatalf("accepted:\n%s\n%+v", r.doc, c)
			}
			if c != nil {
				t.Error("config returned with an error")
			}
			fe := findField(err, r.field)
			if fe == nil {
				t.Fatalf("no FieldError for %q in: %v", r.field, err)
			}
			if !strings.Contains(fe.Rule, r.rule) {
				t.Errorf("%s: rule %q does not contain %q", r.field, fe.Rule, r.rule)
			}
			if !strings.HasPrefix(fe.Error(), "mse.toml: ") {
				t.Errorf("error %q lacks the mse.toml: prefix", fe.Error())
			}
			if r.field != "" && !strings.Contains(fe.Error(), "mse.toml: "+r.field+": ") {
				t.Errorf("error %q does not name %s", fe.Error(), r.field)
			}
		})
	}
}

// findField returns the FieldError of field among err's (joined) errors.
func findField(err error, field string) *FieldError {
	var fe *FieldError
	if errors.As(err, &fe) && fe.Field == field {
		return fe
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if f := findField(e, field); f != nil {
				return f
			}
		}
	}
	return nil
}

func TestExpiredMessage(t *testing.T) {
	dir, _ := project(t)
	_, err := Parse([]byte(topPy+cloudMin+"expiration_date = 2020-01-01T00:00:00Z\n"), dir, now)
	want := "mse.toml: cloud.expiration_date: 2020-01-01T00:00:00Z is in the past; set a future date or remove it"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}

func TestSeveralErrorsJoined(t *testing.T) {
	dir, _ := project(t)
	doc := "name = \"bad name\"\npython_application = \"app\"\nhealthcheck_endpoint = \"h\"\n[cloud]\ncode = \"code\"\nexpiration_date = 2020-01-01T00:00:00Z\n"
	_, err := Parse([]byte(doc), dir, now)
	for _, f := range []string{"name", "python_application", "healthcheck_endpoint", "cloud.expiration_date"} {
		if findField(err, f) == nil {
			t.Errorf("no error for %s in %v", f, err)
		}
	}
	// Unknown keys are all reported, with the other decoding errors.
	_, err = Parse([]byte(topPy+"a = 1\nb = 2\n[cloud]\ncode = 3\nc = 4\n"), dir, now)
	for _, f := range []string{"a", "b", "cloud.c", "cloud.code"} {
		if findField(err, f) == nil {
			t.Errorf("no error for %s in %v", f, err)
		}
	}
}

func TestValidPython(t *testing.T) {
	dir, _ := project(t)
	c, err := Parse([]byte("name = \"  helloworld \"\npython_application = \"pkg.app:application\"\nhealthcheck_endpoint = \"/\"\n"+cloudMin), dir, now)
	if err != nil {
		t.Fatal(err)
	}
	want := &AppConfig{
		Name: "helloworld", PythonApplication: "pkg.app:application", HealthcheckEndpoint: "/",
		Cloud:   CloudConfig{Code: filepath.Join(dir, "code"), Project: DefaultProject, Hardware: DefaultHardware},
		BaseDir: dir,
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
	if c.TLSMode() != TLSSelf {
		t.Errorf("TLSMode = %s", c.TLSMode())
	}
	if c.Validate(now) != nil {
		t.Error("Validate of a parsed config failed")
	}
}

func TestValidAllSet(t *testing.T) {
	dir, _ := project(t)
	doc := `name = "web"
entrypoint = ["bin/srv", "--port", "$PORT"]
healthcheck_endpoint = "/health?full=1"
tests_cmd = "pytest"
tests_requirements = ["pytest==7.2.0"]

[cloud]
code = "code"
tests = "tests"
project = "team"
hardware = "4g-eu-001"
secrets = "secrets.json"
expiration_date = "2030-07-01 00:00:00+00:00"

[cloud.ssl]
domain_name = "app.example.com"
private_key = "key-sec1.pem"
certificate = "cert.pem"
`
	c, err := Parse([]byte(doc), dir, now)
	if err != nil {
		t.Fatal(err)
	}
	want := &AppConfig{
		Name: "web", Entrypoint: []string{"bin/srv", "--port", "$PORT"}, HealthcheckEndpoint: "/health?full=1",
		TestsCmd: "pytest", TestsRequirements: []string{"pytest==7.2.0"},
		Cloud: CloudConfig{
			Code: filepath.Join(dir, "code"), Tests: filepath.Join(dir, "tests"), Project: "team", Hardware: "4g-eu-001",
			Secrets: filepath.Join(dir, "secrets.json"), ExpirationDate: time.Date(2030, 7, 1, 0, 0, 0, 0, time.UTC),
			SSL: &SSLConfig{DomainName: "app.example.com", PrivateKey: filepath.Join(dir, "key-sec1.pem"), Certificate: filepath.Join(dir, "cert.pem")},
		},
		BaseDir: dir,
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
	if c.TLSMode() != TLSOwner {
		t.Errorf("TLSMode = %s", c.TLSMode())
	}
	if b, err := c.Cloud.SSL.ReadCertificate(); err != nil || !strings.HasPrefix(string(b), "-----BEGIN CERTIFICATE-----") {
		t.Errorf("ReadCertificate: %v", err)
	}
	roundTrip(t, c, now)
}

func TestSSLDefaults(t *testing.T) {
	dir, p := project(t)
	c, err := Parse([]byte(topPy+cloudMin+sslOK), dir, now)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Cloud.ExpirationDate.Equal(p.leaf.NotAfter) {
		t.Errorf("expiration %v, want the certificate's %v", c.Cloud.ExpirationDate, p.leaf.NotAfter)
	}
	// A wildcard certificate covers one label.
	if _, err := Parse([]byte(topPy+cloudMin+ssl("demo.example.com", "wild.pem", "wild-key.pem")), dir, now); err != nil {
		t.Errorf("wildcard: %v", err)
	}
	// Case of the domain does not matter.
	if _, err := Parse([]byte(topPy+cloudMin+ssl("App.Example.com", "cert.pem", "key.pem")), dir, now); err != nil {
		t.Errorf("case: %v", err)
	}
	roundTrip(t, c, now)
}

// TestACME: [cloud.acme] selects tls_mode acme; every key is optional; the
// roots file is read (bounded) for spec.ACME.RootsPEM; what the file accepts
// the node's spec accepts too.
func TestACME(t *testing.T) {
	dir, p := project(t)
	rows := []struct {
		desc, table string
		want        ACMEConfig
	}{
		{"empty: the operator's default CA", acme(), ACMEConfig{}},
		{"directory only", acme(`directory_url = "` + acmeDir + `"`), ACMEConfig{DirectoryURL: acmeDir}},
		{"all keys", acme(`directory_url = " `+acmeDir+` "`, `roots = "acme-roots.pem"`, `email = "ops@example.com"`, `domain_name = "shop.example.com"`),
			ACMEConfig{DirectoryURL: acmeDir, Roots: filepath.Join(dir, "acme-roots.pem"), Email: "ops@example.com", DomainName: "shop.example.com"}},
		{"email and domain with the default CA", acme(`email = "ops@example.com"`, `domain_name = "Shop.Example.com."`),
			ACMEConfig{Email: "ops@example.com", DomainName: "Shop.Example.com."}},
		{"a port and a path", acme(`directory_url = "https://127.0.0.1:14000/dir"`), ACMEConfig{DirectoryURL: "https://127.0.0.1:14000/dir"}},
	}
	for _, r := range rows {
		t.Run(r.desc, func(t *testing.T) {
			c, err := Parse([]byte(topPy+cloudMin+r.table), dir, now)
			if err != nil {
				t.Fatal(err)
			}
			if c.TLSMode() != TLSACME {
				t.Errorf("TLSMode = %s, want acme", c.TLSMode())
			}
			if c.Cloud.ACME == nil || *c.Cloud.ACME != r.want {
				t.Fatalf("ACME = %+v, want %+v", c.Cloud.ACME, r.want)
			}
			if !c.Cloud.ExpirationDate.IsZero() {
				t.Errorf("acme set an expiration date: %v", c.Cloud.ExpirationDate)
			}
			roots, err := c.Cloud.ACME.ReadRoots()
			if err != nil {
				t.Fatal(err)
			}
			if (r.want.Roots == "") != (roots == nil) {
				t.Fatalf("ReadRoots = %d bytes for roots %q", len(roots), r.want.Roots)
			}
			if roots != nil && !strings.Contains(string(roots), string(pemOf("CERTIFICATE", p.caDER))) {
				t.Errorf("ReadRoots is not the file's content")
			}
			// What the file accepts, the node's spec accepts.
			dirURL := r.want.DirectoryURL
			if dirURL == "" {
				dirURL = acmeDir // the CLI puts the operator's default here
			}
			sp := Spec{AppID: "a", Domains: []string{"app.example.com"}, PythonApplication: "app:app", ExpiresAt: now, TLSMode: TLSACME,
				Runtime: Runtime{Digest: "sha256:" + strings.Repeat("ab", 32), Kind: "wsgi"},
				ACME:    &spec.ACME{DirectoryURL: dirURL, RootsPEM: string(roots), Email: r.want.Email}}
			if err := sp.Validate(); err != nil {
				t.Errorf("the spec refuses what mse.toml accepted: %v", err)
			}
			roundTrip(t, c, now)
		})
	}
}

// TestACMEDirectoryRule: the rule the CLI also applies to the operator's
// default CA.
func TestACMEDirectoryRule(t *testing.T) {
	for u, want := range map[string]string{
		acmeDir:                            "",
		"https://acme.example.net":         "",
		"http://acme.example.net/dir":      "is not an https URL",
		"":                                 "is not an https URL",
		"https://acme.example.net/\x1b[2J": "control characters",
		"https://u@acme.example.net/":      "user name",
	} {
		got := ACMEDirectoryRule(u)
		if (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("ACMEDirectoryRule(%q) = %q, want %q", u, got, want)
		}
	}
}

func TestDates(t *testing.T) {
	dir, _ := project(t)
	want := time.Date(2031, 2, 3, 4, 5, 6, 0, time.UTC)
	for _, v := range []string{
		"2031-02-03T04:05:06Z", "2031-02-03T05:05:06+01:00", "2031-02-03 04:05:06Z",
		"2031-02-03T04:05:06", `"2031-02-03 04:05:06+00:00"`, `"2031-02-03T04:05:06Z"`, `"2031-02-03 04:05:06"`,
	} {
		c, err := Parse([]byte(topPy+cloudMin+"expiration_date = "+v+"\n"), dir, now)
		if err != nil {
			t.Errorf("%s: %v", v, err)
			continue
		}
		if !c.Cloud.ExpirationDate.Equal(want) || c.Cloud.ExpirationDate.Location() != time.UTC {
			t.Errorf("%s: got %v", v, c.Cloud.ExpirationDate)
		}
	}
}

func roundTrip(t *testing.T, c *AppConfig, now time.Time) {
	t.Helper()
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Parse(b, c.BaseDir, now)
	if err != nil {
		t.Fatalf("re-parse of\n%s: %v", b, err)
	}
	if !reflect.DeepEqual(c, c2) {
		t.Fatalf("round trip differs:\n%+v\n%+v\n%s", c, c2, b)
	}
	if strings.Contains(string(b), c.BaseDir) {
		t.Errorf("marshalled paths are not relative:\n%s", b)
	}
}

func TestLoadRelativePaths(t *testing.T) {
	dir, _ := project(t)
	write(t, dir, "sub/mse.toml", []byte(topPy+"[cloud]\ncode = \"../code\"\nsecrets = \"../secrets.json\"\n"), 0o644)
	c, err := Load(filepath.Join(dir, "sub", "mse.toml"), now)
	if err != nil {
		t.Fatal(err)
	}
	if c.Cloud.Code != filepath.Join(dir, "code") || c.BaseDir != filepath.Join(dir, "sub") {
		t.Errorf("code %s base %s", c.Cloud.Code, c.BaseDir)
	}
	// Absolute paths stay.
	abs := filepath.Join(dir, "code")
	c, err = Parse([]byte(topPy+"[cloud]\ncode = '"+abs+"'\n"), t.TempDir(), now)
	if err != nil || c.Cloud.Code != abs {
		t.Fatalf("absolute code: %v %v", c, err)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml"), now); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestValidateBuilt(t *testing.T) {
	dir, _ := project(t)
	c := &AppConfig{Name: "x", Entrypoint: []string{"./server"}, HealthcheckEndpoint: "/",
		Cloud: CloudConfig{Code: filepath.Join(dir, "code"), Project: "p", Hardware: "4g"}}
	if err := c.Validate(now); err != nil {
		t.Fatal(err)
	}
	c.Cloud.ExpirationDate = now.Add(-time.Second)
	if findField(c.Validate(now), "cloud.expiration_date") == nil {
		t.Error("past date accepted")
	}
}

func TestValidateName(t *testing.T) {
	for _, n := range []string{"a", "helloworld", "go-hello", "my_app.v2", "A1"} {
		if err := ValidateName(n); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
	for _, n := range []string{"", ".", "..", "-a", "_a", ".a", "a b", "a/b", `a\b`, "é", "a\n"} {
		if ValidateName(n) == nil {
			t.Errorf("%q accepted", n)
		}
	}
}

func repoRoot(t *testing.T) string {
	return filepath.Join("..", "..")
}

func TestExamples(t *testing.T) {
	c, err := Load(filepath.Join(repoRoot(t), "examples", "helloworld", "mse.toml"), time.Now())
	if err != nil {
		t.Fatalf("helloworld: %v", err)
	}
	if c.Name != "helloworld" || c.PythonApplication != "app:app" || c.HealthcheckEndpoint != "/health" || c.TLSMode() != TLSSelf {
		t.Errorf("helloworld: %+v", c)
	}
	// go-hello needs its binary: in a copy, with a stand-in for it.
	src := filepath.Join(repoRoot(t), "examples", "go-hello", "mse.toml")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write(t, dir, "mse.toml", b, 0o644)
	write(t, dir, "code/.keep", nil, 0o644)
	_, err = Load(filepath.Join(dir, "mse.toml"), time.Now())
	if fe := findField(err, "entrypoint[0]"); fe == nil || !strings.Contains(fe.Rule, "build it there first") {
		t.Errorf("go-hello without binary: %v", err)
	}
	write(t, dir, "code/go-hello", []byte("stand-in"), 0o755)
	c, err = Load(filepath.Join(dir, "mse.toml"), time.Now())
	if err != nil {
		t.Fatalf("go-hello: %v", err)
	}
	if !reflect.DeepEqual(c.Entrypoint, []string{"./go-hello"}) || c.Cloud.Code != filepath.Join(dir, "code") {
		t.Errorf("go-hello: %+v", c)
	}
}

func TestTestdata(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "valid", "*.toml"))
	if len(files) == 0 {
		t.Fatal("no testdata/valid/*.toml")
	}
	for _, f := range files {
		c, err := Load(f, now)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		roundTrip(t, c, now)
	}
	// Each invalid file is refused for the reason it was written for.
	invalid := map[string][]string{
		"bad-paths.toml":          {"cloud.code", "cloud.tests", "cloud.secrets"},
		"both.toml":               {"entrypoint"},
		"docker-and-runtime.toml": {"cloud.runtime", "cloud.start_timeout"},
		"neither.toml":            {"python_application"},
		"unknown-key.toml":        {"colour"},
		"acme-and-ssl.toml":       {"cloud.acme", "cloud.acme.directory_url", "cloud.ssl.certificate"},
	}
	files, _ = filepath.Glob(filepath.Join("testdata", "invalid", "*.toml"))
	if len(files) != len(invalid) {
		t.Errorf("%d files in testdata/invalid, %d described here", len(files), len(invalid))
	}
	for _, f := range files {
		_, err := Load(f, now)
		if err == nil {
			t.Errorf("%s accepted", f)
			continue
		}
		fields, ok := invalid[filepath.Base(f)]
		if !ok {
			t.Errorf("%s: say which fields it must be refused for", f)
		}
		for _, field := range fields {
			if findField(err, field) == nil {
				t.Errorf("%s: no error for %s in: %v", f, field, err)
			}
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		topPy + cloudMin,
		topPy + cloudMin + "hardware = \"8g\"\nexpiration_date = 2031-01-01T00:00:00Z\n",
		"name = \"x\"\nentrypoint = [\"./server\", \"-v\"]\nhealthcheck_endpoint = \"/\"\n" + cloudMin + "tests = \"tests\"\n",
		topPy + "tests_requirements = [\"a\", \"b\"]\ntests_cmd = \"pytest\"\n" + cloudMin + "project = \"p\"\n",
		topPy + cloudMin + sslOK,
		topPy + cloudMin + acme(),
		topPy + cloudMin + acme(`directory_url = "`+acmeDir+`"`, `roots = "acme-roots.pem"`, `email = "ops@example.com"`, `domain_name = "shop.example.com"`),
		topPy + cloudMin + "expiration_date = \"2031-01-01 00:00:00+00:00\"\n",
		"name = \n", "[cloud]\n[cloud]\n", "a.b.c = 1\n", "cloud = []\n",
	} {
		f.Add([]byte(s))
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "*", "*.toml"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	dir, _ := project(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b, dir, now)
		if err != nil {
			if c != nil {
				t.Fatal("config with error")
			}
			for _, e := range flatten(err) {
				var fe *FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("error is not a FieldError: %T %v", e, e)
				}
			}
			return
		}
		if err := c.Validate(now); err != nil {
			t.Fatalf("parsed config does not validate: %v", err)
		}
		roundTrip(t, c, now)
	})
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}
