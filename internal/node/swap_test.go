package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/appverify"
	"github.com/mse-in-go/mse/internal/ratls"
	"github.com/mse-in-go/mse/internal/testenv"
)

// TestSwappedCertificateCaught: a router that terminates the app's TLS with
// a certificate a CA issued to the operator for the app's domain (trusted
// by the client's roots) and forwards the requests to the node, as the
// attack in issue 9 does. Browsers would accept it; verify must not: the
// key is not the one the enclave attests, and the evidence it forwards is
// bound to the router's own connection.
func TestSwappedCertificateCaught(t *testing.T) {
	b := pyBundle(t, nil)
	tn := startNode(t, b, baseSpec())
	chainPEM, keyPEM, _ := ownerPKI(t, []string{"app.example"}, time.Now().Add(24*time.Hour))
	opCert, err := tls.X509KeyPair([]byte(chainPEM), []byte(keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	ca, _ := x509.ParseCertificate(opCert.Certificate[1])
	roots.AddCert(ca)

	target, _ := url.Parse("https://" + tn.addr)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "app.example"}}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{opCert}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: proxy}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	// Through the interposing router: refused, naming the cause.
	vo := appverify.Options{Domain: "app.example", Addr: ln.Addr().String(), RATLS: tn.ratlsOptions(t), Roots: roots}
	// The router cannot pass a direct connection through either (it
	// terminates everything): verify says the enclave is unreachable.
	_, err = appverify.Verify(context.Background(), vo)
	if err == nil || !strings.Contains(err.Error(), "not terminated by the enclave") {
		t.Fatalf("verify through a terminating router: %v", err)
	}

	// A router that terminates ordinary connections but passes direct ones
	// through (as in operator mode): the enclave is reachable, and the
	// mismatch is named as an interposition, since the node's mode is self.
	mux := newSplitter(t, ln.Addr().String(), tn.addr)
	vo.Addr = mux
	_, err = appverify.Verify(context.Background(), vo)
	var ve *ratls.VerifyError
	if !errors.As(err, &ve) || ve.Check != "served_key" || !strings.Contains(err.Error(), "interposes on the traffic") || !strings.Contains(err.Error(), "Owner Test CA") {
		t.Fatalf("verify with a swapped certificate: %v", err)
	}
	t.Log(err)
	// Directly, the same node verifies.
	vo.Addr = tn.addr
	if _, err := appverify.Verify(context.Background(), vo); err != nil {
		t.Fatalf("verify directly: %v", err)
	}
}

// newSplitter listens on loopback and sends each connection whose first
// bytes offer ALPN mse-ratls/1 to direct, the others to terminating: a
// router in operator mode. It peeks at the ClientHello by its bytes only.
func newSplitter(t *testing.T, terminating, direct string) string {
	return testenv.Listen(t, func(c net.Conn) {
		buf := make([]byte, 16<<10)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		c.SetReadDeadline(time.Time{})
		to := terminating
		if strings.Contains(string(buf[:n]), "mse-ratls/1") {
			to = direct
		}
		up, err := net.Dial("tcp", to)
		if err != nil {
			return
		}
		defer up.Close()
		up.Write(buf[:n])
		done := make(chan struct{}, 2)
		go func() { io.Copy(up, c); done <- struct{}{} }()
		go func() { io.Copy(c, up); done <- struct{}{} }()
		<-done
	})
}

// BenchmarkVerifyRunningApp is the cost of verifying a running app as
// `mse cloud verify` does (appverify.Verify: a TLS connection, one fresh
// evidence over a nonce bound to it, the RA-TLS and evidence checks), and,
// apart, of the attestation fetch alone on an open connection.
func BenchmarkVerifyRunningApp(b *testing.B) {
	bundle := pyBundle(b, nil)
	tn := startNode(b, bundle, baseSpec())
	vo := appverify.Options{Domain: "app.example", Addr: tn.addr, RATLS: tn.ratlsOptions(b), Roots: x509.NewCertPool()}
	b.Run("verify", func(b *testing.B) {
		for b.Loop() {
			if _, err := appverify.Verify(context.Background(), vo); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fetch", func(b *testing.B) {
		c, err := tls.Dial("tcp", tn.addr, &tls.Config{InsecureSkipVerify: true, ServerName: "app.example", NextProtos: []string{"mse-ratls/1"}})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		nonce := make([]byte, 32)
		for b.Loop() {
			getAttestation(b, c, nonce)
		}
	})
}
