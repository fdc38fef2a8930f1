package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds on what an unauthenticated peer can make the node hold. App ids and
// owner domains are public, so anyone who reaches the router can talk to a
// waiting node: nothing here may let one such peer delay the owner's request
// or end the node (docs/protocol.md, "Who can spend what").
const (
	// defaultMaxConns caps the node's concurrent connections (Config.MaxConns).
	defaultMaxConns = 128
	// maxStreams caps concurrent HTTP/2 requests on one connection.
	maxStreams = 4
	// defaultRequestTimeout bounds reading a request's headers, and a
	// stage-2 request's body (Config.RequestTimeout): a request that is
	// slower is cut, whatever it holds.
	defaultRequestTimeout = 10 * time.Second
	// writeTimeout bounds writing one of the node's own answers.
	writeTimeout = 10 * time.Second
	// idleTimeout closes keep-alive connections that send nothing.
	idleTimeout = 60 * time.Second
	// freeBody is what every request body may buffer; bytes beyond it draw
	// on the node's shared bodyBudget, so that memory stays bounded by about
	// MaxConns*maxStreams*freeBody + bodyBudget.
	freeBody   = 64 << 10
	bodyBudget = 16 << 20
)

// errBusy: the shared body budget is spent by other requests.
var errBusy = errors.New("the node is busy with other large requests")

// budget is a pool of bytes that request bodies draw on.
type budget struct{ left atomic.Int64 }

func newBudget(n int64) *budget {
	b := &budget{}
	b.left.Store(n)
	return b
}

func (b *budget) take(n int64) bool {
	if b.left.Add(-n) < 0 {
		b.left.Add(n)
		return false
	}
	return true
}

func (b *budget) give(n int64) { b.left.Add(n) }

// readBody reads at most max bytes of r. The first freeBody bytes are free;
// the rest is reserved from b in freeBody chunks and given back when done is
// called. It returns errTooLarge past max, errBusy when b is spent.
func readBody(r io.Reader, max int64, b *budget) (body []byte, done func(), err error) {
	var reserved int64
	done = func() { b.give(reserved) }
	var buf bytes.Buffer
	chunk := make([]byte, 16<<10)
	for {
		n, err := r.Read(chunk)
		if n > 0 {
			if int64(buf.Len()+n) > max {
				return nil, done, errTooLarge
			}
			for int64(buf.Len()+n) > freeBody+reserved {
				if !b.take(freeBody) {
					return nil, done, errBusy
				}
				reserved += freeBody
			}
			buf.Write(chunk[:n])
		}
		if err == io.EOF {
			return buf.Bytes(), done, nil
		}
		if err != nil {
			return nil, done, err
		}
	}
}

var errTooLarge = errors.New("request body too large")

// connLimit caps the connections a listener hands out. When it is full, a
// new connection evicts the one that has read nothing for the longest time,
// rather than waiting: waiting would let a peer that holds every slot keep
// the owner out, while an evicted idle keep-alive connection costs the owner
// at most a new dial (its client verifies the certificate again).
type connLimit struct {
	net.Listener
	max int

	mu    sync.Mutex
	conns map[*limitedConn]struct{}
}

func newConnLimit(ln net.Listener, max int) *connLimit {
	return &connLimit{Listener: ln, max: max, conns: map[*limitedConn]struct{}{}}
}

func (l *connLimit) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	lc := &limitedConn{Conn: c, l: l}
	lc.lastRead.Store(time.Now().UnixNano())
	var evict *limitedConn
	l.mu.Lock()
	if len(l.conns) >= l.max {
		// Never a connection whose request holds the code key and is being
		// checked: its read is long past, but its answer is the owner's.
		// Only if every connection were busy would the oldest go.
		var oldest *limitedConn
		for o := range l.conns {
			if oldest == nil || o.lastRead.Load() < oldest.lastRead.Load() {
				oldest = o
			}
			if o.busy.Load() == 0 && (evict == nil || o.lastRead.Load() < evict.lastRead.Load()) {
				evict = o
			}
		}
		if evict == nil {
			evict = oldest
		}
		delete(l.conns, evict)
	}
	l.conns[lc] = struct{}{}
	l.mu.Unlock()
	if evict != nil {
		_ = evict.Conn.Close()
	}
	return lc, nil
}

// open returns the number of connections held.
func (l *connLimit) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

type limitedConn struct {
	net.Conn
	l        *connLimit
	lastRead atomic.Int64 // UnixNano of the last read that returned data
	busy     atomic.Int32 // requests of a key holder being checked (see connOf)
	once     sync.Once
}

// connCtxKey holds a request's connection in its context (http.Server.ConnContext).
type connCtxKey struct{}

// connOf returns the limitedConn a request came on, if any.
func connOf(ctx context.Context) *limitedConn {
	c, _ := ctx.Value(connCtxKey{}).(net.Conn)
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	lc, _ := c.(*limitedConn)
	return lc
}

func (c *limitedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.lastRead.Store(time.Now().UnixNano())
	}
	return n, err
}

func (c *limitedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// logLimiter lets one line a second through, and counts the rest, so that
// a flood of refused requests cannot flood the node's log.
type logLimiter struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// allow reports whether to log now, and how many lines were suppressed since
// the last one logged.
func (l *logLimiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.last) < time.Second {
		l.suppressed++
		return false, 0
	}
	s := l.suppressed
	l.last, l.suppressed = now, 0
	return true, s
}
