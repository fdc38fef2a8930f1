package router

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/ratls"
)

// ALPNACMETLS is the ALPN protocol of ACME's TLS-ALPN-01 challenge (RFC 8737).
const ALPNACMETLS = "acme-tls/1"

// Operator makes the router terminate TLS for apps in TLSModeOperator (MSE's --untrusted-ssl): the
// client's TLS session ends at the router, under the operator's certificate, and its HTTP requests are
// proxied to the node over a TLS connection that the router verifies as that node's RA-TLS certificate. The
// operator can read all of that traffic; that is what the app's owner chose with this mode.
//
// Connections that offer ALPN nodeapi.ALPNRATLS are never terminated (Router.handle passes them through).
type Operator struct {
	// GetCertificate returns the operator's certificate for a client's ClientHello: a certificate file
	// (e.g. a wildcard for the base domain), or an autocert.Manager's GetCertificate. Required.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// ACME: GetCertificate comes from ACME and answers TLS-ALPN-01 challenges itself, so the router offers
	// ALPN "acme-tls/1" and closes such a connection once its handshake is done.
	ACME bool
	// VerifyNode checks the certificate a node presents against the route (RATLSVerifier builds one
	// on ratls.Verify). Required. A node that fails gets no request; its client gets 502.
	VerifyNode func(ctx context.Context, cert *x509.Certificate, rt Route) error
	// VerifyTTL is how long a verified node certificate is trusted before it is verified again (default
	// DefaultVerifyTTL; never past the certificate's NotAfter).
	VerifyTTL time.Duration
	// Now is the clock of the verification cache (default time.Now).
	Now func() time.Time
}

// Defaults of the operator mode.
const (
	DefaultVerifyTTL = 10 * time.Minute
	// maxVerified and maxProxies bound the verification cache and the per-node proxies.
	maxVerified = 4096
	maxProxies  = 1024
	// proxyIdle: a node proxy unused this long is dropped (its idle connections closed).
	proxyIdle = 10 * time.Minute
)

// RATLSVerifier returns an Operator.VerifyNode that runs ratls.Verify with verifiers and policy and
// expects the route's app id, domain, code, config and runtime digests.
func RATLSVerifier(verifiers ratls.VerifierFor, policy *attest.Policy, now func() time.Time) func(context.Context, *x509.Certificate, Route) error {
	if now == nil {
		now = time.Now
	}
	return func(ctx context.Context, cert *x509.Certificate, rt Route) error {
		if rt.AppID == "" || rt.Domain == "" {
			return errors.New("the route names no app id or domain to expect")
		}
		_, err := ratls.Verify(ctx, cert, ratls.Options{Verifiers: verifiers, Policy: policy, Now: now(), Expect: ratls.Expect{
			Domain: rt.Domain, AppID: rt.AppID, CodeDigest: rt.CodeDigest, ConfigDigest: rt.ConfigDigest, RuntimeDigest: rt.RuntimeDigest,
		}})
		return err
	}
}

// terminator is the Router's state for Operator: one HTTP server for every terminated connection, and a
// reverse proxy per node.
type terminator struct {
	r   *Router
	op  *Operator
	cfg *tls.Config
	srv *http.Server
	ln  *connListener

	conns sync.Map // *tls.Conn -> *termConn

	mu       sync.Mutex
	proxies  map[string]*nodeProxy
	verified map[string]time.Time // fingerprint|route key -> trusted until
}

// termConn is a terminated client connection: its route, and the router's bookkeeping to end it.
type termConn struct {
	route  Route
	finish func()
	once   sync.Once
}

type nodeProxy struct {
	rp   *httputil.ReverseProxy
	tr   *http.Transport
	used time.Time
}

type termKey struct{}

func newTerminator(r *Router, op *Operator) *terminator {
	t := &terminator{r: r, op: op, ln: newConnListener(), proxies: map[string]*nodeProxy{}, verified: map[string]time.Time{}}
	protos := []string{"h2", "http/1.1"}
	if op.ACME {
		protos = append(protos, ALPNACMETLS)
	}
	t.cfg = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: op.GetCertificate, NextProtos: protos}
	idle := r.IdleTimeout
	if idle <= 0 {
		idle = 2 * time.Minute
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	t.srv = &http.Server{
		Handler:           t,
		Protocols:         &protocols,
		ReadHeaderTimeout: DefaultHandshakeTimeout,
		IdleTimeout:       idle,
		ErrorLog:          slog.NewLogLogger(r.logger().Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if v, ok := t.conns.Load(c); ok {
				return context.WithValue(ctx, termKey{}, v)
			}
			return ctx
		},
		// A closed connection ends through replayConn.Close (a hijacked one too, when the handler
		// closes it); here it only leaves the map.
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				t.conns.Delete(c)
			}
		},
	}
	go t.srv.Serve(t.ln)
	return t
}

