package api_test

import (
	"testing"

	"github.com/mse-in-go/mse/internal/backend/store/pgtest"
	"github.com/mse-in-go/mse/internal/testenv"
)

// TestMain stops the components tests started: the Kubernetes test cluster
// (node bundle tests) and the throwaway PostgreSQL (the 1,000-app
// benchmarks).
func TestMain(m *testing.M) { pgtest.Main(m, testenv.StopKube) }
