package router

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sim"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/ratls"
)

var (
	opMeasurement = sha256.Sum256([]byte("mse-node, router test"))
	opRuntime     = sha256.Sum256([]byte("runtime image"))
	opCode        = sha256.Sum256([]byte("bundle"))
	opConfig      = sha256.Sum256([]byte("spec"))
)

type simIssuer struct {
	p  *sim.Platform
	id sim.Identity
}

func (i simIssuer) Type() string { return attest.TypeSim }
func (i simIssuer) Issue(_ context.Context, rd [64]byte) ([]byte, error) {
	return i.p.Quote(i.id, rd, time.Now())
}

// fakeNode is an HTTPS server with a sim RA-TLS certificate, as mse-node serves in operator mode.
type fakeNode struct {
	addr     string
	cert     *x509.Certificate
	requests atomic.Int32
}

// startFakeNode serves, for domains, an RA-TLS certificate from plat binding app "app-op" and the
// test digests. Its handler answers what it saw of the request.
func startFakeNode(t *testing.T, plat *sim.Platform, domains ...string) *fakeNode {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	iss := simIssuer{p: plat, id: sim.Identity{Measurement: opMeasurement, Signer: sim.DevSigner, RuntimeDigest: opRuntime}}
	der, _, err := ratls.NewCertificate(context.Background(), key, iss, ratls.Template{
		DNSNames: domains, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		Claims: attest.Claims{AppID: "app-op", CodeDigest: opCode[:], ConfigDigest: opConfig[:], RuntimeDigest: opRuntime[:], TLSMode: TLSModeOperator},
	})
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	n := &fakeNode{cert: cert}
	srv := &http.Server{
		ErrorLog: log.New(io.Discard, "", 0), // the refused handshakes are the tests' point
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.requests.Add(1)
			fmt.Fprintf(w, "host=%s path=%s proto=%s xff=%s xfproto=%s xfhost=%s", r.Host, r.URL.Path, r.Proto,
				r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"), r.Header.Get("X-Forwarded-Host"))
		}),
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}},
			NextProtos:   []string{"h2", "http/1.1", nodeapi.ALPNRATLS},
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	n.addr = ln.Addr().String()
	return n
}

type opEnv struct {
	tr       *testRouter
	node     *fakeNode
	opCert   tls.Certificate
	opPool   *x509.CertPool
	verifies atomic.Int32
}

// startOperator starts a router whose Lookup answers routes(name), with an operator certificate for
// *.mse.test and RATLSVerifier trusting plat.
func startOperator(t *testing.T, plat *sim.Platform, routes func(name string) (Route, error)) *opEnv {
	t.Helper()
	e := &opEnv{}
	e.opCert, e.opPool = testCert(t, "*.mse.test")
	v := sim.NewVerifier(plat.RootCertificate(), nil)
	verify := RATLSVerifier(func(tt string) (attest.Verifier, error) {
		if tt != attest.TypeSim {
			return nil, fmt.Errorf("no verifier for %s", tt)
		}
		return v, nil
	}, &attest.Policy{TEETypes: []string{attest.TypeSim}, AllowSimulation: true, Measurements: []string{hex.EncodeToString(opMeasurement[:])}}, nil)
	e.tr = startRouter(t, func(_ context.Context, name string) (Route, error) { return routes(name) }, func(r *Router) {
		r.Operator = &Operator{
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &e.opCert, nil },
			VerifyNode: func(ctx context.Context, c *x509.Certificate, rt Route) error {
				e.verifies.Add(1)
				return verify(ctx, c, rt)
			},
		}
	})
	return e
}

func opRoute(addr, name string) Route {
	return Route{Addr: addr, TLSMode: TLSModeOperator, AppID: "app-op", Domain: name,
		CodeDigest: opCode[:], ConfigDigest: opConfig[:], RuntimeDigest: opRuntime[:]}
}

// client is an HTTPS client that dials the router whatever the URL's host.
func (e *opEnv) client(t *testing.T, h2 bool) *http.Client {
	tp := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", e.tr.addr)
		},
		TLSClientConfig:   &tls.Config{RootCAs: e.opPool},
		ForceAttemptHTTP2: h2,
	}
	t.Cleanup(tp.CloseIdleConnections)
	return &http.Client{Transport: tp, Timeout: 10 * time.Second}
}

func get(t *testing.T, c *http.Client, url string, hdr ...string) (int, string, *http.Response) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp
}

