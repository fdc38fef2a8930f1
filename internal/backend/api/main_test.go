package api_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/mse-in-go/mse/internal/backend/store/pgtest"
	"github.com/mse-in-go/mse/internal/testenv"
)

// TestMain stops the components tests started: the Kubernetes test cluster
// (node bundle tests) and the throwaway PostgreSQL (the 1,000-app
// benchmarks).
func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopKube()
	if err := pgtest.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}
