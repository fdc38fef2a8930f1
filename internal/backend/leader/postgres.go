package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultKey is the advisory lock the backends of one database compete for
// ("mse-lead"). Advisory locks are per database: backends on other
// databases of the same server do not compete.
const DefaultKey int64 = 0x6d73652d6c656164

// Defaults of PostgresConfig.
const (
	DefaultRetry = time.Second
	DefaultCheck = time.Second
)

// PostgresConfig configures a Postgres elector.
type PostgresConfig struct {
	// Conn configures the elector's own connection (postgres.ConnConfig of
	// the store's URL). It must reach the server directly or through a
	// session-mode pooler: a transaction-mode pooler (PgBouncer's
	// pool_mode=transaction) would hand the lock's session to others.
	Conn *pgx.ConnConfig
	// Key is the advisory lock (default DefaultKey).
	Key int64
	// Retry is how long a follower waits for the lock in one attempt
	// (lock_timeout) and the pause after a failed connection (default
	// DefaultRetry).
	Retry time.Duration
	// Check is how often the leader checks its connection when the server
	// says nothing (default DefaultCheck); a connection the server closes is
	// noticed at once.
	Check time.Duration
	// Identity is the connection's application_name, shown in
	// pg_stat_activity and in followers' logs (default "mse-backend leader
	// election, HOST pid PID").
	Identity string
	Logger   *slog.Logger
}

// Postgres elects with a session-level advisory lock (pg_advisory_lock) held
// on a dedicated connection: the replica whose session holds the lock leads.
//
// Followers wait in pg_advisory_lock with lock_timeout = Retry, attempt after
// attempt, so the server grants the lock to one of them the moment the
// leader's session ends: a clean release (pg_advisory_unlock at shutdown) or
// a session the server ended (pg_terminate_backend, a server restart, a
// client the server saw die) hands over at once.
//
// The leader waits on its connection for anything the server sends, and
// pings it every Check: a connection the server closes cancels lead's
// context as soon as the closing message arrives, before a follower's
// session can have been granted the lock in any useful sense (the loops stop
// at their next step; writes in flight finish, and the store's conditional
// transitions make a write that lands late harmless). A connection that goes
// silent (a network partition) fails the next ping within Check plus Check;
// the server keeps the session, and so the lock, until its TCP keepalive
// gives up on the client, which is far longer unless tcp_keepalives_* or
// client_connection_check_interval are set below a few seconds (do not).
type Postgres struct {
	cfg PostgresConfig
	log *slog.Logger

	leading atomic.Bool
	mu      sync.Mutex
	holder  string
}

// NewPostgres returns a Postgres elector.
func NewPostgres(cfg PostgresConfig) (*Postgres, error) {
	if cfg.Conn == nil {
		return nil, errors.New("leader: no PostgreSQL connection configuration")
	}
	if cfg.Key == 0 {
		cfg.Key = DefaultKey
	}
	if cfg.Retry <= 0 {
		cfg.Retry = DefaultRetry
	}
	if cfg.Check <= 0 {
		cfg.Check = DefaultCheck
	}
	if cfg.Identity == "" {
		host, _ := os.Hostname()
		cfg.Identity = fmt.Sprintf("mse-backend leader election, %s pid %d", host, os.Getpid())
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := cfg.Conn.Copy()
	if c.RuntimeParams == nil {
		c.RuntimeParams = map[string]string{}
	}
	c.RuntimeParams["application_name"] = cfg.Identity
	c.RuntimeParams["lock_timeout"] = strconv.FormatInt(cfg.Retry.Milliseconds(), 10)
	// The lock is held for the session's life: no statement or idle
	// timeout of the role's may end it.
	c.RuntimeParams["statement_timeout"] = "0"
	c.RuntimeParams["idle_in_transaction_session_timeout"] = "0"
	cfg.Conn = c
	return &Postgres{cfg: cfg, log: cfg.Logger}, nil
}

// Leading reports whether this replica leads now.
func (p *Postgres) Leading() bool { return p.leading.Load() }

// Holder describes the session that held the lock when this replica last
// failed to get it ("" if unknown): its pid and application_name.
func (p *Postgres) Holder() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.holder
}