func (t *terminator) now() time.Time {
	if t.op.Now != nil {
		return t.op.Now()
	}
	return time.Now()
}

// terminate runs the TLS handshake of a client of an operator-mode app (the ClientHello already read is
// replayed first) and hands the connection to the HTTP server. It reports whether the connection now
// belongs to the server (false: call finish yourself).
func (r *Router) terminate(c *conn, hello []byte, rt Route, finish func()) bool {
	t := r.term
	log := r.logger()
	remote := c.client.RemoteAddr().String()
	r.Metrics.addBytes(true, len(hello))
	rc := &replayConn{Conn: c.client, pre: bytes.NewReader(hello), m: r.Metrics}
	tc := tls.Server(rc, t.cfg)
	ht := r.HandshakeTimeout
	if ht <= 0 {
		ht = DefaultHandshakeTimeout
	}
	tc.SetDeadline(time.Now().Add(ht))
	if err := tc.HandshakeContext(r.ctx); err != nil {
		// The client's own failure (it may not trust the operator's certificate): Debug, as scanners.
		log.Debug("router: TLS handshake with a client of an operator-mode app failed", "sni", rt.Domain, "remote", remote, "error", err)
		return false
	}
	tc.SetDeadline(time.Time{})
	if tc.ConnectionState().NegotiatedProtocol == ALPNACMETLS {
		// A CA validating TLS-ALPN-01: the handshake itself was the answer.
		log.Debug("router: answered an ACME tls-alpn-01 challenge", "sni", rt.Domain, "remote", remote)
		return false
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	c.routed = true
	c.mu.Unlock()
	log.Debug("router: terminated TLS for an operator-mode app", "sni", rt.Domain, "remote", remote, "app_id", rt.AppID)
	tcn := &termConn{route: rt, finish: finish}
	t.conns.Store(tc, tcn)
	rc.mu.Lock()
	rc.end = tcn
	rc.mu.Unlock()
	if !t.ln.push(tc) {
		t.conns.Delete(tc)
		rc.mu.Lock()
		rc.end = nil
		rc.mu.Unlock()
		return false
	}
	return true
}

// ServeHTTP proxies a request of a terminated connection to its node.
func (t *terminator) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	tc, _ := req.Context().Value(termKey{}).(*termConn)
	if tc == nil {
		http.Error(w, "internal error: the router lost this connection's route", http.StatusInternalServerError)
		return
	}
	// With a certificate for several names (a wildcard), an HTTP/2 client may send requests for another
	// app on this connection: each connection serves the app of its SNI only (RFC 9110 §15.5.20).
	if host := requestHost(req.Host); host != tc.route.Domain {
		http.Error(w, "421 misdirected request: this connection serves "+tc.route.Domain+"; open a new connection for "+host, http.StatusMisdirectedRequest)
		return
	}
	t.proxy(tc.route).ServeHTTP(w, req)
}

// requestHost is the Host of a request, lowercased, without port or trailing dot.
func requestHost(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

func routeKey(rt Route) string {
	return rt.AppID + "|" + rt.Addr + "|" + rt.Domain + "|" + hex.EncodeToString(rt.CodeDigest) + "|" +
		hex.EncodeToString(rt.ConfigDigest) + "|" + hex.EncodeToString(rt.RuntimeDigest)
}

// nodeVerifyError is a node that failed verification.
type nodeVerifyError struct{ err error }

func (e *nodeVerifyError) Error() string { return "the node failed verification: " + e.err.Error() }
func (e *nodeVerifyError) Unwrap() error { return e.err }

// proxy returns the reverse proxy of a route's node (one per node and identity, so that connections to
// a node are reused and never shared with another app).
func (t *terminator) proxy(rt Route) *httputil.ReverseProxy {
	key := routeKey(rt)
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.proxies[key]; p != nil {
		p.used = now
		return p.rp
	}
	for k, p := range t.proxies {
		if now.Sub(p.used) > proxyIdle || len(t.proxies) >= maxProxies {
			p.tr.CloseIdleConnections()
			delete(t.proxies, k)
		}
	}
	tr := &http.Transport{
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return t.dialNode(ctx, rt)
		},
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // apps may stream
	}
	log := t.r.logger()
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "https", Host: rt.Domain})
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded() // -For (the client's address), -Host, -Proto https; the client's own are dropped
		},
		Transport: tr,
		ErrorLog:  slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			var ve *nodeVerifyError
			switch {
			case errors.As(err, &ve):
				log.Warn("router: the node of an operator-mode app failed verification; it gets no traffic",
					"sni", rt.Domain, "app_id", rt.AppID, "backend", rt.Addr, "error", ve.err)
				http.Error(w, "502 bad gateway: the node serving this app failed the router's verification of its enclave; no request was sent to it",
					http.StatusBadGateway)
			case errors.Is(err, context.Canceled):
				// The client went away.
			default:
				log.Warn("router: proxying to the node of an operator-mode app failed", "sni", rt.Domain, "app_id", rt.AppID, "backend", rt.Addr, "error", err)
				http.Error(w, "502 bad gateway: the app's node did not answer", http.StatusBadGateway)
			}
		},
	}
	t.proxies[key] = &nodeProxy{rp: rp, tr: tr, used: now}
	return rp
}

