// Package servicetest runs the backend's service in-process for tests,
// without nodes: a fake runner stands in for real ones, and a test drives the
// states its nodes report.
package servicetest

import (
	"github.com/mse-in-go/mse/internal/runtimes"

	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mse-in-go/mse/internal/backend/blob/fs"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/backend/service"
	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/backend/store/sqlite"
	"github.com/mse-in-go/mse/internal/nodeapi"
)

// Hardware is the catalog of services made here.
var Hardware = []runner.Hardware{
	{Name: "1g", MemoryMiB: 1024, Cores: 1, TEE: "sim"},
	{Name: "4g", MemoryMiB: 4096, Cores: 2, TEE: "sim"},
}

// Runner is a fake runner.Runner: Spawn records the node and counts its
// resources; its state is what the test sets with SetState (starting at
// first).
type Runner struct {
	mu    sync.Mutex
	Total runner.Resources
	nodes map[string]*fakeNode
	used  runner.Resources
	// SpawnErr, when set, is returned by the next Spawn.
	SpawnErr error
	// StatusErr, while set, is returned by every Status (the runner cannot
	// see its nodes: a cluster's API server unreachable).
	StatusErr error
	// BeforeSpawn and BeforeStop, when set (before the services run), are
	// called at the start of each Spawn and Stop, outside the runner's lock:
	// a test can hold a replica in the middle of one.
	BeforeSpawn, BeforeStop func(appID string)
	// AfterSpawn, when set, is called at the end of each successful Spawn,
	// outside the runner's lock: the node exists, its handle is not yet
	// recorded.
	AfterSpawn func(appID string)

	spawnCalls, stopCalls, orphaned map[string]int
}

type fakeNode struct {
	spec  runner.SpawnSpec
	state runner.NodeState
	live  bool
}

// NewRunner returns a fake runner with room for total.
func NewRunner(total runner.Resources) *Runner {
	return &Runner{Total: total, nodes: map[string]*fakeNode{}, spawnCalls: map[string]int{}, stopCalls: map[string]int{}, orphaned: map[string]int{}}
}

type handle struct {
	App string `json:"app"`
}

func (r *Runner) Spawn(ctx context.Context, appID string, s runner.SpawnSpec) ([]byte, error) {
	if r.BeforeSpawn != nil {
		r.BeforeSpawn(appID)
	}
	h, err := r.spawn(appID, s)
	if err == nil && r.AfterSpawn != nil {
		r.AfterSpawn(appID)
	}
	return h, err
}

func (r *Runner) spawn(appID string, s runner.SpawnSpec) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.spawnCalls[appID]++
	if err := r.SpawnErr; err != nil {
		r.SpawnErr = nil
		return nil, err
	}
	if n := r.nodes[appID]; n != nil && n.live {
		// As the real runners: the objects of an earlier spawn are there
		// (the Kubernetes runner's AlreadyExists).
		return nil, fmt.Errorf("fake runner: a node of app %s exists already (stop it first)", appID)
	}
	if r.used.MemoryMiB+s.Hardware.MemoryMiB > r.Total.MemoryMiB || r.used.Cores+s.Hardware.Cores > r.Total.Cores {
		return nil, fmt.Errorf("%w: %s needs %d MiB and %d cores; %d MiB and %d cores are free", runner.ErrNoCapacity,
			s.Hardware.Name, s.Hardware.MemoryMiB, s.Hardware.Cores, r.Total.MemoryMiB-r.used.MemoryMiB, r.Total.Cores-r.used.Cores)
	}
	r.used.MemoryMiB += s.Hardware.MemoryMiB
	r.used.Cores += s.Hardware.Cores
	r.nodes[appID] = &fakeNode{spec: s, state: runner.NodeState{State: nodeapi.StateStarting}, live: true}
	return json.Marshal(handle{App: appID})
}

// Orphaned counts the times Adopt ended appID's node as one no app claims.
func (r *Runner) Orphaned(appID string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.orphaned[appID]
}

// SetStatusErr sets (nil: clears) StatusErr.
func (r *Runner) SetStatusErr(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.StatusErr = err
}

// SetState sets what the node of appID reports.
func (r *Runner) SetState(appID, state, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := r.nodes[appID]; n != nil {
		n.state = runner.NodeState{State: state, Error: msg, Fingerprint: "fp-" + appID}
	}
}

// SpawnCalls and StopCalls count the calls of Spawn and Stop for appID.
func (r *Runner) SpawnCalls(appID string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.spawnCalls[appID]
}

// StopCalls: see SpawnCalls.
func (r *Runner) StopCalls(appID string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopCalls[appID]
}

// Live reports whether the node of appID was spawned and not stopped.
func (r *Runner) Live(appID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.nodes[appID]
	return n != nil && n.live
}

func (r *Runner) Status(ctx context.Context, appID string, h []byte) (runner.NodeState, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.StatusErr != nil {
		return runner.NodeState{}, r.StatusErr
	}
	n := r.nodes[appID]
	if n == nil {
		return runner.NodeState{State: runner.StateLost, Error: "no such node"}, nil
	}
	if !n.live {
		return runner.NodeState{State: runner.StateLost, Error: "the node was ended"}, nil
	}
	return n.state, nil
}

func (r *Runner) Addr(appID string, h []byte) (string, error) { return "127.0.0.1:1", nil }

