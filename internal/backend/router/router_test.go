package router

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// dialTLS connects through addr with SNI name, trusting pool.
func dialTLS(t testing.TB, addr, name string, pool *x509.CertPool) (*tls.Conn, error) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := tls.Client(raw, &tls.Config{ServerName: name, RootCAs: pool})
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := c.Handshake(); err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

func TestPassthroughHTTP(t *testing.T) {
	cert, pool := testCert(t, "app.example")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s over %s", r.Host, r.Proto)
	}), TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })

	lk := &staticLookup{m: map[string]string{"app.example": ln.Addr().String()}}
	tr := startRouter(t, lk.lookup, nil)

	// The client sees the backend's own certificate: the router did not terminate TLS.
	c, err := dialTLS(t, tr.addr, "APP.example", pool)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ConnectionState().PeerCertificates[0]; !got.Equal(cert.Leaf) {
		t.Fatal("client did not see the backend's certificate")
	}
	c.Close()

	// HTTP/1.1 and HTTP/2 work through it.
	for _, h2 := range []bool{false, true} {
		tp := &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", tr.addr)
			},
			TLSClientConfig:   &tls.Config{RootCAs: pool},
			ForceAttemptHTTP2: h2,
		}
		resp, err := (&http.Client{Transport: tp, Timeout: 10 * time.Second}).Get("https://app.example/x")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		tp.CloseIdleConnections()
		want := "hello from app.example over HTTP/1.1"
		if h2 {
			want = "hello from app.example over HTTP/2.0"
		}
		if string(body) != want {
			t.Fatalf("body %q, want %q", body, want)
		}
	}
	if got := lk.calls[0]; got != "app.example" {
		t.Fatalf("lookup got %q, want the lowercased name", got)
	}
	waitFor(t, "connections to end", func() bool { return tr.metric(t, "mse_router_connections_active") == 0 })
	if n := tr.metric(t, "mse_router_connections_routed_total"); n != 3 {
		t.Fatalf("routed = %v, want 3", n)
	}
	if tr.metric(t, "mse_router_bytes_total", "direction", "in") == 0 || tr.metric(t, "mse_router_bytes_total", "direction", "out") == 0 {
		t.Fatal("bytes not counted")
	}
	if n := tr.metric(t, "mse_router_lookup_duration_seconds", "result", "found"); n != 3 {
		t.Fatalf("lookups observed = %v", n)
	}
}

