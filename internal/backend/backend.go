// Package backend wires the operator's control plane together on embedded
// defaults: the store (SQLite file, or PostgreSQL), bundles in a local
// directory, the local process runner with the simulated TEE, the SNI
// passthrough router, the HTTP API and /metrics.
package backend

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	clientset "k8s.io/client-go/kubernetes"

	"github.com/mse-in-go/mse/internal/atomicfile"
	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sim"
	"github.com/mse-in-go/mse/internal/backend/api"
	"github.com/mse-in-go/mse/internal/backend/blob"
	"github.com/mse-in-go/mse/internal/backend/netlimit"
	"github.com/mse-in-go/mse/internal/backend/router"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/backend/runner/local"
	"github.com/mse-in-go/mse/internal/backend/service"
	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/runtimes/image"
)

// Config configures a backend. Zero values are embedded defaults.
type Config struct {
	// DataDir holds the database, bundles, nodes, the simulated platform and
	// the admin token.
	DataDir string
	// DB is "" (SQLite in DataDir/mse.db), a SQLite file path, or a
	// postgres:// URL.
	DB string
	// APIAddr and RouterAddr are listen addresses (default 127.0.0.1:8080 and
	// 127.0.0.1:8443); APIListener / RouterListener override them (tests).
	APIAddr        string
	RouterAddr     string
	APIListener    net.Listener
	RouterListener net.Listener
	// APITLSCert and APITLSKey, when set, serve the API over HTTPS (PEM
	// files); otherwise it is plain HTTP, for loopback or behind a proxy.
	APITLSCert string
	APITLSKey  string
	// PublicRouterAddr is the router address given to clients (default: the
	// router's listen address).
	PublicRouterAddr string
	// BaseDomain is the parent domain of app domains (default "mse.localhost").
	BaseDomain string
	// NodeBinary is the mse-node executable (default: next to this program).
	NodeBinary string
	// RuntimeDir is the runtime image store (default DataDir/runtimes); it
	// may be shared by backends, as a cache. RuntimeCatalog is the catalog
	// file (default DataDir/runtimes.json).
	RuntimeDir     string
	RuntimeCatalog string
	// Runc is the runc executable that sandboxes nodes (default: in PATH).
	Runc string
	// WarmPool is how many idle pre-warmed sandboxes the local runner keeps
	// per runtime and hardware entry (docs/runtimes.md "Warm pool"); 0 or
	// less: none, every node starts cold. `mse-backend serve --warm-pool`
	// defaults to DefaultWarmPool.
	WarmPool int
	// MaxStartTimeout caps apps' start timeouts (default 30 minutes).
	MaxStartTimeout time.Duration
	Capacity        runner.Resources
	Hardware        []runner.Hardware
	// MaxLifetime caps apps' expiry (default 30 days).
	MaxLifetime   time.Duration
	MaxBundleSize int64
	PollInterval  time.Duration
	// SimTCBStatus and SimDebug set what the simulated hardware reports (tests).
	SimTCBStatus string
	SimDebug     bool
	// EgressPrivate lets nodes in tls_mode acme reach an ACME CA at a
	// loopback, private or link-local address through their egress proxy (a
	// CA on the operator's network; tests with Pebble on 127.0.0.1). Off, an
	// owner cannot point its node at the operator's internal services.
	EgressPrivate bool
	// Blobs stores encrypted bundles (default: what BlobsURL names).
	Blobs blob.Store
	// BlobsURL is where bundles are kept when Blobs is nil: empty for
	// DataDir/bundles, a directory, or s3://BUCKET/PREFIX?endpoint=HOST:PORT&region=…
	// (docs/blobs.md). BlobsCredentials is an AWS shared credentials file for
	// S3 (default: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).
	BlobsURL         string
	BlobsCredentials string
	Logger           *slog.Logger
	// MaxConns and MaxConnsPerClient cap the API's connections, in total and
	// per client IP address (defaults netlimit.DefaultTotal, DefaultPerClient).
	MaxConns          int
	MaxConnsPerClient int
	// KeyTimeout bounds an app's wait for its owner's key once initializing
	// (default service.DefaultKeyTimeout).
	KeyTimeout time.Duration
	// BundlePresignTTL, when set, sends the kubernetes runner's nodes to a
	// presigned URL of the S3 bundle store, valid this long, instead of
	// streaming their bundles through the backend (--bundle-presign-ttl).
	BundlePresignTTL time.Duration
	// OwnerCAFiles are PEM roots that owner-mode certificates may chain to,
	// beside the system roots (--owner-ca-file).
	OwnerCAFiles []string
	// ACMEDirectories are the ACME CAs nodes in tls_mode acme may use, the
	// first the default (--acme-directory); ACMERootsFile holds the roots of
	// their HTTPS servers given to nodes (--acme-roots).
	ACMEDirectories []string
	ACMERootsFile   string
	// OperatorCert and OperatorKey (PEM files) are the certificate the router
	// terminates operator-mode apps with, e.g. a wildcard for the base domain;
	// or OperatorACMEDirectory (with OperatorACMERoots, OperatorACMEEmail)
	// gets one per app domain over ACME (TLS-ALPN-01, answered by the router;
	// cached in DataDir/acme). Neither: tls_mode operator is refused.
	OperatorCert          string
	OperatorKey           string
	OperatorACMEDirectory string
	OperatorACMERoots     string
	OperatorACMEEmail     string
	// Runner is "local" (the default: sandboxed processes on this machine)
	// or "kubernetes" (one pod per app, Kube).
	Runner string
	Kube   KubeConfig
	// LeaderElection is how replicas on one PostgreSQL database elect the
	// one that runs the loops: "postgres" (the default: an advisory lock)
	// or "lease" (a Kubernetes Lease in Kube.Namespace; kubernetes runner
	// only).
	LeaderElection string
	// LeaderLeaseDuration is the Lease's duration with "lease" (0:
	// leader.DefaultLeaseDuration): how long a killed leader's loops wait
	// for a follower. The leader renews within two thirds of it, and tries
	// every two fifteenths (client-go's 15 s, 10 s, 2 s).
	LeaderLeaseDuration time.Duration
	// Ready, if set, is called once the backend serves.
	Ready func(Info)
}

