package backend

import (
	"context"

	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/backend/store/postgres"
)

func openPostgres(ctx context.Context, url string) (store.Store, error) {
	return postgres.Open(ctx, url)
}