// TestOperatorTerminates: a browser-like client of an operator-mode app sees the operator's certificate,
// over HTTP/1.1 and HTTP/2; the node sees the request with X-Forwarded-* set by the router (the client's
// own dropped); the node's certificate is verified once and then cached.
func TestOperatorTerminates(t *testing.T) {
	plat, _ := sim.NewPlatformInMemory()
	node := startFakeNode(t, plat, "app.mse.test")
	e := startOperator(t, plat, func(name string) (Route, error) {
		if name == "app.mse.test" {
			return opRoute(node.addr, name), nil
		}
		return Route{}, ErrUnknownServerName
	})
	for _, h2 := range []bool{false, true} {
		code, body, resp := get(t, e.client(t, h2), "https://app.mse.test/some/path", "X-Forwarded-For", "6.6.6.6", "X-Forwarded-Host", "evil.example")
		if code != 200 {
			t.Fatalf("h2=%v: status %d: %s", h2, code, body)
		}
		if got := resp.TLS.PeerCertificates[0]; !got.Equal(e.opCert.Leaf) {
			t.Fatalf("h2=%v: the client did not see the operator's certificate", h2)
		}
		wantProto := "HTTP/1.1"
		if h2 {
			wantProto = "HTTP/2.0"
		}
		if resp.Proto != wantProto {
			t.Errorf("client protocol %s, want %s", resp.Proto, wantProto)
		}
		for _, want := range []string{"host=app.mse.test", "path=/some/path", "xff=127.0.0.1 ", "xfproto=https", "xfhost=app.mse.test"} {
			if !strings.Contains(body+" ", want) {
				t.Errorf("h2=%v: node saw %q, want %q in it", h2, body, want)
			}
		}
	}
	if n := node.requests.Load(); n != 2 {
		t.Errorf("node served %d requests, want 2", n)
	}
	if n := e.verifies.Load(); n != 1 {
		t.Errorf("node certificate verified %d times, want once (cached by fingerprint)", n)
	}
	if e.tr.metric(t, "mse_router_connections_routed_total") != 2 {
		t.Errorf("routed = %v, want 2", e.tr.metric(t, "mse_router_connections_routed_total"))
	}
	// A request for another name on this connection (HTTP/2 coalescing under a wildcard) is misdirected.
	code, body, _ := get(t, e.client(t, true), "https://app.mse.test/", "Host", "other.mse.test")
	if code != http.StatusMisdirectedRequest || !strings.Contains(body, "this connection serves app.mse.test") {
		t.Errorf("request for another host: %d %q, want 421", code, body)
	}
	if node.requests.Load() != 2 {
		t.Error("a misdirected request reached the node")
	}
}

// TestOperatorPassthroughRATLS: a client offering mse-ratls/1 (stage 2, mse cloud verify) reaches the
// enclave's own TLS: it sees the node's RA-TLS certificate, never the operator's.
func TestOperatorPassthroughRATLS(t *testing.T) {
	plat, _ := sim.NewPlatformInMemory()
	node := startFakeNode(t, plat, "app.mse.test")
	e := startOperator(t, plat, func(name string) (Route, error) { return opRoute(node.addr, name), nil })
	for _, protos := range [][]string{{nodeapi.ALPNRATLS}, {"h2", nodeapi.ALPNRATLS}} {
		raw, err := net.Dial("tcp", e.tr.addr)
		if err != nil {
			t.Fatal(err)
		}
		c := tls.Client(raw, &tls.Config{ServerName: "app.mse.test", NextProtos: protos, InsecureSkipVerify: true})
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := c.Handshake(); err != nil {
			t.Fatalf("ALPN %q: %v", protos, err)
		}
		cs := c.ConnectionState()
		if !cs.PeerCertificates[0].Equal(node.cert) {
			t.Fatalf("ALPN %q: the client did not see the node's RA-TLS certificate", protos)
		}
		if cs.NegotiatedProtocol != protos[0] {
			t.Errorf("negotiated %q, want %q (the node's choice)", cs.NegotiatedProtocol, protos[0])
		}
		c.Close()
	}
	if e.verifies.Load() != 0 {
		t.Error("the router verified a node for a passthrough connection")
	}
}

