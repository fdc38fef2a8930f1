package service

import (
	"context"
	"fmt"
	"time"

	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/nodeapi"
)

// DefaultKeyTimeout bounds the wait for the owner's key: twice the CLI's
// default deploy timeout, so that a deploy still under way is not cut.
const DefaultKeyTimeout = 10 * time.Minute

// noKey stops an app whose node has waited for its owner's key for longer
// than KeyTimeout since the app became initializing (its UpdatedAt, kept
// across restarts): a deploy that died before stage 2 must not hold capacity
// until the app expires. A node that is launching has its key. It reports
// whether it stopped the app.
func (s *Service) noKey(ctx context.Context, a *store.App, nodeState string) bool {
	if a.Status != store.StatusInitializing || nodeState != nodeapi.StateWaiting {
		return false
	}
	if s.cfg.Now().Sub(a.UpdatedAt) < s.cfg.KeyTimeout {
		return false
	}
	s.stop(ctx, a, store.StatusStopped, fmt.Sprintf("no key received within %s of the node waiting for it; deploy again", s.cfg.KeyTimeout))
	return true
}
