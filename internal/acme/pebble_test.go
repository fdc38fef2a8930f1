package acme_test

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	xacme "golang.org/x/crypto/acme"

	"github.com/mse-in-go/mse/internal/acme"
	"github.com/mse-in-go/mse/internal/testenv"
)

// tlsPort is a TLS listener on 127.0.0.1 standing for the router and the
// node: it answers validation connections with answer and others with the
// manager's certificate. It returns the port.
func tlsPort(t testing.TB, answer func(*tls.ClientHelloInfo) (*tls.Config, error), serving func() *tls.Certificate) int {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if acme.IsChallenge(hello) {
				return answer(hello)
			}
			return nil, nil
		},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := serving(); c != nil {
				return c, nil
			}
			return nil, errors.New("no certificate yet")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	testenv.ServeConns(t, ln, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if tc := c.(*tls.Conn); tc.Handshake() == nil {
			_, _ = io.WriteString(tc, "hello\n")
		}
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// switchable lets one listener serve the manager of the moment.
type switchable struct{ m atomic.Pointer[acme.Manager] }

func (s *switchable) answer(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	if m := s.m.Load(); m != nil {
		return m.ChallengeTLSConfig(hello)
	}
	return nil, errors.New("no manager")
}

func (s *switchable) serving() *tls.Certificate {
	if m := s.m.Load(); m != nil {
		return m.Certificate()
	}
	return nil
}

func nodeKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// start runs m until the test ends.
func start(t testing.TB, m *acme.Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run ended with %v, want context.Canceled", err)
		}
	})
}

// waitFor polls m's status until ok, for at most d.
func waitFor(t testing.TB, m *acme.Manager, d time.Duration, what string, ok func(acme.Status) bool) acme.Status {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		st := m.Status()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v; status %+v", what, d, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var domains = []string{"app.example.test", "www.app.example.test"}

// TestIssueTwoNames: a certificate for two names, through the challenge
// answers of ChallengeCertificate, for the node's own key, that a relying
// party trusting only the CA's issuing root accepts for both names.
func TestIssueTwoNames(t *testing.T) {
	t.Parallel()
	sw := &switchable{}
	port := tlsPort(t, sw.answer, sw.serving)
	ca := testenv.Pebble(t, testenv.PebbleOptions{TLSPort: port})
	key := nodeKey(t)
	m, err := acme.New(acme.Config{DirectoryURL: ca.DirectoryURL, Roots: ca.ServerRoots(), Email: "owner@example.test",
		Domains: domains, Key: key, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	sw.m.Store(m)
	if m.Certificate() != nil || m.Status().State != acme.StateObtaining {
		t.Fatalf("before Run: %v %+v", m.Certificate(), m.Status())
	}
	start(t, m)
	st := waitFor(t, m, time.Minute, "certificate", func(s acme.Status) bool { return s.State == acme.StateValid })
	c := m.Certificate()
	if c == nil || c.Leaf == nil {
		t.Fatalf("valid but no certificate: %+v", st)
	}
	if !key.PublicKey.Equal(c.Leaf.PublicKey) {
		t.Error("the issued leaf is not for Config.Key")
	}
	if c.PrivateKey != crypto.Signer(key) {
		t.Error("the served certificate does not use Config.Key")
	}
	if st.Serial != c.Leaf.SerialNumber.Text(16) || !st.NotAfter.Equal(c.Leaf.NotAfter) || st.Error != "" {
		t.Errorf("status %+v does not describe the leaf (serial %x, not after %v)", st, c.Leaf.SerialNumber, c.Leaf.NotAfter)
	}
	life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)
	if want := c.Leaf.NotAfter.Add(-life / 3); !st.NextAttempt.Equal(want) {
		t.Errorf("next attempt %v, want a third of the lifetime before NotAfter (%v)", st.NextAttempt, want)
	}
	// A relying party that trusts only the issuing root, for each name.
	for _, d := range domains {
		conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), &tls.Config{ServerName: d, RootCAs: ca.IssuerRoots()})
		if err != nil {
			t.Fatalf("%s: a client trusting the CA's root refuses the served certificate: %v", d, err)
		}
		got := conn.ConnectionState().PeerCertificates[0]
		conn.Close()
		if !key.PublicKey.Equal(got.PublicKey) {
			t.Errorf("%s: served key is not the node's", d)
		}
	}
	// No challenge stays pending once the order is done.
	if _, err := m.ChallengeCertificate(&tls.ClientHelloInfo{ServerName: domains[0], SupportedProtos: []string{acme.ALPNProto}}); err == nil {
		t.Error("a challenge certificate is still served after issuance")
	}
}

