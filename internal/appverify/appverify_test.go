package appverify

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/mse-in-go/mse/internal/nodeapi"
)

func TestParseAttestation(t *testing.T) {
	good, _ := json.Marshal(nodeapi.Attestation{Version: 1, Certificate: []byte{1}, Evidence: []byte{2}})
	for _, c := range []struct {
		name   string
		status int
		body   string
		err    string
	}{
		{"good", 200, string(good), ""},
		{"refusal", 400, `{"status":"refused","error":"nonce must be 1 to 64 bytes of hex"}`, "HTTP 400: nonce must be"},
		{"not the node", 404, "404 page not found", "HTTP 404, not the node's evidence"},
		{"version", 200, `{"version":2,"certificate":"AQ==","evidence":"Ag=="}`, "version 2"},
		{"unknown field", 200, `{"version":1,"certificate":"AQ==","evidence":"Ag==","x":1}`, "not the node's JSON"},
		{"empty", 200, `{"version":1}`, "lacks its certificate or evidence"},
		{"old CBOR answer", 200, "\xd9\xea\x60\x82", "not the node's JSON"},
		{"too large", 200, strings.Repeat(" ", nodeapi.MaxAttestationSize+1), "larger than"},
	} {
		_, err := ParseAttestation(c.status, []byte(c.body))
		if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.err)
		}
	}
}

func FuzzParseAttestation(f *testing.F) {
	good, _ := json.Marshal(nodeapi.Attestation{Version: 1, Certificate: []byte{1}, Evidence: []byte{2}})
	f.Add(200, good)
	f.Add(400, []byte(`{"error":"x"}`))
	f.Add(200, []byte(`{"version":1,"certificate":null}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		a, err := ParseAttestation(status, body)
		if err == nil && (status != 200 || a.Version != 1 || len(a.Certificate) == 0 || len(a.Evidence) == 0 || len(body) > nodeapi.MaxAttestationSize) {
			t.Fatalf("accepted %d %q", status, body)
		}
	})
}
