package service

import (
	"context"
	"errors"
	"io"

	"github.com/mse-in-go/mse/internal/backend/blob"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/backend/store"
)

// maxFetchToken bounds a node's credential as presented (the runner's are
// 64 hex digits).
const maxFetchToken = 256

// bundlePath is the local file of appID's bundle for the runner's Spawn, or
// "" when the runner's nodes fetch it from the backend (runner.BundleServer)
// and the store is not local.
func (s *Service) bundlePath(appID string) (string, error) {
	if local, ok := s.cfg.Blobs.(blob.Local); ok {
		return local.LocalPath(appID)
	}
	if _, ok := s.cfg.Runner.(runner.BundleServer); ok {
		return "", nil
	}
	return "", errors.New("service: the blob store is not local, and this runner reads the bundle from a local file: use a directory for --blobs with it")
}

// NodeBundle is an active app's encrypted bundle for its node, which
// presents its fetch credential (token): only the node of appID gets it.
// It returns the content, its size and the lowercase hex SHA-256 the owner
// declared (the code digest, which the store checked on upload).
func (s *Service) NodeBundle(ctx context.Context, appID, token string) (io.ReadCloser, int64, string, error) {
	if token == "" {
		return nil, 0, "", errf(ErrUnauthenticated, "missing node credential: send the pod's fetch token as \"Authorization: Bearer TOKEN\"")
	}
	bs, ok := s.cfg.Runner.(runner.BundleServer)
	if !ok {
		return nil, 0, "", errf(ErrNotFound, "this backend's runner gives nodes their bundle itself: there is nothing to fetch")
	}
	if blob.CheckKey(appID) != nil {
		return nil, 0, "", errf(ErrNotFound, "no app %.64q", appID)
	}
	a, err := s.st.GetApp(ctx, appID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, 0, "", errf(ErrNotFound, "no app %s", appID)
	}
	if err != nil {
		return nil, 0, "", err
	}
	if len(a.Node) == 0 {
		if a.Status == store.StatusSpawning {
			// The pod may ask before Spawn's handle is stored.
			return nil, 0, "", errf(ErrUnavailable, "the node of app %s is still being created; retry in a moment", appID)
		}
		return nil, 0, "", errf(ErrForbidden, "app %s has no node that may fetch its bundle", appID)
	}
	if len(token) > maxFetchToken || !bs.CheckFetchToken(a.Node, token) {
		return nil, 0, "", errf(ErrForbidden, "this credential is not the one of app %s's node", appID)
	}
	if !a.Status.Active() {
		return nil, 0, "", errf(ErrNotFound, "app %s is %s: its bundle is gone", appID, a.Status)
	}
	rc, err := s.cfg.Blobs.Open(ctx, appID)
	if errors.Is(err, blob.ErrNotFound) {
		return nil, 0, "", errf(ErrNotFound, "the bundle of app %s is gone", appID)
	}
	if err != nil {
		return nil, 0, "", err
	}
	return rc, a.BundleSize, a.CodeDigest, nil
}
