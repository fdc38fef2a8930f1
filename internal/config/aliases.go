package config

import "github.com/mse-in-go/mse/internal/spec"

// What the node is told to run is package internal/spec, which the node links
// without this package's mse.toml parser. These names keep the owner's and the
// operator's code (CLI, backend, client) unchanged.
type (
	// Spec is spec.Spec.
	Spec = spec.Spec
	// Runtime is spec.Runtime.
	Runtime = spec.Runtime
)

// TLS modes: see spec.TLSSelf.
const (
	TLSSelf     = spec.TLSSelf
	TLSOwner    = spec.TLSOwner
	TLSOperator = spec.TLSOperator
	TLSACME     = spec.TLSACME
)

// ValidateDomain is spec.ValidateDomain.
func ValidateDomain(d string) error { return spec.ValidateDomain(d) }
