// Package sqlite is the embedded store driver: one SQLite file, pure Go
// (modernc.org/sqlite, no cgo).
//
// The file is opened in WAL mode with foreign keys on and synchronous=FULL
// (a committed transaction survives a crash of the process or the machine).
// Writes go through a single connection (database/sql pool of one, BEGIN
// IMMEDIATE), so concurrent writers in this process queue in Go instead of
// meeting SQLITE_BUSY; reads use a separate pool of read-only connections,
// which WAL lets run beside the writer. busy_timeout covers the remaining
// cases (another process on the same file, checkpoints), and a busy error that
// still escapes is retried.
//
// The schema is embedded (migrations/NNNN_*.sql) and applied at Open; the
// versions applied are recorded in schema_migrations.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"time"

	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/backend/store/internal/storeutil"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// BusyTimeout is how long a connection waits for a lock held by another
// connection before SQLite reports SQLITE_BUSY.
const BusyTimeout = 10 * time.Second

// timeLayout is how times are stored: fixed width, UTC, microseconds, so
// that text order is time order.
const timeLayout = "2006-01-02T15:04:05.000000Z"

// Store is a store.Store on an SQLite file.
type Store struct {
	w *sql.DB // the writer: one connection
	r *sql.DB // readers (the writer itself for an in-memory database)
}

var _ store.Store = (*Store)(nil)

// testHookCreateAppAfterInsert, when set (by tests), runs inside CreateApp's
// transaction after the app row is inserted and before the domains are claimed.
var testHookCreateAppAfterInsert func()

// Open opens (creating if needed) the database file at path and migrates its
// schema. path ":memory:" gives a private in-memory database (one connection,
// gone at Close), useful in other packages' tests.
func Open(path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlite store: empty path")
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("sqlite store: path %q must not contain '?' or '#'", path)
	}
	memory := path == ":memory:"
	common := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)&_txlock=immediate", BusyTimeout.Milliseconds())
	wdsn := path + "?" + common + "&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)"
	if memory {
		wdsn = path + "?" + common
	}
	w, err := sql.Open("sqlite", wdsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	s := &Store{w: w, r: w}
	if err := s.migrate(context.Background()); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite store: %s: %w", path, err)
	}
	if err := s.checkPragmas(memory); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite store: %s: %w", path, err)
	}
	if !memory {
		r, err := sql.Open("sqlite", path+"?"+common+"&_query_only=1")
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("sqlite store: open %s: %w", path, err)
		}
		n := max(4, runtime.GOMAXPROCS(0))
		r.SetMaxOpenConns(n)
		r.SetMaxIdleConns(n)
		s.r = r
	}
	return s, nil
}

func (s *Store) checkPragmas(memory bool) error {
	var fk int
	if err := s.w.QueryRow("PRAGMA foreign_keys").Scan(&fk); err != nil {
		return err
	}
	if fk != 1 {
		return errors.New("foreign keys could not be enabled")
	}
	if !memory {
		var mode string
		if err := s.w.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
			return err
		}
		if !strings.EqualFold(mode, "wal") {
			return fmt.Errorf("journal mode is %q, not wal", mode)
		}
	}
	return nil
}

// Close closes the database. It is safe to call more than once (sql.DB.Close
// is).
func (s *Store) Close() error {
	var rerr error
	if s.r != s.w {
		rerr = s.r.Close()
	}
	return errors.Join(rerr, s.w.Close())
}

// SchemaVersion returns the highest migration version applied.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.r.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&v)
	return v, err
}

