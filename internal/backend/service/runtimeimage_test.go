package service_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/mse-in-go/mse/internal/backend/service"
	"github.com/mse-in-go/mse/internal/backend/service/servicetest"
)

type images map[string]bool

func (i images) Has(d string) bool                                       { return i[d] }
func (i images) Export(ctx context.Context, d string, w io.Writer) error { return nil }

// A runtime whose image this backend does not hold (a cluster pulls it from
// a registry) is not offered for download: 404 with where to get it, not a
// 200 with an empty body.
func TestRuntimeImageNotHeld(t *testing.T) {
	flask := servicetest.Runtimes[0]
	e := servicetest.New(t, func(c *service.Config) { c.Images = images{servicetest.Runtimes[1].Digest: true} })
	_, err := e.Service.RuntimeImage(flask.Name)
	if !errors.Is(err, service.ErrNotFound) || !strings.Contains(err.Error(), "registry") {
		t.Errorf("RuntimeImage of an image not held: %v", err)
	}
	if got, err := e.Service.RuntimeImage(servicetest.Runtimes[1].Name); err != nil || got.Digest != servicetest.Runtimes[1].Digest {
		t.Errorf("RuntimeImage of a held image: %v %v", got, err)
	}
}