// TestRenewal: with a short lifetime the manager renews by itself, a third
// of the lifetime before the end, and serves the new certificate.
func TestRenewal(t *testing.T) {
	t.Parallel()
	sw := &switchable{}
	port := tlsPort(t, sw.answer, sw.serving)
	ca := testenv.Pebble(t, testenv.PebbleOptions{TLSPort: port, Validity: 4 * time.Second})
	key := nodeKey(t)
	m, err := acme.New(acme.Config{DirectoryURL: ca.DirectoryURL, Roots: ca.ServerRoots(), Domains: domains[:1], Key: key, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	sw.m.Store(m)
	start(t, m)
	first := waitFor(t, m, time.Minute, "certificate", func(s acme.Status) bool { return s.State == acme.StateValid })
	second := waitFor(t, m, 30*time.Second, "renewal", func(s acme.Status) bool { return s.State == acme.StateValid && s.Serial != first.Serial })
	if !second.LastAttempt.Before(first.NotAfter) || second.LastAttempt.Before(first.NextAttempt) {
		t.Errorf("renewed at %v; want between the renewal time %v and the first certificate's end %v", second.LastAttempt, first.NextAttempt, first.NotAfter)
	}
	if c := m.Certificate(); c.Leaf.SerialNumber.Text(16) != second.Serial || !key.PublicKey.Equal(c.Leaf.PublicKey) {
		t.Errorf("served certificate %x is not the renewed one %s for the node's key", c.Leaf.SerialNumber, second.Serial)
	}
}

// TestCAErrorReported: the CA's refusal is reported with the step, the
// domain and the CA's problem type and detail; no certificate; a retry is
// scheduled.
func TestCAErrorReported(t *testing.T) {
	t.Parallel()
	sw := &switchable{}
	port := tlsPort(t, sw.answer, sw.serving)
	ca := testenv.Pebble(t, testenv.PebbleOptions{TLSPort: port, BlockedDomains: []string{"blocked.example.test"}})
	m, err := acme.New(acme.Config{DirectoryURL: ca.DirectoryURL, Roots: ca.ServerRoots(), Domains: []string{"blocked.example.test"}, Key: nodeKey(t), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	sw.m.Store(m)
	start(t, m)
	st := waitFor(t, m, time.Minute, "failure", func(s acme.Status) bool { return s.State == acme.StateFailed })
	for _, want := range []string{"create the order", "blocked.example.test", "rejectedIdentifier", "forbidden by policy"} {
		if !strings.Contains(st.Error, want) {
			t.Errorf("error %q does not say %q", st.Error, want)
		}
	}
	if d := st.NextAttempt.Sub(st.LastAttempt); d < 29*time.Second || d > 31*time.Second+time.Second {
		t.Errorf("retry %v after the attempt, want about 30s", d)
	}
	if m.Certificate() != nil {
		t.Error("a certificate after a refusal")
	}
}

// TestAttackerAnswersChallenge: whoever holds the app's TLS port (a router
// that answers acme-tls/1 itself) cannot complete the node's order: without
// the node's account key its answer is refused by the CA, the cause is
// named, and nothing is issued.
func TestAttackerAnswersChallenge(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, cause string
		cert        func(t *testing.T, domain string) tls.Certificate
	}{
		{"self-signed", "Missing acmeValidationV1 extension", func(t *testing.T, d string) tls.Certificate { return selfSigned(t, d) }},
		{"own account key", "Invalid acmeValidation extension value", func(t *testing.T, d string) tls.Certificate {
			// A well-formed challenge answer, keyed to the attacker's own
			// account: it does not know the node's.
			c, err := (&xacme.Client{Key: nodeKey(t)}).TLSALPN01ChallengeCert("token-the-attacker-saw", d)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var m *acme.Manager
			port := tlsPort(t, func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
				return &tls.Config{Certificates: []tls.Certificate{tc.cert(t, hello.ServerName)}, NextProtos: []string{acme.ALPNProto}}, nil
			}, func() *tls.Certificate { return m.Certificate() })
			ca := testenv.Pebble(t, testenv.PebbleOptions{TLSPort: port})
			var err error
			m, err = acme.New(acme.Config{DirectoryURL: ca.DirectoryURL, Roots: ca.ServerRoots(), Domains: domains[:1], Key: nodeKey(t), Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			start(t, m)
			st := waitFor(t, m, time.Minute, "failure", func(s acme.Status) bool { return s.State == acme.StateFailed })
			for _, want := range []string{"validate the tls-alpn-01 challenge for " + domains[0], "unauthorized", tc.cause} {
				if !strings.Contains(st.Error, want) {
					t.Errorf("error %q does not say %q", st.Error, want)
				}
			}
			if m.Certificate() != nil {
				t.Error("a certificate was served")
			}
			if strings.Contains(ca.Log(), "Issued certificate") {
				t.Error("the CA issued a certificate")
			}
		})
	}
}

// TestRunThroughEgress: through a CONNECT proxy on a unix socket (what the
// runner gives a sandboxed node), the manager gets its certificate; the
// proxy saw only the CA's host and port.
func TestRunThroughEgress(t *testing.T) {
	t.Parallel()
	sw := &switchable{}
	port := tlsPort(t, sw.answer, sw.serving)
	ca := testenv.Pebble(t, testenv.PebbleOptions{TLSPort: port})
	sock := filepath.Join(t.TempDir(), "egress.sock")
	targets := connectProxy(t, sock)
	m, err := acme.New(acme.Config{DirectoryURL: ca.DirectoryURL, Domains: domains[:1], Key: nodeKey(t), Logger: testLogger(t),
		HTTPClient: acme.EgressClient("unix:"+sock, ca.ServerRoots())})
	if err != nil {
		t.Fatal(err)
	}
	sw.m.Store(m)
	start(t, m)
	waitFor(t, m, time.Minute, "certificate", func(s acme.Status) bool { return s.State == acme.StateValid })
	want := strings.TrimPrefix(strings.TrimSuffix(ca.DirectoryURL, "/dir"), "https://")
	got := targets()
	if len(got) == 0 {
		t.Fatal("nothing went through the proxy")
	}
	for _, g := range got {
		if g != want {
			t.Errorf("CONNECT %s, want only %s", g, want)
		}
	}
}

// TestEgressClientBadValue: a client for an egress value that is not
// unix:PATH fails every request, naming the value.
func TestEgressClientBadValue(t *testing.T) {
	t.Parallel()
	_, err := acme.EgressClient("tcp:1.2.3.4:8080", nil).Get("https://ca.example.test/dir")
	if err == nil || !strings.Contains(err.Error(), `egress "tcp:1.2.3.4:8080" is not unix:PATH`) {
		t.Errorf("error %v", err)
	}
	_, err = acme.EgressClient("unix:"+filepath.Join(t.TempDir(), "none.sock"), nil).Get("https://ca.example.test/dir")
	if err == nil || !strings.Contains(err.Error(), "egress proxy") {
		t.Errorf("missing socket: error %v", err)
	}
}

// connectProxy serves a minimal CONNECT proxy on sock for the test and
// returns a function listing the targets it relayed to.
func connectProxy(t testing.TB, sock string) func() []string {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	var seen []string
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil || req.Method != http.MethodConnect {
					return
				}
				mu.Lock()
				seen = append(seen, req.RequestURI)
				mu.Unlock()
				up, err := net.Dial("tcp", req.RequestURI)
				if err != nil {
					_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
					return
				}
				defer up.Close()
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\n")
				go func() { _, _ = io.Copy(up, br); up.Close() }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

func selfSigned(t testing.TB, name string) tls.Certificate {
	t.Helper()
	k := nodeKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

// BenchmarkRunToValid: the time from Run to a valid certificate for one
// name against Pebble in-process (no validation sleep), everything on
// loopback: account, order, tls-alpn-01, finalization, the chain's check.
//
//	go test ./internal/acme -run '^$' -bench RunToValid -benchtime 20x
func BenchmarkRunToValid(b *testing.B) {
	sw := &switchable{}
	port := tlsPort(b, sw.answer, sw.serving)
	ca := testenv.Pebble(b, testenv.PebbleOptions{TLSPort: port})
	key := nodeKey(b)
	roots := ca.ServerRoots()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m, err := acme.New(acme.Config{DirectoryURL: ca.DirectoryURL, Roots: roots, Domains: domains[:1], Key: key,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			b.Fatal(err)
		}
		sw.m.Store(m)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		for m.Status().State != acme.StateValid {
			if st := m.Status(); st.State == acme.StateFailed {
				b.Fatalf("failed: %s", st.Error)
			}
			time.Sleep(time.Millisecond)
		}
		cancel()
		<-done
	}
}
