package node

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"slices"
	"sync"

	"github.com/mse-in-go/mse/internal/acme"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/spec"
)

// A direct connection is one whose ClientHello offered nodeapi.ALPNRATLS
// (docs/protocol.md "Verifying a running app"): the node presents its RA-TLS
// certificate whatever its TLS mode, and serves its own endpoints only (stage
// 2, GET /, the attestation endpoint), never the app. The router passes such
// connections through to the node in every mode, so that the owner's stage 2
// and anyone's verification reach the enclave's own TLS even where the
// operator terminates the app's TLS.

// offersDirect reports whether a ClientHello asks for a direct connection.
func offersDirect(hello *tls.ClientHelloInfo) bool {
	return slices.Contains(hello.SupportedProtos, nodeapi.ALPNRATLS)
}

// getCertificate chooses the certificate of a handshake: the RA-TLS one on
// direct connections, an ACME challenge certificate for the CA's
// validation, the served one (RA-TLS, the owner's, or the ACME CA's for the
// enclave key) otherwise.
func (n *Node) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if offersDirect(hello) {
		return &n.raCert, nil
	}
	return n.served(), nil
}

// challengeConfig answers the ACME CA's TLS-ALPN-01 validation connection
// (RFC 8737: acme-tls/1 only, the challenge certificate); nil for the others.
func (n *Node) challengeConfig(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	if n.acme == nil || !acme.IsChallenge(hello) {
		return nil, nil
	}
	return n.acme.ChallengeTLSConfig(hello)
}

// served is the certificate ordinary clients of the app's domains get.
func (n *Node) served() *tls.Certificate {
	if m := n.acme; m != nil {
		if c := m.Certificate(); c != nil {
			return c
		}
	}
	return n.cert.Load()
}

// servedKeyHash is claim mse-served-key: SHA-256 of the served certificate's
// SubjectPublicKeyInfo, or nil in operator mode, where the router terminates
// ordinary connections with the operator's certificate and the node holds no
// key that clients see.
func (n *Node) servedKeyHash() []byte {
	if n.cfg.Spec.TLSMode == spec.TLSOperator {
		return nil
	}
	c := n.served()
	if c == nil || c.Leaf == nil {
		return nil
	}
	h := sha256.Sum256(c.Leaf.RawSubjectPublicKeyInfo)
	return h[:]
}

// tlsStatus is the status file's account of what the node serves.
func (n *Node) tlsStatus() *nodeapi.TLSStatus {
	c := n.served()
	if c == nil || c.Leaf == nil {
		return nil
	}
	h := sha256.Sum256(c.Leaf.Raw)
	st := &nodeapi.TLSStatus{Mode: n.cfg.Spec.TLSMode, Served: hex.EncodeToString(h[:]), Issuer: c.Leaf.Issuer.String(), NotAfter: c.Leaf.NotAfter.UTC()}
	if n.acme != nil {
		a := n.acme.Status()
		st.ACME, st.ACMEError = a.State, a.Error
	}
	return st
}

// directConn hides a direct connection's *tls.Conn from the HTTP server that
// serves it: that server must not look at the negotiated protocol (it would
// refuse mse-ratls/1). The handshake is already done.
type directConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *directConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

// directListener hands direct connections, taken over by the main server's
// TLSNextProto, to the direct server.
type directListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	addr  net.Addr
}

func newDirectListener(addr net.Addr) *directListener {
	return &directListener{conns: make(chan net.Conn), done: make(chan struct{}), addr: addr}
}

// serve gives a connection to the direct server and returns once that
// server closed it: the main server closes a connection when its
// TLSNextProto function returns.
func (l *directListener) serve(tc *tls.Conn) {
	c := &directConn{Conn: tc, closed: make(chan struct{})}
	select {
	case l.conns <- c:
		<-c.closed
	case <-l.done:
		c.Close()
	}
}

func (l *directListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *directListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *directListener) Addr() net.Addr { return l.addr }

// tlsState is the TLS state of a request's connection, on either server.
func tlsState(r *http.Request) (*tls.ConnectionState, error) {
	if r.TLS != nil {
		return r.TLS, nil
	}
	if tc, ok := r.Context().Value(connCtxKey{}).(*tls.Conn); ok {
		cs := tc.ConnectionState()
		return &cs, nil
	}
	return nil, errors.New("the request came on no TLS connection")
}

// directContext stores a direct connection's *tls.Conn as the request's
// connection (connOf and tlsState find it there).
func directContext(ctx context.Context, c net.Conn) context.Context {
	if dc, ok := c.(*directConn); ok {
		c = dc.Conn
	}
	return context.WithValue(ctx, connCtxKey{}, c)
}

// serveDirect serves a direct connection's requests: the node's endpoints in
// every phase, never the app.
func (n *Node) serveDirect(w http.ResponseWriter, r *http.Request) {
	if n.phase.Load().(string) == nodeapi.StateRunning && !(r.URL.Path == nodeapi.PathAttestation && r.Method == http.MethodGet) {
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			w.Header().Set(nodeapi.HeaderStatus, nodeapi.StatusRunning)
			writeJSON(w, http.StatusOK, map[string]string{"status": "running", "app_id": n.cfg.Spec.AppID})
		case http.MethodPost:
			writeAlreadyAccepted(w)
		default:
			writeJSON(w, http.StatusMethodNotAllowed, nodeapi.Response{Status: "refused", Error: "use GET or POST"})
		}
		return
	}
	n.ServeHTTP(w, r)
}
