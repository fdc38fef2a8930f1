// Package testenv starts real platform components for tests: it builds the
// mse-node executable once per test binary and runs a backend in-process on
// loopback with a temporary data directory.
package testenv

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest/sim"
	"github.com/mse-in-go/mse/internal/backend"
	"github.com/mse-in-go/mse/internal/backend/blob"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/runtimes"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// RepoRoot is the repository root (where go.mod is).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Build builds a command of this module (e.g. "mse-node") once per test
// binary and returns the executable's path.
func Build(t testing.TB, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "mse-testbin-")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	out := filepath.Join(buildDir, name)
	mu.Lock()
	defer mu.Unlock()
	if _, err := os.Stat(out); err == nil {
		return out
	}
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./cmd/"+name)
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/%s: %v\n%s", name, err, b)
	}
	return out
}

var mu sync.Mutex

// Measure returns the lowercase hex SHA-256 of a file.
func Measure(t testing.TB, path string) string {
	t.Helper()
	h, err := sim.MeasureFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h[:])
}

// Options adjust a test backend.
type Options struct {
	DataDir          string // default: a new temp dir
	DB               string // default: SQLite in the data dir
	NodeBinary       string // default: Build("mse-node")
	PublicRouterAddr string
	SimDebug         bool
	SimTCBStatus     string
	Capacity         runner.Resources
	MaxLifetime      time.Duration
	MaxBundleSize    int64
	Blobs            blob.Store
	APITLSCert       string
	APITLSKey        string
	// Log receives the backend's log (default: t.Log on failure only).
	Log io.Writer
	// NoCatalog leaves the data dir's runtime catalog as it is (default:
	// the TestRuntimes are written into it).
	NoCatalog bool
	// RuntimeDir is the runtime image store (default: the shared RuntimeDir).
	RuntimeDir string
	// WarmPool is backend.Config.WarmPool (default backend.DefaultWarmPool;
	// negative: no pool).
	WarmPool int
	// OwnerCAFiles are backend.Config.OwnerCAFiles: PEM roots owner-mode
	// certificates may chain to, beside the system roots.
	OwnerCAFiles []string
	// ACMEDirectories and ACMERootsFile are the backend's ACME settings.
	ACMEDirectories []string
	ACMERootsFile   string
	// OperatorCert and OperatorKey let the router terminate tls_mode operator.
	OperatorCert, OperatorKey string
	// OperatorACMEDirectory and OperatorACMERoots (a PEM file) let the
	// router get operator-mode certificates over ACME instead.
	OperatorACMEDirectory, OperatorACMERoots string
	// RouterListener, when set, is the router's listener (default: a new
	// one on 127.0.0.1:0), e.g. when an ACME CA must know its port first.
	RouterListener net.Listener
	// APIListener, when set, is the API's listener (default: a new one on
	// 127.0.0.1:0), e.g. on an address pods reach.
	APIListener net.Listener
	// EgressPrivate is backend.Config.EgressPrivate: set it for nodes in
	// tls_mode acme whose CA is a testenv.Pebble (on 127.0.0.1).
	EgressPrivate bool
	// Runner, Kube and Hardware are backend.Config's: with Runner
	// "kubernetes" an empty Kube.BundleURL is the API's own URL.
	Runner   string
	Kube     backend.KubeConfig
	Hardware []runner.Hardware
	// BundlePresignTTL is backend.Config's (with an S3 Blobs).
	BundlePresignTTL time.Duration
}

// Backend is a running backend.
type Backend struct {
	backend.Info
	DataDir    string
	AdminToken string
	// SimRootFile is a PEM file of the simulated platform's root.
	SimRootFile string
	NodeBinary  string
	// RouterListenAddr is where the router really listens (RouterAddr is
	// what the backend advertises, which PublicRouterAddr may change).
	RouterListenAddr string
	stop             context.CancelFunc
	done             chan error
	log              *syncBuffer
}

