package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/mse-in-go/mse/internal/backend/service"
)

// statusOf maps the service's sentinel errors to HTTP status codes: the only
// place where they meet.
var statusOf = []struct {
	kind error
	code int
}{
	{service.ErrInvalid, http.StatusBadRequest},
	{service.ErrUnauthenticated, http.StatusUnauthorized},
	{service.ErrForbidden, http.StatusForbidden},
	{service.ErrNotFound, http.StatusNotFound},
	{service.ErrConflict, http.StatusConflict},
	{service.ErrTooLarge, http.StatusRequestEntityTooLarge},
	{service.ErrQuota, http.StatusTooManyRequests},
	{service.ErrUnavailable, http.StatusServiceUnavailable},
	{service.ErrOutOfStorage, http.StatusInsufficientStorage},
}

// outOfStorage is what a client hears when the operator's disk is full (the
// operator's log has the path and the free space).
const outOfStorage = "the operator is out of storage; try again later or ask the operator"

// httpError is an answer decided in this package (malformed bodies).
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{code: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// statusAndMessage returns the answer for err; ok is false for an internal
// error, whose message is not for the client.
func statusAndMessage(err error) (code int, msg string, ok bool) {
	var he *httpError
	if errors.As(err, &he) {
		return he.code, he.msg, true
	}
	if errors.Is(err, service.ErrOutOfStorage) {
		return http.StatusInsufficientStorage, outOfStorage, true
	}
	for _, k := range statusOf {
		if errors.Is(err, k.kind) {
			// The kind is in the status code; the message is what failed
			// and what to do.
			return k.code, strings.TrimPrefix(err.Error(), k.kind.Error()+": "), true
		}
	}
	return http.StatusInternalServerError, "internal error; the operator's logs have the details", false
}

func (a *api) fail(w http.ResponseWriter, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	code, msg, ok := statusAndMessage(err)
	if !ok {
		a.Logger.Error("internal error", "err", err)
	}
	writeErr(w, code, msg)
}

// decodeOne decodes exactly one JSON object of at most max bytes from r into
// v, with no unknown field and nothing but white space after it (docs/api.md:
// one object per body).
func decodeOne(r io.Reader, max int64, what string, v any) error {
	lr := &io.LimitedReader{R: r, N: max + 1}
	dec := json.NewDecoder(lr)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var he *httpError
		if errors.As(err, &he) {
			return err
		}
		if lr.N <= 0 {
			return badRequest("%s is larger than %d bytes", what, max)
		}
		return badRequest("malformed %s: %v", what, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if lr.N <= 0 {
			return badRequest("%s is larger than %d bytes", what, max)
		}
		return badRequest("malformed %s: it must hold one JSON object, and something follows it", what)
	}
	return nil
}
