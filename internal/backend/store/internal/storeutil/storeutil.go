// Package storeutil holds what the store drivers share: normalization of
// times, IDs and domains, and validation of the rows callers hand in. It keeps
// the two drivers' semantics identical where SQL cannot.
package storeutil

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/mse-in-go/mse/internal/backend/store"
)

// Precision is the resolution at which every driver stores times. PostgreSQL's
// timestamptz holds microseconds; SQLite is made to match. Times are truncated
// (never rounded) to it, and returned in UTC.
const Precision = time.Microsecond

// T normalizes a time for storage: UTC, truncated to Precision.
func T(t time.Time) time.Time { return t.UTC().Truncate(Precision) }

// TP is T for an optional time.
func TP(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := T(*t)
	return &v
}

// NowIfZero returns T(t), or the current time when t is zero.
func NowIfZero(t time.Time) time.Time {
	if t.IsZero() {
		return T(time.Now())
	}
	return T(t)
}

// ID returns id, or a new random UUID (version 4, canonical text form) when id is empty.
func ID(id string) string {
	if id != "" {
		return id
	}
	return uuid.NewString()
}

// DomainKey is the form in which a domain is claimed and looked up:
// lowercase, without a trailing dot. DNS names compare case-insensitively.
func DomainKey(d string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
}

// DomainKeys returns the claim keys of an app's domains: normalized,
// deduplicated, sorted (a fixed order, so concurrent claims cannot deadlock).
// Empty names are dropped.
func DomainKeys(domains []string) []string {
	keys := make([]string, 0, len(domains))
	for _, d := range domains {
		if k := DomainKey(d); k != "" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// ValidStatus reports an error for a status the store does not know.
func ValidStatus(s store.AppStatus) error {
	switch s {
	case store.StatusSpawning, store.StatusInitializing, store.StatusRunning, store.StatusStopped, store.StatusOnError:
		return nil
	}
	return fmt.Errorf("store: unknown app status %q", s)
}

// Terminal reports whether s is stopped or on_error.
func Terminal(s store.AppStatus) bool { return s == store.StatusStopped || s == store.StatusOnError }

// NullString returns nil for "" (stored as NULL), else a pointer to s.
func NullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// NotFound is the ErrNotFound every driver returns for a missing what, named
// by key; an empty key (a secret, such as a token hash) is not named.
func NotFound(what, key string) error {
	if key == "" {
		return fmt.Errorf("%w: %s", store.ErrNotFound, what)
	}
	return fmt.Errorf("%w: %s %q", store.ErrNotFound, what, key)
}

// First returns the first of rows, the result of a query by key: err as is,
// or NotFound(what, key) when there are no rows.
func First[T any](rows []T, err error, what, key string) (*T, error) {
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, NotFound(what, key)
	}
	return &rows[0], nil
}

// Bytes returns nil for an empty blob, so that nil and empty compare alike
// after a round trip; a non-empty blob is returned as is.
func Bytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// Strings returns a non-nil slice (an app with no domains has []string{}).
func Strings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// PrepareUser validates u and fills its defaults in place (ID, CreatedAt, normalized times).
func PrepareUser(u *store.User) error {
	if u == nil || u.Name == "" {
		return fmt.Errorf("store: user name is empty")
	}
	u.ID = ID(u.ID)
	u.CreatedAt = NowIfZero(u.CreatedAt)
	return nil
}

// PrepareToken validates t and fills its defaults in place.
func PrepareToken(t *store.Token) error {
	if t == nil || t.UserID == "" || t.Hash == "" {
		return fmt.Errorf("store: token needs a user id and a hash")
	}
	t.ID = ID(t.ID)
	t.CreatedAt = NowIfZero(t.CreatedAt)
	t.RevokedAt = TP(t.RevokedAt)
	return nil
}

// PrepareProject validates p and fills its defaults in place.
func PrepareProject(p *store.Project) error {
	if p == nil || p.OwnerID == "" || p.Name == "" {
		return fmt.Errorf("store: project needs an owner id and a name")
	}
	p.ID = ID(p.ID)
	p.CreatedAt = NowIfZero(p.CreatedAt)
	return nil
}

// PrepareApp validates a and fills its defaults in place: ID, CreatedAt (now),
// UpdatedAt (CreatedAt), normalized times, non-nil Domains, StoppedAt for an
// app created in a terminal status.
func PrepareApp(a *store.App) error {
	if a == nil || a.OwnerID == "" {
		return fmt.Errorf("store: app needs an owner id")
	}
	if err := ValidStatus(a.Status); err != nil {
		return err
	}
	a.ID = ID(a.ID)
	a.CreatedAt = NowIfZero(a.CreatedAt)
	if a.UpdatedAt.IsZero() {
		a.UpdatedAt = a.CreatedAt
	}
	a.UpdatedAt = T(a.UpdatedAt)
	a.ExpiresAt = T(a.ExpiresAt)
	a.StoppedAt = TP(a.StoppedAt)
	if a.Status.Active() {
		a.StoppedAt = nil
	} else if a.StoppedAt == nil {
		at := a.UpdatedAt
		a.StoppedAt = &at
	}
	a.Domains = Strings(a.Domains)
	return nil
}

// Transition is what TransitionApp writes, as Plan computes it.
type Transition struct {
	Error     string
	StoppedAt *time.Time
	// Release: the app's domain claims must be deleted.
	Release bool
	// Claim: the app comes back from a terminal status to an active one and
	// must claim its domains again.
	Claim bool
}

// Plan validates a transition of app id to status to and computes the app's
// new columns, given its current status, error and stopped time. It returns
// ErrConflict (wrapped) when cur is not in from. The drivers call it inside
// the transaction that holds the app row, and need not validate to first.
func Plan(id string, cur store.AppStatus, curErr string, curStopped *time.Time, from []store.AppStatus, to store.AppStatus, errMsg string, at time.Time) (Transition, error) {
	if err := ValidStatus(to); err != nil {
		return Transition{}, err
	}
	if !slices.Contains(from, cur) {
		return Transition{}, fmt.Errorf("%w: app %s is %s, not one of %v", store.ErrConflict, id, cur, from)
	}
	tr := Transition{Error: curErr, StoppedAt: curStopped}
	// The message says why the app failed, or why it stopped (when given).
	if to == store.StatusOnError || (to == store.StatusStopped && errMsg != "") {
		tr.Error = errMsg
	}
	switch {
	case Terminal(to):
		if tr.StoppedAt == nil {
			tr.StoppedAt = &at
		}
		tr.Release = true
	case !cur.Active(): // terminal -> active: a restart
		tr.StoppedAt = nil
		tr.Error = ""
		tr.Claim = true
	}
	return tr, nil
}

// PrepareReservation validates r and fills its defaults in place: the
// domain in its key form, CreatedAt (now), normalized time.
func PrepareReservation(r *store.DomainReservation) error {
	if r == nil || r.UserID == "" || DomainKey(r.Domain) == "" {
		return fmt.Errorf("store: a domain reservation needs a domain and a user id")
	}
	switch r.Proof {
	case store.ProofCertificate, store.ProofAdmin:
	default:
		return fmt.Errorf("store: unknown domain proof %q (%s, %s)", r.Proof, store.ProofCertificate, store.ProofAdmin)
	}
	r.Domain = DomainKey(r.Domain)
	r.CreatedAt = NowIfZero(r.CreatedAt)
	return nil
}

// Reserved is the ErrConflict of a domain reserved by another user; the
// holder is not named (it is another tenant).
func Reserved(domain string) error {
	return fmt.Errorf("%w: domain %q is reserved by another user", store.ErrConflict, domain)
}
