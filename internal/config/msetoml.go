package config

// mse.toml: the app owner's configuration file. Parsing, path resolution and
// validation; the rules, their origin in Cosmian's mse-cli and the defaults are
// documented in docs/mse-toml.md.

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pelletier/go-toml/v2"

	"github.com/mse-in-go/mse/internal/runtimes"
	"github.com/mse-in-go/mse/internal/spec"
)

// Defaults applied by Parse when the key is absent.
const (
	// DefaultHardware is the hardware (enclave size) asked for when
	// cloud.hardware is absent.
	DefaultHardware = "4g"
	// DefaultProject is the project used when cloud.project is absent
	// (the name of the project every MSE account starts with).
	DefaultProject = "default"
	// FileName is the conventional name of the configuration file.
	FileName = "mse.toml"
	// DefaultStartTimeout is how long an app has to answer its health check
	// when cloud.start_timeout is absent.
	DefaultStartTimeout = spec.DefaultStartTimeout
	// MaxStartTimeout is the largest cloud.start_timeout a file may ask for
	// (operators may allow less).
	MaxStartTimeout = spec.MaxStartTimeout
)

// Size bounds of the files read while loading a configuration.
const (
	MaxConfigSize      = 1 << 20               // mse.toml
	MaxSecretsSize     = 1 << 20               // cloud.secrets (JSON)
	MaxCertificateSize = 1 << 20               // cloud.ssl.certificate (PEM chain)
	MaxPrivateKeySize  = 64 << 10              // cloud.ssl.private_key (PEM)
	MaxACMERootsSize   = spec.MaxACMERootsSize // cloud.acme.roots (PEM)
	maxEmail           = 254
	maxEntrypointArgs  = 256
	maxEntrypointArg   = 4096
)

// AppConfig is a parsed mse.toml. After Parse or Load, every path is absolute
// (relative paths in the file are resolved against the file's directory,
// BaseDir).
type AppConfig struct {
	// Name of the app (unique per project).
	Name string
	// PythonApplication is "module:variable" of a WSGI/ASGI app. Exclusive
	// with Entrypoint.
	PythonApplication string
	// Entrypoint is the argv of any HTTP server, run in the code directory.
	// Exclusive with PythonApplication.
	Entrypoint []string
	// HealthcheckEndpoint is the path the node polls until the app answers.
	HealthcheckEndpoint string
	// TestsCmd is the command that tests the app (local `mse test`).
	TestsCmd string
	// TestsRequirements are the Python packages the tests need.
	TestsRequirements []string

	Cloud CloudConfig

	// BaseDir is the directory of the mse.toml (absolute).
	BaseDir string
}

// CloudConfig is the [cloud] table.
type CloudConfig struct {
	// Code is the directory that is packaged, encrypted and run.
	Code string
	// Tests is the directory of the app's tests (optional).
	Tests string
	// Project the app belongs to (DefaultProject if absent).
	Project string
	// Hardware names the enclave size (DefaultHardware if absent).
	Hardware string
	// Runtime is the runtime image reference (MSE's docker key, or its alias
	// runtime): a name or image the operator offers, optionally pinned with
	// @sha256:…. Empty: the operator's default runtime.
	Runtime string
	// StartTimeout bounds the app's start, until its health check answers
	// (zero: DefaultStartTimeout).
	StartTimeout time.Duration
	// Secrets is a JSON file of app secrets, sent to the node in stage 2
	// only (optional).
	Secrets string
	// SealedSecrets is a JSON file of secrets sealed to the enclave (HPKE to
	// the node's attested key) before they leave the owner's machine.
	SealedSecrets string
	// ExpirationDate is when the app is stopped. Zero: none in the file and
	// no owner certificate; the backend applies its maximum lifetime. With
	// [cloud.ssl] and no date in the file, Parse sets it to the certificate's
	// expiry.
	ExpirationDate time.Time
	// SSL is the owner's certificate (TLS scenario 2); nil for scenario 1.
	SSL *SSLConfig
	// ACME selects tls_mode acme: the node makes its key inside the enclave
	// and gets a certificate for it from an ACME CA. Exclusive with SSL.
	ACME *ACMEConfig
}

// ACMEConfig is the [cloud.acme] table (tls_mode acme). Every key is
// optional: an empty table means the operator's default CA and the domain
// the platform assigns.
type ACMEConfig struct {
	// DirectoryURL is the CA's ACME directory (https); empty: the
	// operator's default CA.
	DirectoryURL string
	// Roots is the path of a PEM file of the roots the node trusts for the
	// CA's own HTTPS server (its content goes into spec.ACME.RootsPEM);
	// empty: the runtime's system roots. Only with DirectoryURL.
	Roots string
	// Email is the ACME account contact (optional).
	Email string
	// DomainName is a custom domain; the backend serves it only to the
	// account that holds its reservation. Empty: the platform's domain.
	DomainName string
}

