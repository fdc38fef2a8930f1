// Package client is the Go client of the backend's HTTP API, and holds the
// API's wire types (docs/api.md).
package client

import (
	"time"

	"github.com/mse-in-go/mse/internal/config"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/spec"
)

// HeaderNextCursor, on a page of GET /v1/apps, is the cursor of the next
// page (query parameter "cursor"); absent after the last page.
const HeaderNextCursor = "Mse-Next-Cursor"

// CreateAppRequest is the "config" part of POST /v1/apps; the "bundle" part
// that follows is the encrypted bundle.
type CreateAppRequest struct {
	Name                string    `json:"name"`
	Project             string    `json:"project,omitempty"`
	Hardware            string    `json:"hardware,omitempty"`
	Entrypoint          []string  `json:"entrypoint,omitempty"`
	PythonApplication   string    `json:"python_application,omitempty"`
	HealthcheckEndpoint string    `json:"healthcheck_endpoint,omitempty"`
	ExpiresAt           time.Time `json:"expires_at"`
	TLSMode             string    `json:"tls_mode"`
	// Domain is the owner's domain (scenario 2).
	Domain           string `json:"domain,omitempty"`
	OwnerCertificate string `json:"owner_certificate,omitempty"`
	// CodeDigest is the SHA-256 (hex) the owner computed; the backend refuses
	// an upload that does not match it.
	CodeDigest string `json:"code_digest"`
	// Runtime is the runtime image: a name or image reference from the
	// catalog, optionally pinned with @sha256:… (the CLI always pins the one
	// it resolved). Empty: the operator's default.
	Runtime string `json:"runtime,omitempty"`
	// StartTimeoutSeconds bounds the app's start (0: the default).
	StartTimeoutSeconds int64 `json:"start_timeout_s,omitempty"`
	// ACME is the CA of tls_mode acme (only then): the backend puts it in
	// the spec unchanged, after checking that its directory is one the
	// operator allows (Platform.ACMEDirectories).
	ACME *spec.ACME `json:"acme,omitempty"`
}

// App is an app as the API shows it.
type App struct {
	ID         string      `json:"id"`
	Name       string      `json:"name"`
	Project    string      `json:"project"`
	Status     string      `json:"status"`
	Hardware   string      `json:"hardware"`
	Domains    []string    `json:"domains"`
	URL        string      `json:"url"`
	RouterAddr string      `json:"router_addr"`
	CodeDigest string      `json:"code_digest"`
	BundleSize int64       `json:"bundle_size"`
	TLSMode    string      `json:"tls_mode"`
	Error      string      `json:"error,omitempty"`
	CreatedAt  time.Time   `json:"created_at"`
	UpdatedAt  time.Time   `json:"updated_at"`
	ExpiresAt  time.Time   `json:"expires_at"`
	StoppedAt  *time.Time  `json:"stopped_at,omitempty"`
	Spec       config.Spec `json:"spec"`
	// Fingerprint is the node's RA-TLS certificate SHA-256 as the operator
	// sees it (informative; the owner verifies the certificate itself).
	Fingerprint string `json:"fingerprint,omitempty"`
	// TLS is what the node says it serves: the certificate's SHA-256, issuer
	// and expiry, and in acme mode how obtaining it goes (informative).
	TLS *nodeapi.TLSStatus `json:"tls,omitempty"`
}

// User is the caller.
type User struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Admin bool   `json:"admin"`
}

// Project groups apps.
type Project struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// Hardware is a catalog entry with what is free.
type Hardware struct {
	Name      string `json:"name"`
	MemoryMiB int64  `json:"memory_mib"`
	Cores     int    `json:"cores"`
	TEE       string `json:"tee"`
	// Available is how many more apps of this size fit now.
	Available int `json:"available"`
}

// Platform describes the operator's platform.
type Platform struct {
	TEE        string `json:"tee"`
	RouterAddr string `json:"router_addr"`
	BaseDomain string `json:"base_domain"`
	// NodeMeasurement is the runtime measurement the operator says its nodes
	// report (informative: the owner's policy decides what is accepted).
	NodeMeasurement string `json:"node_measurement"`
	SimRootSHA256   string `json:"sim_root_sha256,omitempty"`
	// TLSModes lists the TLS modes this backend accepts (operator only when
	// it has a certificate to terminate TLS with, acme only with an ACME CA).
	TLSModes []string `json:"tls_modes,omitempty"`
	// ACME is the default CA of tls_mode acme, for an mse.toml that names
	// none: the first allowed directory, with the roots of its HTTPS server
	// (empty: the system roots). Absent when acme is not offered.
	ACME *spec.ACME `json:"acme,omitempty"`
	// ACMEDirectories are every ACME directory nodes may use.
	ACMEDirectories []string `json:"acme_directories,omitempty"`
}

// CreateUserResponse answers POST /v1/users.
type CreateUserResponse struct {
	User  User   `json:"user"`
	Token string `json:"token"`
}

// Error is the API's error body.
type Error struct {
	Error string `json:"error"`
}

// Token describes an API token (never the token itself).
type Token struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}