func TestRefused(t *testing.T) {
	backend := startTLSBackend(t, "known.example", echoHandler)
	var mu sync.Mutex
	backendConns := 0
	tr := startRouter(t, func(ctx context.Context, name string) (Route, error) {
		switch name {
		case "known.example":
			return Route{Addr: backend.addr}, nil
		case "broken.example":
			return Route{}, errors.New("store unavailable")
		case "down.example":
			return Route{Addr: "127.0.0.1:1"}, nil
		}
		return Route{}, fmt.Errorf("no app: %w", ErrUnknownServerName)
	}, func(r *Router) {
		d := &net.Dialer{}
		r.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			backendConns++
			mu.Unlock()
			return d.DialContext(ctx, network, addr)
		}
	})

	tlsCase := func(name string, cfg *tls.Config, wantErr string) {
		t.Run(name, func(t *testing.T) {
			raw, err := net.Dial("tcp", tr.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			c := tls.Client(raw, cfg)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			err = c.Handshake()
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Fatalf("handshake error %v, want %q", err, wantErr)
			}
		})
	}
	tlsCase("unknown sni", &tls.Config{ServerName: "other.example", RootCAs: backend.pool}, "unrecognized name")
	tlsCase("no sni", &tls.Config{InsecureSkipVerify: true}, "unrecognized name")
	tlsCase("lookup error", &tls.Config{ServerName: "broken.example", InsecureSkipVerify: true}, "internal error")
	tlsCase("backend down", &tls.Config{ServerName: "down.example", InsecureSkipVerify: true}, "internal error")

	t.Run("garbage", func(t *testing.T) {
		c, err := net.Dial("tcp", tr.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: known.example\r\n\r\n")
		b, err := io.ReadAll(c)
		if len(b) != 0 {
			t.Fatalf("router answered %q to garbage", b)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("router did not close the connection")
		}
	})
	t.Run("malformed", func(t *testing.T) {
		c, err := net.Dial("tcp", tr.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(buildHello(sniExt(hostEntry(0, "a.b"), hostEntry(0, "c.d"))))
		b, _ := io.ReadAll(c)
		if !bytes.Equal(b, []byte{21, 3, 1, 0, 2, 2, alertDecodeError}) {
			t.Fatalf("got %x, want a decode_error alert", b)
		}
	})

	waitFor(t, "connections to end", func() bool { return tr.metric(t, "mse_router_connections_active") == 0 })
	for reason, want := range map[string]float64{
		ReasonUnknownName: 1, ReasonNoSNI: 1, ReasonLookupError: 1, ReasonDialError: 1, ReasonNotTLS: 1, ReasonMalformed: 1,
	} {
		if got := tr.metric(t, "mse_router_connections_refused_total", "reason", reason); got != want {
			t.Errorf("refused{%s} = %v, want %v", reason, got, want)
		}
	}
	if tr.metric(t, "mse_router_connections_routed_total") != 0 {
		t.Error("refused connections counted as routed")
	}
	mu.Lock()
	if backendConns != 1 { // only down.example was dialed
		t.Errorf("dialed backends %d times, want 1", backendConns)
	}
	mu.Unlock()
	logs := tr.logs.String()
	if !strings.Contains(logs, "sni=broken.example") || !strings.Contains(logs, "store unavailable") {
		t.Errorf("lookup error not logged with its SNI:\n%s", logs)
	}
	if strings.Contains(logs, "GET /") || strings.Contains(logs, "Host:") {
		t.Errorf("payload leaked into logs:\n%s", logs)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	tr := startRouter(t, (&staticLookup{}).lookup, func(r *Router) { r.HandshakeTimeout = 200 * time.Millisecond })
	hello := captureClientHello(t, &tls.Config{ServerName: "slow.example"})
	c, err := net.Dial("tcp", tr.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.Write(hello[:10]) // a slow client: part of the hello, then nothing
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if len(b) != 0 || err != nil {
		t.Fatalf("read %q, %v; want a silent close", b, err)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 3*time.Second {
		t.Fatalf("closed after %v", d)
	}
	waitFor(t, "metric", func() bool {
		return tr.metric(t, "mse_router_connections_refused_total", "reason", ReasonHandshakeTimeout) == 1
	})
}

func TestMaxConns(t *testing.T) {
	backend := startTLSBackend(t, "a.example", echoHandler)
	tr := startRouter(t, (&staticLookup{m: map[string]string{"a.example": backend.addr}}).lookup,
		func(r *Router) { r.MaxConns = 2 })

	c1, err := dialTLS(t, tr.addr, "a.example", backend.pool)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := dialTLS(t, tr.addr, "a.example", backend.pool)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dialTLS(t, tr.addr, "a.example", backend.pool); err == nil {
		t.Fatal("third connection routed beyond MaxConns")
	}
	if got := tr.metric(t, "mse_router_connections_refused_total", "reason", ReasonMaxConns); got != 1 {
		t.Fatalf("refused{max_conns} = %v", got)
	}
	// The open ones still work; closing one frees a slot.
	for _, c := range []*tls.Conn{c1, c2} {
		io.WriteString(c, "ping")
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo: %q, %v", buf, err)
		}
	}
	c1.Close()
	waitFor(t, "a free slot", func() bool { return tr.metric(t, "mse_router_connections_active") == 1 })
	c3, err := dialTLS(t, tr.addr, "a.example", backend.pool)
	if err != nil {
		t.Fatalf("after a slot freed: %v", err)
	}
	c3.Close()
	c2.Close()
}

func TestShutdownDrains(t *testing.T) {
	backend := startTLSBackend(t, "a.example", echoHandler)
	tr := startRouter(t, (&staticLookup{m: map[string]string{"a.example": backend.addr}}).lookup, nil)

	c, err := dialTLS(t, tr.addr, "a.example", backend.pool)
	if err != nil {
		t.Fatal(err)
	}
	// A connection still sending its ClientHello is dropped by Shutdown.
	pending, err := net.Dial("tcp", tr.addr)
	if err != nil {
		t.Fatal(err)
	}
	pending.Write([]byte{0x16, 3, 1})
	waitFor(t, "two active connections", func() bool { return tr.metric(t, "mse_router_connections_active") == 2 })

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- tr.Shutdown(ctx)
	}()
	if err := <-tr.done; !errors.Is(err, ErrRouterClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	tr.done <- ErrRouterClosed // for the cleanup
	if _, err := net.DialTimeout("tcp", tr.addr, time.Second); err == nil {
		t.Fatal("router still accepting after Shutdown")
	}
	pending.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := pending.Read(make([]byte, 1)); err == nil {
		t.Fatal("pending connection not closed")
	}
	pending.Close()

	// The established session keeps working while Shutdown waits.
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v before the session ended", err)
	case <-time.After(100 * time.Millisecond):
	}
	io.WriteString(c, "still here")
	buf := make([]byte, 10)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "still here" {
		t.Fatalf("echo during drain: %q, %v", buf, err)
	}
	c.Close()
	select {
	case err := <-shut:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the last session ended")
	}
}

func TestShutdownDeadline(t *testing.T) {
	backend := startTLSBackend(t, "a.example", echoHandler)
	tr := startRouter(t, (&staticLookup{m: map[string]string{"a.example": backend.addr}}).lookup, nil)
	c, err := dialTLS(t, tr.addr, "a.example", backend.pool)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := tr.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want DeadlineExceeded", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("session not closed after the Shutdown deadline")
	}
	if got := tr.metric(t, "mse_router_connections_active"); got != 0 {
		t.Fatalf("active = %v after Shutdown", got)
	}
}

// TestLargeTransferHalfClose sends 64 MiB through the router over TLS to an echo server, half-closes, and
// checks both directions with SHA-256.
func TestLargeTransferHalfClose(t *testing.T) {
	for _, idle := range []time.Duration{0, 5 * time.Second} { // without and with the idle-timeout deadlines
		t.Run(fmt.Sprintf("idle=%v", idle), func(t *testing.T) { testLargeTransfer(t, idle) })
	}
}

func testLargeTransfer(t *testing.T, idle time.Duration) {
	size := int64(64 << 20)
	if testing.Short() {
		size = 4 << 20
	}
	backend := startTLSBackend(t, "big.example", echoHandler)
	tr := startRouter(t, (&staticLookup{m: map[string]string{"big.example": backend.addr}}).lookup,
		func(r *Router) { r.IdleTimeout = idle })
	c, err := dialTLS(t, tr.addr, "big.example", backend.pool)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))

	sent := sha256.New()
	go func() {
		io.CopyN(io.MultiWriter(c, sent), rand.Reader, size)
		c.CloseWrite()                          // close_notify
		c.NetConn().(*net.TCPConn).CloseWrite() // TCP FIN: the router must pass it on, not close
	}()
	got := sha256.New()
	n, err := io.Copy(got, c)
	if err != nil || n != size {
		t.Fatalf("received %d bytes, %v; want %d", n, err, size)
	}
	if !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
		t.Fatal("SHA-256 mismatch")
	}
	c.Close()
	waitFor(t, "connection to end", func() bool { return tr.metric(t, "mse_router_connections_active") == 0 })
	if in := tr.metric(t, "mse_router_bytes_total", "direction", "in"); in < float64(size) {
		t.Fatalf("bytes in = %v", in)
	}
}

