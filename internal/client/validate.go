package client

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/mse-in-go/mse/internal/config"
)

// Answers are checked before use (issue 7, item 3): a broken or hostile
// backend must not make a caller index an empty list, print a control
// sequence, or paste a shell command it chose. The CLI still quotes what it
// prints; this is the first line.

var (
	uuidRE  = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	hex64RE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	hexRE   = regexp.MustCompile(`^[0-9a-f]{0,256}$`)
	wordRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	hostRE  = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$`)
)

var statuses = map[string]bool{"spawning": true, "initializing": true, "running": true, "stopped": true, "on_error": true}

// validator is implemented by answers that check themselves.
type validator interface{ validate() error }

// validateAnswer checks a decoded answer.
func validateAnswer(out any) error {
	switch v := out.(type) {
	case validator:
		return v.validate()
	case *[]App:
		for i := range *v {
			if err := (*v)[i].validate(); err != nil {
				return fmt.Errorf("app %d: %w", i, err)
			}
		}
	case *[]Hardware:
		for i := range *v {
			if err := (*v)[i].validate(); err != nil {
				return fmt.Errorf("hardware %d: %w", i, err)
			}
		}
	}
	return nil
}

func (a *App) validate() error {
	if !uuidRE.MatchString(a.ID) {
		return fmt.Errorf("app id %q is not a UUID", a.ID)
	}
	if err := config.ValidateName(a.Name); err != nil {
		return fmt.Errorf("app %s: name: %v", a.ID, err)
	}
	if !statuses[a.Status] {
		return fmt.Errorf("app %s: unknown status %q", a.ID, a.Status)
	}
	active := a.Status == "spawning" || a.Status == "initializing" || a.Status == "running"
	if active && len(a.Domains) == 0 {
		return fmt.Errorf("app %s is %s and has no domain", a.ID, a.Status)
	}
	for _, d := range a.Domains {
		if err := config.ValidateDomain(d); err != nil {
			return fmt.Errorf("app %s: %v", a.ID, err)
		}
	}
	if a.RouterAddr != "" {
		if err := validateHostPort(a.RouterAddr); err != nil {
			return fmt.Errorf("app %s: router_addr: %v", a.ID, err)
		}
	}
	if a.URL != "" {
		if err := validateURL(a.URL); err != nil {
			return fmt.Errorf("app %s: url: %v", a.ID, err)
		}
	}
	if a.CodeDigest != "" && !hex64RE.MatchString(a.CodeDigest) {
		return fmt.Errorf("app %s: code_digest %q is not 64 lowercase hex digits", a.ID, a.CodeDigest)
	}
	if a.Fingerprint != "" && !hex64RE.MatchString(a.Fingerprint) {
		return fmt.Errorf("app %s: fingerprint %q is not 64 lowercase hex digits", a.ID, a.Fingerprint)
	}
	if a.Hardware != "" && !wordRE.MatchString(a.Hardware) {
		return fmt.Errorf("app %s: hardware %q is not a catalog name", a.ID, a.Hardware)
	}
	if a.Project != "" && !wordRE.MatchString(a.Project) {
		return fmt.Errorf("app %s: project %q is not a project name", a.ID, a.Project)
	}
	if a.BundleSize < 0 {
		return fmt.Errorf("app %s: bundle_size %d is negative", a.ID, a.BundleSize)
	}
	if a.Spec.AppID != "" && a.Spec.AppID != a.ID {
		return fmt.Errorf("app %s: its spec is for app %q", a.ID, a.Spec.AppID)
	}
	return nil
}

func (p *Platform) validate() error {
	if p.TEE != "" && !wordRE.MatchString(p.TEE) {
		return fmt.Errorf("tee %q is not a TEE type", p.TEE)
	}
	if p.RouterAddr != "" {
		if err := validateHostPort(p.RouterAddr); err != nil {
			return fmt.Errorf("router_addr: %v", err)
		}
	}
	if p.BaseDomain != "" && !hostRE.MatchString(p.BaseDomain) {
		return fmt.Errorf("base_domain %q is not a domain", p.BaseDomain)
	}
	if !hexRE.MatchString(p.NodeMeasurement) {
		return fmt.Errorf("node_measurement %q is not lowercase hex", p.NodeMeasurement)
	}
	if p.SimRootSHA256 != "" && !hex64RE.MatchString(p.SimRootSHA256) {
		return fmt.Errorf("sim_root_sha256 %q is not 64 lowercase hex digits", p.SimRootSHA256)
	}
	return nil
}

func (h *Hardware) validate() error {
	if !wordRE.MatchString(h.Name) {
		return fmt.Errorf("hardware name %q is not a catalog name", h.Name)
	}
	if h.MemoryMiB < 0 || h.Cores < 0 || h.Available < 0 {
		return fmt.Errorf("hardware %s: negative numbers", h.Name)
	}
	if h.TEE != "" && !wordRE.MatchString(h.TEE) {
		return fmt.Errorf("hardware %s: tee %q is not a TEE type", h.Name, h.TEE)
	}
	return nil
}

// validateHostPort accepts HOST:PORT with an IP address or a host name and a
// port from 1 to 65535.
func validateHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, port)
	}
	if net.ParseIP(host) == nil && !hostRE.MatchString(host) {
		return fmt.Errorf("%q: %q is neither an IP address nor a host name", s, host)
	}
	return nil
}

// validateURL accepts an https URL of a host (and port) with a path, nothing
// that a shell or a terminal would read as more.
func validateURL(s string) error {
	if strings.ContainsFunc(s, func(r rune) bool {
		return r <= ' ' || r == 0x7f || r == '\'' || r == '"' || r == '`' || r == '\\' || r == ';' || r == '$'
	}) {
		return fmt.Errorf("%q holds characters a URL of an app does not", s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q: %v", s, err)
	}
	if u.Scheme != "https" || u.Host == "" || u.User != nil {
		return fmt.Errorf("%q is not an https URL of a host", s)
	}
	host := u.Hostname()
	if net.ParseIP(host) == nil && !hostRE.MatchString(host) {
		return fmt.Errorf("%q: %q is not a host name", s, host)
	}
	return nil
}

// errInvalidAnswer marks answers that failed validation.
var errInvalidAnswer = errors.New("the backend's answer is not valid")