func (s *Store) migrate(ctx context.Context) error {
	ms, err := storeutil.Migrations(migrationFS, "migrations")
	if err != nil {
		return err
	}
	// BEGIN IMMEDIATE (see _txlock): a second process opening the same file
	// waits here until the first has migrated.
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER PRIMARY KEY,
			name       TEXT NOT NULL,
			applied_at TEXT NOT NULL)`); err != nil {
			return err
		}
		applied := map[int]string{}
		rows, err := tx.QueryContext(ctx, "SELECT version, name FROM schema_migrations")
		if err != nil {
			return err
		}
		for rows.Next() {
			var v int
			var n string
			if err := rows.Scan(&v, &n); err != nil {
				rows.Close()
				return err
			}
			applied[v] = n
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return err
		}
		todo, err := storeutil.Pending(applied, ms)
		if err != nil {
			return err
		}
		for _, m := range todo {
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return fmt.Errorf("migration %s: %w", m.Name, err)
			}
			if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
				m.Version, m.Name, ts(time.Now())); err != nil {
				return err
			}
		}
		return nil
	})
}

// ---- plumbing

func ts(t time.Time) string { return storeutil.T(t).Format(timeLayout) }

func tsp(t *time.Time) any {
	if t == nil {
		return nil
	}
	return ts(*t)
}

func parseTS(s string) (time.Time, error) {
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("sqlite store: bad time %q in database: %w", s, err)
	}
	return t.UTC(), nil
}

func parseTSP(s sql.NullString) (*time.Time, error) {
	if !s.Valid {
		return nil, nil
	}
	t, err := parseTS(s.String)
	return &t, err
}

// blob binds an empty blob as NULL (the driver binds a nil []byte as an
// empty blob, not NULL).
func blob(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

func sqliteCode(err error) int {
	var e *sqlite.Error
	if errors.As(err, &e) {
		return e.Code()
	}
	return 0
}

func isUnique(err error) bool {
	c := sqliteCode(err)
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

func isFK(err error) bool { return sqliteCode(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY }

func isBusy(err error) bool {
	c := sqliteCode(err) & 0xff
	return c == sqlite3.SQLITE_BUSY || c == sqlite3.SQLITE_LOCKED
}

// retry runs f again while it fails with SQLITE_BUSY / SQLITE_LOCKED, which
// busy_timeout makes rare (another process holding the file for longer than
// the timeout, or a busy error SQLite reports without calling the handler).
func retry(ctx context.Context, f func() error) error {
	delay := 5 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err := f()
		if err == nil || !isBusy(err) || attempt >= 8 {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}

// tx runs f in a write transaction (BEGIN IMMEDIATE on the single writer).
func (s *Store) tx(ctx context.Context, f func(*sql.Tx) error) error {
	return retry(ctx, func() error {
		tx, err := s.w.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := f(tx); err != nil {
			tx.Rollback()
			return err
		}
		return tx.Commit()
	})
}

// exec runs one write statement.
func (s *Store) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	var res sql.Result
	err := retry(ctx, func() error {
		var err error
		res, err = s.w.ExecContext(ctx, q, args...)
		return err
	})
	return res, err
}

// collect runs a read on the reader pool and scans every row with scan. A
// retried attempt starts over with no rows.
func collect[T any](ctx context.Context, s *Store, scan func(*sql.Rows) (T, error), q string, args ...any) ([]T, error) {
	out := []T{}
	err := retry(ctx, func() error {
		out = out[:0]
		rows, err := s.r.QueryContext(ctx, q, args...)
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

func scanUser(sc *sql.Rows) (store.User, error) {
	var u store.User
	var created string
	if err := sc.Scan(&u.ID, &u.Name, &u.Admin, &created); err != nil {
		return u, err
	}
	var err error
	u.CreatedAt, err = parseTS(created)
	return u, err
}

func (s *Store) CreateUser(ctx context.Context, u *store.User) error {
	if err := storeutil.PrepareUser(u); err != nil {
		return err
	}
	_, err := s.exec(ctx, "INSERT INTO users ("+userCols+") VALUES (?, ?, ?, ?)", u.ID, u.Name, u.Admin, ts(u.CreatedAt))
	if isUnique(err) {
		return fmt.Errorf("%w: user name %q or id %q is taken", store.ErrConflict, u.Name, u.ID)
	}
	return err
}

func (s *Store) getUser(ctx context.Context, col, key string) (*store.User, error) {
	us, err := collect(ctx, s, scanUser, "SELECT "+userCols+" FROM users WHERE "+col+" = ?", key)
	return storeutil.First(us, err, "user", key)
}

func (s *Store) GetUser(ctx context.Context, id string) (*store.User, error) {
	return s.getUser(ctx, "id", id)
}

func (s *Store) GetUserByName(ctx context.Context, name string) (*store.User, error) {
	return s.getUser(ctx, "name", name)
}

// ListUsers returns all users ordered by name.
func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	return collect(ctx, s, scanUser, "SELECT "+userCols+" FROM users ORDER BY name")
}

// ---- tokens

const tokenCols = "id, user_id, name, hash, created_at, revoked_at"

func scanToken(sc *sql.Rows) (store.Token, error) {
	var t store.Token
	var created string
	var revoked sql.NullString
	if err := sc.Scan(&t.ID, &t.UserID, &t.Name, &t.Hash, &created, &revoked); err != nil {
		return t, err
	}
	var err1, err2 error
	t.CreatedAt, err1 = parseTS(created)
	t.RevokedAt, err2 = parseTSP(revoked)
	return t, errors.Join(err1, err2)
}

func (s *Store) CreateToken(ctx context.Context, t *store.Token) error {
	if err := storeutil.PrepareToken(t); err != nil {
		return err
	}
	_, err := s.exec(ctx, "INSERT INTO tokens ("+tokenCols+") VALUES (?, ?, ?, ?, ?, ?)",
		t.ID, t.UserID, t.Name, t.Hash, ts(t.CreatedAt), tsp(t.RevokedAt))
	switch {
	case isUnique(err):
		return fmt.Errorf("%w: token hash or id %q already exists", store.ErrConflict, t.ID)
	case isFK(err):
		return storeutil.NotFound("user", t.UserID)
	}
	return err
}

func (s *Store) TokenByHash(ctx context.Context, hash string) (*store.Token, error) {
	ts, err := collect(ctx, s, scanToken, "SELECT "+tokenCols+" FROM tokens WHERE hash = ?", hash)
	return storeutil.First(ts, err, "token", "") // the hash is not named
}

// ListTokens returns a user's tokens, revoked ones included, oldest first.
func (s *Store) ListTokens(ctx context.Context, userID string) ([]store.Token, error) {
	return collect(ctx, s, scanToken, "SELECT "+tokenCols+" FROM tokens WHERE user_id = ? ORDER BY created_at, id", userID)
}

// RevokeToken marks a token revoked at `at`. Revoking a revoked token keeps
// the first revocation time and succeeds.
func (s *Store) RevokeToken(ctx context.Context, id string, at time.Time) error {
	res, err := s.exec(ctx, "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", ts(at), id)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return storeutil.NotFound("token", id)
	}
	return nil
}

// ---- projects

const projectCols = "id, owner_id, name, created_at"

func scanProject(sc *sql.Rows) (store.Project, error) {
	var p store.Project
	var created string
	if err := sc.Scan(&p.ID, &p.OwnerID, &p.Name, &created); err != nil {
		return p, err
	}
	var err error
	p.CreatedAt, err = parseTS(created)
	return p, err
}

func (s *Store) CreateProject(ctx context.Context, p *store.Project) error {
	if err := storeutil.PrepareProject(p); err != nil {
		return err
	}
	_, err := s.exec(ctx, "INSERT INTO projects ("+projectCols+") VALUES (?, ?, ?, ?)", p.ID, p.OwnerID, p.Name, ts(p.CreatedAt))
	switch {
	case isUnique(err):
		return fmt.Errorf("%w: project %q of owner %s, or id %q, exists", store.ErrConflict, p.Name, p.OwnerID, p.ID)
	case isFK(err):
		return storeutil.NotFound("user", p.OwnerID)
	}
	return err
}

func (s *Store) GetProject(ctx context.Context, id string) (*store.Project, error) {
	ps, err := collect(ctx, s, scanProject, "SELECT "+projectCols+" FROM projects WHERE id = ?", id)
	return storeutil.First(ps, err, "project", id)
}

func (s *Store) GetProjectByName(ctx context.Context, ownerID, name string) (*store.Project, error) {
	ps, err := collect(ctx, s, scanProject, "SELECT "+projectCols+" FROM projects WHERE owner_id = ? AND name = ?", ownerID, name)
	return storeutil.First(ps, err, "project", name)
}

// ListProjects returns an owner's projects ordered by name.
func (s *Store) ListProjects(ctx context.Context, ownerID string) ([]store.Project, error) {
	return collect(ctx, s, scanProject, "SELECT "+projectCols+" FROM projects WHERE owner_id = ? ORDER BY name", ownerID)
}

// ---- apps

const appCols = "a.id, a.owner_id, a.project_id, a.name, a.status, a.hardware, a.domains, a.spec, a.code_digest, a.bundle_size, a.node, a.error, a.created_at, a.updated_at, a.expires_at, a.stopped_at"

func scanApp(sc *sql.Rows) (store.App, error) {
	var a store.App
	var project, stopped sql.NullString
	var domains, created, updated, expires string
	if err := sc.Scan(&a.ID, &a.OwnerID, &project, &a.Name, &a.Status, &a.Hardware, &domains, &a.Spec,
		&a.CodeDigest, &a.BundleSize, &a.Node, &a.Error, &created, &updated, &expires, &stopped); err != nil {
		return a, err
	}
	a.ProjectID = project.String
	a.Spec = storeutil.Bytes(a.Spec)
	a.Node = storeutil.Bytes(a.Node)
	var errs [5]error
	errs[0] = json.Unmarshal([]byte(domains), &a.Domains)
	a.Domains = storeutil.Strings(a.Domains)
	a.CreatedAt, errs[1] = parseTS(created)
	a.UpdatedAt, errs[2] = parseTS(updated)
	a.ExpiresAt, errs[3] = parseTS(expires)
	a.StoppedAt, errs[4] = parseTSP(stopped)
	return a, errors.Join(errs[:]...)
}

// claim inserts the domain claims of app id; ErrConflict names a domain that
// another active app holds.
func claim(ctx context.Context, tx *sql.Tx, id string, domains []string) error {
	for _, d := range storeutil.DomainKeys(domains) {
		res, err := tx.ExecContext(ctx, "INSERT INTO app_domains (domain, app_id) VALUES (?, ?) ON CONFLICT (domain) DO NOTHING", d, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
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
	domains, err := json.Marshal(a.Domains)
	if err != nil {
		return err
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO apps (id, owner_id, project_id, name, status, hardware, domains, spec,
			code_digest, bundle_size, node, error, created_at, updated_at, expires_at, stopped_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			a.ID, a.OwnerID, storeutil.NullString(a.ProjectID), a.Name, string(a.Status), a.Hardware, string(domains), blob(a.Spec),
			a.CodeDigest, a.BundleSize, blob(a.Node), a.Error, ts(a.CreatedAt), ts(a.UpdatedAt), ts(a.ExpiresAt), tsp(a.StoppedAt))
		switch {
		case isUnique(err):
			return fmt.Errorf("%w: app id %q exists", store.ErrConflict, a.ID)
		case isFK(err):
			return fmt.Errorf("%w: owner %q, or project %q of that owner", store.ErrNotFound, a.OwnerID, a.ProjectID)
		case err != nil:
			return err
		}
		if testHookCreateAppAfterInsert != nil {
			testHookCreateAppAfterInsert()
		}
		if a.Status.Active() {
			return claim(ctx, tx, a.ID, a.Domains)
		}
		return nil
	})
}

func (s *Store) GetApp(ctx context.Context, id string) (*store.App, error) {
	as, err := collect(ctx, s, scanApp, "SELECT "+appCols+" FROM apps a WHERE a.id = ?", id)
	return storeutil.First(as, err, "app", id)
}

// ListApps returns the apps matching f, newest first (created_at, then
// insertion order).
func (s *Store) ListApps(ctx context.Context, f store.AppFilter) ([]store.App, error) {
	var where []string
	var args []any
	if f.OwnerID != "" {
		where, args = append(where, "a.owner_id = ?"), append(args, f.OwnerID)
	}
	if f.ProjectID != "" {
		where, args = append(where, "a.project_id = ?"), append(args, f.ProjectID)
	}
	if f.Name != "" {
		where, args = append(where, "a.name = ?"), append(args, f.Name)
	}
	if len(f.Statuses) > 0 {
		ph := strings.TrimSuffix(strings.Repeat("?, ", len(f.Statuses)), ", ")
		where = append(where, "a.status IN ("+ph+")")
		for _, st := range f.Statuses {
			args = append(args, string(st))
		}
	}
	if f.After != "" {
		where = append(where, "(a.created_at, a.seq) < (SELECT c.created_at, c.seq FROM apps c WHERE c.id = ?)")
		args = append(args, f.After)
	}
	q := "SELECT " + appCols + " FROM apps a"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY a.created_at DESC, a.seq DESC"
	if f.Limit > 0 {
		q += " LIMIT ?"
		args = append(args, f.Limit)
	}
	return collect(ctx, s, scanApp, q, args...)
}

// SetAppNode records the runner's node handle and bumps UpdatedAt.
func (s *Store) SetAppNode(ctx context.Context, id string, node []byte, at time.Time) error {
	res, err := s.exec(ctx, "UPDATE apps SET node = ?, updated_at = ? WHERE id = ?", blob(node), ts(at), id)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return storeutil.NotFound("app", id)
	}
	return nil
}

// ClaimSpawn: see store.Store (writes are serialized on one connection).
func (s *Store) ClaimSpawn(ctx context.Context, id string, seen, at time.Time) error {
	res, err := s.exec(ctx, `UPDATE apps SET updated_at = ?
		WHERE id = ? AND status = 'spawning' AND (node IS NULL OR length(node) = 0) AND updated_at = ?`, ts(at), id, ts(seen))
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 1 {
		return nil
	}
	if _, err := s.GetApp(ctx, id); err != nil {
		return err
	}
	return fmt.Errorf("%w: app %s is no longer waiting for a node, or another replica claimed its spawn", store.ErrConflict, id)
}

// TransitionApp: see store.Store, and storeutil.Plan for the columns written:
// StoppedAt keeps the time the app first stopped; a transition from
// stopped/on_error back to an active status (only if the caller lists it in
// from) claims the domains again (ErrConflict if taken meanwhile) and clears
// StoppedAt and Error.
func (s *Store) TransitionApp(ctx context.Context, id string, from []store.AppStatus, to store.AppStatus, errMsg string, at time.Time) error {
	at = storeutil.T(at)
	return s.tx(ctx, func(tx *sql.Tx) error {
		var cur store.AppStatus
		var curErr, domains string
		var stopped sql.NullString
		err := tx.QueryRowContext(ctx, "SELECT status, error, domains, stopped_at FROM apps WHERE id = ?", id).
			Scan(&cur, &curErr, &domains, &stopped)
		if errors.Is(err, sql.ErrNoRows) {
			return storeutil.NotFound("app", id)
		} else if err != nil {
			return err
		}
		curStopped, err := parseTSP(stopped)
		if err != nil {
			return err
		}
		plan, err := storeutil.Plan(id, cur, curErr, curStopped, from, to, errMsg, at)
		if err != nil {
			return err
		}
		// The write transaction is exclusive; the status condition is a second guard.
		res, err := tx.ExecContext(ctx, "UPDATE apps SET status = ?, error = ?, stopped_at = ?, updated_at = ? WHERE id = ? AND status = ?",
			string(to), plan.Error, tsp(plan.StoppedAt), ts(at), id, string(cur))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n != 1 {
			return fmt.Errorf("%w: app %s changed status concurrently", store.ErrConflict, id)
		}
		if plan.Release {
			if _, err := tx.ExecContext(ctx, "DELETE FROM app_domains WHERE app_id = ?", id); err != nil {
				return err
			}
		}
		if plan.Claim {
			var ds []string
			if err := json.Unmarshal([]byte(domains), &ds); err != nil {
				return err
			}
			return claim(ctx, tx, id, ds)
		}
		return nil
	})
}

// AppByDomain returns the active app holding domain (compared
// case-insensitively, trailing dot ignored).
func (s *Store) AppByDomain(ctx context.Context, domain string) (*store.App, error) {
	as, err := collect(ctx, s, scanApp, "SELECT "+appCols+" FROM app_domains d JOIN apps a ON a.id = d.app_id WHERE d.domain = ?",
		storeutil.DomainKey(domain))
	return storeutil.First(as, err, "active app with domain", domain)
}

// ---- domain reservations

const reservationCols = "domain, user_id, proof, created_at"

func scanReservation(sc *sql.Rows) (store.DomainReservation, error) {
	var r store.DomainReservation
	var created string
	if err := sc.Scan(&r.Domain, &r.UserID, &r.Proof, &created); err != nil {
		return r, err
	}
	var err error
	r.CreatedAt, err = parseTS(created)
	return r, err
}

// ReserveDomain implements store.Store.
func (s *Store) ReserveDomain(ctx context.Context, r *store.DomainReservation) error {
	if err := storeutil.PrepareReservation(r); err != nil {
		return err
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "INSERT INTO domain_reservations ("+reservationCols+") VALUES (?, ?, ?, ?) ON CONFLICT (domain) DO NOTHING",
			r.Domain, r.UserID, r.Proof, ts(r.CreatedAt))
		if isFK(err) {
			return storeutil.NotFound("user", r.UserID)
		} else if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 1 {
			return nil
		}
		var holder, proof, created string
		if err := tx.QueryRowContext(ctx, "SELECT user_id, proof, created_at FROM domain_reservations WHERE domain = ?", r.Domain).
			Scan(&holder, &proof, &created); err != nil {
			return err
		}
		if holder != r.UserID {
			return storeutil.Reserved(r.Domain)
		}
		t, err := parseTS(created)
		r.Proof, r.CreatedAt = proof, t
		return err
	})
}

// DomainReservation implements store.Store.
func (s *Store) DomainReservation(ctx context.Context, domain string) (*store.DomainReservation, error) {
	rs, err := collect(ctx, s, scanReservation, "SELECT "+reservationCols+" FROM domain_reservations WHERE domain = ?", storeutil.DomainKey(domain))
	return storeutil.First(rs, err, "domain reservation", domain)
}

// ListDomainReservations implements store.Store.
func (s *Store) ListDomainReservations(ctx context.Context) ([]store.DomainReservation, error) {
	return collect(ctx, s, scanReservation, "SELECT "+reservationCols+" FROM domain_reservations ORDER BY domain")
}

// ReleaseDomain implements store.Store.
func (s *Store) ReleaseDomain(ctx context.Context, domain string) error {
	res, err := s.exec(ctx, "DELETE FROM domain_reservations WHERE domain = ?", storeutil.DomainKey(domain))
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return storeutil.NotFound("domain reservation", domain)
	}
	return nil
}

// ---- quotas

const quotaCols = "user_id, active_apps, memory_mib, cores, bundle_bytes, log_follows"

func scanQuota(sc *sql.Rows) (store.Quota, error) {
	var q store.Quota
	err := sc.Scan(&q.UserID, &q.ActiveApps, &q.MemoryMiB, &q.Cores, &q.BundleBytes, &q.LogFollows)
	return q, err
}

// GetQuota implements store.Store.
func (s *Store) GetQuota(ctx context.Context, userID string) (*store.Quota, error) {
	qs, err := collect(ctx, s, scanQuota, "SELECT "+quotaCols+" FROM quotas WHERE user_id = ?", userID)
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
	return s.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM users WHERE id = ?", q.UserID).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return storeutil.NotFound("user", q.UserID)
		}
		_, err := tx.ExecContext(ctx, "INSERT INTO quotas ("+quotaCols+") VALUES (?, ?, ?, ?, ?, ?) "+
			"ON CONFLICT (user_id) DO UPDATE SET active_apps = excluded.active_apps, memory_mib = excluded.memory_mib, "+
			"cores = excluded.cores, bundle_bytes = excluded.bundle_bytes, log_follows = excluded.log_follows",
			q.UserID, q.ActiveApps, q.MemoryMiB, q.Cores, q.BundleBytes, q.LogFollows)
		return err
	})
}