// TestHalfCloseRaw checks the TCP half-close directly: the backend sees EOF only after every byte, and
// its answer, written after that EOF, still reaches the client.
func TestHalfCloseRaw(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		h := sha256.New()
		io.Copy(h, c) // until the client's FIN
		time.Sleep(50 * time.Millisecond)
		c.Write(h.Sum(nil))
	}()
	tr := startRouter(t, (&staticLookup{m: map[string]string{"raw.example": ln.Addr().String()}}).lookup, nil)
	hello := captureClientHello(t, &tls.Config{ServerName: "raw.example"})
	payload := make([]byte, 3<<20)
	rand.Read(payload)

	c, err := net.Dial("tcp", tr.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	c.Write(hello)
	c.Write(payload)
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(append(append([]byte(nil), hello...), payload...))
	if !bytes.Equal(got, want[:]) {
		t.Fatalf("backend did not receive exactly hello+payload before EOF")
	}
}

func TestIdleTimeout(t *testing.T) {
	backend := startTLSBackend(t, "a.example", echoHandler)
	tr := startRouter(t, (&staticLookup{m: map[string]string{"a.example": backend.addr}}).lookup,
		func(r *Router) { r.IdleTimeout = 300 * time.Millisecond })
	c, err := dialTLS(t, tr.addr, "a.example", backend.pool)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Traffic in one direction keeps the connection alive past IdleTimeout.
	for i := 0; i < 8; i++ {
		io.WriteString(c, "x")
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read succeeded on an idle connection")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("idle connection closed after %v", d)
	}
}