// Run implements Elector.
func (p *Postgres) Run(ctx context.Context, lead func(ctx context.Context)) error {
	down := false
	for ctx.Err() == nil {
		conn, err := pgx.ConnectConfig(ctx, p.cfg.Conn)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if !down {
				p.log.Warn("leader election: cannot reach PostgreSQL; this replica follows until it can (retrying)", "every", p.cfg.Retry, "err", err)
				down = true
			}
			sleep(ctx, p.cfg.Retry)
			continue
		}
		down = false
		// PostgreSQL 14 and later: an idle session may not be ended either
		// (older servers refuse the setting, and have no such timeout).
		_, _ = conn.Exec(ctx, "SET idle_session_timeout = 0")
		p.campaign(ctx, conn, lead)
		closeConn(conn)
	}
	return nil
}

// campaign waits for the lock on conn, then leads until conn breaks or ctx
// ends. It returns when conn is no longer usable for the election.
func (p *Postgres) campaign(ctx context.Context, conn *pgx.Conn, lead func(ctx context.Context)) {
	following := false
	for ctx.Err() == nil {
		_, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", p.cfg.Key)
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "55P03" { // lock_not_available: lock_timeout passed
			if !following {
				h := p.lookupHolder(ctx, conn)
				p.mu.Lock()
				p.holder = h
				p.mu.Unlock()
				p.log.Info("leader election: another replica leads; this one follows (API and router only)", "leader", h)
				following = true
			}
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				p.log.Warn("leader election: the connection to PostgreSQL failed; reconnecting", "err", err)
			}
			return
		}
		p.hold(ctx, conn, lead)
		return
	}
}

// lookupHolder names the session that holds the lock, for the logs.
func (p *Postgres) lookupHolder(ctx context.Context, conn *pgx.Conn) string {
	var pid int
	var app string
	err := conn.QueryRow(ctx, `SELECT l.pid, COALESCE(a.application_name, '')
		FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
		  AND l.classid = ($1::bigint >> 32)::oid AND l.objid = ($1::bigint & 4294967295)::oid
		  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		LIMIT 1`, p.cfg.Key).Scan(&pid, &app)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("server session pid %d, application_name %q", pid, app)
}

// hold runs lead while conn holds the lock.
func (p *Postgres) hold(ctx context.Context, conn *pgx.Conn, lead func(ctx context.Context)) {
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	p.leading.Store(true)
	p.mu.Lock()
	p.holder = p.cfg.Identity
	p.mu.Unlock()
	p.log.Info("leader election: this replica leads (it runs the reconcile loop and the sweeps)")
	go func() {
		defer close(done)
		lead(lctx)
	}()
	why := p.watch(lctx, conn, done)
	cancel()
	<-done
	p.leading.Store(false)
	if ctx.Err() != nil {
		// Shutdown: release so that a follower takes over at once (closing
		// the connection would too; unlocking does not wait for the
		// server to notice the close).
		uctx, ucancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer ucancel()
		if _, err := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", p.cfg.Key); err != nil {
			p.log.Warn("leader election: releasing the lock failed; closing the connection releases it", "err", err)
		}
		p.log.Info("leader election: leadership released")
		return
	}
	p.log.Error("leader election: this replica lost leadership; its loops are stopped and it campaigns again", "why", why)
}

// watch returns why leadership ended: conn failed, lead returned, or ctx
// ended ("").
func (p *Postgres) watch(ctx context.Context, conn *pgx.Conn, done <-chan struct{}) string {
	for {
		select {
		case <-done:
			return "the loops returned"
		default:
		}
		wctx, wcancel := context.WithTimeout(ctx, p.cfg.Check)
		err := conn.PgConn().WaitForNotification(wctx)
		timedOut := wctx.Err() != nil
		wcancel()
		if ctx.Err() != nil {
			return ""
		}
		if err == nil {
			continue // a notification: nothing for us
		}
		if !timedOut || conn.IsClosed() {
			return "the connection to PostgreSQL broke: " + err.Error()
		}
		pctx, pcancel := context.WithTimeout(ctx, p.cfg.Check)
		err = conn.Ping(pctx)
		pcancel()
		if ctx.Err() != nil {
			return ""
		}
		if err != nil {
			return "the connection to PostgreSQL does not answer: " + err.Error()
		}
	}
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = c.Close(ctx)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