// Info says where a running backend is.
type Info struct {
	APIURL         string
	RouterAddr     string
	AdminTokenFile string
	SimRootSHA256  string
	Measurement    string
}

// DefaultHardware is the catalog of the embedded default.
var DefaultHardware = []runner.Hardware{
	{Name: "1g", MemoryMiB: 1024, Cores: 1, TEE: attest.TypeSim},
	{Name: "2g", MemoryMiB: 2048, Cores: 1, TEE: attest.TypeSim},
	{Name: "4g", MemoryMiB: 4096, Cores: 2, TEE: attest.TypeSim},
	{Name: "8g", MemoryMiB: 8192, Cores: 4, TEE: attest.TypeSim},
}

// DefaultWarmPool is `mse-backend serve --warm-pool`'s default (Config.WarmPool).
const DefaultWarmPool = 1

// AdminTokenFile is the name of the file, in the data dir, that receives the
// first administrator's token.
const AdminTokenFile = "admin-token"

// Run runs the backend until ctx ends, then shuts down gracefully (nodes keep
// running and are adopted again at the next start).
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if cfg.DataDir == "" {
		return errors.New("backend: no data directory (--data-dir)")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("backend: data directory: %w", err)
	}
	sweepTemp(log, cfg.DataDir, filepath.Join(cfg.DataDir, "sim"))
	if cfg.BaseDomain == "" {
		cfg.BaseDomain = "mse.localhost"
	}
	if len(cfg.Hardware) == 0 {
		cfg.Hardware = DefaultHardware
	}
	if cfg.Capacity == (runner.Resources{}) {
		cfg.Capacity = runner.Resources{MemoryMiB: machineMemoryMiB(), Cores: 4 * runtime.NumCPU()}
	}
	if cfg.NodeBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		cfg.NodeBinary = filepath.Join(filepath.Dir(exe), "mse-node")
	}

	sqliteLock, err := lockSQLite(cfg.DataDir, cfg.DB)
	if err != nil {
		return err
	}
	if sqliteLock != nil {
		defer sqliteLock.Close()
	}
	st, err := OpenStore(ctx, cfg.DataDir, cfg.DB)
	if err != nil {
		return err
	}
	defer st.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	platform, err := sim.LoadOrCreatePlatform(filepath.Join(cfg.DataDir, "sim"))
	if err != nil {
		return fmt.Errorf("backend: simulated platform: %w", err)
	}
	blobs := cfg.Blobs
	if blobs == nil {
		if blobs, err = OpenBlobs(ctx, cfg, log); err != nil {
			return err
		}
	}
	rp := cfg.runtimePaths()
	images, err := image.Open(rp.dir, image.DefaultLimits())
	if err != nil {
		return fmt.Errorf("backend: runtime store: %w", err)
	}
	// Pods pull runtime images from a registry (--image-prefix): the
	// catalog's entries need not be in the local store then.
	catalog, err := openCatalog(rp.catalog, images, cfg.Runner != RunnerKubernetes, log.With("component", "runtimes"))
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	if len(catalog.Entries()) == 0 {
		log.Warn("the runtime catalog is empty: no app can be deployed; build one with `mse-backend runtime build flask`", "catalog", rp.catalog)
	}
	if cfg.BundlePresignTTL != 0 && cfg.Runner != RunnerKubernetes {
		return errors.New("backend: --bundle-presign-ttl is for --runner kubernetes (the local runner hands its nodes a file)")
	}
	var run runner.Runner
	var kube clientset.Interface // the kubernetes runner's
	tee := attest.TypeSim
	switch cfg.Runner {
	case "", RunnerLocal:
		run, err = local.New(local.Config{
			Dir: filepath.Join(cfg.DataDir, "nodes"), NodeBinary: cfg.NodeBinary, Platform: platform, Runtimes: images, Runc: cfg.Runc,
			Capacity: cfg.Capacity, TCBStatus: cfg.SimTCBStatus, Debug: cfg.SimDebug, Logger: log.With("component", "runner"),
			Pool: cfg.WarmPool, EgressPrivate: cfg.EgressPrivate,
		})
	case RunnerKubernetes:
		tee = catalogTEE(cfg.Hardware)
		if kube, err = kubeClient(cfg.Kube); err == nil {
			kc := cfg.Kube
			if cfg.BundlePresignTTL != 0 {
				if kc.BundleStoreHost, kc.BundleStorePort, err = bundleStore(blobs); err != nil {
					return err
				}
			}
			run, err = newKubeRunner(kc, kube, cfg.Hardware, platform, cfg.MaxBundleSize, log.With("component", "runner"))
		}
	default:
		err = fmt.Errorf("backend: unknown runner %q (local or kubernetes)", cfg.Runner)
	}
	if err != nil {
		return err
	}
	defer run.Close()
	reps, err := openReplicas(cfg, run, kube, log)
	if err != nil {
		return err
	}
	defer reps.close()

	apiLn := cfg.APIListener
	if apiLn == nil {
		addr := cfg.APIAddr
		if addr == "" {
			addr = "127.0.0.1:8080"
		}
		if apiLn, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("backend: API listen: %w", err)
		}
	}
	routerLn := cfg.RouterListener
	if routerLn == nil {
		addr := cfg.RouterAddr
		if addr == "" {
			addr = "127.0.0.1:8443"
		}
		if routerLn, err = net.Listen("tcp", addr); err != nil {
			apiLn.Close()
			return fmt.Errorf("backend: router listen: %w", err)
		}
	}
	public := cfg.PublicRouterAddr
	if public == "" {
		public = routerLn.Addr().String()
	}
	ownerRoots, err := service.LoadOwnerRoots(cfg.OwnerCAFiles)
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	acmeRoots, err := acmeSettings(cfg.ACMEDirectories, cfg.ACMERootsFile)
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	var svc *service.Service
	operator, err := operatorTLS(cfg, platform, run.Measurement(), func(ctx context.Context, host string) (router.Route, error) {
		return svc.Lookup(ctx, host)
	}, log.With("component", "router"))
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}

	svc, err = service.New(service.Config{
		Store: st, Blobs: blobs, Runner: run, Hardware: cfg.Hardware, Runtimes: catalog, Images: images, MaxStartTimeout: cfg.MaxStartTimeout,
		BaseDomain: cfg.BaseDomain, RouterAddr: public,
		TEE: tee, SimRootSHA256: platform.RootFingerprint(), MaxBundleSize: cfg.MaxBundleSize,
		MaxLifetime: cfg.MaxLifetime, PollInterval: cfg.PollInterval, KeyTimeout: cfg.KeyTimeout, Logger: log.With("component", "service"), Registerer: reg,
		OwnerRoots: ownerRoots, ACMEDirectories: cfg.ACMEDirectories, ACMERootsPEM: acmeRoots, OperatorTLS: operator != nil,
		SpawnGuard: reps.spawnGuard, BundlePresignTTL: cfg.BundlePresignTTL,
	})
	if err != nil {
		return err
	}
	tokenFile, err := bootstrapAdmin(ctx, svc.Store(), cfg.DataDir, log)
	if err != nil {
		return err
	}
	if reps.started {
		if err := svc.Start(ctx); err != nil {
			return fmt.Errorf("backend: adopt nodes: %w", err)
		}
	}

	handler, err := api.New(api.Config{Service: svc, Logger: log.With("component", "api"), Gatherer: reg, SimRootPEM: platform.RootPEM()}, reg)
	if err != nil {
		return err
	}
	// Bodies have their own deadline (api.bodyDeadline); answers are not
	// bounded, since logs are followed for as long as the client likes.
	httpSrv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	apiLn = netlimit.Listener(apiLn, cfg.MaxConns, cfg.MaxConnsPerClient, log.With("component", "api"))
	rm, err := router.NewMetrics(reg)
	if err != nil {
		return err
	}
	rt := &router.Router{
		Lookup: func(ctx context.Context, name string) (router.Route, error) {
			rt, err := svc.Lookup(ctx, name)
			if errors.Is(err, service.ErrNoRoute) {
				return router.Route{}, fmt.Errorf("%w: %v", router.ErrUnknownServerName, err)
			}
			return rt, err
		},
		Operator:    operator,
		IdleTimeout: 10 * time.Minute,
		Logger:      log.With("component", "router"),
		Metrics:     rm,
	}

	scheme := "http"
	if cfg.APITLSCert != "" || cfg.APITLSKey != "" {
		cert, err := tls.LoadX509KeyPair(cfg.APITLSCert, cfg.APITLSKey)
		if err != nil {
			return fmt.Errorf("backend: API TLS certificate: %w", err)
		}
		httpSrv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		apiLn = tls.NewListener(apiLn, httpSrv.TLSConfig)
		scheme = "https"
	}
	errc := make(chan error, 2)
	go func() { errc <- httpSrv.Serve(apiLn) }()
	go func() { errc <- rt.Serve(routerLn) }()
	loopCtx, stopLoop := context.WithCancel(context.Background())
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		if err := svc.Lead(loopCtx, reps.elector, reps.started); err != nil {
			log.Error("leader election", "err", err)
		}
	}()

	info := Info{APIURL: scheme + "://" + apiLn.Addr().String(), RouterAddr: public, AdminTokenFile: tokenFile,
		SimRootSHA256: platform.RootFingerprint(), Measurement: run.Measurement()}
	log.Info("backend serving", "api", info.APIURL, "router", public, "data_dir", cfg.DataDir,
		"node_measurement", info.Measurement, "sim_root_sha256", info.SimRootSHA256)
	if cfg.Ready != nil {
		cfg.Ready(info)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	case <-reps.lost:
		runErr = errors.New("backend: lost the database's lock (the connection to PostgreSQL broke): with the local runner another backend may now lead, so this one stops; restart it")
	}
	log.Info("backend shutting down; nodes keep running")
	stopLoop()
	<-loopDone
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(sctx)
	_ = rt.Shutdown(sctx)
	if errors.Is(runErr, http.ErrServerClosed) || errors.Is(runErr, router.ErrRouterClosed) {
		runErr = nil
	}
	return runErr
}

