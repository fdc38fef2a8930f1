// Package nodeapi holds the wire types of the node's configuration endpoint
// (docs/protocol.md): what the owner's CLI sends in stage 2 and what the node
// answers, and the status file the node writes for its runner.
package nodeapi

import (
	"encoding/json"
	"errors"
	"time"
)

// The configuration endpoint answers every GET with this header while it
// waits for secrets.
const (
	HeaderStatus   = "Mse-Status"
	StatusWaiting  = "Waiting"
	StatusStarting = "Starting"
	// StatusRunning answers GET / on a direct connection once the app runs.
	StatusRunning = "Running"
)

// PathAttestation serves fresh evidence over a verifier's nonce:
// GET /.mse/attestation?nonce=HEX → application/cbor, the value of extension
// 2.23.133.5.4.9 for the node's RA-TLS key with the nonce in its claims.
const PathAttestation = "/.mse/attestation"

// MaxNonceSize bounds the nonce a verifier may send.
const MaxNonceSize = 64

// ALPNRATLS is the ALPN protocol id of a direct connection to the enclave
// (docs/protocol.md "Verifying a running app"): a node that sees it in the
// ClientHello presents its RA-TLS certificate whatever its TLS mode and
// serves only its own endpoints (HTTP/1.1: stage 2, GET /, PathAttestation),
// never the app; the router passes such connections through to the node
// even in operator mode, where it terminates every other connection.
const ALPNRATLS = "mse-ratls/1"

// ExporterLabel is the TLS exporter label of fresh evidence: the node binds
// ExportKeyingMaterial(ExporterLabel, nonce, ExporterSize) of the asking
// connection as claim mse-tls-exporter.
const (
	ExporterLabel = "EXPORTER-mse-attestation"
	ExporterSize  = 32
)

// Attestation is the JSON answer of GET PathAttestation?nonce=HEX.
type Attestation struct {
	// Version is 1.
	Version int `json:"version"`
	// Certificate is the node's RA-TLS certificate (DER, base64).
	Certificate []byte `json:"certificate"`
	// Evidence is tagged evidence (the value format of extension
	// 2.23.133.5.4.9, base64) over fresh claims: those of the certificate
	// plus nonce, mse-tls-exporter and, when the node holds the key it
	// serves, mse-served-key.
	Evidence []byte `json:"evidence"`
}

// MaxAttestationSize bounds an Attestation answer a client reads.
const MaxAttestationSize = 256 << 10

// SecretsRequest is the stage-2 request: POST / with this JSON.
type SecretsRequest struct {
	// UUID is the app id; the node refuses any other.
	UUID string `json:"uuid"`
	// CodeSecretKey is the bundle's code key, hex.
	CodeSecretKey string `json:"code_secret_key"`
	// SSLPrivateKey is the PEM private key of the owner's certificate
	// (scenario 2 only).
	SSLPrivateKey string `json:"ssl_private_key,omitempty"`
	// AppSecrets is any JSON the app reads from the file at SECRETS_PATH.
	AppSecrets json.RawMessage `json:"app_secrets,omitempty"`
	// SealedSecrets is a JSON object sealed to the node's sealing key
	// (package sealed); it is opened inside the enclave and merged into
	// AppSecrets (which must then be an object too).
	SealedSecrets []byte `json:"sealed_secrets,omitempty"`
}

// Response is the node's JSON answer to POST /.
type Response struct {
	Status string `json:"status"` // "accepted" or "refused"
	Error  string `json:"error,omitempty"`
	// AttemptsLeft is set on refusals: how many more failed requests the
	// node accepts before it gives up (0 included).
	AttemptsLeft *int `json:"attempts_left,omitempty"`
}

// Node states written to the status file.
const (
	StateStarting  = "starting"  // making keys and evidence
	StateWaiting   = "waiting"   // configuration endpoint up, waiting for secrets
	StateLaunching = "launching" // secrets accepted, app starting
	StateRunning   = "running"
	StateError     = "error"
	StateStopped   = "stopped"
)

// Status is the node's status file (JSON), read by its runner.
type Status struct {
	State       string    `json:"state"`
	Error       string    `json:"error,omitempty"`
	Fingerprint string    `json:"fingerprint,omitempty"` // SHA-256 of the RA-TLS certificate
	UpdatedAt   time.Time `json:"updated_at"`
	// TLS is what the node serves ordinary clients of its domains.
	TLS *TLSStatus `json:"tls,omitempty"`
}

// TLSStatus describes the certificate a node serves, and in acme mode how
// obtaining it goes.
type TLSStatus struct {
	Mode string `json:"mode"`
	// Served is the SHA-256 of the served leaf (hex), its issuer and expiry.
	Served   string    `json:"served_sha256,omitempty"`
	Issuer   string    `json:"issuer,omitempty"`
	NotAfter time.Time `json:"not_after,omitempty"`
	// ACME is the ACME state (obtaining, valid, renewing, failed) and its
	// last error, in acme mode.
	ACME      string `json:"acme,omitempty"`
	ACMEError string `json:"acme_error,omitempty"`
}

// MergeSecrets merges the opened sealed secrets into the app secrets (both
// JSON objects; the sealed ones' keys win): what the app finds at
// SECRETS_PATH. The node does it after opening sealed_secrets, and
// `mse cloud localtest` the same way.
func MergeSecrets(app, sealed []byte) ([]byte, error) {
	out := map[string]json.RawMessage{}
	if len(app) > 0 {
		// JSON null would leave out nil (and the merge below would panic).
		if err := json.Unmarshal(app, &out); err != nil || out == nil {
			return nil, errors.New("app_secrets must be a JSON object when sealed_secrets are sent")
		}
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(sealed, &m); err != nil {
		return nil, errors.New("sealed_secrets must hold a JSON object")
	}
	for k, v := range m {
		out[k] = v
	}
	return json.Marshal(out)
}
