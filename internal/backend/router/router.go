// Package router is the backend's SNI router: it reads the ClientHello of each incoming TLS connection,
// looks up the node that serves its server name, and relays the connection to that node byte for byte.
// For apps in every TLS mode but one it never terminates TLS (it holds no keys for them), so the operator
// cannot interpose on the session between a client and an enclave. Nothing but TLS with a known SNI is
// routed.
//
// The exception is tls_mode operator (MSE's --untrusted-ssl, docs/router.md "Operator mode"): there the
// router terminates the connections of ordinary clients with the operator's certificate and proxies their
// HTTP requests to the node over TLS that it verifies as the node's RA-TLS (Operator). Connections that
// offer ALPN nodeapi.ALPNRATLS still pass through untouched to the enclave's own TLS.
package router

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mse-in-go/mse/internal/nodeapi"
)

// ErrUnknownServerName is what Lookup returns (possibly wrapped) for a name that no app serves. It is
// counted and logged as "unknown_name", not as a lookup failure.
var ErrUnknownServerName = errors.New("router: unknown server name")

// ErrRouterClosed is returned by Serve after Shutdown or Close.
var ErrRouterClosed = errors.New("router: closed")

// Defaults for the zero values of the Router's fields.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultDialTimeout      = 10 * time.Second
)

// TLSModeOperator is the Route.TLSMode of apps whose TLS the router terminates (spec.TLSOperator).
const TLSModeOperator = "operator"

// Route is where a server name goes, and what the router must know of the app to serve it.
type Route struct {
	// Addr is the node's "host:port", or "unix:PATH" for a sandboxed node's socket.
	Addr string
	// TLSMode is the app's TLS mode; TLSModeOperator makes the router terminate TLS (see Operator).
	TLSMode string
	// AppID, Domain, CodeDigest, ConfigDigest and RuntimeDigest are what the node's RA-TLS certificate must
	// attest (operator mode; empty digests are not checked). Domain is the name looked up, lowercase and
	// without a trailing dot.
	AppID                                   string
	Domain                                  string
	CodeDigest, ConfigDigest, RuntimeDigest []byte
}

// Router relays TLS connections to backends chosen by the ClientHello's server name. Set the fields before
// the first call to Serve and do not change them afterwards.
type Router struct {
	// Lookup maps a validated, lowercased server name to its Route. It returns ErrUnknownServerName
	// (possibly wrapped) when no backend serves the name. Required.
	Lookup func(ctx context.Context, serverName string) (Route, error)
	// Dial connects to a backend; nil means a net.Dialer. network is "tcp",
	// or "unix" for a Lookup answer "unix:PATH".
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// HandshakeTimeout bounds the time to read the complete ClientHello; 0 means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// DialTimeout bounds Lookup and Dial together; 0 means DefaultDialTimeout.
	DialTimeout time.Duration
	// IdleTimeout closes a relayed connection when no byte has moved in either direction for this long,
	// or when a write to one side stays blocked this long; 0 means no idle timeout.
	IdleTimeout time.Duration
	// MaxConns bounds the connections open at once (reading a ClientHello or relaying); beyond it, new
	// connections are accepted and closed at once. 0 means no limit.
	MaxConns int
	// Logger receives one record per refused or failed connection (never payload bytes); nil means
	// slog.Default().
	Logger *slog.Logger
	// Metrics, from NewMetrics; nil records nothing.
	Metrics *Metrics
	// Operator terminates TLS for routes in TLSModeOperator; nil refuses them (lookup_error: the backend
	// accepts no such app without it).
	Operator *Operator

	mu        sync.Mutex
	ctx       context.Context // cancelled by Close and by Shutdown's deadline
	cancel    context.CancelFunc
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   bool
	wg        sync.WaitGroup // connection handlers
	nconns    int            // open connections, for MaxConns
	term      *terminator    // when Operator is set
}

// conn is one client connection and, once routed, its backend.
type conn struct {
	client  net.Conn
	mu      sync.Mutex
	backend net.Conn
	routed  bool // past the ClientHello: Shutdown lets it drain
	closed  bool
	parked  *parked // the relay, when its directions park (relayParked)
}

func (c *conn) setBackend(b net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.backend, c.routed = b, true
	return true
}

