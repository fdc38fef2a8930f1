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

// nodeBundle streams an app's encrypted bundle to its node, or sends the
// node to a presigned URL of the bundle store (307), which
// authenticates with its fetch credential (not a user's API token).
func (a *api) nodeBundle(w http.ResponseWriter, r *http.Request) {
	tok, ok := bearerToken(w, r)
	if !ok {
		return
	}
	if u, sum, err := a.Service.NodeBundleURL(r.Context(), r.PathValue("app_id"), tok); err != nil {
		a.fail(w, err)
		return
	} else if u != nil {
		// A presigned URL of the bundle store (the node GETs it without
		// its credential); never logged.
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set(BundleSHA256Header, sum)
		w.Header().Set("Location", u.String())
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
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

// bearerToken is the token of the Authorization header ("" for none): a
// user's API token, or a node's fetch credential; a header of another
// scheme is answered 401.
func bearerToken(w http.ResponseWriter, r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", true
	}
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		writeErr(w, http.StatusUnauthorized, "the Authorization header must be \"Bearer TOKEN\"")
		return "", false
	}
	return strings.TrimSpace(rest), true
}

// nodeQuote answers a sim node's quote request (docs/sim.md's quoting
// service protocol over HTTP): the body is the 64 bytes of report data.
func (a *api) nodeQuote(w http.ResponseWriter, r *http.Request) {
	tok, ok := bearerToken(w, r)
	if !ok {
		return
	}
	var rd [64]byte
	b, err := io.ReadAll(io.LimitReader(r.Body, int64(len(rd))+1))
	if err != nil || len(b) != len(rd) {
		writeErr(w, http.StatusBadRequest, "the body must be exactly 64 bytes of report data")
		return
	}
	copy(rd[:], b)
	q, err := a.Service.NodeQuote(r.Context(), r.PathValue("app_id"), tok, rd)
	if err != nil {
		a.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(q)
}
