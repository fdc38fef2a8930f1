package config

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
)

// TestDocumentedVectors checks the config digest and claims vectors of
// docs/protocol.md, so that another implementation can rely on them.
func TestDocumentedVectors(t *testing.T) {
	rt := sha256.Sum256([]byte("runtime"))
	s := Spec{AppID: "3f1d1a8e-0000-4000-8000-000000000001", Domains: []string{"hello-3f1d1a8e0000.mse.localhost"},
		PythonApplication: "app:app", HealthcheckEndpoint: "/health", ExpiresAt: time.Unix(1896048000, 0), TLSMode: TLSSelf,
		Runtime: Runtime{Name: "flask", Image: "mse/flask:bookworm", Digest: "sha256:" + hex.EncodeToString(rt[:]), Kind: "wsgi"}}
	d, err := s.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hex.EncodeToString(d), "ce271c103e39ea80b9b73dec758b3f80b01345cff223d42dd3a1c32373081405"; got != want {
		t.Errorf("config digest %s, docs/protocol.md says %s", got, want)
	}
	spki, bundle := sha256.Sum256([]byte("spki")), sha256.Sum256([]byte("bundle"))
	c := attest.Claims{PubkeyHash: spki[:], Nonce: []byte{1, 2, 3, 4}, AppID: s.AppID, CodeDigest: bundle[:], ConfigDigest: d,
		SealingKey: make([]byte, 32), RuntimeDigest: rt[:], TLSMode: TLSSelf}
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	rd := attest.ReportData(b)
	if got, want := hex.EncodeToString(rd[:32]), "5ce089f7b106bb6094960b310113e118fa384e7394ee7d1be2c172c8a9044247"; got != want {
		t.Errorf("report data %s, docs/protocol.md says %s", got, want)
	}
}
