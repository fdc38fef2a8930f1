package local

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mse-in-go/mse/internal/spec"
)

// Egress (docs/runtimes.md "Egress"). A sandboxed node has its own network
// namespace and no network: the router reaches it by a unix socket. A node
// in tls_mode acme must reach its ACME CA, and only that: the runner serves
// it an HTTP CONNECT proxy on run/egress.sock that relays to the host and
// port of the spec's ACME directory URL and refuses everything else (403,
// logged with the refused target). The TLS inside is the node's own, to the
// CA: the proxy relays bytes it cannot read.
//
// The proxy resolves the CA's name itself and dials the address it checked.
// Unless Config.EgressPrivate, it refuses addresses of the operator's own
// network (loopback, private, link-local, CGNAT, unspecified): the owner
// chooses the CA, and must not point the node at the operator's internal
// services.
//
// A cold node with tls_mode acme gets --egress unix:/run/mse/egress.sock; a
// standby node always gets it (its spec is not known yet), and the socket is
// made when it is assigned an app in tls_mode acme. The socket ends with the
// node (Stop), with the runner (Close), and comes back when a restarted
// runner adopts the node (the target is in the node's handle).

const (
	egressSocket = "egress.sock"
	// egressArg is the node's --egress value.
	egressArg = "unix:" + sandboxRunDir + "/" + egressSocket
	// egressMaxHeader bounds a CONNECT request (line and headers).
	egressMaxHeader = 4 << 10
	// egressMaxConns bounds one node's concurrent connections.
	egressMaxConns = 8
	// egressHandshake bounds reading the request, dialing and answering.
	egressHandshake = 10 * time.Second
	// egressIdle ends a relay that carried nothing either way for this long.
	egressIdle = 2 * time.Minute
)

// egressTarget is the host:port a spec's node may reach, "" when it needs
// none (not tls_mode acme).
func egressTarget(s spec.Spec) (string, error) {
	if s.TLSMode != spec.TLSACME || s.ACME == nil {
		return "", nil
	}
	u, err := url.Parse(s.ACME.DirectoryURL)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		return "", fmt.Errorf("local runner: the ACME directory URL %q is not an https URL", s.ACME.DirectoryURL)
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port), nil
}

// egressProxy is one node's egress.
type egressProxy struct {
	ln      net.Listener
	sock    string
	allow   string // host:port, host lowercase
	private bool   // may dial the operator's network
	log     *slog.Logger
	slots   chan struct{}
	// handshake and idle are egressHandshake and egressIdle (tests shorten
	// them).
	handshake, idle time.Duration
	// dial and resolve are the network (tests replace them).
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	resolve func(ctx context.Context, host string) ([]netip.Addr, error)

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// startEgress serves the egress proxy of the node with UID uid on
// run/egress.sock, relaying only to allow.
func (r *Runner) startEgress(run string, uid int, allow, appID string) (*egressProxy, error) {
	sock := filepath.Join(run, egressSocket)
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("local runner: egress socket: %w", err)
	}
	// Like the quoting service's socket: only the node's UID may connect
	// (rootless, the node's host UID is the runner's). The run directory is
	// the node's: never follow a link it may have put there.
	if r.rootless == nil {
		if err := os.Lchown(sock, uid, uid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("local runner: egress socket: %w", err)
		}
	}
	if fi, err := os.Lstat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		ln.Close()
		return nil, fmt.Errorf("local runner: egress socket %s was replaced", sock)
	}
	_ = os.Chmod(sock, 0o600)
	var d net.Dialer
	p := &egressProxy{ln: ln, sock: sock, allow: allow, private: r.cfg.EgressPrivate, log: r.log.With("app_id", appID, "egress", allow),
		slots: make(chan struct{}, egressMaxConns), handshake: egressHandshake, idle: egressIdle, conns: map[net.Conn]struct{}{},
		dial: d.DialContext, resolve: func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}}
	if r.egressTune != nil {
		r.egressTune(p)
	}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func (p *egressProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		select {
		case p.slots <- struct{}{}:
		default:
			p.log.Warn("egress refused: too many connections", "max", egressMaxConns)
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			c.Close()
			continue
		}
		if !p.track(c, true) {
			<-p.slots
			c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() { <-p.slots }()
			defer p.track(c, false)
			defer c.Close()
			p.handle(c)
		}()
	}
}

