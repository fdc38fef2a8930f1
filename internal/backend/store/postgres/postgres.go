// Package postgres is the store driver for PostgreSQL (pgx/v5), for
// deployments that outgrow one SQLite file or run several backends.
//
// Semantics are the SQLite driver's (both pass storetest): the same tables,
// the same constraints, times as timestamptz (microseconds, UTC on return).
// Transactions run at READ COMMITTED; TransitionApp locks the app row
// (SELECT ... FOR UPDATE), so concurrent compare-and-set transitions
// serialize and exactly one wins; domain claims are rows of app_domains whose
// primary key makes a domain unique among active apps; claims are inserted in
// sorted order so concurrent creates cannot deadlock (a deadlock or
// serialization failure would be retried anyway).
//
// The schema is embedded (migrations/NNNN_*.sql) and applied at Open inside
// one transaction holding a transaction-level advisory lock, so backends
// starting at the same time migrate once, one after the other.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/backend/store/internal/storeutil"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migrationLock is the advisory lock key held while migrating ("mse-migr").
const migrationLock int64 = 0x6d73652d6d696772

// DefaultMaxConns is the pool size unless the URL says pool_max_conns=N.
const DefaultMaxConns = 16

// Store is a store.Store on a PostgreSQL database.
type Store struct {
	pool *pool
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at url (postgres://user:pass@host:port/db?...,
// or a libpq keyword/value string) and migrates its schema. A URL may carry
// pool_max_conns=N (as with pgxpool; default 16).
func Open(ctx context.Context, url string) (*Store, error) {
	connURL, maxConns, err := poolSize(url)
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(connURL)
	if err != nil {
		return nil, fmt.Errorf("postgres store: %w", err)
	}
	s := &Store{pool: newPool(cfg, maxConns)}
	if err := s.migrate(ctx); err != nil {
		s.pool.close()
		return nil, fmt.Errorf("postgres store: %w", err)
	}
	return s, nil
}

// ConnConfig parses url as Open does (pool_max_conns removed) into the
// configuration of one connection: for a dedicated connection beside the
// store's pool, such as the leader election's (package leader).
func ConnConfig(url string) (*pgx.ConnConfig, error) {
	connURL, _, err := poolSize(url)
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(connURL)
	if err != nil {
		return nil, fmt.Errorf("postgres store: %w", err)
	}
	return cfg, nil
}

func poolSize(raw string) (string, int, error) {
	if !strings.HasPrefix(raw, "postgres://") && !strings.HasPrefix(raw, "postgresql://") {
		return raw, DefaultMaxConns, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", 0, fmt.Errorf("postgres store: bad URL: %w", err)
	}
	q := u.Query()
	v := q.Get("pool_max_conns")
	if v == "" {
		return raw, DefaultMaxConns, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return "", 0, fmt.Errorf("postgres store: bad pool_max_conns %q", v)
	}
	q.Del("pool_max_conns")
	u.RawQuery = q.Encode()
	return u.String(), n, nil
}

// Close closes the connections. It is safe to call more than once.
func (s *Store) Close() error {
	s.pool.close()
	return nil
}

// SchemaVersion returns the highest migration version applied.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.pool.with(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&v)
	})
	return v, err
}

func (s *Store) migrate(ctx context.Context) error {
	ms, err := storeutil.Migrations(migrationFS, "migrations")
	if err != nil {
		return err
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "SELECT version, name FROM schema_migrations")
		if err != nil {
			return err
		}
		applied := map[int]string{}
		var v int
		var n string
		_, err = pgx.ForEachRow(rows, []any{&v, &n}, func() error { applied[v] = n; return nil })
		if err != nil {
			return err
		}
		todo, err := storeutil.Pending(applied, ms)
		if err != nil {
			return err
		}
		for _, m := range todo {
			// No arguments: the simple protocol, several statements at once.
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("migration %s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name); err != nil {
				return err
			}
		}
		return nil
	})
}

// ---- plumbing

