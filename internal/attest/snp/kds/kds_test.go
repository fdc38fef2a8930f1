package kds

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestVCEKURL(t *testing.T) {
	chip := make([]byte, 64)
	chip[0], chip[7], chip[8] = 0xab, 0xcd, 0xef
	milan := VCEKURL(AMDKDS, "Milan", chip, TCB{Bootloader: 3, TEE: 0, SNP: 8, Microcode: 115})
	if milan != AMDKDS+"/vcek/v1/Milan/ab000000000000cdef"+strings.Repeat("00", 55)+"?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115" {
		t.Errorf("Milan %s", milan)
	}
	turin := VCEKURL(AMDKDS, "Turin", chip, TCB{FMC: 1, Bootloader: 2, TEE: 3, SNP: 4, Microcode: 5})
	if turin != AMDKDS+"/vcek/v1/Turin/ab000000000000cd?fmcSPL=1&blSPL=2&teeSPL=3&snpSPL=4&ucodeSPL=5" {
		t.Errorf("Turin %s", turin)
	}
}

func TestClientErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/Milan/crl"):
			w.WriteHeader(http.StatusTooManyRequests)
		case strings.HasSuffix(r.URL.Path, "/Genoa/crl"):
			w.Write(make([]byte, maxCRLSize+10))
		default:
			w.Write([]byte("not a certificate"))
		}
	}))
	defer srv.Close()
	c := NewClient(srv.URL)
	ctx := context.Background()
	if _, err := c.CRL(ctx, "Milan", "vcek"); err == nil || !strings.Contains(err.Error(), "rate-limits") {
		t.Errorf("429: %v", err)
	}
	if _, err := c.CRL(ctx, "Genoa", "vcek"); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversize: %v", err)
	}
	if _, err := c.CRL(ctx, "Milan", "ask"); err == nil || !strings.Contains(err.Error(), "unknown key kind") {
		t.Errorf("kind: %v", err)
	}
	if _, err := c.VCEK(ctx, "Milan", make([]byte, 64), TCB{}); err == nil || !strings.Contains(err.Error(), "did not answer with a DER certificate") {
		t.Errorf("bad VCEK: %v", err)
	}
	if _, err := c.VCEK(ctx, "Milan", make([]byte, 8), TCB{}); err == nil || !strings.Contains(err.Error(), "chip id is 8 bytes") {
		t.Errorf("short chip id: %v", err)
	}
	if _, err := NewClient("http://127.0.0.1:1").CRL(ctx, "Milan", "vcek"); err == nil || !strings.Contains(err.Error(), "--no-collateral") {
		t.Errorf("unreachable: %v", err)
	}
}

func TestBundleRefusals(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "other than PEM X509 CRL"},
		{"garbage", "not a CRL"},
		{"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", "CRL 0"},
	} {
		if _, err := ParseBundle([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.in, err, tc.want)
		}
	}
	if _, err := (&Bundle{}).CRL(context.Background(), "Turin", "vcek"); err == nil || !strings.Contains(err.Error(), "no CRL of ARK-Turin") {
		t.Errorf("missing product: %v", err)
	}
}