// TestConcurrentNoCrossRouting runs many concurrent sessions to two backends by two names.
func TestConcurrentNoCrossRouting(t *testing.T) {
	named := func(name string) func(*tls.Conn) {
		return func(c *tls.Conn) {
			c.SetDeadline(time.Now().Add(30 * time.Second))
			br := bufio.NewReader(c)
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s:%s", name, line)
		}
	}
	a := startTLSBackend(t, "a.example", named("a.example"))
	b := startTLSBackend(t, "b.example", named("b.example"))
	pool := x509.NewCertPool()
	pool.AddCert(a.cert.Leaf)
	pool.AddCert(b.cert.Leaf)
	tr := startRouter(t, (&staticLookup{m: map[string]string{"a.example": a.addr, "b.example": b.addr}}).lookup, nil)

	const n = 60
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			name := []string{"a.example", "b.example"}[i%2]
			c, err := dialTLS(t, tr.addr, name, pool)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != name {
				errs <- fmt.Errorf("conn %d for %s reached %s", i, name, cn)
				return
			}
			fmt.Fprintf(c, "req-%d\n", i)
			got, err := io.ReadAll(c)
			if want := fmt.Sprintf("%s:req-%d\n", name, i); string(got) != want {
				errs <- fmt.Errorf("conn %d: got %q, %v; want %q", i, got, err, want)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := tr.metric(t, "mse_router_connections_routed_total"); got != n {
		t.Errorf("routed = %v, want %d", got, n)
	}
}

func TestMetricsRegistration(t *testing.T) {
	if _, err := NewMetrics(nil); err != nil {
		t.Fatal(err)
	}
	tr := startRouter(t, (&staticLookup{}).lookup, nil)
	if _, err := NewMetrics(tr.reg); err == nil {
		t.Fatal("registering twice on one registry succeeded")
	}
	// A Router with no Metrics and no Logger works.
	r := &Router{Lookup: (&staticLookup{}).lookup}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	done := make(chan error, 1)
	go func() { done <- r.Serve(ln) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("x"))
	io.ReadAll(c)
	c.Close()
	r.Close()
	if err := <-done; !errors.Is(err, ErrRouterClosed) {
		t.Fatal(err)
	}
	if err := r.Serve(ln); !errors.Is(err, ErrRouterClosed) {
		t.Fatalf("Serve after Close = %v", err)
	}
}
