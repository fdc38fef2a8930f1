package node

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/spec"
)

// A key written by `openssl ecparam -genkey` (an EC PARAMETERS block, then
// the SEC 1 key) passes mse.toml's check, so the node must accept it too:
// both use config's parsers.
func TestOwnerKeyWithECParameters(t *testing.T) {
	chain, keyPEM, _ := ownerPKI(t, []string{"app.example"}, time.Now().Add(time.Hour))
	k, err := spec.ParsePrivateKeyPEM([]byte(keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(k.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	p256 := []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}
	ecparam := string(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: p256})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}))
	tc, err := ownerCertificate(chain, ecparam, []string{"app.example"}, time.Now())
	if err != nil {
		t.Fatalf("the node refuses an openssl ecparam key: %v", err)
	}
	if len(tc.Certificate) != 2 {
		t.Fatalf("chain of %d certificates", len(tc.Certificate))
	}
}