// close closes both sides. A relay with goroutines sees its reads fail; a parked relay is told (its
// directions may have no goroutine to see anything), and its finish runs in a new goroutine, since the
// caller may hold r.mu.
func (c *conn) close() {
	c.mu.Lock()
	c.closed = true
	c.client.Close()
	if c.backend != nil {
		c.backend.Close()
	}
	p := c.parked
	c.mu.Unlock()
	if p != nil {
		p.abort(true)
	}
}

func (r *Router) init() {
	if r.listeners == nil {
		r.listeners = make(map[net.Listener]struct{})
		r.conns = make(map[*conn]struct{})
		r.ctx, r.cancel = context.WithCancel(context.Background())
		if r.Operator != nil {
			r.term = newTerminator(r, r.Operator)
		}
	}
}

func (r *Router) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}

// Serve accepts connections on ln and routes them until Shutdown or Close, then returns ErrRouterClosed;
// it returns any other Accept error at once. Serve may be called for several listeners. ln is closed when
// Serve returns.
func (r *Router) Serve(ln net.Listener) error {
	if r.Lookup == nil {
		ln.Close()
		return errors.New("router: Lookup is nil")
	}
	if r.Operator != nil && (r.Operator.GetCertificate == nil || r.Operator.VerifyNode == nil) {
		ln.Close()
		return errors.New("router: Operator needs GetCertificate and VerifyNode")
	}
	r.mu.Lock()
	r.init()
	if r.closing {
		r.mu.Unlock()
		ln.Close()
		return ErrRouterClosed
	}
	r.listeners[ln] = struct{}{}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.listeners, ln)
		r.mu.Unlock()
		ln.Close()
	}()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			r.mu.Lock()
			closing := r.closing
			r.mu.Unlock()
			if closing {
				return ErrRouterClosed
			}
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				// EMFILE and the like: wait and retry, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				r.logger().Warn("router: accept failed, retrying", "error", err, "delay", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		r.Metrics.incAccepted()
		r.mu.Lock()
		switch {
		case r.closing:
			r.mu.Unlock()
			r.refuse(c, ReasonShutdown)
			continue
		case r.MaxConns > 0 && r.nconns >= r.MaxConns:
			r.mu.Unlock()
			r.refuse(c, ReasonMaxConns)
			continue
		}
		cc := &conn{client: c}
		r.conns[cc] = struct{}{}
		r.nconns++
		r.wg.Add(1)
		r.mu.Unlock()
		go r.handle(cc)
	}
}

// refuse closes a connection that never got a handler.
func (r *Router) refuse(c net.Conn, reason string) {
	r.Metrics.incRefused(reason)
	r.Metrics.decActive()
	r.logger().Debug("router: connection refused", "reason", reason, "remote", c.RemoteAddr().String())
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0) // do not keep sockets of refused connections in TIME_WAIT
	}
	c.Close()
}

// Shutdown stops accepting, closes connections still reading their ClientHello, and waits for relayed
// connections to end by themselves. When ctx is done first, it closes them and returns ctx.Err().
func (r *Router) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.init()
	r.closing = true
	for ln := range r.listeners {
		ln.Close()
	}
	for c := range r.conns {
		c.mu.Lock()
		if !c.routed {
			c.closed = true
			c.client.Close()
		}
		c.mu.Unlock()
	}
	term := r.term
	r.mu.Unlock()
	if term != nil {
		// Idle terminated connections close now, busy ones after their request.
		go term.shutdown(ctx)
	}

	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		r.cancel()
		return nil
	case <-ctx.Done():
		r.closeAll()
		<-done
		return ctx.Err()
	}
}

// Close stops accepting and closes every connection at once, then waits for their handlers to return.
func (r *Router) Close() error {
	r.mu.Lock()
	r.init()
	r.closing = true
	for ln := range r.listeners {
		ln.Close()
	}
	term := r.term
	r.mu.Unlock()
	if term != nil {
		term.close()
	}
	r.closeAll()
	r.wg.Wait()
	return nil
}

func (r *Router) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cancel()
	for c := range r.conns {
		c.close()
	}
}

// TLS alerts sent, in a plaintext record, for a ClientHello the router cannot route. Non-TLS input and
// timeouts get no bytes back.
const (
	alertDecodeError      = 50
	alertInternalError    = 80
	alertUnrecognizedName = 112
)

