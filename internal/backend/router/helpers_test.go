package router

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// captureConn is a net.Conn that records what is written and answers reads with EOF, so a crypto/tls
// client writes its ClientHello into it and then fails.
type captureConn struct {
	buf bytes.Buffer
}

func (c *captureConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (c *captureConn) Write(b []byte) (int, error)      { return c.buf.Write(b) }
func (c *captureConn) Close() error                     { return nil }
func (c *captureConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *captureConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }

// captureClientHello returns the TLS records a real crypto/tls client sends first.
func captureClientHello(tb testing.TB, cfg *tls.Config) []byte {
	tb.Helper()
	c := &captureConn{}
	if err := tls.Client(c, cfg).Handshake(); err == nil {
		tb.Fatal("handshake unexpectedly succeeded")
	}
	if c.buf.Len() == 0 {
		tb.Fatal("no ClientHello captured")
	}
	return c.buf.Bytes()
}

// helloConfigs are client configurations giving a variety of real ClientHellos.
func helloConfigs() map[string]*tls.Config {
	return map[string]*tls.Config{
		"default":    {ServerName: "app-1.example.com"},
		"tls12":      {ServerName: "Mixed.Case.Example", MaxVersion: tls.VersionTLS12},
		"tls13-alpn": {ServerName: "a.b.c.d.example", MinVersion: tls.VersionTLS13, NextProtos: []string{"h2", "http/1.1"}},
		"tls10":      {ServerName: "old.example", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10},
		"no-sni":     {InsecureSkipVerify: true},
		"ip-sni":     {ServerName: "127.0.0.1", InsecureSkipVerify: true},
		"long-name":  {ServerName: strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + ".example"},
	}
}

// fragment re-splits the handshake payload of the records in raw into records of at most size bytes.
func fragment(tb testing.TB, raw []byte, size int) []byte {
	tb.Helper()
	var payload []byte
	var version []byte
	for len(raw) > 0 {
		if len(raw) < 5 {
			tb.Fatal("short record")
		}
		n := int(binary.BigEndian.Uint16(raw[3:5]))
		version = raw[1:3]
		payload = append(payload, raw[5:5+n]...)
		raw = raw[5+n:]
	}
	var out []byte
	for len(payload) > 0 {
		n := min(size, len(payload))
		out = append(out, 0x16, version[0], version[1], byte(n>>8), byte(n))
		out = append(out, payload[:n]...)
		payload = payload[n:]
	}
	return out
}

// testCert is a self-signed ECDSA certificate for the given DNS names.
func testCert(tb testing.TB, names ...string) (tls.Certificate, *x509.CertPool) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: names[0]},
		DNSNames:              names,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// staticLookup maps names to addresses; others are unknown.
type staticLookup struct {
	mu    sync.Mutex
	m     map[string]string
	calls []string
}

func (s *staticLookup) lookup(_ context.Context, name string) (Route, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, name)
	if a, ok := s.m[name]; ok {
		return Route{Addr: a, Domain: name}, nil
	}
	return Route{}, ErrUnknownServerName
}

// testRouter starts a router on 127.0.0.1 with its own registry; it is closed at the end of the test.
type testRouter struct {
	*Router
	addr string
	reg  *prometheus.Registry
	logs *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startRouter(tb testing.TB, lookup func(context.Context, string) (Route, error), opts func(*Router)) *testRouter {
	tb.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		tb.Fatal(err)
	}
	logs := &syncBuffer{}
	r := &Router{
		Lookup:  lookup,
		Logger:  slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics: m,
	}
	if opts != nil {
		opts(r)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tr := &testRouter{Router: r, addr: ln.Addr().String(), reg: reg, logs: logs, done: make(chan error, 1)}
	go func() { tr.done <- r.Serve(ln) }()
	tb.Cleanup(func() {
		r.Close()
		if err := <-tr.done; !errors.Is(err, ErrRouterClosed) {
			tb.Errorf("Serve returned %v", err)
		}
	})
	return tr
}

// metric returns the value of a counter or gauge (first series whose labels include the given pairs).
func (tr *testRouter) metric(tb testing.TB, name string, labels ...string) float64 {
	tb.Helper()
	mfs, err := tr.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	tb.Fatalf("metric %s%v not found", name, labels)
	return 0
}

// waitFor polls cond for up to 5s.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tlsBackend is a TLS server on 127.0.0.1 running handler for each connection.
type tlsBackend struct {
	addr string
	cert tls.Certificate
	pool *x509.CertPool
	ln   net.Listener
	wg   sync.WaitGroup
}

func startTLSBackend(tb testing.TB, name string, handler func(*tls.Conn)) *tlsBackend {
	tb.Helper()
	cert, pool := testCert(tb, name)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		tb.Fatal(err)
	}
	b := &tlsBackend{addr: ln.Addr().String(), cert: cert, pool: pool, ln: ln}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer c.Close()
				handler(c.(*tls.Conn))
			}()
		}
	}()
	tb.Cleanup(func() { ln.Close(); b.wg.Wait() })
	return b
}

// echoHandler echoes until EOF (close_notify), then half-closes.
func echoHandler(c *tls.Conn) {
	c.SetDeadline(time.Now().Add(time.Minute))
	io.Copy(c, c)
	c.CloseWrite()
	if tc, ok := c.NetConn().(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	io.Copy(io.Discard, c.NetConn())
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
