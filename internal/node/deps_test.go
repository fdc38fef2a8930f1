package node

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNodeImportsNoBackendOrCLI keeps the trusted computing base small: the
// mse-node program must not link the backend, the CLI or the API client.
func TestNodeImportsNoBackendOrCLI(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/mse-in-go/mse/cmd/mse-node").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"/internal/backend", "/internal/cli", "/internal/client", "github.com/spf13/cobra", "modernc.org/sqlite", "github.com/jackc/pgx"} {
			if strings.Contains(dep, banned) {
				t.Errorf("mse-node depends on %s", dep)
			}
		}
	}
}
