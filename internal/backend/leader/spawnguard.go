package leader

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/jackc/pgx/v5"
)

// DefaultSpawnKey is the advisory lock of SpawnGuard ("mse-spwn"), beside
// the election's DefaultKey.
const DefaultSpawnKey int64 = 0x6d73652d7370776e

// SpawnGuard orders the spawns of every replica against a new leader's
// adoption of the nodes, through a PostgreSQL advisory lock: a spawn holds
// its shared side (pg_advisory_lock_shared) from before it creates the node
// until its handle is recorded; the adoption holds its exclusive side while
// it reads the active apps and has the runner end the nodes that none of
// them claims.
//
// Without it, a replica that becomes leader while another replica (or
// itself, for a request its API is serving) has created a node but not yet
// recorded it would end that node as an orphan, and the app would then be
// lost. With it, the adoption waits for the spawns in flight (each is bounded
// by the service's SpawnTimeout), and spawns that begin meanwhile wait for
// the adoption (a few milliseconds; PostgreSQL queues them behind the waiting
// exclusive request). A replica that dies mid-spawn holds nothing: its
// session ends with it, and the node it left is an orphan indeed.
//
// Each hold is a session of its own; one idle connection is kept for the
// next hold.
type SpawnGuard struct {
	cfg *pgx.ConnConfig
	key int64

	mu   sync.Mutex
	idle *pgx.Conn
}

// NewSpawnGuard returns a guard on the database of conn (postgres.ConnConfig
// of the store's URL; a direct or session-mode pooled connection, as for
// the election), with lock key (0: DefaultSpawnKey).
func NewSpawnGuard(conn *pgx.ConnConfig, key int64) (*SpawnGuard, error) {
	if conn == nil {
		return nil, errors.New("leader: no PostgreSQL connection configuration for the spawn guard")
	}
	if key == 0 {
		key = DefaultSpawnKey
	}
	c := conn.Copy()
	if c.RuntimeParams == nil {
		c.RuntimeParams = map[string]string{}
	}
	host, _ := os.Hostname()
	c.RuntimeParams["application_name"] = fmt.Sprintf("mse-backend spawn guard, %s pid %d", host, os.Getpid())
	// Waits are bounded by the caller's context, not by the role's settings.
	c.RuntimeParams["lock_timeout"] = "0"
	c.RuntimeParams["statement_timeout"] = "0"
	return &SpawnGuard{cfg: c, key: key}, nil
}

// Spawning holds the shared side until release is called: several spawns,
// on any replicas, hold it at once; it waits while an adoption holds (or
// waits for) the exclusive side.
func (g *SpawnGuard) Spawning(ctx context.Context) (release func(), err error) {
	return g.hold(ctx, "pg_advisory_lock_shared", "pg_advisory_unlock_shared")
}

// Adopting holds the exclusive side until release is called: it waits for
// every spawn in flight to finish, on any replica.
func (g *SpawnGuard) Adopting(ctx context.Context) (release func(), err error) {
	return g.hold(ctx, "pg_advisory_lock", "pg_advisory_unlock")
}

func (g *SpawnGuard) hold(ctx context.Context, lock, unlock string) (func(), error) {
	c, reused, err := g.conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("leader: spawn guard: connect to PostgreSQL: %w", err)
	}
	_, err = c.Exec(ctx, "SELECT "+lock+"($1)", g.key)
	if err != nil && reused && ctx.Err() == nil {
		// The kept connection may have been ended meanwhile (a server
		// restart, an idle timeout): once more on a new one.
		closeConn(c)
		if c, err = pgx.ConnectConfig(ctx, g.cfg); err != nil {
			return nil, fmt.Errorf("leader: spawn guard: connect to PostgreSQL: %w", err)
		}
		_, err = c.Exec(ctx, "SELECT "+lock+"($1)", g.key)
	}
	if err != nil {
		closeConn(c)
		return nil, fmt.Errorf("leader: spawn guard: %s: %w", lock, err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			// A lock that cannot be released goes with its session.
			uctx, cancel := context.WithTimeout(context.Background(), DefaultRetry)
			defer cancel()
			var ok bool
			if err := c.QueryRow(uctx, "SELECT "+unlock+"($1)", g.key).Scan(&ok); err != nil || !ok {
				closeConn(c)
				return
			}
			g.put(c)
		})
	}, nil
}

// conn is the idle connection (reused), or a new one.
func (g *SpawnGuard) conn(ctx context.Context) (c *pgx.Conn, reused bool, err error) {
	g.mu.Lock()
	c = g.idle
	g.idle = nil
	g.mu.Unlock()
	if c != nil && !c.IsClosed() {
		return c, true, nil
	}
	c, err = pgx.ConnectConfig(ctx, g.cfg)
	return c, false, err
}

func (g *SpawnGuard) put(c *pgx.Conn) {
	g.mu.Lock()
	old := g.idle
	g.idle = c
	g.mu.Unlock()
	if old != nil {
		closeConn(old)
	}
}

// Close closes the idle connection.
func (g *SpawnGuard) Close() {
	g.mu.Lock()
	c := g.idle
	g.idle = nil
	g.mu.Unlock()
	if c != nil {
		closeConn(c)
	}
}
