package e2e

import (
	"testing"

	"github.com/mse-in-go/mse/internal/backend/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
