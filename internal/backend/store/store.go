// Package store holds the backend's state behind one interface, with two
// drivers: sqlite (embedded default, pure Go) and postgres (at scale). Both
// pass the same conformance suite (storetest).
package store

import (
	"context"
	"errors"
	"slices"
	"time"
)

// Errors every driver returns (wrapped or not; test with errors.Is).
var (
	ErrNotFound = errors.New("not found")
	// ErrConflict: a unique name or domain is taken, or a compare-and-set
	// status transition found another status.
	ErrConflict = errors.New("conflict")
)

// AppStatus is an app's lifecycle state.
type AppStatus string

const (
	StatusSpawning     AppStatus = "spawning"
	StatusInitializing AppStatus = "initializing"
	StatusRunning      AppStatus = "running"
	StatusStopped      AppStatus = "stopped"
	StatusOnError      AppStatus = "on_error"
)

// ActiveStatuses hold resources and routes.
var ActiveStatuses = []AppStatus{StatusSpawning, StatusInitializing, StatusRunning}

// Active reports whether an app in this status holds resources and routes.
func (s AppStatus) Active() bool { return slices.Contains(ActiveStatuses, s) }

// User is a tenant.
type User struct {
	ID        string
	Name      string // unique
	Admin     bool
	CreatedAt time.Time
}

// Token is an API bearer token; only its SHA-256 is stored.
type Token struct {
	ID        string
	UserID    string
	Name      string
	Hash      string // lowercase hex SHA-256 of the token; unique
	CreatedAt time.Time
	RevokedAt *time.Time
}

// Project groups a user's apps.
type Project struct {
	ID        string
	OwnerID   string
	Name      string // unique per owner
	CreatedAt time.Time
}

// App is a deployed app as the backend knows it.
type App struct {
	ID         string
	OwnerID    string
	ProjectID  string
	Name       string
	Status     AppStatus
	Hardware   string   // hardware catalog name
	Domains    []string // unique among active apps (enforced by the store)
	Spec       []byte   // JSON of config.Spec, as the owner sent it plus assigned domains
	CodeDigest string   // lowercase hex SHA-256 of the encrypted bundle
	BundleSize int64
	// Node is the runner's handle for the spawned node (JSON, runner-specific);
	// empty before spawning.
	Node      []byte
	Error     string // why the app is on_error
	CreatedAt time.Time
	UpdatedAt time.Time
	ExpiresAt time.Time
	// StoppedAt is set when the app reaches stopped or on_error.
	StoppedAt *time.Time
}

// Proofs of domain control a reservation records.
const (
	// ProofCertificate: the tenant deployed an owner-mode app with a
	// certificate for the domain that chains to a root the operator trusts.
	ProofCertificate = "certificate"
	// ProofAdmin: the operator reserved it (mse-backend domain reserve).
	ProofAdmin = "admin"
)

// DomainReservation says that a domain belongs to one tenant: no other
// tenant's app may be served on it, whatever the TLS mode.
type DomainReservation struct {
	Domain    string // stored lowercase, without a trailing dot
	UserID    string
	Proof     string // ProofCertificate or ProofAdmin
	CreatedAt time.Time
}

// AppFilter selects apps in ListApps. Zero fields do not filter.
type AppFilter struct {
	OwnerID   string
	ProjectID string
	Name      string
	Statuses  []AppStatus
	// After, an app id, lists only the apps that come after that app in
	// ListApps's order (newest first): the cursor of the next page. An id
	// that no app has gives no apps.
	After string
	// Limit caps the number of apps returned (0: no cap).
	Limit int
}

// Quota bounds what one user may hold at once. Zero fields are unlimited.
type Quota struct {
	UserID      string
	ActiveApps  int   // apps spawning, initializing or running
	MemoryMiB   int64 // memory of the hardware of active apps
	Cores       int   // cores of the hardware of active apps
	BundleBytes int64 // stored bundles of active apps
	LogFollows  int   // concurrent `logs --follow` streams
}

