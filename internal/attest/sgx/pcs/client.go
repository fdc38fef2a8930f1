package pcs

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/mse-in-go/mse/internal/attest/sgx/abi"
)

// IntelPCS is the base URL of Intel's Provisioning Certification Service.
const IntelPCS = "https://api.trustedservices.intel.com"

// intelRootCACRL is where Intel publishes the Intel SGX Root CA CRL (the CRL
// distribution point of the PCK CA certificates).
const intelRootCACRL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"

// Client fetches collateral from a PCS or PCCS (API v4) and caches each item
// until its own next update. It is safe for concurrent use.
type Client struct {
	// BaseURL is the service root, e.g. IntelPCS or "https://pccs.local:8081".
	BaseURL string
	// HTTPClient is used for requests; nil means a client with a 30 s timeout.
	HTTPClient *http.Client
	// RootCACRLURL overrides where the root CA CRL comes from. Empty means
	// Intel's distribution point for Intel PCS, and BaseURL's
	// /sgx/certification/v4/rootcacrl for a PCCS.
	RootCACRLURL string
	// Now is the clock the cache expires by; nil means time.Now.
	Now func() time.Time

	mu    sync.Mutex
	cache map[string]cached
}

var defaultHTTPClient = &http.Client{Timeout: 30 * time.Second}

type cached struct {
	until time.Time
	val   any
}

// NewClient returns a client of the service at baseURL.
func NewClient(baseURL string) *Client { return &Client{BaseURL: baseURL} }

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

type tcbItem struct {
	raw, sig []byte
	info     *TCBInfo
	chain    []*x509.Certificate
}

type identityItem struct {
	raw, sig []byte
	id       *EnclaveIdentity
	chain    []*x509.Certificate
}

type crlItem struct {
	crl   *x509.RevocationList
	chain []*x509.Certificate
}

// Collateral implements Source.
func (c *Client) Collateral(ctx context.Context, fmspc, ca string) (*Collateral, error) {
	return c.collateral(ctx, "sgx", fmspc, ca)
}

// TDXCollateral implements TDXSource: the TDX TCB info and TD QE identity
// (PCS /tdx/certification/v4/...) with the same PCK CRL and root CA CRL as
// SGX, from the same cache.
func (c *Client) TDXCollateral(ctx context.Context, fmspc, ca string) (*Collateral, error) {
	return c.collateral(ctx, "tdx", fmspc, ca)
}

// collateral fetches the collateral of tee ("sgx" or "tdx").
func (c *Client) collateral(ctx context.Context, tee, fmspc, ca string) (*Collateral, error) {
	if ca != CAProcessor && ca != CAPlatform {
		return nil, fmt.Errorf("pcs: unknown PCK CA %q", ca)
	}
	if _, err := hexBytes(fmspc, 6, "FMSPC"); err != nil {
		return nil, fmt.Errorf("pcs: %w", err)
	}
	tcb, err := c.tcbInfo(ctx, tee, fmspc)
	if err != nil {
		return nil, err
	}
	qe, err := c.qeIdentity(ctx, tee)
	if err != nil {
		return nil, err
	}
	pck, err := c.pckCRL(ctx, ca)
	if err != nil {
		return nil, err
	}
	root, err := c.rootCRL(ctx)
	if err != nil {
		return nil, err
	}
	return &Collateral{
		RootCACRL: root.crl, PCKCRL: pck.crl, PCKCRLIssuerChain: pck.chain,
		TCBInfoRaw: tcb.raw, TCBInfoSignature: tcb.sig, TCBInfo: tcb.info, TCBInfoIssuerChain: tcb.chain,
		QEIdentityRaw: qe.raw, QEIdentitySignature: qe.sig, QEIdentity: qe.id, QEIdentityIssuerChain: qe.chain,
	}, nil
}

func (c *Client) lookup(key string) (any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.cache[key]
	if !ok || !c.now().Before(e.until) {
		return nil, false
	}
	return e.val, true
}

func (c *Client) store(key string, until time.Time, v any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cache == nil {
		c.cache = map[string]cached{}
	}
	c.cache[key] = cached{until: until, val: v}
}

func (c *Client) base() string { return strings.TrimRight(c.BaseURL, "/") }

func (c *Client) tcbInfo(ctx context.Context, tee, fmspc string) (*tcbItem, error) {
	u := c.base() + "/" + tee + "/certification/v4/tcb?fmspc=" + url.QueryEscape(strings.ToUpper(fmspc))
	if v, ok := c.lookup(u); ok {
		return v.(*tcbItem), nil
	}
	body, h, err := c.get(ctx, u, MaxTCBInfoSize+1024)
	if err != nil {
		return nil, err
	}
	raw, sig, err := SignedBody(body, "tcbInfo")
	if err != nil {
		return nil, fmt.Errorf("pcs: TCB info from %s: %v", u, err)
	}
	info, err := ParseTCBInfo(raw)
	if err != nil {
		return nil, fmt.Errorf("pcs: %s: %v", u, err)
	}
	chain, err := headerChain(h, u, "TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain")
	if err != nil {
		return nil, err
	}
	it := &tcbItem{raw: raw, sig: sig, info: info, chain: chain}
	c.store(u, info.NextUpdate, it)
	return it, nil
}

