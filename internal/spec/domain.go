package spec

import (
	"fmt"
	"regexp"
	"strings"
)

var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// ValidateDomain checks a fully qualified domain name as mse.toml's
// cloud.ssl.domain_name must be (a trailing dot is allowed).
func ValidateDomain(d string) error {
	if e := DomainRule(d); e != "" {
		return fmt.Errorf("domain %q %s", d, e)
	}
	return nil
}

// DomainRule says what is wrong with d as a DNS name an app is served on (no
// wildcard, no port), in words that follow the name, or "" if nothing is.
func DomainRule(d string) string {
	if strings.Contains(d, "*") {
		return "is a wildcard; give the exact domain the app is served on (the certificate may be a wildcard)"
	}
	if len(d) > 253 {
		return "is longer than 253 characters"
	}
	labels := strings.Split(strings.ToLower(strings.TrimSuffix(d, ".")), ".")
	if len(labels) < 2 {
		return "is not a fully qualified domain name (e.g. app.example.com)"
	}
	for _, l := range labels {
		if len(l) > 63 || !dnsLabelRE.MatchString(l) {
			return "is not a valid domain name (labels of letters, digits and '-', up to 63 characters)"
		}
	}
	return ""
}
