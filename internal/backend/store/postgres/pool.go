package postgres

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pool is a small connection pool over *pgx.Conn. (pgxpool would need
// github.com/jackc/puddle/v2, which the module does not require; this is all
// the store needs: a bounded set of connections, reused LIFO, a connection
// that is closed, busy or inside a transaction when handed back is dropped.)
type pool struct {
	cfg *pgx.ConnConfig
	sem chan struct{} // one token per open-or-opening connection in use

	mu     sync.Mutex
	idle   []*pgx.Conn
	closed bool
}

var errPoolClosed = errors.New("postgres store: closed")

func newPool(cfg *pgx.ConnConfig, max int) *pool {
	return &pool{cfg: cfg, sem: make(chan struct{}, max)}
}

func (p *pool) acquire(ctx context.Context) (*pgx.Conn, error) {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			<-p.sem
			return nil, errPoolClosed
		}
		if n := len(p.idle); n > 0 {
			c := p.idle[n-1]
			p.idle = p.idle[:n-1]
			p.mu.Unlock()
			if c.IsClosed() {
				continue
			}
			return c, nil
		}
		p.mu.Unlock()
		break
	}
	c, err := pgx.ConnectConfig(ctx, p.cfg)
	if err != nil {
		<-p.sem
		return nil, err
	}
	return c, nil
}

// release hands c back; a connection that is not clean and idle is closed.
func (p *pool) release(c *pgx.Conn) {
	defer func() { <-p.sem }()
	pc := c.PgConn()
	if c.IsClosed() || pc.IsBusy() || pc.TxStatus() != 'I' {
		closeConn(c)
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		closeConn(c)
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c.Close(ctx)
}

// close closes the idle connections; connections in use are closed when
// released.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, c := range idle {
		closeConn(c)
	}
}

// with runs f on a pooled connection. A failure that happened before
// anything reached the server (a connection dropped while idle) is retried
// once on a fresh connection.
func (p *pool) with(ctx context.Context, f func(*pgx.Conn) error) error {
	for attempt := 0; ; attempt++ {
		c, err := p.acquire(ctx)
		if err != nil {
			return err
		}
		err = f(c)
		p.release(c)
		if err != nil && attempt == 0 && ctx.Err() == nil && pgconn.SafeToRetry(err) {
			continue
		}
		return err
	}
}
