// Package policyfile reads the owner's trust policy from its TOML file
// (docs/trust-policy.md) into an attest.Policy.
//
// It is apart from package attest so that what links attest without reading
// policy files (the node, the trusted computing base) does not link a TOML
// parser.
package policyfile

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/mse-in-go/mse/internal/attest"
)

// Load reads a policy file.
func Load(path string) (*attest.Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read trust policy: %w", err)
	}
	p, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("trust policy %s: %w", path, err)
	}
	return p, nil
}

// Parse parses a TOML policy and checks it (Policy.Validate). Unknown keys
// are errors, so a misspelt key never silently weakens the policy.
func Parse(b []byte) (*attest.Policy, error) {
	var p attest.Policy
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		var sme *toml.StrictMissingError
		if ok := asStrict(err, &sme); ok {
			return nil, fmt.Errorf("unknown key(s) in policy: %s", strings.TrimSpace(sme.String()))
		}
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

func asStrict(err error, t **toml.StrictMissingError) bool {
	e, ok := err.(*toml.StrictMissingError)
	if ok {
		*t = e
	}
	return ok
}