// Start runs a backend until the test ends (or Stop).
func Start(t testing.TB, o Options) *Backend {
	t.Helper()
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	if o.NodeBinary == "" {
		o.NodeBinary = Build(t, "mse-node")
	}
	rts := Runtimes(t)
	if o.RuntimeDir == "" {
		o.RuntimeDir = RuntimeDir()
	}
	if !o.NoCatalog {
		WriteCatalog(t, filepath.Join(o.DataDir, "runtimes.json"), rts)
	}
	var err error
	apiLn := o.APIListener
	if apiLn == nil {
		if apiLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	routerLn := o.RouterListener
	if routerLn == nil {
		if routerLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	if o.Runner == backend.RunnerKubernetes && o.Kube.BundleURL == "" {
		o.Kube.BundleURL = "http://" + apiLn.Addr().String()
	}
	buf := &syncBuffer{}
	var w io.Writer = buf
	if o.Log != nil {
		w = io.MultiWriter(buf, o.Log)
	}
	if o.Capacity == (runner.Resources{}) {
		o.Capacity = runner.Resources{MemoryMiB: 64 << 10, Cores: 64}
	}
	if o.WarmPool == 0 {
		o.WarmPool = backend.DefaultWarmPool
	}
	ready := make(chan backend.Info, 1)
	ctx, cancel := context.WithCancel(context.Background())
	b := &Backend{DataDir: o.DataDir, NodeBinary: o.NodeBinary, RouterListenAddr: routerLn.Addr().String(), stop: cancel, done: make(chan error, 1), log: buf}
	go func() {
		b.done <- backend.Run(ctx, backend.Config{
			APITLSCert: o.APITLSCert, APITLSKey: o.APITLSKey,
			DataDir: o.DataDir, DB: o.DB, APIListener: apiLn, RouterListener: routerLn, PublicRouterAddr: o.PublicRouterAddr,
			NodeBinary: o.NodeBinary, RuntimeDir: o.RuntimeDir, Capacity: o.Capacity, WarmPool: o.WarmPool,
			// Every test client is 127.0.0.1: the per-client cap would count
			// them as one (netlimit's own tests check the cap).
			MaxConnsPerClient: 4096, MaxLifetime: o.MaxLifetime, MaxBundleSize: o.MaxBundleSize,
			Blobs: o.Blobs, PollInterval: 100 * time.Millisecond, SimDebug: o.SimDebug, SimTCBStatus: o.SimTCBStatus,
			OwnerCAFiles: o.OwnerCAFiles, ACMEDirectories: o.ACMEDirectories, ACMERootsFile: o.ACMERootsFile,
			OperatorCert: o.OperatorCert, OperatorKey: o.OperatorKey, EgressPrivate: o.EgressPrivate,
			OperatorACMEDirectory: o.OperatorACMEDirectory, OperatorACMERoots: o.OperatorACMERoots,
			Runner: o.Runner, Kube: o.Kube, Hardware: o.Hardware, BundlePresignTTL: o.BundlePresignTTL,
			Logger: slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})),
			Ready:  func(i backend.Info) { ready <- i },
		})
	}()
	select {
	case b.Info = <-ready:
	case err := <-b.done:
		t.Fatalf("backend did not start: %v\n%s", err, buf.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("backend did not start within 30s\n%s", buf.String())
	}
	tok, err := os.ReadFile(b.AdminTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	b.AdminToken = strings.TrimSpace(string(tok))
	b.SimRootFile = filepath.Join(o.DataDir, "sim", "sim-root.pem")
	t.Cleanup(func() {
		b.Stop(t)
		if t.Failed() {
			t.Logf("backend log:\n%s", buf.String())
		}
		b.KillNodes()
	})
	return b
}

// Stop shuts the backend down gracefully (nodes keep running).
func (b *Backend) Stop(t testing.TB) {
	if b.stop == nil {
		return
	}
	b.stop()
	b.stop = nil
	select {
	case err := <-b.done:
		if err != nil {
			t.Errorf("backend: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("backend did not stop within 30s")
	}
}

// Log returns what the backend logged so far.
func (b *Backend) Log() string { return b.log.String() }

// KillNodes ends every node this backend's runner started: their runc
// processes and their sandboxes.
func (b *Backend) KillNodes() {
	root := filepath.Join(b.DataDir, "nodes", ".runc")
	if out, err := exec.Command("runc", "--root", root, "list", "--quiet").Output(); err == nil {
		for _, id := range strings.Fields(string(out)) {
			_ = exec.Command("runc", "--root", root, "delete", "--force", id).Run()
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(b.DataDir, "nodes", "*", "node.pid"))
	for _, p := range dirs {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var pid int
		if _, err := fmt.Sscanf(string(raw), "%d", &pid); err == nil && pid > 0 {
			_ = killGroup(pid)
		}
	}
}

// PolicyFile writes a trust policy accepting this backend's nodes (with
// simulation) and returns its path; extra is appended verbatim.
func (b *Backend) PolicyFile(t testing.TB, extra string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.toml")
	body := fmt.Sprintf("tee_types = [\"sim\"]\nallow_simulation = true\nmeasurements = [%q]\n%s", b.Measurement, extra)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Offer adds a runtime to this backend's catalog (it reads the file again
// when it changes).
func (b *Backend) Offer(t testing.TB, e runtimes.Entry) {
	t.Helper()
	WriteCatalog(t, filepath.Join(b.DataDir, "runtimes.json"), []runtimes.Entry{e})
}

// NodeDir is the host directory of appID's node under dataDir: nodes/APP_ID
// for a node spawned cold, nodes/pool-… for one the warm pool served (its
// log says it was assigned appID). Its base name is the runc container id.
func NodeDir(dataDir, appID string) string {
	cold := filepath.Join(dataDir, "nodes", appID)
	if _, err := os.Stat(cold); err == nil {
		return cold
	}
	logs, _ := filepath.Glob(filepath.Join(dataDir, "nodes", "pool-*", "node.log"))
	for _, l := range logs {
		if b, err := os.ReadFile(l); err == nil && bytes.Contains(b, []byte(`msg="standby: assigned" app_id=`+appID)) {
			return filepath.Dir(l)
		}
	}
	return cold
}

// NodeDir is NodeDir(b.DataDir, appID).
func (b *Backend) NodeDir(appID string) string { return NodeDir(b.DataDir, appID) }
