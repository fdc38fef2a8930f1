package node

import (
	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sgx"
)

// sgxIssuer obtains SGX quotes through Gramine's /dev/attestation interface.
func sgxIssuer(dir string) (attest.Issuer, error) { return sgx.NewIssuer(dir), nil }
