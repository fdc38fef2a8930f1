package ciskip

import (
	"fmt"
	"strings"
	"testing"
)

// recorder is a testing.TB that records how the test ended.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Fatalf(format string, a ...any) { r.fatal = fmt.Sprintf(format, a...) }
func (r *recorder) Skip(a ...any)                  { r.skip = a[0].(string) }

func TestMissing(t *testing.T) {
	for _, c := range []struct {
		ci          string
		fatal, skip string
	}{
		{"true", "tar is not installed (apt-get install tar); CI=true, so this FAILS: CI runs every test (.ci/run installs the tools, as root)", ""},
		{"", "", "SKIPPED: tar is not installed (apt-get install tar)"},
		{"false", "", "SKIPPED: tar is not installed (apt-get install tar)"},
	} {
		t.Setenv("CI", c.ci)
		r := &recorder{TB: t}
		Missing(r, "%s is not installed (apt-get install %s)", "tar", "tar")
		if r.fatal != c.fatal || r.skip != c.skip {
			t.Errorf("CI=%q: fatal %q, skip %q; want %q, %q", c.ci, r.fatal, r.skip, c.fatal, c.skip)
		}
		if strings.Contains(r.fatal+r.skip, "%!") {
			t.Errorf("CI=%q: a formatting error in %q", c.ci, r.fatal+r.skip)
		}
	}
}