type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func pgCode(err error) string {
	var e *pgconn.PgError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func isUnique(err error) bool { return pgCode(err) == "23505" }
func isFK(err error) bool     { return pgCode(err) == "23503" }

// retryable: serialization failure, deadlock.
func retryable(err error) bool { c := pgCode(err); return c == "40001" || c == "40P01" }

// tx runs f in a transaction (READ COMMITTED), retrying it on serialization
// failures and deadlocks.
func (s *Store) tx(ctx context.Context, f func(pgx.Tx) error) error {
	for attempt := 0; ; attempt++ {
		err := s.pool.with(ctx, func(c *pgx.Conn) error { return pgx.BeginFunc(ctx, c, f) })
		if err != nil && retryable(err) && attempt < 5 && ctx.Err() == nil {
			time.Sleep(time.Duration(attempt+1) * 5 * time.Millisecond)
			continue
		}
		return err
	}
}

// run runs f on a connection, outside a transaction.
func (s *Store) run(ctx context.Context, f func(querier) error) error {
	return s.pool.with(ctx, func(c *pgx.Conn) error { return f(c) })
}

func (s *Store) exec(ctx context.Context, q string, args ...any) (pgconn.CommandTag, error) {
	var tag pgconn.CommandTag
	err := s.run(ctx, func(c querier) error {
		var err error
		tag, err = c.Exec(ctx, q, args...)
		return err
	})
	return tag, err
}

func utcP(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// collect runs a query and scans every row with scan.
func collect[T any](ctx context.Context, s *Store, scan func(pgx.Row) (T, error), q string, args ...any) ([]T, error) {
	out := []T{}
	err := s.run(ctx, func(c querier) error {
		out = out[:0]
		rows, err := c.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			v, err := scan(rows)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return rows.Err()
	})
	return out, err
}

// ---- users

const userCols = "id, name, admin, created_at"

func scanUser(r pgx.Row) (store.User, error) {
	var u store.User
	err := r.Scan(&u.ID, &u.Name, &u.Admin, &u.CreatedAt)
	u.CreatedAt = u.CreatedAt.UTC()
	return u, err
}

func (s *Store) CreateUser(ctx context.Context, u *store.User) error {
	if err := storeutil.PrepareUser(u); err != nil {
		return err
	}
	_, err := s.exec(ctx, "INSERT INTO users ("+userCols+") VALUES ($1, $2, $3, $4)", u.ID, u.Name, u.Admin, u.CreatedAt)
	if isUnique(err) {
		return fmt.Errorf("%w: user name %q or id %q is taken", store.ErrConflict, u.Name, u.ID)
	}
	return err
}

func (s *Store) getUser(ctx context.Context, col, key string) (*store.User, error) {
	us, err := collect(ctx, s, scanUser, "SELECT "+userCols+" FROM users WHERE "+col+" = $1", key)
	return storeutil.First(us, err, "user", key)
}

func (s *Store) GetUser(ctx context.Context, id string) (*store.User, error) {
	return s.getUser(ctx, "id", id)
}

func (s *Store) GetUserByName(ctx context.Context, name string) (*store.User, error) {
	return s.getUser(ctx, "name", name)
}

// ListUsers returns all users ordered by name (byte order, COLLATE "C").
func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	return collect(ctx, s, scanUser, "SELECT "+userCols+` FROM users ORDER BY name COLLATE "C"`)
}

// ---- tokens

const tokenCols = "id, user_id, name, hash, created_at, revoked_at"

func scanToken(r pgx.Row) (store.Token, error) {
	var t store.Token
	err := r.Scan(&t.ID, &t.UserID, &t.Name, &t.Hash, &t.CreatedAt, &t.RevokedAt)
	t.CreatedAt = t.CreatedAt.UTC()
	t.RevokedAt = utcP(t.RevokedAt)
	return t, err
}

func (s *Store) CreateToken(ctx context.Context, t *store.Token) error {
	if err := storeutil.PrepareToken(t); err != nil {
		return err
	}
	_, err := s.exec(ctx, "INSERT INTO tokens ("+tokenCols+") VALUES ($1, $2, $3, $4, $5, $6)",
		t.ID, t.UserID, t.Name, t.Hash, t.CreatedAt, t.RevokedAt)
	switch {
	case isUnique(err):
		return fmt.Errorf("%w: token hash or id %q already exists", store.ErrConflict, t.ID)
	case isFK(err):
		return storeutil.NotFound("user", t.UserID)
	}
	return err
}

func (s *Store) TokenByHash(ctx context.Context, hash string) (*store.Token, error) {
	ts, err := collect(ctx, s, scanToken, "SELECT "+tokenCols+" FROM tokens WHERE hash = $1", hash)
	return storeutil.First(ts, err, "token", "") // the hash is not named
}

// ListTokens returns a user's tokens, revoked ones included, oldest first.
func (s *Store) ListTokens(ctx context.Context, userID string) ([]store.Token, error) {
	return collect(ctx, s, scanToken, "SELECT "+tokenCols+` FROM tokens WHERE user_id = $1 ORDER BY created_at, id COLLATE "C"`, userID)
}

// RevokeToken marks a token revoked at `at`. Revoking a revoked token keeps
// the first revocation time and succeeds.
func (s *Store) RevokeToken(ctx context.Context, id string, at time.Time) error {
	tag, err := s.exec(ctx, "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2", storeutil.T(at), id)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return storeutil.NotFound("token", id)
	}
	return nil
}

