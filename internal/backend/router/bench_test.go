package router

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Benchmarks compare a TLS client talking to a TLS server directly and through the router (and, when
// ROUTER_BENCH_HAPROXY=1 and haproxy is on PATH, through haproxy in tcp mode routing on req_ssl_sni).
//
//	go test ./internal/backend/router/ -run '^$' -bench . -benchtime 3s

type benchTarget struct {
	name string
	addr string
}

func benchTargets(b *testing.B, backendAddr string) []benchTarget {
	r := &Router{
		Lookup: (&staticLookup{m: map[string]string{"bench.example": backendAddr}}).lookup,
		Logger: discardLogger(),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go r.Serve(ln)
	b.Cleanup(func() { r.Close() })
	ts := []benchTarget{{"direct", backendAddr}, {"router", ln.Addr().String()}}
	if os.Getenv("ROUTER_BENCH_HAPROXY") == "1" {
		if addr := startHAProxy(b, backendAddr); addr != "" {
			ts = append(ts, benchTarget{"haproxy", addr})
		}
	}
	return ts
}

// startHAProxy runs haproxy in tcp mode with SNI routing (the setup docs/router.md describes).
func startHAProxy(b *testing.B, backendAddr string) string {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		b.Log("haproxy not found; skipping it")
		return ""
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := fmt.Sprintf(`global
    maxconn 1000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend sni
    bind %s
    tcp-request inspect-delay 5s
    tcp-request content accept if { req_ssl_hello_type 1 }
    use_backend app if { req_ssl_sni -i bench.example }
backend app
    server s1 %s
`, addr, backendAddr)
	path := filepath.Join(b.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-f", path, "-db")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatal("haproxy did not start")
	return ""
}

// BenchmarkConnSetup: TCP connect + TLS 1.3 handshake (ECDSA P-256, no resumption) + a 1-byte echo.
func BenchmarkConnSetup(b *testing.B) {
	backend := startTLSBackend(b, "bench.example", echoHandler)
	cfg := &tls.Config{ServerName: "bench.example", RootCAs: backend.pool}
	for _, t := range benchTargets(b, backend.addr) {
		b.Run(t.name, func(b *testing.B) {
			buf := make([]byte, 1)
			for b.Loop() {
				c, err := tls.Dial("tcp", t.addr, cfg)
				if err != nil {
					b.Fatal(err)
				}
				c.Write(buf)
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// BenchmarkThroughputTLS: one TLS connection, client writes 1 MiB per op, the server reads and discards.
func BenchmarkThroughputTLS(b *testing.B) {
	backend := startTLSBackend(b, "bench.example", func(c *tls.Conn) {
		io.Copy(io.Discard, c)
		c.Write([]byte{1})
	})
	cfg := &tls.Config{ServerName: "bench.example", RootCAs: backend.pool}
	chunk := make([]byte, 1<<20)
	for _, t := range benchTargets(b, backend.addr) {
		b.Run(t.name, func(b *testing.B) {
			c, err := tls.Dial("tcp", t.addr, cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.SetBytes(int64(len(chunk)))
			for b.Loop() {
				if _, err := c.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			c.CloseWrite()
			io.ReadFull(c, make([]byte, 1)) // wait until the server has read everything
		})
	}
}

// BenchmarkThroughputRaw isolates the relay: after the ClientHello, plain bytes to a TCP server that
// discards them (no TLS cost on either end).
func BenchmarkThroughputRaw(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(io.Discard, c)
				c.Write([]byte{1})
				c.Close()
			}()
		}
	}()
	hello := captureClientHello(b, &tls.Config{ServerName: "bench.example"})
	chunk := make([]byte, 1<<20)
	for _, t := range benchTargets(b, ln.Addr().String()) {
		b.Run(t.name, func(b *testing.B) {
			c, err := net.Dial("tcp", t.addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			c.Write(hello)
			b.SetBytes(int64(len(chunk)))
			for b.Loop() {
				if _, err := c.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			c.(*net.TCPConn).CloseWrite()
			io.ReadFull(c, make([]byte, 1))
		})
	}
}
