package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// ErrAPIUnreachable is wrapped by the errors of calls made while the API
// server does not answer: what the runner knows of its pods is stale, so it
// reports no state rather than a wrong one.
var ErrAPIUnreachable = errors.New("the Kubernetes API server is unreachable")

// apiHealth is whether the API server answers, from the runner's periodic
// /readyz and from the errors of its calls.
type apiHealth struct {
	on        bool // watchHealth runs (it clears a failure)
	mu        sync.Mutex
	downSince time.Time // zero: it answers
	cause     string
	// stale is set when the API server answers again: the watch cache
	// may still miss what happened meanwhile (a pod deleted) until its
	// watch has resumed, which shows as a new resource version (staleRV is
	// the one it had).
	stale   bool
	staleRV string
}

// failed records err if it says the API server was not reached (no HTTP
// answer, or a timeout or 5xx from it) and reports whether it did.
func (a *apiHealth) failed(err error) bool {
	if !a.on || err == nil || !unreachableErr(err) {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.downSince.IsZero() {
		a.downSince = time.Now()
	}
	a.cause = truncate(err.Error(), 300)
	return true
}

// unreachableErr: the call got no usable answer from the API server.
func unreachableErr(err error) bool {
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		return !errors.Is(err, context.Canceled)
	}
	return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsServiceUnavailable(err) ||
		apierrors.IsInternalError(err) || se.Status().Code >= 500
}

// reachable is nil while the API server answers, else an error wrapping
// ErrAPIUnreachable that says since when and why.
func (r *Runner) reachable() error {
	r.health.mu.Lock()
	defer r.health.mu.Unlock()
	if r.health.downSince.IsZero() {
		return nil
	}
	return fmt.Errorf("kubernetes runner: %w since %s (%s): the state of the node pods is unknown until it answers; check the cluster's control plane and the backend's network path to it",
		ErrAPIUnreachable, r.health.downSince.UTC().Format(time.RFC3339), r.health.cause)
}

// cacheStale reports whether the pod watch cache may still miss changes
// made while the API server was unreachable; reads then go to the API
// server.
func (r *Runner) cacheStale() bool {
	r.health.mu.Lock()
	defer r.health.mu.Unlock()
	if !r.health.stale {
		return false
	}
	if r.podInf.LastSyncResourceVersion() != r.health.staleRV && r.podInf.HasSynced() {
		r.health.stale = false
		r.log.Info("the pod watch has caught up after the API server came back")
	}
	return r.health.stale
}

// watchHealth asks the API server's /readyz every HealthInterval until
// Close.
func (r *Runner) watchHealth() {
	rc := r.cfg.Client.Discovery().RESTClient()
	t := time.NewTicker(r.cfg.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), min(r.cfg.HealthInterval, 5*time.Second))
		err := rc.Get().AbsPath("/readyz").Do(ctx).Error()
		cancel()
		if err != nil && !unreachableErr(err) {
			err = nil // an answer (403: no access to /readyz) is reachability
		}
		r.setHealth(err)
	}
}

// setHealth records the outcome of a /readyz.
func (r *Runner) setHealth(err error) {
	if err != nil {
		if r.health.failed(err) {
			r.health.mu.Lock()
			since := r.health.downSince
			r.health.mu.Unlock()
			if time.Since(since) < r.cfg.HealthInterval {
				r.log.Warn("the Kubernetes API server is unreachable: node states are unknown until it answers", "err", err)
			}
		}
		return
	}
	r.health.mu.Lock()
	defer r.health.mu.Unlock()
	if r.health.downSince.IsZero() {
		return
	}
	r.log.Info("the Kubernetes API server answers again", "down_for", time.Since(r.health.downSince).Round(time.Millisecond).String())
	r.health.downSince, r.health.cause = time.Time{}, ""
	r.health.stale, r.health.staleRV = true, r.podInf.LastSyncResourceVersion()
}
