// Package node is the runtime inside the enclave: it makes its TLS key and
// evidence, serves the RA-TLS configuration endpoint, checks the owner's
// secrets, then decrypts, starts and serves the app. It must never import the
// backend or the CLI: it is the trusted computing base.
package node

import (
	"github.com/mse-in-go/mse/internal/apphost"

	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mse-in-go/mse/internal/acme"
	"github.com/mse-in-go/mse/internal/atomicfile"
	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/bundle"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/ratls"
	"github.com/mse-in-go/mse/internal/runtimes"
	"github.com/mse-in-go/mse/internal/sealed"
	"github.com/mse-in-go/mse/internal/spec"
)

// Config configures a node. The zero value of optional fields is a sensible default.
type Config struct {
	Spec spec.Spec
	// BundlePath is the encrypted bundle; Bundle, when set, is an open file
	// of it instead (the sandbox passes it as a descriptor).
	BundlePath string
	Bundle     *os.File
	// Listener serves the app's TLS port; if nil, Listen is used.
	Listener net.Listener
	Listen   string
	// WorkDir is the node's private directory: the code is unpacked under it
	// and the secrets file written there.
	WorkDir string
	// StatusFile is where the node writes its nodeapi.Status (default WorkDir/status.json).
	StatusFile string
	Issuer     attest.Issuer
	// MaxAttempts bounds failed stage-2 requests by a holder of the code key
	// before the node gives up (default 10); other refusals spend nothing.
	MaxAttempts int
	// MaxConns caps the node's concurrent connections (default 128); at the
	// cap a new connection evicts the one idle the longest.
	MaxConns int
	// RequestTimeout bounds reading a request's headers, and a stage-2
	// request's body (default 10s).
	RequestTimeout time.Duration
	// Python is the interpreter for python_application (default
	// DefaultPython, the runtime's). Tests outside a sandbox set it.
	Python string
	// Warm is a Python host a standby node started before it knew its app
	// (StartWarmHost); Run uses it instead of starting one, or ends it when
	// the app is an entrypoint.
	Warm *WarmHost
	// HealthTimeout bounds the app's start (default: the spec's start
	// timeout); HealthInterval is the period of health checks once running
	// (default 10s).
	HealthTimeout  time.Duration
	HealthInterval time.Duration
	Limits         bundle.Limits
	Logger         *slog.Logger
	Now            attest.Clock
	// Egress is unix:PATH of the runner's CONNECT proxy for outbound HTTPS
	// (tls_mode acme); empty: dial directly.
	Egress string
}

// Node is a running node.
type Node struct {
	cfg        Config
	log        *slog.Logger
	codeDigest []byte
	confDigest []byte
	tlsKey     *ecdsa.PrivateKey
	sealKey    *sealed.Key
	claims     attest.Claims
	raCert     tls.Certificate
	raFP       string // SHA-256 of raCert, for the status file
	cert       atomic.Pointer[tls.Certificate]
	phase      atomic.Value // string: nodeapi.State*
	proxy      atomic.Pointer[http.Handler]

	mu       sync.Mutex // serializes stage 2
	attempts int
	accepted bool
	secrets  chan *intake
	fatal    chan error
	quoteSem chan struct{}
	bodies   *budget    // shared by stage-2 bodies beyond freeBody
	freeLog  logLimiter // refusals that spend no attempt
	conns    *connLimit // set by Run
	// acme, in tls_mode acme, obtains and renews the certificate for the
	// enclave key (set by Run before serving).
	acme *acme.Manager
}

// intake is what stage 2 accepted (the code is already unpacked; the code
// key is not kept).
type intake struct {
	ownerCert     *tls.Certificate
	appSecrets    []byte
	sealedSecrets []byte // the plaintext of sealed_secrets (also merged into appSecrets)
}

// ErrExpired is returned by Run when the app reached its expiry date.
var ErrExpired = errors.New("the app reached its expiry date")

// Run runs the node until ctx is done, the app fails, or it expires.
func Run(ctx context.Context, cfg Config) error {
	n, err := New(cfg)
	if err != nil {
		return err
	}
	return n.Run(ctx)
}