// SSLConfig is the [cloud.ssl] table: the owner's own domain and certificate.
type SSLConfig struct {
	DomainName  string
	PrivateKey  string // path of the PEM private key; never sent to the backend
	Certificate string // path of the PEM certificate chain, leaf first
}

// FieldError is one invalid field of an mse.toml and the rule it breaks.
// Field is the dotted key ("cloud.ssl.domain_name", "entrypoint[0]"); it is
// empty for errors about the whole file (syntax, size).
type FieldError struct {
	Field string
	Rule  string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return "mse.toml: " + e.Rule
	}
	return "mse.toml: " + e.Field + ": " + e.Rule
}

// TLSMode is TLSOwner when [cloud.ssl] is set, TLSACME when [cloud.acme]
// is, else TLSSelf. (TLSOperator is not a file setting: `mse cloud deploy
// --untrusted-ssl` chooses it.)
func (c *AppConfig) TLSMode() string {
	switch {
	case c.Cloud.SSL != nil:
		return TLSOwner
	case c.Cloud.ACME != nil:
		return TLSACME
	}
	return TLSSelf
}

// ReadRoots returns the PEM roots of the CA's HTTPS server (bounded); nil
// when cloud.acme.roots is not set.
func (a *ACMEConfig) ReadRoots() ([]byte, error) {
	if a.Roots == "" {
		return nil, nil
	}
	return readBounded(a.Roots, MaxACMERootsSize)
}

// ReadCertificate returns the PEM certificate chain (public; it goes into the
// app's Spec as OwnerCertificate).
func (s *SSLConfig) ReadCertificate() ([]byte, error) {
	return readBounded(s.Certificate, MaxCertificateSize)
}

// ReadPrivateKey reads the private key file (bounded), for stage 2.
func (s *SSLConfig) ReadPrivateKey() ([]byte, error) {
	return readBounded(s.PrivateKey, MaxPrivateKeySize)
}

// ReadSecrets reads the app secrets file (bounded); nil when none is set.
func (c *CloudConfig) ReadSecrets() ([]byte, error) {
	if c.Secrets == "" {
		return nil, nil
	}
	return readBounded(c.Secrets, MaxSecretsSize)
}

// Load reads and parses the mse.toml at path; relative paths in it are
// resolved against its directory.
func Load(path string, now time.Time) (*AppConfig, error) {
	b, err := readBounded(path, MaxConfigSize)
	if err != nil {
		return nil, err
	}
	return Parse(b, filepath.Dir(path), now)
}

// Parse decodes an mse.toml, applies defaults, resolves relative paths against
// baseDir and validates the result (Validate). Errors are *FieldError, several
// joined with errors.Join.
func Parse(b []byte, baseDir string, now time.Time) (*AppConfig, error) {
	if len(b) > MaxConfigSize {
		return nil, &FieldError{Rule: fmt.Sprintf("file is larger than %d bytes", MaxConfigSize)}
	}
	if !utf8.Valid(b) {
		return nil, &FieldError{Rule: "file is not valid UTF-8"}
	}
	var m map[string]any
	if err := toml.Unmarshal(b, &m); err != nil {
		return nil, syntaxError(err)
	}
	if baseDir == "" {
		baseDir = "."
	}
	abs, err := filepath.Abs(baseDir)
	if err != nil {
		return nil, fmt.Errorf("mse.toml: base directory %q: %w", baseDir, err)
	}
	d := &decoder{}
	c := d.app(m)
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	c.BaseDir = abs
	c.resolvePaths()
	leaf, errs := c.validate(now)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	// MSE: without expiration_date, an app with the owner's certificate
	// expires with the certificate.
	if leaf != nil && c.Cloud.ExpirationDate.IsZero() {
		c.Cloud.ExpirationDate = leaf.NotAfter.UTC()
	}
	return c, nil
}

// Validate checks every rule of docs/mse-toml.md, including the files the
// configuration names (code directory, secrets, owner certificate and key).
// Relative paths are taken relative to the working directory.
func (c *AppConfig) Validate(now time.Time) error {
	_, errs := c.validate(now)
	return errors.Join(errs...)
}

// ValidateName checks an app name against the rule of mse.toml's name.
func ValidateName(name string) error {
	if e := nameRule(name); e != "" {
		return &FieldError{Field: "name", Rule: e}
	}
	return nil
}

// ---- decoding ----

var knownKeys = map[string][]string{
	"":           {"name", "python_application", "entrypoint", "healthcheck_endpoint", "tests_cmd", "tests_requirements", "cloud"},
	"cloud":      {"code", "tests", "project", "hardware", "docker", "runtime", "start_timeout", "secrets", "sealed_secrets", "expiration_date", "ssl", "acme"},
	"cloud.ssl":  {"domain_name", "private_key", "certificate"},
	"cloud.acme": {"directory_url", "roots", "email", "domain_name"},
}

