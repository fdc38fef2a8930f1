package service

import (
	"context"
	"errors"
	"io"
	"net/url"

	"github.com/mse-in-go/mse/internal/backend/blob"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/backend/store"
)

// maxFetchToken bounds a node's credential as presented (the runner's are
// 64 hex digits).
const maxFetchToken = 256

// bundlePath is the local file of appID's bundle for the runner's Spawn, or
// "" when the runner's nodes fetch it from the backend (runner.BundleServer).
func (s *Service) bundlePath(appID string) (string, error) {
	if _, ok := s.cfg.Runner.(runner.BundleServer); ok {
		return "", nil // its nodes fetch the bundle (no local copy, e.g. of S3)
	}
	if local, ok := s.cfg.Blobs.(blob.Local); ok {
		return local.LocalPath(appID)
	}
	return "", errors.New("service: the blob store is not local, and this runner reads the bundle from a local file: use a directory for --blobs with it")
}

// nodeApp is the active app whose node presents token, its fetch
// credential.
func (s *Service) nodeApp(ctx context.Context, appID, token string) (*store.App, error) {
	if token == "" {
		return nil, errf(ErrUnauthenticated, "missing node credential: send the pod's fetch token as \"Authorization: Bearer TOKEN\"")
	}
	bs, ok := s.cfg.Runner.(runner.BundleServer)
	if !ok {
		return nil, errf(ErrNotFound, "this backend's runner serves its nodes itself: there is nothing here for them")
	}
	if blob.CheckKey(appID) != nil {
		return nil, errf(ErrNotFound, "no app %.64q", appID)
	}
	a, err := s.st.GetApp(ctx, appID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errf(ErrNotFound, "no app %s", appID)
	}
	if err != nil {
		return nil, err
	}
	if len(a.Node) == 0 {
		if a.Status == store.StatusSpawning {
			// The pod may ask before Spawn's handle is stored.
			return nil, errf(ErrUnavailable, "the node of app %s is still being created; retry in a moment", appID)
		}
		return nil, errf(ErrForbidden, "app %s has no node", appID)
	}
	if len(token) > maxFetchToken || !bs.CheckFetchToken(a.Node, token) {
		return nil, errf(ErrForbidden, "this credential is not the one of app %s's node", appID)
	}
	if !a.Status.Active() {
		return nil, errf(ErrNotFound, "app %s is %s: its node has nothing more to get", appID, a.Status)
	}
	return a, nil
}

// NodeBundle is an active app's encrypted bundle for its node, which
// presents its fetch credential (token): only the node of appID gets it.
// It returns the content, its size and the lowercase hex SHA-256 the owner
// declared (the code digest, which the store checked on upload).
func (s *Service) NodeBundle(ctx context.Context, appID, token string) (io.ReadCloser, int64, string, error) {
	a, err := s.nodeApp(ctx, appID, token)
	if err != nil {
		return nil, 0, "", err
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

// NodeBundleURL is where an active app's node, which presents its fetch
// credential, gets its bundle when the backend presigns
// (Config.BundlePresignTTL): a URL of the blob store for that bundle alone,
// valid BundlePresignTTL, and the SHA-256 the owner declared. It is nil
// when the backend streams bundles itself (NodeBundle). The URL is a
// credential: never log it.
func (s *Service) NodeBundleURL(ctx context.Context, appID, token string) (*url.URL, string, error) {
	if s.cfg.BundlePresignTTL == 0 {
		return nil, "", nil
	}
	a, err := s.nodeApp(ctx, appID, token)
	if err != nil {
		return nil, "", err
	}
	u, err := s.cfg.Blobs.(blob.Presigner).PresignGet(ctx, appID, s.cfg.BundlePresignTTL)
	if errors.Is(err, blob.ErrNotFound) {
		return nil, "", errf(ErrNotFound, "the bundle of app %s is gone", appID)
	}
	if err != nil {
		return nil, "", err
	}
	return u, a.CodeDigest, nil
}

// NodeQuote is a sim quote for an active app's node, which presents its
// fetch credential: the runner states the node's identity, the node only
// the report data, so a node gets quotes for itself alone.
func (s *Service) NodeQuote(ctx context.Context, appID, token string, reportData [64]byte) ([]byte, error) {
	a, err := s.nodeApp(ctx, appID, token)
	if err != nil {
		return nil, err
	}
	nq, ok := s.cfg.Runner.(runner.NodeQuoter)
	if !ok {
		return nil, errf(ErrNotFound, "this backend's runner gives its sim nodes their quoting service itself")
	}
	q, err := nq.SimQuote(a.Node, reportData)
	if err != nil {
		return nil, errf(ErrForbidden, "app %s: %v", appID, err)
	}
	return q, nil
}
