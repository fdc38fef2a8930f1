package router

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Router memory per idle connection (issue 7, item 6), measured on a router
// in a child process, so that the clients and the TLS backend (another child)
// do not count:
//
//	go test ./internal/backend/router -run '^$' -bench IdleConns -benchtime 1x
//	ROUTER_MEMBENCH_CONNS=2000,9900 go test … (RLIMIT_NOFILE 20000: 2 descriptors per connection)
//
// Each connection is a real TLS session (handshake through the router, one
// request and answer), then left idle. Reported: the child's RSS and Go
// memory in use (heap + stacks) with the connections open, per connection,
// and after they all closed (after a GC, and after debug.FreeOSMemory).

const (
	memChildEnv   = "ROUTER_MEMBENCH_CHILD"
	memBackendEnv = "ROUTER_MEMBENCH_BACKEND"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv(memChildEnv); addr != "" {
		runMemChild(addr)
		return
	}
	if os.Getenv(memBackendEnv) != "" {
		runMemBackend()
		return
	}
	os.Exit(m.Run())
}

// runMemBackend is the TLS backend of the benchmark, in its own process (each
// process has at most RLIMIT_NOFILE descriptors): it echoes one message per
// connection, then reads until the client closes.
func runMemBackend() {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"idle.example"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	go io.Copy(io.Discard, os.Stdin) // ends with the parent
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		go func() {
			defer c.Close()
			echoPingThenRead(c)
		}()
	}
}

// memStats is what the child reports.
type memStats struct {
	Conns    int    `json:"conns"`
	RSS      uint64 `json:"rss"`
	InUse    uint64 `json:"in_use"` // HeapInuse + StackInuse
	Stack    uint64 `json:"stack"`
	Sys      uint64 `json:"sys"`
	Released uint64 `json:"released"`
}

// runMemChild routes every name to backend and answers commands on stdin:
// "stats" (after a GC), "free" (debug.FreeOSMemory, then stats).
func runMemChild(backend string) {
	r := &Router{
		Lookup: func(context.Context, string) (Route, error) { return Route{Addr: backend}, nil },
		Logger: discardLogger(),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	go r.Serve(ln)
	fmt.Println(ln.Addr().String())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "free":
			debug.FreeOSMemory()
		default:
			runtime.GC()
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		r.mu.Lock()
		n := r.nconns
		r.mu.Unlock()
		b, _ := json.Marshal(memStats{Conns: n, RSS: rss(), InUse: ms.HeapInuse + ms.StackInuse, Stack: ms.StackInuse, Sys: ms.Sys, Released: ms.HeapReleased})
		fmt.Println(string(b))
	}
}

// rss is this process's resident set size (Linux), 0 if unknown.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

type memChild struct {
	cmd  *exec.Cmd
	in   io.Writer
	out  *bufio.Scanner
	addr string
}

func (c *memChild) stats(tb testing.TB, cmd string) memStats {
	tb.Helper()
	fmt.Fprintln(c.in, cmd)
	if !c.out.Scan() {
		tb.Fatalf("the router child ended: %v", c.out.Err())
	}
	var s memStats
	if err := json.Unmarshal(c.out.Bytes(), &s); err != nil {
		tb.Fatalf("router child: %q: %v", c.out.Text(), err)
	}
	return s
}

func startMemChild(tb testing.TB, env string) *memChild {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), env)
	in, _ := cmd.StdinPipe()
	outp, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	c := &memChild{cmd: cmd, in: in, out: bufio.NewScanner(outp)}
	if !c.out.Scan() || strings.HasPrefix(c.out.Text(), "error") {
		tb.Fatalf("the child %s did not start: %s", env, c.out.Text())
	}
	c.addr = c.out.Text()
	return c
}

// maxConns is how many relayed connections fit RLIMIT_NOFILE.
func maxConns(tb testing.TB) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	return int((lim.Cur - 100) / 2)
}

// checkFileLimit checks that need descriptors fit RLIMIT_NOFILE (Go raises
// the soft limit to the hard one at start).
func checkFileLimit(tb testing.TB, need uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	if lim.Cur < need {
		tb.Fatalf("the router needs %d file descriptors (2 per connection) and RLIMIT_NOFILE is %d: raise it (ulimit -n)", need, lim.Cur)
	}
}