// ---- projects

const projectCols = "id, owner_id, name, created_at"

func scanProject(r pgx.Row) (store.Project, error) {
	var p store.Project
	err := r.Scan(&p.ID, &p.OwnerID, &p.Name, &p.CreatedAt)
	p.CreatedAt = p.CreatedAt.UTC()
	return p, err
}

func (s *Store) CreateProject(ctx context.Context, p *store.Project) error {
	if err := storeutil.PrepareProject(p); err != nil {
		return err
	}
	_, err := s.exec(ctx, "INSERT INTO projects ("+projectCols+") VALUES ($1, $2, $3, $4)", p.ID, p.OwnerID, p.Name, p.CreatedAt)
	switch {
	case isUnique(err):
		return fmt.Errorf("%w: project %q of owner %s, or id %q, exists", store.ErrConflict, p.Name, p.OwnerID, p.ID)
	case isFK(err):
		return storeutil.NotFound("user", p.OwnerID)
	}
	return err
}

func (s *Store) GetProject(ctx context.Context, id string) (*store.Project, error) {
	ps, err := collect(ctx, s, scanProject, "SELECT "+projectCols+" FROM projects WHERE id = $1", id)
	return storeutil.First(ps, err, "project", id)
}

func (s *Store) GetProjectByName(ctx context.Context, ownerID, name string) (*store.Project, error) {
	ps, err := collect(ctx, s, scanProject, "SELECT "+projectCols+" FROM projects WHERE owner_id = $1 AND name = $2", ownerID, name)
	return storeutil.First(ps, err, "project", name)
}

// ListProjects returns an owner's projects ordered by name.
func (s *Store) ListProjects(ctx context.Context, ownerID string) ([]store.Project, error) {
	return collect(ctx, s, scanProject, "SELECT "+projectCols+` FROM projects WHERE owner_id = $1 ORDER BY name COLLATE "C"`, ownerID)
}

// ---- apps

const appCols = "a.id, a.owner_id, a.project_id, a.name, a.status, a.hardware, a.domains, a.spec, a.code_digest, a.bundle_size, a.node, a.error, a.created_at, a.updated_at, a.expires_at, a.stopped_at"

