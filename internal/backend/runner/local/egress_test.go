package local

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/spec"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// echoServer answers every line with "echo: " and the line, on 127.0.0.1.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := io.WriteString(c, "echo: "+sc.Text()+"\n"); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// testEgress serves an egress proxy relaying to allow, in a temporary run
// directory; it returns the proxy and its log.
func testEgress(t *testing.T, allow string, private bool, tune func(*egressProxy)) (*egressProxy, *lockedBuffer) {
	t.Helper()
	logs := &lockedBuffer{}
	r := &Runner{cfg: Config{EgressPrivate: private}, log: slog.New(slog.NewTextHandler(logs, nil)), egressTune: tune}
	run, err := os.MkdirTemp("", "egress-") // short: a unix socket path is at most 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(run) })
	p, err := r.startEgress(run, os.Getuid(), allow, "app1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	return p, logs
}

// connect sends req on a new connection to p and returns the connection and
// the answer's status line.
func connect(t *testing.T, p *egressProxy, req string) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	c, err := net.Dial("unix", p.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	// The proxy may answer (503 at the connection cap) and close before it
	// reads the request: a failed write is fine as long as the answer came.
	_, werr := io.WriteString(c, req)
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("no answer to %q: %v (write: %v)", req, err, werr)
	}
	return c, br, strings.TrimSpace(line)
}

// TestEgressRelaysAllowed: CONNECT to the allowed host:port relays both
// ways, with what the node sent early after its request.
func TestEgressRelaysAllowed(t *testing.T) {
	t.Parallel()
	target := echoServer(t)
	p, _ := testEgress(t, target, true, nil)
	c, br, status := connect(t, p, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\nearly\n")
	if status != "HTTP/1.1 200 Connection established" {
		t.Fatalf("status %q", status)
	}
	if l, _ := br.ReadString('\n'); l != "\r\n" {
		t.Fatalf("after the status: %q", l)
	}
	if l, _ := br.ReadString('\n'); l != "echo: early\n" {
		t.Errorf("early bytes: %q", l)
	}
	io.WriteString(c, "later\n")
	if l, _ := br.ReadString('\n'); l != "echo: later\n" {
		t.Errorf("relay: %q", l)
	}
	if fi, err := os.Stat(p.sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %v %v, want mode 0600", fi, err)
	}
}

// TestEgressRefuses: everything but CONNECT to the allowed target is
// refused with its status, and the log names the refused target.
func TestEgressRefuses(t *testing.T) {
	t.Parallel()
	target := echoServer(t)
	p, logs := testEgress(t, target, true, nil)
	for _, tc := range []struct {
		name, req, status, log string
	}{
		{"other port", "CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: x\r\n\r\n", "403", "target=127.0.0.1:1"},
		{"other host", "CONNECT ca.example.test:443 HTTP/1.1\r\nHost: x\r\n\r\n", "403", "target=ca.example.test:443"},
		{"GET", "GET http://" + target + "/ HTTP/1.1\r\nHost: x\r\n\r\n", "405", "only CONNECT"},
		{"no port", "CONNECT 127.0.0.1 HTTP/1.1\r\nHost: x\r\n\r\n", "400", "is not host:port"},
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "400", "not an HTTP request"},
		{"oversized header", "CONNECT " + target + " HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("a", egressMaxHeader) + "\r\n\r\n", "431", "larger than 4096 bytes"},
		{"many headers", "CONNECT " + target + " HTTP/1.1\r\n" + strings.Repeat("X-A: b\r\n", egressMaxHeader/8) + "\r\n", "431", "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br, status := connect(t, p, tc.req)
			if !strings.HasPrefix(status, "HTTP/1.1 "+tc.status+" ") {
				t.Errorf("status %q, want %s", status, tc.status)
			}
			rest, _ := io.ReadAll(br) // the proxy closes
			c.Close()
			if !strings.Contains(logs.String(), tc.log) || !strings.Contains(logs.String(), "egress refused") {
				t.Errorf("log does not say %q:\n%s", tc.log, logs.String())
			}
			if tc.status == "403" && !strings.Contains(string(rest), "only "+target+" is allowed") {
				t.Errorf("403 body %q", rest)
			}
		})
	}
}

// TestEgressOperatorNetwork: without EgressPrivate, the allowed name must
// not lead into the operator's network, as a literal or once resolved.
func TestEgressOperatorNetwork(t *testing.T) {
	t.Parallel()
	target := echoServer(t)
	p, logs := testEgress(t, target, false, nil)
	_, _, status := connect(t, p, "CONNECT "+target+" HTTP/1.1\r\nHost: x\r\n\r\n")
	if !strings.HasPrefix(status, "HTTP/1.1 403 ") || !strings.Contains(logs.String(), "operator's network") {
		t.Errorf("loopback CA: %q\n%s", status, logs.String())
	}

	_, port, _ := net.SplitHostPort(target)
	var dialed []string
	p2, logs2 := testEgress(t, "ca.example.test:"+port, false, func(p *egressProxy) {
		p.resolve = func(context.Context, string) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("::ffff:192.168.1.1"), netip.MustParseAddr("169.254.169.254")}, nil
		}
		p.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialed = append(dialed, addr)
			return nil, io.EOF
		}
	})
	_, _, status = connect(t, p2, "CONNECT CA.example.test:"+port+" HTTP/1.1\r\nHost: x\r\n\r\n")
	if !strings.HasPrefix(status, "HTTP/1.1 403 ") || len(dialed) != 0 || !strings.Contains(logs2.String(), "169.254.169.254 is an address of the operator's network") {
		t.Errorf("a name resolving into the operator's network: %q, dialed %v\n%s", status, dialed, logs2.String())
	}

	for _, tc := range []struct {
		addr string
		op   bool
	}{
		{"127.0.0.1", true}, {"::1", true}, {"10.0.0.1", true}, {"172.16.0.1", true}, {"192.168.0.1", true},
		{"169.254.169.254", true}, {"fe80::1", true}, {"fd00::1", true}, {"100.64.0.1", true}, {"0.0.0.0", true}, {"::", true},
		{"224.0.0.1", true}, {"8.8.8.8", false}, {"2001:4860:4860::8888", false}, {"172.32.0.1", false},
	} {
		if got := operatorNetwork(netip.MustParseAddr(tc.addr)); got != tc.op {
			t.Errorf("operatorNetwork(%s) = %v", tc.addr, got)
		}
	}
}