// New checks the configuration and creates the work directory; Run makes
// the keys, evidence and certificate.
func New(cfg Config) (*Node, error) {
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 10
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = defaultRequestTimeout
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = defaultMaxConns
	}
	if cfg.Python == "" {
		cfg.Python = apphost.DefaultPython
	}
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = cfg.Spec.StartTimeout()
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = 10 * time.Second
	}
	if cfg.Limits == (bundle.Limits{}) {
		cfg.Limits = bundle.DefaultLimits()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.StatusFile == "" && cfg.WorkDir != "" {
		cfg.StatusFile = filepath.Join(cfg.WorkDir, "status.json")
	}
	if cfg.Issuer == nil {
		return nil, errors.New("node: no evidence issuer configured")
	}
	if cfg.WorkDir == "" {
		return nil, errors.New("node: no work directory configured")
	}
	if err := cfg.Spec.Validate(); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	n := &Node{cfg: cfg, log: cfg.Logger, secrets: make(chan *intake, 1), fatal: make(chan error, 1), quoteSem: make(chan struct{}, 1), bodies: newBudget(bodyBudget)}
	n.phase.Store(nodeapi.StateStarting)
	if err := os.MkdirAll(cfg.WorkDir, 0o700); err != nil {
		return nil, fmt.Errorf("node: work directory: %w", err)
	}
	n.writeStatus(nodeapi.StateStarting, "")
	if cfg.Spec.TLSMode == spec.TLSOwner {
		if _, err := parseOwnerChain(cfg.Spec.OwnerCertificate, cfg.Spec.Domains, cfg.Now()); err != nil {
			return nil, fmt.Errorf("node: owner certificate: %w", err)
		}
	}
	return n, nil
}

// Run serves the configuration endpoint, then the app.
func (n *Node) Run(ctx context.Context) (err error) {
	defer func() {
		if err != nil && !errors.Is(err, ErrExpired) {
			n.writeStatus(nodeapi.StateError, err.Error())
		} else {
			n.writeStatus(nodeapi.StateStopped, errString(err))
		}
	}()
	cfg := n.cfg
	now := cfg.Now()
	if !now.Before(cfg.Spec.ExpiresAt) {
		return ErrExpired
	}
	// Warm start, first thing: the Python host loads the interpreter and the
	// runtime's libraries while the node makes its keys and evidence and the
	// owner verifies them. No app code exists yet.
	var warm *runningApp
	if cfg.Spec.PythonApplication != "" {
		warm = cfg.Warm.take(n)
	}
	cfg.Warm.Stop() // an entrypoint app, or a host that died: not used
	if warm != nil {
		n.log.Info("app host already warm, waiting for the code", "pid", warm.cmd.Process.Pid, "port", warm.port)
	} else if cfg.Spec.PythonApplication != "" {
		if warm, err = n.startApp(true); err != nil {
			n.log.Warn("no warm start: the app will start cold", "err", err)
			warm = nil
		}
	}
	defer func() {
		if warm != nil {
			warm.stop()
		}
	}()
	d, err := n.digestBundle()
	if err != nil {
		return fmt.Errorf("node: hash the bundle: %w", err)
	}
	n.codeDigest = d[:]
	if n.confDigest, err = cfg.Spec.Digest(); err != nil {
		return err
	}
	if n.tlsKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return err
	}
	if n.sealKey, err = sealed.NewKey(); err != nil {
		return err
	}
	runtimeDigest, err := runtimes.DigestBytes(cfg.Spec.Runtime.Digest)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.claims = attest.Claims{AppID: cfg.Spec.AppID, CodeDigest: n.codeDigest, ConfigDigest: n.confDigest,
		SealingKey: n.sealKey.Public(), RuntimeDigest: runtimeDigest, TLSMode: cfg.Spec.TLSMode}
	notAfter := cfg.Spec.ExpiresAt
	if max := now.Add(397 * 24 * time.Hour); notAfter.After(max) {
		notAfter = max
	}
	der, _, err := ratls.NewCertificate(ctx, n.tlsKey, cfg.Issuer, ratls.Template{
		DNSNames: cfg.Spec.Domains, NotBefore: now.Add(-time.Hour), NotAfter: notAfter, Claims: n.claims,
	})
	if err != nil {
		return fmt.Errorf("node: make the RA-TLS certificate: %w", err)
	}
	leaf, _ := x509.ParseCertificate(der)
	n.raCert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: n.tlsKey, Leaf: leaf}
	n.raFP = ratls.Fingerprint(leaf)
	n.cert.Store(&n.raCert)
	if cfg.Spec.TLSMode == spec.TLSACME {
		if n.acme, err = n.newACME(); err != nil {
			return err
		}
	}

	ln := cfg.Listener
	if ln == nil {
		if ln, err = listen(cfg.Listen); err != nil {
			return fmt.Errorf("node: listen: %w", err)
		}
	}
	n.conns = newConnLimit(ln, cfg.MaxConns)
	ln = n.conns
	// Header, handshake and idle timeouts hold for every connection. Read and
	// write deadlines for whole requests are set per request on the node's
	// own endpoints (serveSecrets): once the app runs, its uploads and
	// streamed answers may take as long as the app allows.
	nextProtos := []string{"h2", "http/1.1", nodeapi.ALPNRATLS}
	direct := newDirectListener(ln.Addr())
	srv := &http.Server{
		Handler:           n,
		ReadHeaderTimeout: cfg.RequestTimeout,
		IdleTimeout:       idleTimeout,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: maxStreams},
		Protocols:         protocols(true),
		TLSConfig: &tls.Config{
			MinVersion:         tls.VersionTLS12,
			GetCertificate:     n.getCertificate,
			GetConfigForClient: n.challengeConfig,
			NextProtos:         nextProtos,
		},
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){
			nodeapi.ALPNRATLS: func(_ *http.Server, c *tls.Conn, _ http.Handler) { direct.serve(c) },
		},
		ErrorLog:    slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connCtxKey{}, c) },
	}
	// Direct connections (direct.go): HTTP/1.1 on the enclave's RA-TLS
	// session, the node's endpoints only.
	directSrv := &http.Server{
		Handler:           http.HandlerFunc(n.serveDirect),
		ReadHeaderTimeout: cfg.RequestTimeout,
		IdleTimeout:       idleTimeout,
		Protocols:         protocols(false),
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
		ConnContext:       directContext,
	}
	go func() { _ = directSrv.Serve(direct) }()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.ServeTLS(ln, "", "") }()
	defer func() {
		// The direct server first: its connections hold the main
		// server's handlers (TLSNextProto) until they end.
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = directSrv.Shutdown(sctx)
		_ = srv.Shutdown(sctx)
	}()
	n.setPhase(nodeapi.StateWaiting)
	n.log.Info("waiting for the owner's secrets", "app_id", cfg.Spec.AppID, "addr", ln.Addr().String(),
		"fingerprint", n.raFP, "tee", cfg.Issuer.Type())

	expiry := time.NewTimer(cfg.Spec.ExpiresAt.Sub(now))
	defer expiry.Stop()
	var in *intake
	select {
	case <-ctx.Done():
		return nil
	case err := <-serveErr:
		return fmt.Errorf("node: serve: %w", err)
	case err := <-n.fatal:
		return err
	case <-expiry.C:
		return ErrExpired
	case in = <-n.secrets:
	}

	n.setPhase(nodeapi.StateLaunching)
	app, err := n.launch(ctx, in, warm)
	warm = nil // launch owns it now
	if err != nil {
		if ctx.Err() != nil {
			return nil // asked to stop while the app started
		}
		return err
	}
	defer app.stop()
	h := app.handler()
	n.proxy.Store(&h)
	if in.ownerCert != nil {
		n.cert.Store(in.ownerCert)
	}
	n.setPhase(nodeapi.StateRunning)
	n.log.Info("app running", "app_id", cfg.Spec.AppID)
	if n.acme != nil {
		go n.runACME(ctx)
	}
	return app.monitor(ctx, expiry.C, serveErr)
}