// dialNode opens a TLS connection to a route's node and verifies the certificate it presents (cached per
// certificate fingerprint and route).
func (t *terminator) dialNode(ctx context.Context, rt Route) (net.Conn, error) {
	dt := t.r.DialTimeout
	if dt <= 0 {
		dt = DefaultDialTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, dt)
	defer cancel()
	raw, err := t.r.dialNode(ctx, rt.Addr)
	if err != nil {
		return nil, err
	}
	var verr error
	tc := tls.Client(raw, &tls.Config{
		ServerName: rt.Domain,
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		// The node's certificate is self-signed RA-TLS: VerifyConnection checks its evidence instead
		// of a chain (it runs whatever InsecureSkipVerify says).
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				verr = errors.New("the node presented no certificate")
				return verr
			}
			verr = t.verify(ctx, cs.PeerCertificates[0], rt)
			return verr
		},
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		if verr != nil {
			return nil, &nodeVerifyError{err: verr}
		}
		return nil, fmt.Errorf("TLS handshake with the node: %w", err)
	}
	return tc, nil
}

func (t *terminator) verify(ctx context.Context, cert *x509.Certificate, rt Route) error {
	key := ratls.Fingerprint(cert) + "|" + routeKey(rt)
	now := t.now()
	t.mu.Lock()
	until, ok := t.verified[key]
	t.mu.Unlock()
	if ok && now.Before(until) {
		return nil
	}
	if err := t.op.VerifyNode(ctx, cert, rt); err != nil {
		return err
	}
	ttl := t.op.VerifyTTL
	if ttl <= 0 {
		ttl = DefaultVerifyTTL
	}
	until = now.Add(ttl)
	if cert.NotAfter.Before(until) {
		until = cert.NotAfter
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.verified) >= maxVerified {
		for k, u := range t.verified {
			if !now.Before(u) {
				delete(t.verified, k)
			}
		}
		if len(t.verified) >= maxVerified {
			clear(t.verified)
		}
	}
	t.verified[key] = until
	return nil
}

// shutdown ends the HTTP server gracefully (idle connections closed at once, requests in flight
// finished) until ctx ends.
func (t *terminator) shutdown(ctx context.Context) error { return t.srv.Shutdown(ctx) }

func (t *terminator) close() {
	t.srv.Close()
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, p := range t.proxies {
		p.tr.CloseIdleConnections()
		delete(t.proxies, k)
	}
}

// replayConn is a client connection whose first reads return the ClientHello the router already read;
// it counts bytes as the router's metrics do.
type replayConn struct {
	net.Conn
	pre *bytes.Reader
	m   *Metrics

	mu  sync.Mutex
	end *termConn // once the HTTP server owns the connection: Close ends it for the router
}

func (c *replayConn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	end := c.end
	c.mu.Unlock()
	if end != nil {
		end.once.Do(end.finish)
	}
	return err
}

func (c *replayConn) Read(b []byte) (int, error) {
	if c.pre.Len() > 0 {
		return c.pre.Read(b)
	}
	n, err := c.Conn.Read(b)
	c.m.addBytes(true, n)
	return n, err
}

func (c *replayConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.m.addBytes(false, n)
	return n, err
}

// connListener is a net.Listener whose connections are pushed by the router.
type connListener struct {
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newConnListener() *connListener {
	return &connListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4zero} }

var _ io.Reader = (*replayConn)(nil)
