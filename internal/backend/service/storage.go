package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/mse-in-go/mse/internal/backend/blob"
)

// blobError turns a blob store failure into the service's error: a full
// disk is ErrOutOfStorage, logged with the path and the free space for the
// operator (the client hears only that the operator is out of storage).
func (s *Service) blobError(what string, err error) error {
	var full *blob.FullError
	if errors.As(err, &full) {
		s.log.Error("out of storage", "op", what, "path", full.Path, "free_bytes", full.Free, "err", full.Err)
		return fmt.Errorf("%w: %s: %v", ErrOutOfStorage, what, err)
	}
	if errors.Is(err, blob.ErrFull) {
		s.log.Error("out of storage", "op", what, "err", err)
		return fmt.Errorf("%w: %s: %v", ErrOutOfStorage, what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// sweep removes partial uploads that a crash left in the blob store.
func (s *Service) sweep(ctx context.Context) {
	sw, ok := s.cfg.Blobs.(blob.Sweeper)
	if !ok {
		return
	}
	files, bytes, err := sw.Sweep(ctx)
	if err != nil {
		s.log.Error("sweep partial uploads", "err", err)
		return
	}
	if files > 0 {
		s.log.Info("removed partial uploads", "files", files, "bytes", bytes)
	}
}