// echoPingThenRead is the backend of idleConns' connections: it echoes their
// 4-byte ping, then reads until the connection ends.
func echoPingThenRead(c io.ReadWriter) {
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return
	}
	c.Write(buf)
	io.Copy(io.Discard, c)
}

// startIdleRouter starts a router that relays idle.example to a backend
// (echoPingThenRead) in this process, for idleConns.
func startIdleRouter(tb testing.TB) *testRouter {
	tb.Helper()
	backend := startTLSBackend(tb, "idle.example", func(c *tls.Conn) { echoPingThenRead(c) })
	return startRouter(tb, (&staticLookup{m: map[string]string{"idle.example": backend.addr}}).lookup, nil)
}

// idleConns opens n TLS sessions through the router at addr to the backend,
// each with one request and answer, and returns them open and idle.
func idleConns(tb testing.TB, addr string, n int) []*tls.Conn {
	tb.Helper()
	conns := make([]*tls.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	work := make(chan int)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: 30 * time.Second}, "tcp", addr,
					&tls.Config{ServerName: "idle.example", InsecureSkipVerify: true}) // memory, not trust, is measured
				if err != nil {
					errs <- err
					continue
				}
				buf := []byte("ping")
				if _, err := c.Write(buf); err == nil {
					_, err = io.ReadFull(c, buf)
				}
				if err != nil {
					errs <- err
					c.Close()
					continue
				}
				conns[i] = c
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatalf("open a connection through the router: %v", err)
	}
	return conns
}

func BenchmarkIdleConns(b *testing.B) {
	// 10,000 connections need 20,000 descriptors in the router; where
	// RLIMIT_NOFILE is lower, the largest count that fits is measured, and
	// the sub-benchmark's name says which.
	sizes := []int{2000, min(10000, maxConns(b))}
	if v := os.Getenv("ROUTER_MEMBENCH_CONNS"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				b.Fatalf("ROUTER_MEMBENCH_CONNS: %v", err)
			}
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			checkFileLimit(b, uint64(2*n+100))
			backend := startMemChild(b, memBackendEnv+"=1")
			child := startMemChild(b, memChildEnv+"="+backend.addr)
			start := child.stats(b, "stats")
			var open, closed, freed memStats
			for i := 0; i < b.N; i++ {
				conns := idleConns(b, child.addr, n)
				open = child.stats(b, "stats")
				if open.Conns != n {
					b.Fatalf("the router holds %d connections, want %d", open.Conns, n)
				}
				for _, c := range conns {
					c.Close()
				}
				deadline := time.Now().Add(30 * time.Second)
				for closed = child.stats(b, "stats"); closed.Conns > 0; closed = child.stats(b, "stats") {
					if time.Now().After(deadline) {
						b.Fatalf("the router still holds %d connections 30 s after they closed", closed.Conns)
					}
					time.Sleep(50 * time.Millisecond)
				}
				freed = child.stats(b, "free")
			}
			mib := func(v uint64) float64 { return float64(v) / (1 << 20) }
			b.ReportMetric(mib(start.RSS), "start-RSS-MiB")
			b.ReportMetric(mib(open.RSS), "open-RSS-MiB")
			b.ReportMetric(float64(open.RSS-start.RSS)/float64(n)/1024, "RSS-KiB/conn")
			b.ReportMetric(float64(open.InUse-start.InUse)/float64(n)/1024, "inuse-KiB/conn")
			b.ReportMetric(float64(open.Stack-start.Stack)/float64(n)/1024, "stack-KiB/conn")
			b.ReportMetric(mib(closed.RSS), "closed-RSS-MiB")
			b.ReportMetric(mib(closed.InUse), "closed-inuse-MiB")
			b.ReportMetric(mib(freed.RSS), "freed-RSS-MiB")
		})
	}
}

// TestIdleConnsHoldNoBuffer: relayed connections that moved bytes and then
// went idle hold no copy buffer (before, each held two of 32 KiB).
func TestIdleConnsHoldNoBuffer(t *testing.T) {
	tr := startIdleRouter(t)
	conns := idleConns(t, tr.addr, 50)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	waitFor(t, "idle connections to give their buffers back", func() bool { return buffersOut.Load() == 0 })
	tr.mu.Lock()
	n := tr.nconns
	tr.mu.Unlock()
	if n != 50 {
		t.Errorf("the router holds %d connections, want 50", n)
	}
}
