package testenv

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestPebble: the CA's directory answers over HTTPS trusted by
// ServerRootsPEM alone; IssuerRootsPEM is a CA root; its DNS answers A
// 127.0.0.1 for any name, over UDP and TCP, and no AAAA.
func TestPebble(t *testing.T) {
	t.Parallel()
	p := Pebble(t, PebbleOptions{TLSPort: 5001, Validity: 90 * time.Second})
	if p.Validity != 90*time.Second {
		t.Errorf("validity %v", p.Validity)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.ServerRoots()}}, Timeout: 10 * time.Second}
	res, err := c.Get(p.DirectoryURL)
	if err != nil {
		t.Fatalf("directory with ServerRootsPEM: %v", err)
	}
	var dir map[string]any
	err = json.NewDecoder(res.Body).Decode(&dir)
	res.Body.Close()
	if err != nil || dir["newOrder"] == nil || dir["newAccount"] == nil {
		t.Errorf("directory %v %v", dir, err)
	}
	if _, err := (&http.Client{Timeout: 10 * time.Second}).Get(p.DirectoryURL); err == nil {
		t.Error("the directory's certificate is trusted by the system roots")
	}

	b, _ := pem.Decode([]byte(p.IssuerRootsPEM))
	if b == nil {
		t.Fatal("IssuerRootsPEM is not PEM")
	}
	root, err := x509.ParseCertificate(b.Bytes)
	if err != nil || !root.IsCA {
		t.Errorf("issuer root %v %v", root, err)
	}

	for _, network := range []string{"udp", "tcp"} {
		cl := &dns.Client{Net: network, Timeout: 5 * time.Second}
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
			m := new(dns.Msg)
			m.SetQuestion("anything.example.test.", qt)
			in, _, err := cl.Exchange(m, p.DNSAddr)
			if err != nil {
				t.Fatalf("%s %s: %v", network, dns.TypeToString[qt], err)
			}
			switch qt {
			case dns.TypeA:
				if len(in.Answer) != 1 || in.Answer[0].(*dns.A).A.String() != "127.0.0.1" {
					t.Errorf("%s A: %v", network, in.Answer)
				}
			case dns.TypeAAAA:
				if len(in.Answer) != 0 || in.Rcode != dns.RcodeSuccess {
					t.Errorf("%s AAAA: %v rcode %d", network, in.Answer, in.Rcode)
				}
			}
		}
	}
}