// TestOperatorNodeFailsVerification: a node whose certificate does not attest what the route expects
// (another config, another app, another simulated platform) gets no request: 502 for the client, and a
// log line with the cause.
func TestOperatorNodeFailsVerification(t *testing.T) {
	plat, _ := sim.NewPlatformInMemory()
	foreign, _ := sim.NewPlatformInMemory()
	node := startFakeNode(t, plat, "config.mse.test", "other-app.mse.test")
	foreignNode := startFakeNode(t, foreign, "foreign.mse.test")
	wrongConfig := sha256.Sum256([]byte("the operator changed the spec"))
	e := startOperator(t, plat, func(name string) (Route, error) {
		switch name {
		case "config.mse.test":
			rt := opRoute(node.addr, name)
			rt.ConfigDigest = wrongConfig[:]
			return rt, nil
		case "other-app.mse.test":
			rt := opRoute(node.addr, name)
			rt.AppID = "app-other"
			return rt, nil
		case "name.mse.test": // the node's certificate is not for it
			return opRoute(node.addr, name), nil
		case "foreign.mse.test":
			return opRoute(foreignNode.addr, name), nil
		}
		return Route{}, ErrUnknownServerName
	})
	for name, cause := range map[string]string{
		"config.mse.test":    "config digest",
		"other-app.mse.test": "this is another app's node",
		"name.mse.test":      "not for name.mse.test",
		"foreign.mse.test":   "not genuine",
	} {
		t.Run(name, func(t *testing.T) {
			code, body, _ := get(t, e.client(t, false), "https://"+name+"/")
			if code != http.StatusBadGateway || !strings.Contains(body, "failed the router's verification") {
				t.Fatalf("status %d %q, want 502 naming the verification", code, body)
			}
			if strings.Contains(body, cause) {
				t.Errorf("the client was told the cause %q; it belongs in the operator's log", cause)
			}
			logs := e.tr.logs.String()
			if !strings.Contains(logs, "failed verification") || !strings.Contains(logs, cause) {
				t.Errorf("log does not name the cause %q:\n%s", cause, logs)
			}
		})
	}
	if n := node.requests.Load() + foreignNode.requests.Load(); n != 0 {
		t.Errorf("nodes that failed verification served %d requests", n)
	}
}

// TestOperatorOtherModesPassThrough: with an Operator configured, apps of the other modes are relayed
// byte for byte (the client sees the node's own certificate), ACME's tls-alpn-01 included.
func TestOperatorOtherModesPassThrough(t *testing.T) {
	plat, _ := sim.NewPlatformInMemory()
	node := startFakeNode(t, plat, "app.mse.test")
	e := startOperator(t, plat, func(name string) (Route, error) {
		mode := strings.TrimSuffix(name, ".mse.test")
		if mode == "legacy" {
			mode = ""
		}
		return Route{Addr: node.addr, TLSMode: mode, AppID: "app-op", Domain: name}, nil
	})
	for _, mode := range []string{"self", "owner", "acme", "legacy"} {
		for _, protos := range [][]string{nil, {"h2"}, {ALPNACMETLS}} {
			raw, err := net.Dial("tcp", e.tr.addr)
			if err != nil {
				t.Fatal(err)
			}
			c := tls.Client(raw, &tls.Config{ServerName: mode + ".mse.test", NextProtos: protos, InsecureSkipVerify: true})
			c.SetDeadline(time.Now().Add(10 * time.Second))
			err = c.Handshake()
			if protos != nil && protos[0] == ALPNACMETLS {
				// The fake node does not speak acme-tls/1: the handshake fails at the node, not the router.
				if err == nil || !strings.Contains(err.Error(), "no application protocol") {
					t.Fatalf("mode %q, ALPN %q: %v, want the node's refusal", mode, protos, err)
				}
				c.Close()
				continue
			}
			if err != nil {
				t.Fatalf("mode %q, ALPN %q: %v", mode, protos, err)
			}
			if !c.ConnectionState().PeerCertificates[0].Equal(node.cert) {
				t.Fatalf("mode %q: the router terminated TLS", mode)
			}
			c.Close()
		}
	}
	if e.verifies.Load() != 0 {
		t.Error("the router verified nodes of other modes")
	}
}

