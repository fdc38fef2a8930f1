package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// EgressClient is the HTTP client a node talks to its CA with. egress
// "unix:PATH" sends HTTPS through the HTTP CONNECT proxy on that unix socket
// (a sandboxed node has no network of its own: the runner's proxy relays to
// the CA's host only); "" dials directly. TLS is the node's own, end to end:
// the proxy sees only the CA's host and port. The CA's server certificate is
// checked against roots (nil: the system roots).
//
// Any other egress value gives a client whose every request fails, saying
// so.
func EgressClient(egress string, roots *x509.CertPool) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:        &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    15 * time.Second,
		ResponseHeaderTimeout:  30 * time.Second,
		IdleConnTimeout:        60 * time.Second,
		MaxIdleConnsPerHost:    2,
		MaxConnsPerHost:        4,
		MaxResponseHeaderBytes: 64 << 10,
	}
	dialer := &net.Dialer{Timeout: 30 * time.Second}
	path, isUnix := strings.CutPrefix(egress, "unix:")
	switch {
	case egress == "":
		// Never a proxy from the environment: the node dials only what its
		// spec names.
		tr.DialContext = dialer.DialContext
	case isUnix && path != "":
		// The proxy's URL is a placeholder: every connection to it is the
		// socket; the transport then sends CONNECT host:port over it.
		proxy := &url.URL{Scheme: "http", Host: "egress.invalid"}
		tr.Proxy = func(*http.Request) (*url.URL, error) { return proxy, nil }
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, "unix", path)
			if err != nil {
				return nil, fmt.Errorf("acme: reach the runner's egress proxy at %s: %w (is tls_mode acme set in the spec the runner was given?)", path, err)
			}
			return c, nil
		}
	default:
		tr.DialContext = func(context.Context, string, string) (net.Conn, error) {
			return nil, fmt.Errorf("acme: egress %q is not unix:PATH (or empty to dial directly)", egress)
		}
	}
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}
}
