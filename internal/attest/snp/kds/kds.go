// Package kds fetches what SEV-SNP verification needs from AMD's Key
// Distribution Service (KDS) or a cache of it: VCEK certificates (per chip
// and TCB) and the CRLs the ARKs sign, keeping each until it expires. An
// offline CRL bundle serves the CRLs without a network. Nothing here
// verifies a signature: package verify does.
package kds

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// AMDKDS is the base URL of AMD's Key Distribution Service.
const AMDKDS = "https://kdsintf.amd.com"

// Bounds on what is read.
const (
	maxCertSize = 16 << 10
	maxCRLSize  = 1 << 20
)

// TCB is a TCB version by component, as KDS takes it in VCEK requests.
type TCB struct {
	Bootloader, TEE, SNP, Microcode, FMC uint8
}

// CRLSource provides the CRL an ARK signs, for a product line ("Milan",
// "Genoa", "Turin") and key kind ("vcek" or "vlek"). *Client and *Bundle
// implement it.
type CRLSource interface {
	CRL(ctx context.Context, product, kind string) (*x509.RevocationList, error)
}

// Client fetches from a KDS and caches each item until it expires (a
// certificate until its NotAfter, a CRL until its NextUpdate). It is safe
// for concurrent use.
type Client struct {
	// BaseURL is the service root; empty means AMDKDS.
	BaseURL string
	// HTTPClient is used for requests; nil means a client with a 30 s timeout.
	HTTPClient *http.Client
	// Now is the clock the cache expires by; nil means time.Now.
	Now func() time.Time

	mu    sync.Mutex
	cache map[string]cached
	hits  int
}

type cached struct {
	until time.Time
	val   any
}

var defaultHTTPClient = &http.Client{Timeout: 30 * time.Second}

// NewClient returns a client of the KDS at baseURL ("" means AMD's).
func NewClient(baseURL string) *Client { return &Client{BaseURL: baseURL} }

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) base() string {
	if c.BaseURL == "" {
		return AMDKDS
	}
	return strings.TrimRight(c.BaseURL, "/")
}

// VCEKURL is where KDS serves the VCEK of a chip at a TCB. Turin names the
// chip by the first 8 bytes of its id and has an FMC component.
func VCEKURL(base, product string, chipID []byte, t TCB) string {
	if product == "Turin" {
		return fmt.Sprintf("%s/vcek/v1/%s/%s?fmcSPL=%d&blSPL=%d&teeSPL=%d&snpSPL=%d&ucodeSPL=%d", base, product, hex.EncodeToString(chipID[:8]), t.FMC, t.Bootloader, t.TEE, t.SNP, t.Microcode)
	}
	return fmt.Sprintf("%s/vcek/v1/%s/%s?blSPL=%d&teeSPL=%d&snpSPL=%d&ucodeSPL=%d", base, product, hex.EncodeToString(chipID), t.Bootloader, t.TEE, t.SNP, t.Microcode)
}

// VCEK fetches the VCEK certificate of a chip at a TCB.
func (c *Client) VCEK(ctx context.Context, product string, chipID []byte, t TCB) (*x509.Certificate, error) {
	if len(chipID) != 64 {
		return nil, fmt.Errorf("kds: chip id is %d bytes, want 64", len(chipID))
	}
	u := VCEKURL(c.base(), product, chipID, t)
	if v, ok := c.lookup(u); ok {
		return v.(*x509.Certificate), nil
	}
	body, err := c.get(ctx, u, maxCertSize)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(body)
	if err != nil {
		return nil, fmt.Errorf("kds: %s did not answer with a DER certificate: %v", u, err)
	}
	c.store(u, cert.NotAfter, cert)
	return cert, nil
}

// CRL implements CRLSource.
func (c *Client) CRL(ctx context.Context, product, kind string) (*x509.RevocationList, error) {
	if kind != "vcek" && kind != "vlek" {
		return nil, fmt.Errorf("kds: unknown key kind %q", kind)
	}
	u := fmt.Sprintf("%s/%s/v1/%s/crl", c.base(), kind, product)
	if v, ok := c.lookup(u); ok {
		return v.(*x509.RevocationList), nil
	}
	body, err := c.get(ctx, u, maxCRLSize)
	if err != nil {
		return nil, err
	}
	crl, err := ParseCRL(body)
	if err != nil {
		return nil, fmt.Errorf("kds: CRL from %s: %v", u, err)
	}
	c.store(u, crl.NextUpdate, crl)
	return crl, nil
}