// TestOperatorNotConfigured: without an Operator, an operator-mode route is refused (the backend
// accepts no such app then); mse-ratls/1 still passes.
func TestOperatorNotConfigured(t *testing.T) {
	plat, _ := sim.NewPlatformInMemory()
	node := startFakeNode(t, plat, "app.mse.test")
	tr := startRouter(t, func(_ context.Context, name string) (Route, error) { return opRoute(node.addr, name), nil }, nil)
	raw, err := net.Dial("tcp", tr.addr)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, &tls.Config{ServerName: "app.mse.test", InsecureSkipVerify: true})
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Fatalf("handshake %v, want an internal_error alert", err)
	}
	c.Close()
	if !strings.Contains(tr.logs.String(), "no operator certificate is configured") {
		t.Errorf("refusal not logged:\n%s", tr.logs.String())
	}
	raw, _ = net.Dial("tcp", tr.addr)
	c = tls.Client(raw, &tls.Config{ServerName: "app.mse.test", NextProtos: []string{nodeapi.ALPNRATLS}, InsecureSkipVerify: true})
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil || !c.ConnectionState().PeerCertificates[0].Equal(node.cert) {
		t.Fatalf("mse-ratls/1 without an Operator: %v", err)
	}
	c.Close()
}

// TestOperatorShutdown: idle terminated connections end at Shutdown, and the router's bookkeeping with
// them (connections_active back to 0).
func TestOperatorShutdown(t *testing.T) {
	plat, _ := sim.NewPlatformInMemory()
	node := startFakeNode(t, plat, "app.mse.test")
	e := startOperator(t, plat, func(name string) (Route, error) { return opRoute(node.addr, name), nil })
	c := e.client(t, true)
	if code, body, _ := get(t, c, "https://app.mse.test/"); code != 200 {
		t.Fatalf("status %d %s", code, body)
	}
	if e.tr.metric(t, "mse_router_connections_active") != 1 {
		t.Fatalf("active = %v, want the idle keep-alive connection", e.tr.metric(t, "mse_router_connections_active"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.tr.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	waitFor(t, "connections to end", func() bool { return e.tr.metric(t, "mse_router_connections_active") == 0 })
}

// TestOperatorVerifyCache: a node certificate verified for a route is trusted for VerifyTTL by the
// Operator's clock (DefaultVerifyTTL when zero), never past its NotAfter, and only for that route; a
// failed verification is not remembered.
func TestOperatorVerifyCache(t *testing.T) {
	cert, _ := testCert(t, "app.mse.test")
	rt := opRoute("127.0.0.1:1", "app.mse.test")
	other := rt
	other.AppID = "app-other"
	type step struct {
		at    time.Duration // after the first verification's time
		rt    Route
		calls int // VerifyNode calls so far, want
	}
	for _, c := range []struct {
		name string
		ttl  time.Duration
		// start is the first verification's time, before the certificate's NotAfter.
		start time.Duration
		fail  bool
		steps []step
	}{
		{"ttl", time.Minute, time.Hour, false, []step{{0, rt, 1}, {59 * time.Second, rt, 1}, {time.Minute, rt, 2}, {time.Minute + 59*time.Second, rt, 2}, {2 * time.Minute, rt, 3}}},
		{"default ttl", 0, time.Hour, false, []step{{0, rt, 1}, {DefaultVerifyTTL - time.Second, rt, 1}, {DefaultVerifyTTL, rt, 2}}},
		{"not after", time.Minute, 30 * time.Second, false, []step{{0, rt, 1}, {29 * time.Second, rt, 1}, {30 * time.Second, rt, 2}, {31 * time.Second, rt, 3}}},
		{"per route", time.Minute, time.Hour, false, []step{{0, rt, 1}, {time.Second, other, 2}, {2 * time.Second, rt, 2}, {3 * time.Second, other, 2}}},
		{"failure not cached", time.Minute, time.Hour, true, []step{{0, rt, 1}, {time.Second, rt, 2}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := cert.Leaf.NotAfter.Add(-c.start)
			now := start
			calls := 0
			term := &terminator{verified: map[string]time.Time{}, op: &Operator{
				VerifyTTL: c.ttl,
				Now:       func() time.Time { return now },
				VerifyNode: func(_ context.Context, got *x509.Certificate, _ Route) error {
					calls++
					if !got.Equal(cert.Leaf) {
						t.Error("VerifyNode got another certificate")
					}
					if c.fail {
						return fmt.Errorf("the node attests another config")
					}
					return nil
				},
			}}
			for _, s := range c.steps {
				now = start.Add(s.at)
				err := term.verify(context.Background(), cert.Leaf, s.rt)
				if (err != nil) != c.fail {
					t.Fatalf("at +%s: verify = %v, want failure %v", s.at, err, c.fail)
				}
				if calls != s.calls {
					t.Fatalf("at +%s (app %s): VerifyNode called %d times, want %d", s.at, s.rt.AppID, calls, s.calls)
				}
			}
		})
	}
}
