package testenv

import (
	"io"
	"net"
	"sync"
	"testing"
)

// TCPProxy forwards loopback connections to a target, and can be cut (its
// connections closed, new ones refused at once) and healed: a network fault
// between a client and one server, without disturbing the server's other
// clients.
type TCPProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
}

// StartTCPProxy listens on 127.0.0.1 and forwards to target ("host:port")
// until t ends.
func StartTCPProxy(t testing.TB, target string) *TCPProxy {
	t.Helper()
	return StartTCPProxyOn(t, "127.0.0.1", target)
}

// StartTCPProxyOn is StartTCPProxy listening on host (an address of this
// machine's, e.g. one pods reach).
func StartTCPProxyOn(t testing.TB, host, target string) *TCPProxy {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &TCPProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(p.Cut)
	ServeConns(t, ln, p.forward) // its cleanup, closing ln, runs first

	return p
}

// Addr is the proxy's "host:port".
func (p *TCPProxy) Addr() string { return p.ln.Addr().String() }

// Cut closes the proxied connections and refuses new ones until Heal.
func (p *TCPProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// Heal forwards new connections again.
func (p *TCPProxy) Heal() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// track adds c to the live connections, or reports false when cut.
func (p *TCPProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	for _, c := range cs {
		p.conns[c] = true
	}
	return true
}

func (p *TCPProxy) forward(c net.Conn) {
	if !p.track(c) {
		c.Close()
		return
	}
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	if !p.track(u) {
		c.Close()
		u.Close()
		return
	}
	splice(c, u)
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, u)
	p.mu.Unlock()
}

// splice copies between c and u both ways until either side ends, then
// closes both.
func splice(c, u net.Conn) {
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(u, c)
	go pipe(c, u)
	<-done
	c.Close()
	u.Close()
}
