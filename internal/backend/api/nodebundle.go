package api

import (
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Headers of GET /v1/nodes/{app_id}/bundle.
const (
	// BundleSHA256Header is the bundle's SHA-256 (lowercase hex), the code
	// digest the owner declared; mse-fetch checks it with Content-Length.
	BundleSHA256Header = "Mse-Bundle-Sha256"
)

// nodeBundle streams an app's encrypted bundle to its node, which
// authenticates with its fetch credential (not a user's API token).
func (a *api) nodeBundle(w http.ResponseWriter, r *http.Request) {
	var tok string
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, rest, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			writeErr(w, http.StatusUnauthorized, "the Authorization header must be \"Bearer TOKEN\"")
			return
		}
		tok = strings.TrimSpace(rest)
	}
	rc, size, sum, err := a.Service.NodeBundle(r.Context(), r.PathValue("app_id"), tok)
	if err != nil {
		a.fail(w, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set(BundleSHA256Header, sum)
	if n, err := io.Copy(w, rc); err != nil || n != size {
		// The status is sent; the node's size and digest checks fail.
		a.Logger.Warn("bundle fetch broke off", "app", r.PathValue("app_id"), "sent", n, "size", size, "err", err)
	}
}
