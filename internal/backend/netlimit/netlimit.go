// Package netlimit caps the connections a listener accepts, in total and per
// client address, so that one client cannot hold every connection of the
// backend's API.
package netlimit

import (
	"log/slog"
	"net"
	"sync"
	"time"
)

// Defaults of Listener's limits.
const (
	DefaultTotal     = 1024
	DefaultPerClient = 64
)

// Listener wraps ln: a connection over total, or over perClient from one IP
// address, is closed as soon as it is accepted (the client sees its
// connection reset, and can retry), and counted in the log at most once a
// second. Zero limits take the defaults.
func Listener(ln net.Listener, total, perClient int, log *slog.Logger) net.Listener {
	if total <= 0 {
		total = DefaultTotal
	}
	if perClient <= 0 {
		perClient = DefaultPerClient
	}
	if log == nil {
		log = slog.Default()
	}
	return &listener{Listener: ln, total: total, perClient: perClient, log: log, byIP: map[string]int{}}
}

type listener struct {
	net.Listener
	total, perClient int
	log              *slog.Logger

	mu       sync.Mutex
	open     int
	byIP     map[string]int
	lastLog  time.Time
	refusals int
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := clientIP(c.RemoteAddr())
		l.mu.Lock()
		if l.open >= l.total || l.byIP[ip] >= l.perClient {
			l.refusals++
			if now := time.Now(); now.Sub(l.lastLog) >= time.Second {
				l.log.Warn("connection refused: limit reached", "client", ip, "client_conns", l.byIP[ip], "per_client_limit", l.perClient,
					"conns", l.open, "total_limit", l.total, "refused_since_last_log", l.refusals)
				l.lastLog, l.refusals = now, 0
			}
			l.mu.Unlock()
			_ = c.Close()
			continue
		}
		l.open++
		l.byIP[ip]++
		l.mu.Unlock()
		return &conn{Conn: c, l: l, ip: ip}, nil
	}
}

// Open returns the number of connections held.
func (l *listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

func clientIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

type conn struct {
	net.Conn
	l    *listener
	ip   string
	once sync.Once
}

func (c *conn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.open--
		if c.l.byIP[c.ip]--; c.l.byIP[c.ip] <= 0 {
			delete(c.l.byIP, c.ip)
		}
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