// hints for keys of other MSE versions, which are refused with a pointer.
var keyHints = map[string]string{
	"cloud.location":        "renamed: use cloud.code",
	"cloud.dev_mode":        "not a file setting: for tls_mode operator (the operator terminates TLS) deploy with `mse cloud deploy --untrusted-ssl`; remove it",
	"cloud.tls_mode":        "not a file setting: [cloud.ssl] selects tls_mode owner, [cloud.acme] tls_mode acme, `mse cloud deploy --untrusted-ssl` tls_mode operator, none of them self; remove it",
	"code":                  "old MSE layout: move location to [cloud] code, python_application and healthcheck_endpoint to the top level",
	"ssl":                   "old MSE layout: use [cloud.ssl]",
	"version":               "not supported (old MSE layout); remove it",
	"project":               "old MSE layout: use [cloud] project",
	"plan":                  "old MSE layout: use [cloud] hardware",
	"resource":              "old MSE layout: use [cloud] hardware",
	"hardware":              "belongs in [cloud]: use [cloud] hardware",
	"expiration_date":       "belongs in [cloud]: use [cloud] expiration_date",
	"health_check_endpoint": "renamed: use healthcheck_endpoint",
}

// decoder reads the TOML document into an AppConfig, collecting the errors
// of every field (see checker).
type decoder struct{ checker }

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

func (d *decoder) unknown(table string, m map[string]any) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if slices.Contains(knownKeys[table], k) {
			continue
		}
		field := join(table, k)
		if h, ok := keyHints[field]; ok {
			d.fail(field, "unknown key; %s", h)
			continue
		}
		where := "at the top level"
		if table != "" {
			where = "in [" + table + "]"
		}
		d.fail(field, "unknown key; valid keys %s: %s", where, strings.Join(knownKeys[table], ", "))
	}
}

func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case time.Time, toml.LocalDateTime:
		return "a datetime"
	case toml.LocalDate:
		return "a date"
	case toml.LocalTime:
		return "a time"
	}
	return fmt.Sprintf("a %T", v)
}

func (d *decoder) str(m map[string]any, table, key string, trim bool) string {
	v, ok := m[key]
	if !ok {
		return ""
	}
	s, ok := v.(string)
	if !ok {
		d.fail(join(table, key), "must be a string, not %s", tomlType(v))
		return ""
	}
	if trim {
		// MSE's constrained strings strip surrounding whitespace.
		s = strings.TrimSpace(s)
	}
	return s
}

func (d *decoder) strList(m map[string]any, table, key string) []string {
	v, ok := m[key]
	if !ok {
		return nil
	}
	a, ok := v.([]any)
	if !ok {
		d.fail(join(table, key), "must be an array of strings, not %s", tomlType(v))
		return nil
	}
	out := make([]string, 0, len(a))
	for i, e := range a {
		s, ok := e.(string)
		if !ok {
			d.fail(fmt.Sprintf("%s[%d]", join(table, key), i), "must be a string, not %s", tomlType(e))
			continue
		}
		out = append(out, s)
	}
	return out
}

func (d *decoder) table(m map[string]any, table, key string) (map[string]any, bool) {
	v, ok := m[key]
	if !ok {
		return nil, false
	}
	t, ok := v.(map[string]any)
	if !ok {
		d.fail(join(table, key), "must be a table ([%s]), not %s", join(table, key), tomlType(v))
		return nil, false
	}
	return t, true
}

