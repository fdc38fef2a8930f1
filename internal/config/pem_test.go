package config

import (
	"strings"
	"testing"
)

func TestValidateDomain(t *testing.T) {
	for _, c := range []struct {
		d    string
		want string // "" = valid
	}{
		{"app.example.com", ""},
		{"app.example.com.", ""},
		{"APP.Example.com", ""},
		{"localhost", "not a fully qualified domain name"},
		{"*.example.com", "wildcard"},
		{"a_b.example.com", "not a valid domain name"},
		{strings.Repeat("a", 64) + ".example.com", "not a valid domain name"},
	} {
		err := ValidateDomain(c.d)
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("ValidateDomain(%q) = %v, want %q", c.d, err, c.want)
		}
	}
}

func TestParseCertificateChainPEMBounds(t *testing.T) {
	if _, err := ParseCertificateChainPEM([]byte("garbage"), "x"); err == nil || !strings.Contains(err.Error(), "not a PEM certificate chain") {
		t.Fatalf("garbage: %v", err)
	}
	block := "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
	if _, err := ParseCertificateChainPEM([]byte(block), "x"); err == nil || !strings.Contains(err.Error(), "does not parse") {
		t.Fatalf("bad certificate: %v", err)
	}
	if _, err := ParsePrivateKeyPEM([]byte(block)); err == nil || !strings.Contains(err.Error(), "belongs in cloud.ssl.certificate") {
		t.Fatalf("certificate as a key: %v", err)
	}
}
