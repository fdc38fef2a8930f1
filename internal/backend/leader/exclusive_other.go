//go:build !unix

package leader

import (
	"errors"
	"os"
)

var errWouldBlock = errors.New("would block")

// lockFile takes nothing where flock does not exist: a second backend on the
// same SQLite file is then not refused (documented in docs/store.md).
func lockFile(f *os.File) error { return nil }