func (d *decoder) app(m map[string]any) *AppConfig {
	d.unknown("", m)
	c := &AppConfig{
		Name:                d.str(m, "", "name", true),
		PythonApplication:   d.str(m, "", "python_application", true),
		HealthcheckEndpoint: d.str(m, "", "healthcheck_endpoint", true),
		TestsCmd:            d.str(m, "", "tests_cmd", false),
		TestsRequirements:   d.strList(m, "", "tests_requirements"),
	}
	if len(c.TestsRequirements) == 0 {
		c.TestsRequirements = nil
	}
	if _, ok := m["entrypoint"]; ok {
		c.Entrypoint = d.strList(m, "", "entrypoint")
		if c.Entrypoint == nil {
			c.Entrypoint = []string{} // present: validated as "must not be empty"
		}
	}
	for _, k := range []string{"name", "healthcheck_endpoint"} {
		if _, ok := m[k]; !ok {
			d.fail(k, "is required")
		}
	}
	cloud, ok := d.table(m, "", "cloud")
	if !ok {
		if _, present := m["cloud"]; !present {
			d.fail("cloud", "is required: add a [cloud] table with at least code = \"<code directory>\"")
		}
		return c
	}
	d.unknown("cloud", cloud)
	c.Cloud = CloudConfig{
		Code:          d.str(cloud, "cloud", "code", false),
		Tests:         d.str(cloud, "cloud", "tests", false),
		Project:       d.str(cloud, "cloud", "project", true),
		Hardware:      d.str(cloud, "cloud", "hardware", true),
		Secrets:       d.str(cloud, "cloud", "secrets", false),
		SealedSecrets: d.str(cloud, "cloud", "sealed_secrets", false),
		Runtime:       d.str(cloud, "cloud", "docker", true),
	}
	if _, ok := cloud["runtime"]; ok {
		if _, both := cloud["docker"]; both {
			d.fail("cloud.runtime", "is an alias of cloud.docker; set only one of them")
		}
		c.Cloud.Runtime = d.str(cloud, "cloud", "runtime", true)
	}
	if v, ok := cloud["start_timeout"]; ok {
		c.Cloud.StartTimeout = d.duration("cloud.start_timeout", v)
	}
	if _, ok := cloud["code"]; !ok {
		d.fail("cloud.code", "is required: the directory of the app's code, relative to mse.toml")
	}
	if _, ok := cloud["project"]; !ok {
		c.Cloud.Project = DefaultProject
	}
	if _, ok := cloud["hardware"]; !ok {
		c.Cloud.Hardware = DefaultHardware
	}
	if v, ok := cloud["expiration_date"]; ok {
		c.Cloud.ExpirationDate = d.date(v)
	}
	if ssl, ok := d.table(cloud, "cloud", "ssl"); ok {
		d.unknown("cloud.ssl", ssl)
		c.Cloud.SSL = &SSLConfig{
			DomainName:  d.str(ssl, "cloud.ssl", "domain_name", true),
			PrivateKey:  d.str(ssl, "cloud.ssl", "private_key", false),
			Certificate: d.str(ssl, "cloud.ssl", "certificate", false),
		}
		for _, k := range knownKeys["cloud.ssl"] {
			if _, ok := ssl[k]; !ok {
				d.fail("cloud.ssl."+k, "is required when [cloud.ssl] is set")
			}
		}
	}
	if acme, ok := d.table(cloud, "cloud", "acme"); ok {
		d.unknown("cloud.acme", acme)
		c.Cloud.ACME = &ACMEConfig{
			DirectoryURL: d.str(acme, "cloud.acme", "directory_url", true),
			Roots:        d.str(acme, "cloud.acme", "roots", false),
			Email:        d.str(acme, "cloud.acme", "email", true),
			DomainName:   d.str(acme, "cloud.acme", "domain_name", true),
		}
	}
	return c
}

// duration reads a timeout: a Go duration string ("90s", "10m") or an
// integer number of seconds.
func (d *decoder) duration(field string, v any) time.Duration {
	var t time.Duration
	switch x := v.(type) {
	case int64:
		if x <= 0 || x > int64(MaxStartTimeout/time.Second) {
			d.fail(field, "must be between 1 and %d seconds", int64(MaxStartTimeout/time.Second))
			return 0
		}
		t = time.Duration(x) * time.Second
	case string:
		p, err := time.ParseDuration(strings.TrimSpace(x))
		if err != nil {
			d.fail(field, "%q is not a duration; write one such as \"90s\" or \"10m\", or a number of seconds", x)
			return 0
		}
		t = p
	default:
		d.fail(field, "must be a duration string such as \"10m\" or a number of seconds, not %s", tomlType(v))
		return 0
	}
	if t < time.Second || t > MaxStartTimeout {
		d.fail(field, "%s is out of range: use 1s to %s", t, MaxStartTimeout)
		return 0
	}
	return t
}

// Layouts accepted for an expiration_date written as a string (MSE's own
// files use "2024-03-14 00:00:00+00:00").
var dateLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02",
}

// date converts a TOML datetime (or a string in one of dateLayouts) to UTC.
// A datetime without offset is read as UTC.
func (d *decoder) date(v any) time.Time {
	const field = "cloud.expiration_date"
	var t time.Time
	switch x := v.(type) {
	case time.Time:
		t = x
	case toml.LocalDateTime:
		t = x.AsTime(time.UTC)
	case toml.LocalDate:
		t = x.AsTime(time.UTC)
	case string:
		s := strings.TrimSpace(x)
		for _, l := range dateLayouts {
			if p, err := time.ParseInLocation(l, s, time.UTC); err == nil {
				t = p
				break
			}
		}
		if t.IsZero() {
			d.fail(field, "%q is not a date; write a TOML datetime such as 2030-01-31T00:00:00Z", x)
			return time.Time{}
		}
	default:
		d.fail(field, "must be a TOML datetime such as 2030-01-31T00:00:00Z, not %s", tomlType(v))
		return time.Time{}
	}
	if t.IsZero() {
		d.fail(field, "must not be the zero time (0001-01-01)")
	}
	return t.UTC()
}

func syntaxError(err error) error {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		msg := de.Error()
		msg = strings.TrimPrefix(msg, "toml: ")
		fe := &FieldError{Rule: fmt.Sprintf("line %d, column %d: invalid TOML: %s", row, col, msg)}
		if k := de.Key(); len(k) > 0 {
			fe.Field = strings.Join(k, ".")
		}
		return fe
	}
	return &FieldError{Rule: "invalid TOML: " + strings.TrimPrefix(err.Error(), "toml: ")}
}

