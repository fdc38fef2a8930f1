package backend

import (
	"context"
	"errors"

	"github.com/mse-in-go/mse/internal/backend/store"
)

// openPostgres is replaced when the postgres driver lands.
func openPostgres(ctx context.Context, url string) (store.Store, error) {
	return nil, errors.New("postgres store not wired yet")
}