// CacheHits counts answers served from the cache.
func (c *Client) CacheHits() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits
}

func (c *Client) lookup(key string) (any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.cache[key]
	if !ok || !c.now().Before(e.until) {
		return nil, false
	}
	c.hits++
	return e.val, true
}

func (c *Client) store(key string, until time.Time, v any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cache == nil {
		c.cache = map[string]cached{}
	}
	if len(c.cache) > 1024 {
		clear(c.cache)
	}
	c.cache[key] = cached{until: until, val: v}
}

func (c *Client) get(ctx context.Context, u string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("kds: %v", err)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = defaultHTTPClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("kds: %v (pass the VCEK with --vcek and an offline CRL with --collateral, or --no-collateral, when KDS is unreachable)", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		hint := ""
		if resp.StatusCode == http.StatusTooManyRequests {
			hint = " (AMD's KDS rate-limits requests: retry later, or use a caching proxy)"
		}
		return nil, fmt.Errorf("kds: GET %s: %s%s", u, resp.Status, hint)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("kds: GET %s: %v", u, err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("kds: GET %s: response larger than %d bytes", u, limit)
	}
	return body, nil
}

// ParseCRL reads a CRL in DER or PEM.
func ParseCRL(b []byte) (*x509.RevocationList, error) {
	if len(b) > maxCRLSize {
		return nil, fmt.Errorf("CRL is %d bytes, more than %d", len(b), maxCRLSize)
	}
	der := b
	if t := bytes.TrimSpace(b); bytes.HasPrefix(t, []byte("-----BEGIN")) {
		blk, _ := pem.Decode(t)
		if blk == nil || blk.Type != "X509 CRL" {
			return nil, errors.New("PEM that is not an X509 CRL")
		}
		der = blk.Bytes
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("not a CRL: %v", err)
	}
	return crl, nil
}

// Bundle is an offline set of CRLs (a file of PEM "X509 CRL" blocks, or
// one DER CRL), as KDS serves them. CRL picks the one issued by the
// product's ARK; verification checks its signature.
type Bundle struct{ crls []*x509.RevocationList }

// LoadBundle reads an offline CRL bundle.
func LoadBundle(path string) (*Bundle, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read CRL bundle: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 8*maxCRLSize+1))
	if err != nil {
		return nil, fmt.Errorf("read CRL bundle: %w", err)
	}
	bu, err := ParseBundle(b)
	if err != nil {
		return nil, fmt.Errorf("CRL bundle %s: %w", path, err)
	}
	return bu, nil
}

// ParseBundle parses the bytes of a CRL bundle.
func ParseBundle(b []byte) (*Bundle, error) {
	if len(b) > 8*maxCRLSize {
		return nil, fmt.Errorf("%d bytes, more than %d", len(b), 8*maxCRLSize)
	}
	t := bytes.TrimSpace(b)
	if !bytes.HasPrefix(t, []byte("-----BEGIN")) {
		crl, err := ParseCRL(b)
		if err != nil {
			return nil, err
		}
		return &Bundle{crls: []*x509.RevocationList{crl}}, nil
	}
	bu := &Bundle{}
	for len(t) > 0 {
		var blk *pem.Block
		blk, t = pem.Decode(t)
		if blk == nil || blk.Type != "X509 CRL" {
			return nil, errors.New("holds something other than PEM X509 CRL blocks")
		}
		crl, err := x509.ParseRevocationList(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CRL %d: %v", len(bu.crls), err)
		}
		if len(bu.crls) == 16 {
			return nil, errors.New("more than 16 CRLs")
		}
		bu.crls = append(bu.crls, crl)
		t = bytes.TrimSpace(t)
	}
	if len(bu.crls) == 0 {
		return nil, errors.New("no CRL")
	}
	return bu, nil
}

// CRL implements CRLSource: the CRL issued by "ARK-<product>". The VCEK
// and VLEK CRLs of a product line are both signed by its ARK; the bundle
// holds one per ARK.
func (b *Bundle) CRL(ctx context.Context, product, kind string) (*x509.RevocationList, error) {
	for _, c := range b.crls {
		if c.Issuer.CommonName == "ARK-"+product {
			return c, nil
		}
	}
	return nil, fmt.Errorf("the CRL bundle has no CRL of ARK-%s (it holds %s); add %s/%s/v1/%s/crl", product, b.issuers(), AMDKDS, kind, product)
}

func (b *Bundle) issuers() string {
	var out []string
	for _, c := range b.crls {
		out = append(out, c.Issuer.CommonName)
	}
	return strings.Join(out, ", ")
}
