package nodeapi

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestWireFormat pins the JSON field names of the stage-2 protocol.
func TestWireFormat(t *testing.T) {
	b, err := json.Marshal(SecretsRequest{UUID: "u", CodeSecretKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"uuid":"u","code_secret_key":"k"}` {
		t.Errorf("minimal request = %s", b)
	}
	full := SecretsRequest{UUID: "u", CodeSecretKey: "k", SSLPrivateKey: "p", AppSecrets: json.RawMessage(`{"a":1}`), SealedSecrets: []byte{1, 2}}
	b, _ = json.Marshal(full)
	want := `{"uuid":"u","code_secret_key":"k","ssl_private_key":"p","app_secrets":{"a":1},"sealed_secrets":"AQI="}`
	if string(b) != want {
		t.Errorf("full request = %s, want %s", b, want)
	}
	var back SecretsRequest
	if err := json.Unmarshal(b, &back); err != nil || back.SSLPrivateKey != "p" || string(back.AppSecrets) != `{"a":1}` || len(back.SealedSecrets) != 2 {
		t.Errorf("round trip = %+v, %v", back, err)
	}
	b, _ = json.Marshal(Response{Status: "accepted"})
	if string(b) != `{"status":"accepted"}` {
		t.Errorf("response = %s", b)
	}
	b, _ = json.Marshal(Status{State: StateRunning, UpdatedAt: time.Unix(0, 0).UTC()})
	if !strings.Contains(string(b), `"state":"running"`) || strings.Contains(string(b), "error") || strings.Contains(string(b), "fingerprint") {
		t.Errorf("status = %s", b)
	}
	if PathAttestation != "/.mse/attestation" || HeaderStatus != "Mse-Status" || StatusWaiting != "Waiting" || MaxNonceSize != 64 {
		t.Error("protocol constants changed")
	}
}