// track adds or removes c from the open connections; false when closed.
func (p *egressProxy) track(c net.Conn, add bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !add {
		delete(p.conns, c)
		return true
	}
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

// refusal is an HTTP status and what the log says.
type refusal struct {
	code int
	why  string
}

// readConnect reads one CONNECT request of at most egressMaxHeader bytes
// from br and returns its target (host:port, host lowercase).
func readConnect(br *bufio.Reader) (string, *refusal) {
	req, err := http.ReadRequest(br)
	if err != nil {
		if errors.Is(err, errHeaderTooLarge) {
			return "", &refusal{http.StatusRequestHeaderFieldsTooLarge, fmt.Sprintf("request header larger than %d bytes", egressMaxHeader)}
		}
		return "", &refusal{http.StatusBadRequest, "not an HTTP request: " + trimErr(err)}
	}
	if req.Method != http.MethodConnect {
		return "", &refusal{http.StatusMethodNotAllowed, "method " + clip(req.Method) + " (only CONNECT)"}
	}
	host, port, err := net.SplitHostPort(req.RequestURI)
	if err != nil || host == "" || port == "" {
		return "", &refusal{http.StatusBadRequest, "CONNECT target " + clip(req.RequestURI) + " is not host:port"}
	}
	return net.JoinHostPort(strings.ToLower(host), port), nil
}

var errHeaderTooLarge = errors.New("egress: request header too large")

// capReader reads at most n bytes, then fails with errHeaderTooLarge.
type capReader struct {
	r io.Reader
	n int
}

func (c *capReader) Read(b []byte) (int, error) {
	if c.n <= 0 {
		return 0, errHeaderTooLarge
	}
	if len(b) > c.n {
		b = b[:c.n]
	}
	n, err := c.r.Read(b)
	c.n -= n
	return n, err
}

func (p *egressProxy) handle(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(p.handshake))
	cr := &capReader{r: c, n: egressMaxHeader}
	br := bufio.NewReaderSize(cr, egressMaxHeader)
	target, ref := readConnect(br)
	if ref == nil && target != p.allow {
		ref = &refusal{http.StatusForbidden, "only " + p.allow + " is allowed"}
	}
	if ref != nil {
		p.refuse(c, target, ref)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.handshake)
	up, ref := p.connect(ctx, target)
	cancel()
	if ref != nil {
		p.refuse(c, target, ref)
		return
	}
	defer up.Close()
	if !p.track(up, true) {
		return
	}
	defer p.track(up, false)
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	// What the node sent after its request (a TLS ClientHello, early).
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := up.Write(b); err != nil {
			return
		}
	}
	_ = c.SetDeadline(time.Time{})
	relay(c, up, p.idle)
}

// connect resolves target's host, checks its addresses and dials one.
func (p *egressProxy) connect(ctx context.Context, target string) (net.Conn, *refusal) {
	host, port, _ := net.SplitHostPort(target)
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else if addrs, err = p.resolve(ctx, host); err != nil || len(addrs) == 0 {
		return nil, &refusal{http.StatusBadGateway, "cannot resolve " + host + ": " + trimErr(err)}
	}
	var lastErr error
	refused := false // the last address tried was the operator's own
	for _, a := range addrs {
		a = a.Unmap()
		if !p.private && operatorNetwork(a) {
			lastErr, refused = fmt.Errorf("%s is an address of the operator's network (set the runner's EgressPrivate to allow it)", a), true
			continue
		}
		up, err := p.dial(ctx, "tcp", net.JoinHostPort(a.String(), port))
		if err == nil {
			return up, nil
		}
		lastErr, refused = err, false
	}
	code := http.StatusBadGateway
	if refused {
		code = http.StatusForbidden
	}
	return nil, &refusal{code, "cannot reach " + target + ": " + trimErr(lastErr)}
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// operatorNetwork: addresses a node's CA must not be at, unless the
// operator allows it.
func operatorNetwork(a netip.Addr) bool {
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() ||
		a.IsMulticast() || a.IsUnspecified() || cgnat.Contains(a) || !a.IsValid()
}

func (p *egressProxy) refuse(c net.Conn, target string, r *refusal) {
	p.log.Warn("egress refused", "target", clip(target), "status", r.code, "why", r.why)
	_, _ = fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		r.code, http.StatusText(r.code), len(r.why)+1, r.why+"\n")
}

// relay copies both ways until either side ends or nothing moves for idle.
func relay(a, b net.Conn, idle time.Duration) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			_ = src.SetReadDeadline(time.Now().Add(idle))
			n, err := src.Read(buf)
			if n > 0 {
				_ = dst.SetWriteDeadline(time.Now().Add(idle))
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
				// Traffic one way keeps the other way's read alive too.
				_ = dst.SetReadDeadline(time.Now().Add(idle))
			}
			if err != nil {
				break
			}
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	a.Close()
	b.Close()
	<-done
}

// close stops the proxy: no new connection, open ones ended, the socket
// removed.
func (p *egressProxy) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.ln.Close()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	_ = os.Remove(p.sock)
}

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

func trimErr(err error) string {
	if err == nil {
		return "no address"
	}
	return clip(err.Error())
}