// ---- paths ----

func (c *AppConfig) abs(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.BaseDir, p)
}

func (c *AppConfig) resolvePaths() {
	c.Cloud.Code = c.abs(c.Cloud.Code)
	c.Cloud.Tests = c.abs(c.Cloud.Tests)
	c.Cloud.Secrets = c.abs(c.Cloud.Secrets)
	c.Cloud.SealedSecrets = c.abs(c.Cloud.SealedSecrets)
	if s := c.Cloud.SSL; s != nil {
		s.PrivateKey = c.abs(s.PrivateKey)
		s.Certificate = c.abs(s.Certificate)
	}
	if a := c.Cloud.ACME; a != nil {
		a.Roots = c.abs(a.Roots)
	}
}

func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

// ---- validation ----

var (
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	pyIdentRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	hardwareRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
)

func nameRule(name string) string {
	switch {
	case name == "":
		return "must not be empty"
	case len(name) > 255:
		return fmt.Sprintf("is %d characters long; the maximum is 255", len(name))
	case !nameRE.MatchString(name):
		return fmt.Sprintf("%q: use letters, digits, '.', '_' and '-', starting with a letter or a digit", name)
	}
	return ""
}

// str255 is MSE's Str255: 1 to 255 characters (after trimming).
func str255(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case utf8.RuneCountInString(s) > 255:
		return fmt.Sprintf("is %d characters long; the maximum is 255", utf8.RuneCountInString(s))
	}
	return ""
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) }) >= 0
}

// checker collects FieldErrors, so that one run reports every invalid field.
type checker struct{ errs []error }

func (k *checker) fail(field, format string, args ...any) {
	k.errs = append(k.errs, &FieldError{Field: field, Rule: fmt.Sprintf(format, args...)})
}

func (c *AppConfig) validate(now time.Time) (*x509.Certificate, []error) {
	k := &checker{}
	if e := nameRule(c.Name); e != "" {
		k.fail("name", "%s", e)
	}
	c.checkApplication(k)
	c.checkHealthcheck(k)
	for i, r := range c.TestsRequirements {
		if strings.TrimSpace(r) == "" {
			k.fail(fmt.Sprintf("tests_requirements[%d]", i), "must not be empty")
		}
	}
	if hasControl(c.TestsCmd) {
		k.fail("tests_cmd", "must not contain control characters")
	}
	codeOK := c.checkDir(k, "cloud.code", c.Cloud.Code, true)
	if codeOK {
		c.checkEntrypointProgram(k)
	}
	if c.Cloud.Tests != "" {
		c.checkDir(k, "cloud.tests", c.Cloud.Tests, false)
	}
	if e := str255(c.Cloud.Project); e != "" {
		k.fail("cloud.project", "%s", e)
	} else if hasControl(c.Cloud.Project) {
		k.fail("cloud.project", "must not contain control characters")
	}
	switch {
	case c.Cloud.Hardware == "":
		k.fail("cloud.hardware", "must not be empty (remove the key to use %q)", DefaultHardware)
	case len(c.Cloud.Hardware) > 16:
		k.fail("cloud.hardware", "%q is %d characters long; the maximum is 16", c.Cloud.Hardware, len(c.Cloud.Hardware))
	case !hardwareRE.MatchString(c.Cloud.Hardware):
		k.fail("cloud.hardware", "%q: use letters, digits, '.', '_' and '-' (e.g. %q)", c.Cloud.Hardware, DefaultHardware)
	}
	if c.Cloud.Secrets != "" {
		c.checkJSONObject(k, "cloud.secrets", c.Cloud.Secrets)
	}
	if c.Cloud.SealedSecrets != "" {
		c.checkJSONObject(k, "cloud.sealed_secrets", c.Cloud.SealedSecrets)
	}
	if c.Cloud.Runtime != "" {
		if _, err := runtimes.ParseRef(c.Cloud.Runtime); err != nil {
			k.fail("cloud.docker", "%v", err)
		}
	}
	exp := c.Cloud.ExpirationDate
	if !exp.IsZero() && !exp.After(now) {
		k.fail("cloud.expiration_date", "%s is in the past; set a future date or remove it", exp.UTC().Format(time.RFC3339))
	}
	var leaf *x509.Certificate
	if c.Cloud.SSL != nil {
		leaf = c.checkSSL(k, now)
	}
	if c.Cloud.ACME != nil {
		if c.Cloud.SSL != nil {
			k.fail("cloud.acme", "cannot be used together with [cloud.ssl]; keep one of them: [cloud.ssl] serves your own certificate (tls_mode owner), [cloud.acme] a certificate an ACME CA issues for the enclave's own key (tls_mode acme)")
		}
		c.checkACME(k)
	}
	return leaf, k.errs
}

