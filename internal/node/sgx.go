package node

import (
	"errors"

	"github.com/mse-in-go/mse/internal/attest"
)

// sgxIssuer is replaced when the sgx issuer lands.
func sgxIssuer(dir string) (attest.Issuer, error) {
	return nil, errors.New("tee sgx is not available in this build")
}