func (r *Runner) Stop(ctx context.Context, appID string, h []byte) error {
	if r.BeforeStop != nil {
		r.BeforeStop(appID)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopCalls[appID]++
	if n := r.nodes[appID]; n != nil && n.live {
		n.live = false
		r.used.MemoryMiB -= n.spec.Hardware.MemoryMiB
		r.used.Cores -= n.spec.Hardware.Cores
	}
	return nil
}

// Logs returns one line; with follow, it then blocks until ctx ends.
func (r *Runner) Logs(ctx context.Context, appID string, h []byte, tail int64, follow bool) (io.ReadCloser, error) {
	line := strings.NewReader("log of " + appID + "\n")
	if !follow {
		return io.NopCloser(line), nil
	}
	pr, pw := io.Pipe()
	go func() {
		_, _ = io.Copy(pw, line)
		<-ctx.Done()
		pw.CloseWithError(io.EOF)
	}()
	return pr, nil
}

// Adopt follows runner.Runner's contract, as the kubernetes runner does: a
// claimed node that is no longer live is lost; a live node that no app
// claims is ended (Orphaned counts it).
func (r *Runner) Adopt(ctx context.Context, nodes map[string][]byte) (map[string]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	lost := map[string]string{}
	for id := range nodes {
		if n := r.nodes[id]; n == nil || !n.live {
			lost[id] = "the node is gone"
		}
	}
	for id, n := range r.nodes {
		if _, claimed := nodes[id]; !claimed && n.live {
			n.live = false
			r.used.MemoryMiB -= n.spec.Hardware.MemoryMiB
			r.used.Cores -= n.spec.Hardware.Cores
			r.orphaned[id]++
		}
	}
	return lost, nil
}

func (r *Runner) Capacity() (used, total runner.Resources) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.used, r.Total
}

func (r *Runner) Measurement() string { return "00" }
func (r *Runner) Close() error        { return nil }

// Env is a service over a SQLite store in a temporary directory, fs blobs
// and a fake runner, with a controllable clock.
type Env struct {
	Service  *service.Service
	Store    store.Store
	Runner   *Runner
	Blobs    *fs.Store
	BlobDir  string
	Registry *prometheus.Registry

	clk *clock
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

// Now is the environment's clock.
func (e *Env) Now() time.Time {
	e.clk.mu.Lock()
	defer e.clk.mu.Unlock()
	return e.clk.now
}

// Advance moves the clock (of every replica of the Env).
func (e *Env) Advance(d time.Duration) {
	e.clk.mu.Lock()
	defer e.clk.mu.Unlock()
	e.clk.now = e.clk.now.Add(d)
}

// New builds an Env; mod may change the service configuration.
func New(t testing.TB, mod ...func(*service.Config)) *Env {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return NewOn(t, st, mod...)
}

// NewOn builds an Env over st (a PostgreSQL store, say), with fs blobs in a
// temporary directory and a fake runner.
func NewOn(t testing.TB, st store.Store, mod ...func(*service.Config)) *Env {
	t.Helper()
	blobDir := filepath.Join(t.TempDir(), "blobs")
	blobs, err := fs.New(blobDir)
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Store: st, Blobs: blobs, BlobDir: blobDir, Runner: NewRunner(runner.Resources{MemoryMiB: 16 << 10, Cores: 8}),
		clk: &clock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}}
	e.build(t, mod...)
	return e
}

// Replica builds another service over e's blobs, runner and clock, and st
// (nil: e's store; else another handle on the same database), as a second
// replica of one backend would be (its own registry).
func (e *Env) Replica(t testing.TB, st store.Store, mod ...func(*service.Config)) *Env {
	t.Helper()
	if st == nil {
		st = e.Store
	}
	r := &Env{Store: st, Blobs: e.Blobs, BlobDir: e.BlobDir, Runner: e.Runner, clk: e.clk}
	r.build(t, mod...)
	return r
}

func (e *Env) build(t testing.TB, mod ...func(*service.Config)) {
	t.Helper()
	st, blobs := e.Store, e.Blobs
	e.Registry = prometheus.NewRegistry()
	cfg := service.Config{
		Store: st, Blobs: blobs, Runner: e.Runner, Hardware: Hardware, Runtimes: Runtimes, BaseDomain: "mse.test", RouterAddr: "127.0.0.1:8443",
		TEE: "sim", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: e.Now, Registerer: e.Registry,
	}
	if testing.Verbose() {
		cfg.Logger = slog.Default()
	}
	for _, m := range mod {
		m(&cfg)
	}
	svc, err := service.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.Service = svc
}

// User creates a user.
func (e *Env) User(t testing.TB, name string, admin bool) (*store.User, string) {
	t.Helper()
	u, tok, err := service.CreateUser(context.Background(), e.Store, name, admin, e.Now())
	if err != nil {
		t.Fatal(err)
	}
	return u, tok
}

// Catalog is a fixed runtime catalog.
type Catalog []runtimes.Entry

// Entries implements service.Catalog.
func (c Catalog) Entries() []runtimes.Entry { return c }

// Runtimes is the catalog test services offer: the fake runner runs no image.
var Runtimes = Catalog{
	{Name: "flask", Image: "mse/flask:bookworm", Digest: "sha256:" + strings.Repeat("ab", 32), Kind: runtimes.KindWSGI},
	{Name: "fastapi", Image: "mse/fastapi:bookworm", Digest: "sha256:" + strings.Repeat("cd", 32), Kind: runtimes.KindASGI},
}