func (c *AppConfig) checkApplication(k *checker) {
	hasPy, hasEntry := c.PythonApplication != "", c.Entrypoint != nil
	switch {
	case hasPy && hasEntry:
		k.fail("entrypoint", "cannot be used together with python_application; keep one of them")
		return
	case !hasPy && !hasEntry:
		k.fail("python_application", "one of python_application (\"module:variable\" of a WSGI app) or entrypoint (argv of an HTTP server) is required")
		return
	}
	if hasPy {
		p := c.PythonApplication
		if e := str255(p); e != "" {
			k.fail("python_application", "%s", e)
			return
		}
		parts := strings.Split(p, ":")
		if len(parts) != 2 {
			k.fail("python_application", "%q is malformed; expected format: module:variable (e.g. \"app:app\")", p)
			return
		}
		mod, v := parts[0], parts[1]
		for _, seg := range strings.Split(mod, ".") {
			if !pyIdentRE.MatchString(seg) {
				k.fail("python_application", "%q: module %q is not a Python module path (identifiers separated by '.')", p, mod)
				return
			}
		}
		if !pyIdentRE.MatchString(v) {
			k.fail("python_application", "%q: variable %q is not a Python identifier", p, v)
		}
		return
	}
	if len(c.Entrypoint) == 0 {
		k.fail("entrypoint", "must not be empty: give the program and its arguments, e.g. [\"./server\", \"--flag\"]")
		return
	}
	if len(c.Entrypoint) > maxEntrypointArgs {
		k.fail("entrypoint", "has %d elements; the maximum is %d", len(c.Entrypoint), maxEntrypointArgs)
		return
	}
	for i, a := range c.Entrypoint {
		f := fmt.Sprintf("entrypoint[%d]", i)
		switch {
		case i == 0 && strings.TrimSpace(a) == "":
			k.fail(f, "the program must not be empty")
		case len(a) > maxEntrypointArg:
			k.fail(f, "is %d bytes long; the maximum is %d", len(a), maxEntrypointArg)
		case strings.ContainsRune(a, 0):
			k.fail(f, "must not contain a NUL character")
		}
	}
}

