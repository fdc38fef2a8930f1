package spec

import (
	"strings"
	"testing"
)

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