func writeAlert(c net.Conn, desc byte) {
	c.SetWriteDeadline(time.Now().Add(time.Second))
	// TLSPlaintext{type alert(21), legacy_record_version 0x0301, length 2}, Alert{fatal(2), desc}
	c.Write([]byte{21, 3, 1, 0, 2, 2, desc})
}

func (r *Router) handle(c *conn) {
	finish := func() {
		c.close()
		r.mu.Lock()
		delete(r.conns, c)
		r.nconns--
		r.mu.Unlock()
		r.Metrics.decActive()
		r.wg.Done()
	}
	relaying := false
	defer func() {
		if !relaying {
			finish()
		}
	}()
	log := r.logger()
	remote := c.client.RemoteAddr().String()

	ht := r.HandshakeTimeout
	if ht <= 0 {
		ht = DefaultHandshakeTimeout
	}
	c.client.SetReadDeadline(time.Now().Add(ht))
	hello, hi, err := ReadHello(c.client)
	name := hi.ServerName
	if err != nil {
		reason, alert := classifyHelloError(err)
		c.mu.Lock()
		if c.closed { // closed by Shutdown while reading
			reason, alert = ReasonShutdown, 0
		}
		c.mu.Unlock()
		if alert != 0 {
			writeAlert(c.client, alert)
		}
		r.Metrics.incRefused(reason)
		// The error names the parse failure only; the bytes read are never logged.
		log.Debug("router: no routable ClientHello", "reason", reason, "remote", remote, "error", err)
		return
	}
	c.client.SetReadDeadline(time.Time{})

	dt := r.DialTimeout
	if dt <= 0 {
		dt = DefaultDialTimeout
	}
	ctx, cancel := context.WithTimeout(r.ctx, dt)
	defer cancel()
	start := time.Now()
	route, err := r.Lookup(ctx, name)
	switch {
	case err == nil:
		r.Metrics.observeLookup("found", time.Since(start))
	case errors.Is(err, ErrUnknownServerName):
		r.Metrics.observeLookup("unknown", time.Since(start))
		r.Metrics.incRefused(ReasonUnknownName)
		// Debug, not Info: scanners try names all day; mse_router_connections_refused_total counts them.
		log.Debug("router: unknown server name", "sni", name, "remote", remote)
		writeAlert(c.client, alertUnrecognizedName)
		return
	default:
		r.Metrics.observeLookup("error", time.Since(start))
		r.Metrics.incRefused(ReasonLookupError)
		log.Warn("router: lookup failed", "sni", name, "remote", remote, "error", err)
		writeAlert(c.client, alertInternalError)
		return
	}

	if route.TLSMode == TLSModeOperator && !hi.Offers(nodeapi.ALPNRATLS) {
		// Stage 2 and `mse cloud verify` offer mse-ratls/1 and reach the enclave below; everyone else is
		// terminated here.
		if r.Operator == nil {
			r.Metrics.incRefused(ReasonLookupError)
			log.Warn("router: an operator-mode app, and no operator certificate is configured", "sni", name, "remote", remote)
			writeAlert(c.client, alertInternalError)
			return
		}
		cancel()
		r.Metrics.incRouted()
		relaying = r.terminate(c, hello, route, finish)
		return
	}
	addr := route.Addr
	backend, err := r.dialNode(ctx, addr)
	if err != nil {
		r.Metrics.incRefused(ReasonDialError)
		log.Warn("router: backend unreachable", "sni", name, "remote", remote, "backend", addr, "error", err)
		writeAlert(c.client, alertInternalError)
		return
	}
	if !c.setBackend(backend) { // closed by Shutdown or Close meanwhile
		backend.Close()
		r.Metrics.incRefused(ReasonShutdown)
		return
	}
	cancel()
	r.Metrics.incRouted()
	log.Debug("router: routed", "sni", name, "remote", remote, "backend", addr)

	relaying = r.relay(c, hello, finish)
}

// dialNode connects to a Route.Addr ("host:port" or "unix:PATH").
func (r *Router) dialNode(ctx context.Context, addr string) (net.Conn, error) {
	dial := r.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	network, daddr := "tcp", addr
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, daddr = "unix", p // a sandboxed node's socket
	}
	return dial(ctx, network, daddr)
}