func scanApp(r pgx.Row) (store.App, error) {
	var a store.App
	var project *string
	var status string
	err := r.Scan(&a.ID, &a.OwnerID, &project, &a.Name, &status, &a.Hardware, &a.Domains, &a.Spec,
		&a.CodeDigest, &a.BundleSize, &a.Node, &a.Error, &a.CreatedAt, &a.UpdatedAt, &a.ExpiresAt, &a.StoppedAt)
	if project != nil {
		a.ProjectID = *project
	}
	a.Status = store.AppStatus(status)
	a.Domains = storeutil.Strings(a.Domains)
	a.Spec = storeutil.Bytes(a.Spec)
	a.Node = storeutil.Bytes(a.Node)
	a.CreatedAt, a.UpdatedAt, a.ExpiresAt = a.CreatedAt.UTC(), a.UpdatedAt.UTC(), a.ExpiresAt.UTC()
	a.StoppedAt = utcP(a.StoppedAt)
	return a, err
}

// claim inserts the domain claims of app id; ErrConflict names a domain that
// another active app holds. (ON CONFLICT DO NOTHING, not a caught unique
// violation: the transaction stays usable.)
func claim(ctx context.Context, tx pgx.Tx, id string, domains []string) error {
	for _, d := range storeutil.DomainKeys(domains) {
		tag, err := tx.Exec(ctx, "INSERT INTO app_domains (domain, app_id) VALUES ($1, $2) ON CONFLICT (domain) DO NOTHING", d, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			// The holder is not named: it may be another tenant's app.
			return fmt.Errorf("%w: domain %q is held by another active app", store.ErrConflict, d)
		}
	}
	return nil
}

// CreateApp inserts the app and, if its status is active, claims its domains,
// in one transaction: on ErrConflict nothing is written. An empty ID is
// filled with a new UUID; zero CreatedAt/UpdatedAt with now/CreatedAt.
func (s *Store) CreateApp(ctx context.Context, a *store.App) error {
	if err := storeutil.PrepareApp(a); err != nil {
		return err
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO apps (id, owner_id, project_id, name, status, hardware, domains, spec,
			code_digest, bundle_size, node, error, created_at, updated_at, expires_at, stopped_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
			a.ID, a.OwnerID, storeutil.NullString(a.ProjectID), a.Name, string(a.Status), a.Hardware, a.Domains, storeutil.Bytes(a.Spec),
			a.CodeDigest, a.BundleSize, storeutil.Bytes(a.Node), a.Error, a.CreatedAt, a.UpdatedAt, a.ExpiresAt, a.StoppedAt)
		switch {
		case isUnique(err):
			return fmt.Errorf("%w: app id %q exists", store.ErrConflict, a.ID)
		case isFK(err):
			return fmt.Errorf("%w: owner %q, or project %q of that owner", store.ErrNotFound, a.OwnerID, a.ProjectID)
		case err != nil:
			return err
		}
		if a.Status.Active() {
			return claim(ctx, tx, a.ID, a.Domains)
		}
		return nil
	})
}

func (s *Store) GetApp(ctx context.Context, id string) (*store.App, error) {
	as, err := collect(ctx, s, scanApp, "SELECT "+appCols+" FROM apps a WHERE a.id = $1", id)
	return storeutil.First(as, err, "app", id)
}

// ListApps returns the apps matching f, newest first (created_at, then
// insertion order).
func (s *Store) ListApps(ctx context.Context, f store.AppFilter) ([]store.App, error) {
	var where []string
	var args []any
	add := func(cond string, arg any) {
		args = append(args, arg)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.OwnerID != "" {
		add("a.owner_id = $%d", f.OwnerID)
	}
	if f.ProjectID != "" {
		add("a.project_id = $%d", f.ProjectID)
	}
	if f.Name != "" {
		add("a.name = $%d", f.Name)
	}
	if len(f.Statuses) > 0 {
		st := make([]string, len(f.Statuses))
		for i, v := range f.Statuses {
			st[i] = string(v)
		}
		add("a.status = ANY($%d)", st)
	}
	if f.After != "" {
		add("(a.created_at, a.seq) < (SELECT c.created_at, c.seq FROM apps c WHERE c.id = $%d)", f.After)
	}
	q := "SELECT " + appCols + " FROM apps a"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY a.created_at DESC, a.seq DESC"
	if f.Limit > 0 {
		args = append(args, f.Limit)
		q += fmt.Sprintf(" LIMIT $%d", len(args))
	}
	return collect(ctx, s, scanApp, q, args...)
}

// SetAppNode records the runner's node handle and bumps UpdatedAt.
func (s *Store) SetAppNode(ctx context.Context, id string, node []byte, at time.Time) error {
	tag, err := s.exec(ctx, "UPDATE apps SET node = $1, updated_at = $2 WHERE id = $3", storeutil.Bytes(node), storeutil.T(at), id)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return storeutil.NotFound("app", id)
	}
	return nil
}

