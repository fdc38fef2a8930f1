package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/testenv"
)

// TestMakeDemo runs `make demo` as README.md tells a new user to, so that the
// demo cannot break without the suite noticing.
func TestMakeDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: make demo builds and runs the whole flow")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "demo")
	cmd.Dir = testenv.RepoRoot()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make demo: %v\n%s", err, out)
	}
	for _, want := range []string{"Hello world!", "runs in a verified enclave", "Demo complete"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("make demo output lacks %q:\n%s", want, out)
		}
	}
}
