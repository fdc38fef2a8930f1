package service

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/mse-in-go/mse/internal/config"
	"github.com/mse-in-go/mse/internal/runtimes"
)

// Catalog is the operator's runtime catalog (runtimes.Catalog).
type Catalog interface {
	Entries() []runtimes.Entry
}

// ImageExporter writes a runtime image as an OCI layout tar stream
// (image.Store).
type ImageExporter interface {
	Export(ctx context.Context, digest string, w io.Writer) error
}

// RuntimeImage finds the catalog entry named name (or with that image
// reference) for an image download.
func (s *Service) RuntimeImage(name string) (runtimes.Entry, error) {
	if s.cfg.Images == nil {
		return runtimes.Entry{}, errf(ErrNotFound, "this operator does not serve runtime images")
	}
	e, err := runtimes.Match(s.cfg.Runtimes.Entries(), name)
	if err != nil {
		return runtimes.Entry{}, errf(ErrNotFound, "%v", err)
	}
	if h, ok := s.cfg.Images.(interface{ Has(digest string) bool }); ok && !h.Has(e.Digest) {
		// A cluster's nodes pull it from a registry; this backend has no copy.
		return runtimes.Entry{}, errf(ErrNotFound, "runtime %s (%s@%s) is not served by this backend; pull it from the operator's registry", e.Name, e.Image, e.Digest)
	}
	return e, nil
}

// ExportRuntime streams the image of a catalog entry. Runtime images are
// public: they hold Debian packages, no secret.
func (s *Service) ExportRuntime(ctx context.Context, e runtimes.Entry, w io.Writer) error {
	return s.cfg.Images.Export(ctx, e.Digest, w)
}

// Runtimes lists the runtime catalog.
func (s *Service) Runtimes() []runtimes.Entry {
	e := s.cfg.Runtimes.Entries()
	if e == nil {
		e = []runtimes.Entry{}
	}
	return e
}

// runtime resolves the owner's runtime reference (mse.toml's docker key);
// empty means the operator's default, the catalog's first entry.
func (s *Service) runtime(ref string) (config.Runtime, error) {
	entries := s.cfg.Runtimes.Entries()
	if len(entries) == 0 {
		return config.Runtime{}, errf(ErrUnavailable, "this operator offers no runtime yet; ask the operator to add one (mse-backend runtime build)")
	}
	e := entries[0]
	if ref != "" {
		var err error
		if e, err = runtimes.Match(entries, ref); err != nil {
			if errors.Is(err, runtimes.ErrUnknown) {
				return config.Runtime{}, errf(ErrInvalid, "%v", err)
			}
			return config.Runtime{}, errf(ErrInvalid, "runtime: %v", err)
		}
	}
	return config.Runtime{Name: e.Name, Image: e.Image, Digest: e.Digest, Kind: e.Kind}, nil
}

// startTimeout checks the owner's start timeout against the operator's maximum.
func (s *Service) startTimeout(seconds int64) (int64, error) {
	max := s.cfg.MaxStartTimeout
	if seconds < 0 {
		return 0, errf(ErrInvalid, "start_timeout_s must not be negative")
	}
	if time.Duration(seconds)*time.Second > max {
		return 0, errf(ErrInvalid, "start_timeout %s is above this operator's maximum of %s; lower cloud.start_timeout in mse.toml",
			time.Duration(seconds)*time.Second, max)
	}
	if seconds == 0 {
		seconds = int64(config.DefaultStartTimeout / time.Second)
	}
	return seconds, nil
}
