package service

import (
	"errors"
	"fmt"
)

// Errors the service returns, wrapped with %w under a message that says what
// failed and what to do; test with errors.Is. They carry meaning, not an HTTP
// status: only package api maps them to status codes. Kind prefixes the
// message ("invalid request: …"); api answers the message without it.
var (
	// ErrInvalid: the request is malformed or breaks a rule.
	ErrInvalid = errors.New("invalid request")
	// ErrUnauthenticated: no token, or a token that is unknown or revoked.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden: the caller is known but may not do this.
	ErrForbidden = errors.New("forbidden")
	// ErrNotFound: no such object, or one of another tenant.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a name or domain is taken.
	ErrConflict = errors.New("conflict")
	// ErrTooLarge: an upload is over the operator's size limit.
	ErrTooLarge = errors.New("too large")
	// ErrUnavailable: the platform cannot do it now (no capacity); retrying
	// later may work.
	ErrUnavailable = errors.New("unavailable")
	// ErrQuota: the caller's quota does not allow it.
	ErrQuota = errors.New("over quota")
	// ErrOutOfStorage: the operator's storage is full.
	ErrOutOfStorage = errors.New("out of storage")
)

// Kinds lists every sentinel above, for callers that map them.
var Kinds = []error{ErrInvalid, ErrUnauthenticated, ErrForbidden, ErrNotFound, ErrConflict, ErrTooLarge, ErrUnavailable, ErrQuota, ErrOutOfStorage}

// errf wraps kind under a message.
func errf(kind error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", kind, fmt.Sprintf(format, args...))
}
