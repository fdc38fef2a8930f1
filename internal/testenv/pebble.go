package testenv

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
)

// PebbleOptions adjust a test ACME CA.
type PebbleOptions struct {
	// TLSPort is the port the CA's validation authority dials for
	// tls-alpn-01 challenges, on 127.0.0.1 (every name resolves there): the
	// port of the test's TLS listener, or of the router. Required.
	TLSPort int
	// Validity is the lifetime of the certificates it issues (default 90
	// days; at least one second, rounded down to seconds). A short one tests
	// renewal.
	Validity time.Duration
	// BlockedDomains are names the CA refuses to issue for (its policy): an
	// order for one fails with a rejectedIdentifier problem.
	BlockedDomains []string
}

// PebbleCA is a running ACME CA: Let's Encrypt's Pebble, in-process.
type PebbleCA struct {
	// DirectoryURL is the ACME directory, https on 127.0.0.1.
	DirectoryURL string
	// ServerRootsPEM is the certificate of the CA's own HTTPS server: what
	// an ACME client trusts to talk to it (spec.ACME.RootsPEM).
	ServerRootsPEM string
	// IssuerRootsPEM are the roots the certificates it issues chain to: what
	// relying parties (clients of the app, a browser) trust.
	IssuerRootsPEM string
	// DNSAddr is the loopback DNS server its validation authority asks: it
	// answers A 127.0.0.1 for every name and no AAAA.
	DNSAddr string
	// Validity is the lifetime of the certificates it issues.
	Validity time.Duration

	log *syncBuffer
}

// ServerRoots is ServerRootsPEM as a pool.
func (p *PebbleCA) ServerRoots() *x509.CertPool { return pemPool(p.ServerRootsPEM) }

// IssuerRoots is IssuerRootsPEM as a pool.
func (p *PebbleCA) IssuerRoots() *x509.CertPool { return pemPool(p.IssuerRootsPEM) }

// Log is what the CA logged so far (it is also logged when the test fails).
func (p *PebbleCA) Log() string { return p.log.String() }

// withPebbleSettings runs f (which makes Pebble's parts) with
// pebbleSettings in the environment, then restores it.
func withPebbleSettings(f func()) {
	pebbleEnv.Lock()
	defer pebbleEnv.Unlock()
	for k, v := range pebbleSettings {
		old, had := os.LookupEnv(k)
		os.Setenv(k, v)
		defer func() {
			if had {
				os.Setenv(k, old)
			} else {
				os.Unsetenv(k)
			}
		}()
	}
	f()
}

func pemPool(s string) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(s))
	return pool
}

// pebbleEnv: Pebble reads a few settings from the environment when its
// parts are made; they are set only for that moment, under this lock.
var pebbleEnv sync.Mutex

// pebbleSettings make the CA deterministic and fast: no random sleep
// before validations, no good nonce rejected, no authorization reused
// (every order is validated).
var pebbleSettings = map[string]string{
	"PEBBLE_VA_NOSLEEP":      "1",
	"PEBBLE_WFE_NONCEREJECT": "0",
	"PEBBLE_AUTHZREUSE":      "0",
}

// Pebble starts an ACME CA for the test: Pebble's memory store, CA,
// validation authority and web front end (on an httptest TLS server on
// 127.0.0.1), with a loopback DNS server that resolves every name to
// 127.0.0.1. Its validation authority checks tls-alpn-01 challenges by
// dialing 127.0.0.1:TLSPort. All of it ends with the test.
func Pebble(t testing.TB, o PebbleOptions) *PebbleCA {
	t.Helper()
	if o.TLSPort <= 0 || o.TLSPort > 65535 {
		t.Fatalf("testenv.Pebble: TLSPort %d: give the port of the test's TLS listener that answers the challenges", o.TLSPort)
	}
	validity := uint64(o.Validity / time.Second)
	if o.Validity == 0 {
		validity = 90 * 24 * 3600
	}
	if validity < 1 {
		t.Fatalf("testenv.Pebble: Validity %v is shorter than one second", o.Validity)
	}
	p := &PebbleCA{Validity: time.Duration(validity) * time.Second, log: &syncBuffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble log:\n%s", p.log.String())
		}
	})
	p.DNSAddr = startLoopbackDNS(t)

	logger := log.New(p.log, "pebble ", log.Lmicroseconds)
	store := db.NewMemoryStore()
	for _, d := range o.BlockedDomains {
		if err := store.AddBlockedDomain(d); err != nil {
			t.Fatalf("testenv.Pebble: block %s: %v", d, err)
		}
	}
	var authority *ca.CAImpl
	var front wfe.WebFrontEndImpl
	withPebbleSettings(func() {
		authority = ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{
			"default": {Description: "test profile", ValidityPeriod: validity},
		})
		// strict: refuse what Let's Encrypt will refuse.
		validator := va.New(logger, 0, o.TLSPort, true, p.DNSAddr, store)
		front = wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, true, false, 0, 0)
	})

	srv := httptest.NewUnstartedServer(front.Handler())
	srv.Config.ErrorLog = logger
	srv.StartTLS()
	t.Cleanup(srv.Close)
	p.DirectoryURL = srv.URL + wfe.DirectoryPath
	p.ServerRootsPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	var roots bytes.Buffer
	for i := 0; i < authority.GetNumberOfRootCerts(); i++ {
		roots.Write(authority.GetRootCert(i).PEM())
	}
	p.IssuerRootsPEM = roots.String()
	return p
}

// startLoopbackDNS serves DNS on 127.0.0.1 (UDP and TCP, one port) until
// the test ends: A 127.0.0.1 for every name, nothing else (no AAAA, so a
// validation never tries ::1).
func startLoopbackDNS(t testing.TB) string {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Authoritative = true
		for _, q := range req.Question {
			if q.Qtype == dns.TypeA && q.Qclass == dns.ClassINET {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		_ = w.WriteMsg(m)
	})
	// One port for both: bind TCP, then UDP on the same port (retry if a
	// stranger took the UDP one in between).
	for attempt := 0; ; attempt++ {
		tcp, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testenv.Pebble: DNS listener: %v", err)
		}
		udp, err := net.ListenPacket("udp", tcp.Addr().String())
		if err != nil {
			tcp.Close()
			if attempt < 10 {
				continue
			}
			t.Fatalf("testenv.Pebble: DNS listener: %v", err)
		}
		servers := []*dns.Server{{Listener: tcp, Handler: h}, {PacketConn: udp, Handler: h}}
		for _, s := range servers {
			started := make(chan struct{})
			s.NotifyStartedFunc = func() { close(started) }
			go func() { _ = s.ActivateAndServe() }()
			<-started
		}
		t.Cleanup(func() {
			for _, s := range servers {
				_ = s.Shutdown()
			}
		})
		return tcp.Addr().String()
	}
}