// Store is the backend's state. Every method is safe for concurrent use.
type Store interface {
	Close() error

	CreateUser(ctx context.Context, u *User) error // ErrConflict when the name is taken
	GetUser(ctx context.Context, id string) (*User, error)
	GetUserByName(ctx context.Context, name string) (*User, error)
	ListUsers(ctx context.Context) ([]User, error)

	CreateToken(ctx context.Context, t *Token) error
	// TokenByHash returns the token with this hash, revoked or not.
	TokenByHash(ctx context.Context, hash string) (*Token, error)
	ListTokens(ctx context.Context, userID string) ([]Token, error)
	RevokeToken(ctx context.Context, id string, at time.Time) error // ErrNotFound

	CreateProject(ctx context.Context, p *Project) error // ErrConflict when the owner has that name
	GetProject(ctx context.Context, id string) (*Project, error)
	GetProjectByName(ctx context.Context, ownerID, name string) (*Project, error)
	ListProjects(ctx context.Context, ownerID string) ([]Project, error)

	// CreateApp inserts an app and claims its domains; ErrConflict when a
	// domain is held by another active app.
	CreateApp(ctx context.Context, a *App) error
	GetApp(ctx context.Context, id string) (*App, error)
	// ListApps returns matching apps, newest first.
	ListApps(ctx context.Context, f AppFilter) ([]App, error)
	// SetAppNode records the runner's node handle.
	SetAppNode(ctx context.Context, id string, node []byte, at time.Time) error
	// ClaimSpawn takes the right to spawn the node of an app that is
	// spawning and has none yet (compare-and-set on UpdatedAt): it succeeds
	// only if the app is spawning, has no node, and its UpdatedAt is still
	// seen; it then sets UpdatedAt to at. Otherwise ErrConflict (another
	// replica claimed it first, or the app moved on); unknown id:
	// ErrNotFound. Of many concurrent claims with the same seen, exactly one
	// wins. A claim lasts as long as the caller says (service.SpawnClaim):
	// UpdatedAt tells the others when it was taken.
	ClaimSpawn(ctx context.Context, id string, seen, at time.Time) error
	// TransitionApp moves an app to status `to` only if its current status is
	// one of `from` (compare-and-set); otherwise ErrConflict. errMsg is stored
	// for on_error (why it failed), and for stopped when not empty (why it
	// stopped); otherwise the previous message is kept. Reaching stopped or on_error sets StoppedAt and releases the
	// app's domains.
	TransitionApp(ctx context.Context, id string, from []AppStatus, to AppStatus, errMsg string, at time.Time) error
	// AppByDomain returns the active app holding a domain.
	AppByDomain(ctx context.Context, domain string) (*App, error)

	// ReserveDomain reserves r.Domain for r.UserID. When that user already
	// holds it, it succeeds and leaves the reservation as it was (r is
	// filled with it: first proof and time kept); when another user does,
	// ErrConflict, naming the domain and not the holder. An unknown user is
	// ErrNotFound. Zero CreatedAt becomes now.
	ReserveDomain(ctx context.Context, r *DomainReservation) error
	// DomainReservation returns the reservation of a domain (compared
	// case-insensitively, trailing dot ignored); ErrNotFound when there is none.
	DomainReservation(ctx context.Context, domain string) (*DomainReservation, error)
	// ListDomainReservations lists every reservation, by domain (empty, not
	// nil, when there is none).
	ListDomainReservations(ctx context.Context) ([]DomainReservation, error)
	// ReleaseDomain deletes a domain's reservation; ErrNotFound when there is none.
	ReleaseDomain(ctx context.Context, domain string) error

	// GetQuota returns a user's quota; a user without one has the zero
	// (unlimited) quota.
	GetQuota(ctx context.Context, userID string) (*Quota, error)
	// SetQuota sets a user's quota; ErrNotFound when there is no such user.
	SetQuota(ctx context.Context, q *Quota) error
}