// bootstrapAdmin creates the first administrator and writes its token to a
// 0600 file, once. The file is written before the user exists: a crash in
// between leaves no user, and the next start does it again.
func bootstrapAdmin(ctx context.Context, st store.Store, dataDir string, log *slog.Logger) (string, error) {
	path := filepath.Join(dataDir, AdminTokenFile)
	users, err := st.ListUsers(ctx)
	if err != nil {
		return "", err
	}
	if len(users) > 0 {
		// Named only where it is: another replica's data directory holds
		// it, or the operator has moved it away.
		if _, err := os.Stat(path); err != nil {
			return "", nil
		}
		return path, nil
	}
	tok, _, err := service.NewToken()
	if err != nil {
		return "", err
	}
	if err := atomicfile.Write(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("backend: write the admin token: %w", err)
	}
	if _, err := service.CreateUserWithToken(ctx, st, "admin", true, tok, time.Now()); errors.Is(err, service.ErrConflict) {
		// Another replica on the same database created it meanwhile (both
		// start on an empty database): its token is the valid one.
		_ = os.Remove(path)
		log.Info("another replica created the administrator first; its API token is in that replica's data directory (`mse-backend user add NAME --admin` makes another)")
		return "", nil
	} else if err != nil {
		_ = os.Remove(path)
		return "", err
	}
	log.Info("created the administrator; its API token is in a file readable only by this user", "file", path)
	return path, nil
}

func machineMemoryMiB() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 8192
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err == nil {
				return kb / 1024
			}
		}
	}
	return 8192
}
