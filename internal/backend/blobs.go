package backend

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/mse-in-go/mse/internal/backend/blob"
	"github.com/mse-in-go/mse/internal/backend/blob/fs"
	"github.com/mse-in-go/mse/internal/backend/blob/s3"
)

// OpenBlobs opens the bundle store --blobs names (docs/blobs.md): empty for
// DATA_DIR/bundles, a directory, or s3://BUCKET/PREFIX?endpoint=…. An S3
// store is wrapped in a local cache (DATA_DIR/bundle-cache), since the
// local runner hands nodes a file.
func OpenBlobs(ctx context.Context, cfg Config, log *slog.Logger) (blob.Store, error) {
	where := cfg.BlobsURL
	if !strings.HasPrefix(where, "s3://") {
		if where == "" {
			where = filepath.Join(cfg.DataDir, "bundles")
		}
		return fs.New(where)
	}
	sc, err := s3.ParseURL(where)
	if err != nil {
		return nil, fmt.Errorf("--blobs: %w", err)
	}
	if sc.Creds, err = s3.Credentials(cfg.BlobsCredentials); err != nil {
		return nil, fmt.Errorf("--blobs: %w", err)
	}
	remote, err := s3.New(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("--blobs: %w", err)
	}
	log.Info("bundles in S3", "where", remote.Where())
	return fs.NewCache(remote, filepath.Join(cfg.DataDir, "bundle-cache"))
}
