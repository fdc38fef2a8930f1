package backend

import (
	"context"
	"path/filepath"

	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/backend/store/sqlite"
)

// OpenStore opens the configured store: db is "" (SQLite in dataDir/mse.db),
// a SQLite file path, or a postgres:// URL.
func OpenStore(ctx context.Context, dataDir, db string) (store.Store, error) {
	switch {
	case isPostgres(db):
		return openPostgres(ctx, db)
	case db == "":
		return sqlite.Open(filepath.Join(dataDir, "mse.db"))
	default:
		return sqlite.Open(db)
	}
}