// checkEntrypointProgram: a relative program path ("./server", "bin/server")
// names a file of the code directory, which is the app's working directory.
func (c *AppConfig) checkEntrypointProgram(k *checker) {
	if len(c.Entrypoint) == 0 || c.PythonApplication != "" {
		return
	}
	prog := c.Entrypoint[0]
	if prog == "" || filepath.IsAbs(prog) || !strings.ContainsAny(prog, `/\`) {
		return // absolute: the node's runtime image; bare name: looked up in PATH
	}
	rel := filepath.Clean(filepath.FromSlash(prog))
	if rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		k.fail("entrypoint[0]", "%q leaves the code directory; a relative program must be inside cloud.code", prog)
		return
	}
	p := filepath.Join(c.Cloud.Code, rel)
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		k.fail("entrypoint[0]", "%q is not in the code directory %s (build it there first)", prog, c.Cloud.Code)
	case !fi.Mode().IsRegular():
		k.fail("entrypoint[0]", "%q is not a regular file", prog)
	case runtime.GOOS != "windows" && fi.Mode().Perm()&0o111 == 0:
		k.fail("entrypoint[0]", "%q is not executable (chmod +x it)", prog)
	}
}

func (c *AppConfig) checkHealthcheck(k *checker) {
	h := c.HealthcheckEndpoint
	if e := str255(h); e != "" {
		k.fail("healthcheck_endpoint", "%s", e)
		return
	}
	switch {
	case !strings.HasPrefix(h, "/"):
		k.fail("healthcheck_endpoint", "%q should start with a \"/\"", h)
	case strings.HasPrefix(h, "//"):
		k.fail("healthcheck_endpoint", "%q: a path must not start with \"//\"", h)
	case strings.ContainsAny(h, " #") || hasControl(h):
		k.fail("healthcheck_endpoint", "%q: a path must not contain spaces, '#' or control characters", h)
	}
}

func (c *AppConfig) checkDir(k *checker, field, p string, required bool) bool {
	if p == "" {
		if required {
			k.fail(field, "is required")
		}
		return false
	}
	fi, err := os.Stat(p)
	switch {
	case errors.Is(err, os.ErrNotExist):
		k.fail(field, "directory %s does not exist", p)
		return false
	case err != nil:
		k.fail(field, "%v", err)
		return false
	case !fi.IsDir():
		k.fail(field, "%s is not a directory", p)
		return false
	}
	return true
}

func fileError(k *checker, field, p string, err error) {
	if errors.Is(err, os.ErrNotExist) {
		k.fail(field, "file %s does not exist", p)
		return
	}
	k.fail(field, "%v", err)
}

func (c *AppConfig) checkJSONObject(k *checker, field, path string) {
	b, err := readBounded(path, MaxSecretsSize)
	if err != nil {
		fileError(k, field, path, err)
		return
	}
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&obj); err != nil || obj == nil || dec.More() {
		// Never quote the content: it is secret.
		k.fail(field, "%s is not a JSON object", path)
	}
}

// ReadSealedSecrets reads the sealed secrets file (bounded); nil when none
// is set.
func (c *CloudConfig) ReadSealedSecrets() ([]byte, error) {
	if c.SealedSecrets == "" {
		return nil, nil
	}
	return readBounded(c.SealedSecrets, MaxSecretsSize)
}

func (c *AppConfig) checkSSL(k *checker, now time.Time) *x509.Certificate {
	s := c.Cloud.SSL
	domainOK := true
	if e := str255(s.DomainName); e != "" {
		k.fail("cloud.ssl.domain_name", "%s", e)
		domainOK = false
	} else if e := spec.DomainRule(s.DomainName); e != "" {
		k.fail("cloud.ssl.domain_name", "%q %s", s.DomainName, e)
		domainOK = false
	}
	if s.Certificate == "" {
		k.fail("cloud.ssl.certificate", "is required when [cloud.ssl] is set")
		return nil
	}
	chain, err := c.readChain(s.Certificate)
	if err != nil {
		k.fail("cloud.ssl.certificate", "%s", err)
		return nil
	}
	leaf := chain[0]
	if domainOK {
		if err := leaf.VerifyHostname(s.DomainName); err != nil {
			k.fail("cloud.ssl.domain_name", "%s should be present in the SSL certificate as a Subject Alternative Name (the certificate names %s)",
				s.DomainName, describeNames(leaf.DNSNames))
		}
	}
	switch {
	case !now.Before(leaf.NotAfter):
		k.fail("cloud.ssl.certificate", "the certificate expired on %s; renew it", leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		k.fail("cloud.ssl.certificate", "the certificate is not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if exp := c.Cloud.ExpirationDate; !exp.IsZero() && exp.After(leaf.NotAfter) {
		k.fail("cloud.expiration_date", "%s can't be after the certificate expiration date (%s); set an earlier date or remove it to expire with the certificate",
			exp.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if s.PrivateKey == "" {
		k.fail("cloud.ssl.private_key", "is required when [cloud.ssl] is set")
		return leaf
	}
	if e := checkKeyMatches(s.PrivateKey, leaf); e != "" {
		k.fail("cloud.ssl.private_key", "%s", e)
	}
	return leaf
}

// checkACME checks [cloud.acme]. The rules are those the node applies to
// spec.ACME (https directory, bounded roots that parse, one address), said
// in terms of the file.
func (c *AppConfig) checkACME(k *checker) {
	a := c.Cloud.ACME
	if a.DirectoryURL != "" {
		if e := ACMEDirectoryRule(a.DirectoryURL); e != "" {
			k.fail("cloud.acme.directory_url", "%s", e)
		}
	}
	if a.Roots != "" {
		if a.DirectoryURL == "" {
			k.fail("cloud.acme.roots", "needs cloud.acme.directory_url: the roots are those of that CA's HTTPS server (without directory_url the node uses the operator's default CA, with the roots the operator gives for it); set directory_url or remove roots")
		} else if e := checkRootsFile(a.Roots); e != "" {
			k.fail("cloud.acme.roots", "%s", e)
		}
	}
	if a.Email != "" {
		if e := emailRule(a.Email); e != "" {
			k.fail("cloud.acme.email", "%s", e)
		}
	}
	if a.DomainName != "" {
		if e := str255(a.DomainName); e != "" {
			k.fail("cloud.acme.domain_name", "%s", e)
		} else if e := spec.DomainRule(a.DomainName); e != "" {
			k.fail("cloud.acme.domain_name", "%q %s; or remove domain_name to be served on the domain the platform assigns", a.DomainName, e)
		}
	}
}

// ACMEDirectoryRule is spec.ACMEDirectoryRule (the CLI applies it to the
// operator's default CA too).
func ACMEDirectoryRule(u string) string { return spec.ACMEDirectoryRule(u) }

// checkRootsFile reads a PEM file of roots (bounded) and says what is wrong
// with it, or "".
func checkRootsFile(path string) string {
	b, err := readBounded(path, MaxACMERootsSize)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Sprintf("file %s does not exist", path)
		}
		return err.Error()
	}
	for rest := b; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if strings.Contains(blk.Type, "PRIVATE KEY") {
			// Never quote it.
			return fmt.Sprintf("%s holds a %s: only the root certificates of the CA's HTTPS server belong here", path, blk.Type)
		}
	}
	if _, err := spec.ParseCertificatesPEM(b, path); err != nil {
		return err.Error()
	}
	return ""
}

// emailRule says what is wrong with an ACME account contact, or "".
func emailRule(s string) string {
	if len(s) > maxEmail {
		return fmt.Sprintf("is %d bytes long; the maximum is %d", len(s), maxEmail)
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s || strings.ContainsAny(s, " \t\r\n,") || !strings.Contains(s[strings.LastIndex(s, "@")+1:], ".") {
		return fmt.Sprintf("%q is not one e-mail address (e.g. \"ops@example.com\")", s)
	}
	return ""
}

func describeNames(names []string) string {
	if len(names) == 0 {
		return "no DNS name"
	}
	return strings.Join(names, ", ")
}

// readChain parses a PEM file of certificates, leaf first, each issued by the
// next one.
func (c *AppConfig) readChain(path string) ([]*x509.Certificate, error) {
	b, err := readBounded(path, MaxCertificateSize)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("file %s does not exist", path)
		}
		return nil, err
	}
	return spec.ParseCertificateChainPEM(b, path)
}

// checkKeyMatches reads a PEM private key and checks that it is the key of the
// leaf certificate. Its messages never contain key material.
func checkKeyMatches(path string, leaf *x509.Certificate) string {
	b, err := readBounded(path, MaxPrivateKeySize)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Sprintf("file %s does not exist", path)
		}
		return err.Error()
	}
	signer, err := spec.ParsePrivateKeyPEM(b)
	if err != nil {
		return fmt.Sprintf("%s: %v", path, err)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return fmt.Sprintf("%s does not match the public key of the certificate (%s); use the private key the certificate was issued for", path, leaf.Subject)
	}
	return ""
}

// ---- encoding ----

type fileSSL struct {
	DomainName  string `toml:"domain_name"`
	PrivateKey  string `toml:"private_key"`
	Certificate string `toml:"certificate"`
}

type fileACME struct {
	DirectoryURL string `toml:"directory_url,omitempty"`
	Roots        string `toml:"roots,omitempty"`
	Email        string `toml:"email,omitempty"`
	DomainName   string `toml:"domain_name,omitempty"`
}

type fileCloud struct {
	Code           string     `toml:"code"`
	Tests          string     `toml:"tests,omitempty"`
	Project        string     `toml:"project,omitempty"`
	Hardware       string     `toml:"hardware,omitempty"`
	Docker         string     `toml:"docker,omitempty"`
	StartTimeout   string     `toml:"start_timeout,omitempty"`
	Secrets        string     `toml:"secrets,omitempty"`
	SealedSecrets  string     `toml:"sealed_secrets,omitempty"`
	ExpirationDate *time.Time `toml:"expiration_date,omitempty"`
	SSL            *fileSSL   `toml:"ssl,omitempty"`
	ACME           *fileACME  `toml:"acme,omitempty"`
}

type fileApp struct {
	Name                string    `toml:"name"`
	PythonApplication   string    `toml:"python_application,omitempty"`
	Entrypoint          []string  `toml:"entrypoint,omitempty"`
	HealthcheckEndpoint string    `toml:"healthcheck_endpoint"`
	TestsCmd            string    `toml:"tests_cmd,omitempty"`
	TestsRequirements   []string  `toml:"tests_requirements,omitempty"`
	Cloud               fileCloud `toml:"cloud"`
}

// Marshal writes the configuration as an mse.toml. Paths under BaseDir are
// written relative to it (with '/'), so the file can be moved with its tree.
func (c *AppConfig) Marshal() ([]byte, error) {
	rel := func(p string) string {
		if p == "" || c.BaseDir == "" || !filepath.IsAbs(p) {
			return filepath.ToSlash(p)
		}
		r, err := filepath.Rel(c.BaseDir, p)
		if err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
			return filepath.ToSlash(p)
		}
		return filepath.ToSlash(r)
	}
	f := fileApp{
		Name:                c.Name,
		PythonApplication:   c.PythonApplication,
		Entrypoint:          c.Entrypoint,
		HealthcheckEndpoint: c.HealthcheckEndpoint,
		TestsCmd:            c.TestsCmd,
		TestsRequirements:   c.TestsRequirements,
		Cloud: fileCloud{
			Code:          rel(c.Cloud.Code),
			Tests:         rel(c.Cloud.Tests),
			Project:       c.Cloud.Project,
			Hardware:      c.Cloud.Hardware,
			Docker:        c.Cloud.Runtime,
			Secrets:       rel(c.Cloud.Secrets),
			SealedSecrets: rel(c.Cloud.SealedSecrets),
		},
	}
	if c.Cloud.StartTimeout > 0 {
		f.Cloud.StartTimeout = c.Cloud.StartTimeout.String()
	}
	if !c.Cloud.ExpirationDate.IsZero() {
		t := c.Cloud.ExpirationDate.UTC()
		f.Cloud.ExpirationDate = &t
	}
	if s := c.Cloud.SSL; s != nil {
		f.Cloud.SSL = &fileSSL{DomainName: s.DomainName, PrivateKey: rel(s.PrivateKey), Certificate: rel(s.Certificate)}
	}
	if a := c.Cloud.ACME; a != nil {
		f.Cloud.ACME = &fileACME{DirectoryURL: a.DirectoryURL, Roots: rel(a.Roots), Email: a.Email, DomainName: a.DomainName}
	}
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf)
	enc.SetIndentTables(false)
	if err := enc.Encode(f); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
