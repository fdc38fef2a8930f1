package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/acme"
	"github.com/mse-in-go/mse/internal/appverify"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/ratls"
	"github.com/mse-in-go/mse/internal/spec"
	"github.com/mse-in-go/mse/internal/testenv"
)

// TestACMEMode: a node in tls_mode acme, with Pebble as its CA validating
// tls-alpn-01 on the node's own port, gets a certificate for its enclave
// key once the app runs; ordinary clients then get the CA's chain (which a
// client trusting only Pebble's root accepts), direct connections the
// RA-TLS certificate, and a verify of the running app proves the served
// key is the enclave's.
func TestACMEMode(t *testing.T) {
	needPython(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ca := testenv.Pebble(t, testenv.PebbleOptions{TLSPort: ln.Addr().(*net.TCPAddr).Port})
	sp := baseSpec()
	sp.Domains = []string{"shop.example.test"}
	sp.TLSMode = spec.TLSACME
	sp.ACME = &spec.ACME{DirectoryURL: ca.DirectoryURL, RootsPEM: ca.ServerRootsPEM}
	b := pyBundle(t, nil)
	tn := startNode(t, b, sp, func(c *Config) { c.Listener = ln })
	ra := tn.peerCert(t)
	if code, r := tn.post(t, tn.request()); code != 200 {
		t.Fatalf("stage 2: %d %+v", code, r)
	}
	tn.waitApp(t, "/")
	st := waitACME(t, tn, 60*time.Second)
	if st.TLS.Mode != spec.TLSACME || !strings.Contains(st.TLS.Issuer, "Pebble") {
		t.Errorf("status TLS %+v", st.TLS)
	}

	// What a browser sees: the CA's chain for the enclave key.
	conn, err := tls.Dial("tcp", tn.addr, &tls.Config{ServerName: "shop.example.test", RootCAs: ca.IssuerRoots()})
	if err != nil {
		t.Fatalf("a client trusting only Pebble's root: %v", err)
	}
	leaf := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	if bytes.Equal(leaf.Raw, ra.Raw) || !bytes.Equal(leaf.RawSubjectPublicKeyInfo, ra.RawSubjectPublicKeyInfo) {
		t.Fatal("the served certificate is not a CA certificate for the enclave key")
	}
	// Direct connections still get the RA-TLS certificate.
	dc, err := tls.Dial("tcp", tn.addr, &tls.Config{InsecureSkipVerify: true, ServerName: "shop.example.test", NextProtos: []string{nodeapi.ALPNRATLS}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dc.ConnectionState().PeerCertificates[0].Raw, ra.Raw) {
		t.Error("a direct connection did not get the RA-TLS certificate")
	}
	dc.Close()

	opts := tn.ratlsOptions(t)
	opts.Expect.Domain = "shop.example.test"
	res, err := appverify.Verify(context.Background(), appverify.Options{Domain: "shop.example.test", Addr: tn.addr, RATLS: opts, Roots: ca.IssuerRoots()})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if res.Mode != spec.TLSACME || !res.TerminatedInEnclave || !res.ServedTrusted || res.Direct ||
		!bytes.Equal(res.Identity.Claims.ServedKey, ratls.PubkeyHash(ra)) || !strings.Contains(res.Proves[1], "browsers accept it") {
		t.Fatalf("verify result %+v", res)
	}
}

func waitACME(t *testing.T, tn *testNode, d time.Duration) nodeapi.Status {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		st := readStatus(t, tn.cfg.StatusFile)
		if st.TLS != nil && st.TLS.ACME == acme.StateValid {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ACME certificate after %s: status %+v", d, st.TLS)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