// ClaimSpawn: see store.Store. One UPDATE: its WHERE is re-checked on the
// locked row, so of concurrent claims one wins.
func (s *Store) ClaimSpawn(ctx context.Context, id string, seen, at time.Time) error {
	tag, err := s.exec(ctx, `UPDATE apps SET updated_at = $1
		WHERE id = $2 AND status = 'spawning' AND (node IS NULL OR octet_length(node) = 0) AND updated_at = $3`,
		storeutil.T(at), id, storeutil.T(seen))
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var one int
	err = s.run(ctx, func(c querier) error { return c.QueryRow(ctx, "SELECT 1 FROM apps WHERE id = $1", id).Scan(&one) })
	if errors.Is(err, pgx.ErrNoRows) {
		return storeutil.NotFound("app", id)
	} else if err != nil {
		return err
	}
	return fmt.Errorf("%w: app %s is no longer waiting for a node, or another replica claimed its spawn", store.ErrConflict, id)
}

// TransitionApp: see store.Store, and storeutil.Plan for the columns written
// (first StoppedAt kept, restart re-claims the domains).
func (s *Store) TransitionApp(ctx context.Context, id string, from []store.AppStatus, to store.AppStatus, errMsg string, at time.Time) error {
	at = storeutil.T(at)
	return s.tx(ctx, func(tx pgx.Tx) error {
		var cur, curErr string
		var domains []string
		var stopped *time.Time
		err := tx.QueryRow(ctx, "SELECT status, error, domains, stopped_at FROM apps WHERE id = $1 FOR UPDATE", id).
			Scan(&cur, &curErr, &domains, &stopped)
		if errors.Is(err, pgx.ErrNoRows) {
			return storeutil.NotFound("app", id)
		} else if err != nil {
			return err
		}
		plan, err := storeutil.Plan(id, store.AppStatus(cur), curErr, utcP(stopped), from, to, errMsg, at)
		if err != nil {
			return err
		}
		// The row is locked; the status condition is a second guard.
		tag, err := tx.Exec(ctx, "UPDATE apps SET status = $1, error = $2, stopped_at = $3, updated_at = $4 WHERE id = $5 AND status = $6",
			string(to), plan.Error, plan.StoppedAt, at, id, cur)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("%w: app %s changed status concurrently", store.ErrConflict, id)
		}
		if plan.Release {
			if _, err := tx.Exec(ctx, "DELETE FROM app_domains WHERE app_id = $1", id); err != nil {
				return err
			}
		}
		if plan.Claim {
			return claim(ctx, tx, id, domains)
		}
		return nil
	})
}

// AppByDomain returns the active app holding domain (compared
// case-insensitively, trailing dot ignored).
func (s *Store) AppByDomain(ctx context.Context, domain string) (*store.App, error) {
	as, err := collect(ctx, s, scanApp, "SELECT "+appCols+" FROM app_domains d JOIN apps a ON a.id = d.app_id WHERE d.domain = $1",
		storeutil.DomainKey(domain))
	return storeutil.First(as, err, "active app with domain", domain)
}

// ---- domain reservations

const reservationCols = "domain, user_id, proof, created_at"

func scanReservation(r pgx.Row) (store.DomainReservation, error) {
	var d store.DomainReservation
	err := r.Scan(&d.Domain, &d.UserID, &d.Proof, &d.CreatedAt)
	d.CreatedAt = d.CreatedAt.UTC()
	return d, err
}

