package bundle_test

import (
	"github.com/mse-in-go/mse/internal/bundle"
	"github.com/mse-in-go/mse/internal/bundle/pack"
)

// The external test package may import the owner side, which imports bundle;
// it hands pack.Pack to the internal tests (test vectors, fuzz seeds and the
// pack-unpack round trip are made from real packed trees).
func init() { bundle.SetPackFunc(pack.Pack) }
