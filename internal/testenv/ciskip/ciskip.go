// Package ciskip is what a test does when something it needs is missing
// from the machine: under CI=true it fails (CI must run every test, and
// .ci/run installs what they need), elsewhere it skips, loudly. It imports
// only the standard library, so that any package's tests can use it.
package ciskip

import (
	"fmt"
	"os"
	"testing"
)

// Missing ends the test for what is missing (format and args say what, and
// how to get it): a failure under CI=true, a skip saying "SKIPPED:"
// otherwise.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatalf("%s; CI=true, so this FAILS: CI runs every test (.ci/run installs the tools, as root)", msg)
		return
	}
	t.Skip("SKIPPED: " + msg)
}

// CI reports whether the tests run under CI=true.
func CI() bool { return os.Getenv("CI") == "true" }