// ReserveDomain implements store.Store.
func (s *Store) ReserveDomain(ctx context.Context, r *store.DomainReservation) error {
	if err := storeutil.PrepareReservation(r); err != nil {
		return err
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "INSERT INTO domain_reservations ("+reservationCols+") VALUES ($1, $2, $3, $4) ON CONFLICT (domain) DO NOTHING",
			r.Domain, r.UserID, r.Proof, r.CreatedAt)
		if isFK(err) {
			return storeutil.NotFound("user", r.UserID)
		} else if err != nil {
			return err
		}
		if tag.RowsAffected() == 1 {
			return nil
		}
		// The row that won the conflict is committed (READ COMMITTED sees it).
		var holder, proof string
		var created time.Time
		if err := tx.QueryRow(ctx, "SELECT user_id, proof, created_at FROM domain_reservations WHERE domain = $1", r.Domain).
			Scan(&holder, &proof, &created); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				// Released between the two statements: let the caller retry.
				return fmt.Errorf("%w: domain %q changed concurrently; try again", store.ErrConflict, r.Domain)
			}
			return err
		}
		if holder != r.UserID {
			return storeutil.Reserved(r.Domain)
		}
		r.Proof, r.CreatedAt = proof, created.UTC()
		return nil
	})
}

// DomainReservation implements store.Store.
func (s *Store) DomainReservation(ctx context.Context, domain string) (*store.DomainReservation, error) {
	rs, err := collect(ctx, s, scanReservation, "SELECT "+reservationCols+" FROM domain_reservations WHERE domain = $1", storeutil.DomainKey(domain))
	return storeutil.First(rs, err, "domain reservation", domain)
}

// ListDomainReservations implements store.Store.
func (s *Store) ListDomainReservations(ctx context.Context) ([]store.DomainReservation, error) {
	return collect(ctx, s, scanReservation, "SELECT "+reservationCols+` FROM domain_reservations ORDER BY domain COLLATE "C"`)
}

// ReleaseDomain implements store.Store.
func (s *Store) ReleaseDomain(ctx context.Context, domain string) error {
	tag, err := s.exec(ctx, "DELETE FROM domain_reservations WHERE domain = $1", storeutil.DomainKey(domain))
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return storeutil.NotFound("domain reservation", domain)
	}
	return nil
}

// ---- quotas

const quotaCols = "user_id, active_apps, memory_mib, cores, bundle_bytes, log_follows"

func scanQuota(r pgx.Row) (store.Quota, error) {
	var q store.Quota
	err := r.Scan(&q.UserID, &q.ActiveApps, &q.MemoryMiB, &q.Cores, &q.BundleBytes, &q.LogFollows)
	return q, err
}

// GetQuota implements store.Store.
func (s *Store) GetQuota(ctx context.Context, userID string) (*store.Quota, error) {
	qs, err := collect(ctx, s, scanQuota, "SELECT "+quotaCols+" FROM quotas WHERE user_id = $1", userID)
	if err != nil {
		return nil, err
	}
	if len(qs) == 0 {
		return &store.Quota{UserID: userID}, nil
	}
	return &qs[0], nil
}

// SetQuota implements store.Store.
func (s *Store) SetQuota(ctx context.Context, q *store.Quota) error {
	tag, err := s.exec(ctx, "INSERT INTO quotas ("+quotaCols+") SELECT id, $2, $3, $4, $5, $6 FROM users WHERE id = $1 "+
		"ON CONFLICT (user_id) DO UPDATE SET active_apps = excluded.active_apps, memory_mib = excluded.memory_mib, "+
		"cores = excluded.cores, bundle_bytes = excluded.bundle_bytes, log_follows = excluded.log_follows",
		q.UserID, q.ActiveApps, q.MemoryMiB, q.Cores, q.BundleBytes, q.LogFollows)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return storeutil.NotFound("user", q.UserID)
	}
	return nil
}