// protocols is HTTP/1.1, and HTTP/2 when h2.
func protocols(h2 bool) *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(h2)
	return p
}

func (n *Node) setPhase(p string) {
	n.phase.Store(p)
	n.writeStatus(p, "")
}

func (n *Node) writeStatus(state, msg string) {
	if n.cfg.StatusFile == "" {
		return
	}
	st := nodeapi.Status{State: state, Error: msg, Fingerprint: n.raFP, UpdatedAt: n.cfg.Now().UTC(), TLS: n.tlsStatus()}
	b, _ := json.Marshal(st)
	_ = atomicfile.Write(n.cfg.StatusFile, b, 0o644)
}

// listen listens on "unix:PATH" (in a sandbox: the router reaches the node
// through a socket in its run directory) or a TCP address.
func listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		_ = os.Remove(path)
		return net.Listen("unix", path)
	}
	return net.Listen("tcp", addr)
}

// openBundle opens the encrypted bundle for one read from its start.
func (n *Node) openBundle() (io.ReadCloser, error) {
	if f := n.cfg.Bundle; f != nil {
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		return io.NopCloser(io.NewSectionReader(f, 0, st.Size())), nil
	}
	return os.Open(n.cfg.BundlePath)
}

func (n *Node) digestBundle() ([32]byte, error) {
	var d [32]byte
	f, err := n.openBundle()
	if err != nil {
		return d, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return d, err
	}
	copy(d[:], h.Sum(nil))
	return d, nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