func classifyHelloError(err error) (reason string, alert byte) {
	var ne net.Error
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return ReasonHandshakeTimeout, 0
	case errors.Is(err, ErrNotTLS):
		return ReasonNotTLS, 0
	case errors.Is(err, ErrNoServerName):
		return ReasonNoSNI, alertUnrecognizedName
	case errors.Is(err, ErrBadServerName):
		return ReasonBadSNI, alertUnrecognizedName
	case errors.Is(err, ErrMalformed):
		return ReasonMalformed, alertDecodeError
	default: // EOF, reset, or the connection closed by Shutdown
		return ReasonClientClosed, 0
	}
}

// relay writes the buffered ClientHello to the backend, then copies both ways until both directions have
// ended. EOF on one side is passed on as a half-close (CloseWrite) of the other; any error ends both.
//
// On Linux, with TCP or Unix sockets on both sides, a direction with nothing to read has no goroutine
// (relayParked, park_linux.go): an idle connection costs no stack. Otherwise the two directions run in two
// new goroutines, and the handler's goroutine, whose stack grew while it parsed the ClientHello and looked
// the name up, ends: an idle connection costs two small stacks. Either way the last direction to end calls
// finish. relay reports whether it started them (false: call finish yourself).
func (r *Router) relay(c *conn, hello []byte, finish func()) bool {
	client, backend := c.client, c.backend
	idle := r.IdleTimeout
	if idle > 0 {
		backend.SetWriteDeadline(time.Now().Add(idle))
	}
	n, err := backend.Write(hello)
	r.Metrics.addBytes(true, n)
	if err != nil {
		return false
	}
	if r.relayParked(c, idle, finish) {
		return true
	}

	last := new(atomic.Int64) // unix nanos of the last byte moved, for IdleTimeout
	last.Store(time.Now().UnixNano())
	left := new(atomic.Int32)
	left.Store(2)
	run := func(dst, src net.Conn, in bool) {
		// An error aborts both directions (closing unblocks the other).
		if err := r.copy(dst, src, in, idle, last); err != nil {
			client.Close()
			backend.Close()
		}
		if left.Add(-1) == 0 {
			finish()
		}
	}
	go run(backend, client, true)
	go run(client, backend, false)
	return true
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// buffersOut counts copy buffers taken from bufPool and not yet given back.
var buffersOut atomic.Int64

type closeWriter interface{ CloseWrite() error }

// copy moves bytes from src to dst until EOF on src, which it forwards as CloseWrite on dst (Close when dst
// cannot half-close). It returns nil on a clean EOF. Bytes are counted as they move. A plain read/write
// loop measured as fast as splice(2) through io.Copy on loopback, and it knows exactly when bytes moved.
//
// The copy buffer comes from a pool for one read and write at a time: while src has nothing to read
// (waitReadable), the connection holds no buffer, so that idle connections cost little memory and a
// buffer goes back to the pool, then to the heap, when traffic stops.
func (r *Router) copy(dst, src net.Conn, in bool, idle time.Duration, last *atomic.Int64) error {
	if idle > 0 {
		src.SetReadDeadline(time.Now().Add(idle))
	}
	for {
		var n int
		rerr := waitReadable(src)
		if rerr == nil {
			bp := bufPool.Get().(*[]byte)
			buffersOut.Add(1)
			var werr error
			n, rerr = src.Read(*bp)
			if n > 0 {
				if idle > 0 {
					last.Store(time.Now().UnixNano())
					dst.SetWriteDeadline(time.Now().Add(idle))
				}
				var w int
				w, werr = dst.Write((*bp)[:n])
				r.Metrics.addBytes(in, w)
			}
			bufPool.Put(bp)
			buffersOut.Add(-1)
			if werr != nil {
				return werr
			}
		}
		if rerr == nil {
			continue
		}
		if rerr == io.EOF {
			return halfClose(dst)
		}
		if idle > 0 && errors.Is(rerr, os.ErrDeadlineExceeded) {
			// Our read deadline fired: keep going while the other direction moved bytes recently.
			if next := time.Unix(0, last.Load()).Add(idle); time.Now().Before(next) {
				src.SetReadDeadline(next)
				continue
			}
		}
		return rerr
	}
}

func halfClose(dst net.Conn) error {
	if cw, ok := dst.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return dst.Close()
}