func (c *Client) qeIdentity(ctx context.Context, tee string) (*identityItem, error) {
	u := c.base() + "/" + tee + "/certification/v4/qe/identity"
	if v, ok := c.lookup(u); ok {
		return v.(*identityItem), nil
	}
	body, h, err := c.get(ctx, u, MaxIdentitySize+1024)
	if err != nil {
		return nil, err
	}
	raw, sig, err := SignedBody(body, "enclaveIdentity")
	if err != nil {
		return nil, fmt.Errorf("pcs: QE identity from %s: %v", u, err)
	}
	id, err := ParseEnclaveIdentity(raw)
	if err != nil {
		return nil, fmt.Errorf("pcs: %s: %v", u, err)
	}
	chain, err := headerChain(h, u, "SGX-Enclave-Identity-Issuer-Chain")
	if err != nil {
		return nil, err
	}
	it := &identityItem{raw: raw, sig: sig, id: id, chain: chain}
	c.store(u, id.NextUpdate, it)
	return it, nil
}

func (c *Client) pckCRL(ctx context.Context, ca string) (*crlItem, error) {
	u := c.base() + "/sgx/certification/v4/pckcrl?ca=" + ca + "&encoding=der"
	if v, ok := c.lookup(u); ok {
		return v.(*crlItem), nil
	}
	body, h, err := c.get(ctx, u, MaxCRLSize)
	if err != nil {
		return nil, err
	}
	crl, err := ParseCRL(body)
	if err != nil {
		return nil, fmt.Errorf("pcs: PCK CRL from %s: %v", u, err)
	}
	chain, err := headerChain(h, u, "SGX-PCK-CRL-Issuer-Chain")
	if err != nil {
		return nil, err
	}
	it := &crlItem{crl: crl, chain: chain}
	c.store(u, crl.NextUpdate, it)
	return it, nil
}

func (c *Client) rootCRL(ctx context.Context) (*crlItem, error) {
	u := c.RootCACRLURL
	if u == "" {
		if c.base() == IntelPCS {
			u = intelRootCACRL
		} else {
			u = c.base() + "/sgx/certification/v4/rootcacrl"
		}
	}
	if v, ok := c.lookup(u); ok {
		return v.(*crlItem), nil
	}
	body, _, err := c.get(ctx, u, MaxCRLSize)
	if err != nil {
		return nil, err
	}
	crl, err := ParseCRL(body)
	if err != nil {
		return nil, fmt.Errorf("pcs: root CA CRL from %s: %v", u, err)
	}
	it := &crlItem{crl: crl}
	c.store(u, crl.NextUpdate, it)
	return it, nil
}

func (c *Client) get(ctx context.Context, u string, limit int64) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("pcs: %v", err)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = defaultHTTPClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("pcs: fetch collateral: %v (pass an offline bundle with --collateral when the service is unreachable)", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg := ""
		if e := resp.Header.Get("Error-Message"); e != "" {
			msg = ": " + e
		}
		if resp.StatusCode == http.StatusNotFound && strings.Contains(u, "fmspc=") {
			msg += " (the service has no TCB info for this platform model)"
		}
		return nil, nil, fmt.Errorf("pcs: GET %s: %s%s", u, resp.Status, msg)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, nil, fmt.Errorf("pcs: GET %s: %v", u, err)
	}
	if int64(len(body)) > limit {
		return nil, nil, fmt.Errorf("pcs: GET %s: response larger than %d bytes", u, limit)
	}
	return body, resp.Header, nil
}

func headerChain(h http.Header, u string, names ...string) ([]*x509.Certificate, error) {
	for _, n := range names {
		v := h.Get(n)
		if v == "" {
			continue
		}
		if len(v) > 64<<10 {
			return nil, fmt.Errorf("pcs: %s header of %s is too large", n, u)
		}
		dec, err := url.PathUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("pcs: %s header of %s is not URL-encoded PEM", n, u)
		}
		return abi.ParsePEMChain([]byte(dec), 0, n+" of "+u)
	}
	return nil, fmt.Errorf("pcs: response of %s has no %s header", u, names[0])
}

// OpenTDXSource is OpenSource for TDX collateral: both *Bundle and *Client
// serve it.
func OpenTDXSource(file, pccs string, now func() time.Time) (TDXSource, error) {
	s, err := OpenSource(file, pccs, now)
	if s == nil || err != nil {
		return nil, err
	}
	return s.(TDXSource), nil
}

// OpenSource returns the collateral source a trust policy or command line
// names: an offline bundle file, else a PCS/PCCS at pccs (whose cache ages
// by now; nil means time.Now). It returns nil, nil when both are empty.
func OpenSource(file, pccs string, now func() time.Time) (Source, error) {
	switch {
	case file != "":
		b, err := LoadBundle(file)
		if err != nil {
			return nil, err
		}
		return b, nil
	case pccs != "":
		c := NewClient(pccs)
		c.Now = now
		return c, nil
	}
	return nil, nil
}