// TestEgressLimits: connections per node, the handshake deadline and the
// idle timeout are bounded; close ends everything and removes the socket.
func TestEgressLimits(t *testing.T) {
	t.Parallel()
	target := echoServer(t)
	p, logs := testEgress(t, target, true, func(p *egressProxy) {
		p.handshake, p.idle = 300*time.Millisecond, 300*time.Millisecond
	})
	// Silent connections hold every slot until the handshake deadline.
	var silent []net.Conn
	for i := 0; i < egressMaxConns; i++ {
		c, err := net.Dial("unix", p.sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	time.Sleep(50 * time.Millisecond)
	_, _, status := connect(t, p, "CONNECT "+target+" HTTP/1.1\r\nHost: x\r\n\r\n")
	if !strings.HasPrefix(status, "HTTP/1.1 503 ") || !strings.Contains(logs.String(), "too many connections") {
		t.Errorf("connection beyond the cap: %q", status)
	}
	for _, c := range silent {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("a silent connection was not closed at the handshake deadline: %v", err)
		}
	}
	// The slots are free again; an idle relay ends.
	c, br, status := connect(t, p, "CONNECT "+target+" HTTP/1.1\r\nHost: x\r\n\r\n")
	if status != "HTTP/1.1 200 Connection established" {
		t.Fatalf("after the silent ones: %q", status)
	}
	br.ReadString('\n')
	startIdle := time.Now()
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("idle relay: %v", err)
	}
	if d := time.Since(startIdle); d > 3*time.Second {
		t.Errorf("idle relay ended after %v", d)
	}
	c.Close()

	// Close: the open relay ends, the socket goes.
	c, br, _ = connect(t, p, "CONNECT "+target+" HTTP/1.1\r\nHost: x\r\n\r\n")
	br.ReadString('\n')
	p.close()
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("relay after close: %v", err)
	}
	if _, err := os.Stat(p.sock); !os.IsNotExist(err) {
		t.Errorf("socket after close: %v", err)
	}
	if _, err := net.Dial("unix", p.sock); err == nil {
		t.Error("the proxy answers after close")
	}
}

func TestEgressTarget(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode, url, want, err string
	}{
		{spec.TLSSelf, "", "", ""},
		{spec.TLSACME, "https://acme-v02.api.letsencrypt.org/directory", "acme-v02.api.letsencrypt.org:443", ""},
		{spec.TLSACME, "https://CA.Example.Test:14000/dir", "ca.example.test:14000", ""},
		{spec.TLSACME, "https://[2001:db8::1]/dir", "[2001:db8::1]:443", ""},
		{spec.TLSACME, "http://ca.example.test/dir", "", "not an https URL"},
	} {
		s := spec.Spec{TLSMode: tc.mode}
		if tc.mode == spec.TLSACME {
			s.ACME = &spec.ACME{DirectoryURL: tc.url}
		}
		got, err := egressTarget(s)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s %s: %q %v, want %q %q", tc.mode, tc.url, got, err, tc.want, tc.err)
		}
	}
}

// TestHandleEgress: the egress target survives in the handle (a restarted
// runner serves it again when it adopts the node).
func TestHandleEgress(t *testing.T) {
	sb := &sandbox{cid: "app1", dir: "/d/app1", run: "/d/app1/run", pid: 7, egressTarget: "ca.example.test:443"}
	b, _ := json.Marshal(sb.handle())
	h, err := parseHandle(b)
	if err != nil || h.Egress != "ca.example.test:443" {
		t.Errorf("%s: %+v %v", b, h, err)
	}
}

func FuzzReadConnect(f *testing.F) {
	f.Add([]byte("CONNECT ca.example.test:443 HTTP/1.1\r\nHost: ca.example.test:443\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte("CONNECT [::1]:443 HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cr := &capReader{r: bytes.NewReader(b), n: egressMaxHeader}
		target, ref := readConnect(bufio.NewReaderSize(cr, egressMaxHeader))
		if ref != nil {
			if ref.code < 400 || ref.code > 599 || target != "" {
				t.Fatalf("refusal %+v with target %q", ref, target)
			}
			if http.StatusText(ref.code) == "" {
				t.Fatalf("status %d", ref.code)
			}
			return
		}
		host, port, err := net.SplitHostPort(target)
		if err != nil || host == "" || port == "" || strings.ToLower(host) != host {
			t.Fatalf("target %q accepted", target)
		}
	})
}
