// Package local runs nodes as processes on this machine, with the sim TEE:
// the runner plays the hardware. It measures the mse-node executable it
// launches and serves the simulated quoting service on a unix socket in the
// node's private directory, so the attestation key never enters the node.
//
// Memory and cores are accounted against the hardware sizes (an app is
// refused when the machine's configured capacity is used up); they are not
// enforced on the process.
package local

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sim"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/nodeapi"
)

// Config configures the local runner.
type Config struct {
	// Dir holds one private directory per node.
	Dir string
	// NodeBinary is the mse-node executable.
	NodeBinary string
	Platform   *sim.Platform
	// Capacity is what the machine offers to apps.
	Capacity runner.Resources
	// Signer and TCBStatus are what the simulated hardware reports.
	Signer    [32]byte
	TCBStatus string
	// Debug marks the simulated enclaves as debug enclaves (for tests).
	Debug bool
	// ExtraArgs are appended to every mse-node command line (tests).
	ExtraArgs []string
	Logger    *slog.Logger
}

// Runner is the local runner.
type Runner struct {
	cfg         Config
	log         *slog.Logger
	measurement [32]byte

	mu    sync.Mutex
	used  runner.Resources
	nodes map[string]*node
}

type node struct {
	res runner.Resources
	qe  *http.Server
}

// handle is the JSON the backend stores for a node.
type handle struct {
	PID       int              `json:"pid"`
	Addr      string           `json:"addr"`
	Dir       string           `json:"dir"`
	Resources runner.Resources `json:"resources"`
}

// New creates the runner. It measures the node binary once: the measurement
// is what every node it spawns will report.
func New(cfg Config) (*Runner, error) {
	if cfg.Platform == nil {
		return nil, errors.New("local runner: no sim platform")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.TCBStatus == "" {
		cfg.TCBStatus = attest.TCBUpToDate
	}
	if cfg.Signer == ([32]byte{}) {
		cfg.Signer = sim.DevSigner
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	m, err := sim.MeasureFile(cfg.NodeBinary)
	if err != nil {
		return nil, fmt.Errorf("local runner: measure the node binary %s: %w (build it with `make build` or pass --node-binary)", cfg.NodeBinary, err)
	}
	return &Runner{cfg: cfg, log: cfg.Logger, measurement: m, nodes: map[string]*node{}}, nil
}

// Measurement implements runner.Runner.
func (r *Runner) Measurement() string { return hex.EncodeToString(r.measurement[:]) }

// Capacity implements runner.Runner.
func (r *Runner) Capacity() (used, total runner.Resources) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.used, r.cfg.Capacity
}

// reserve accounts res to appID's node. Beyond capacity it refuses, unless
// force (a node adopted after a restart is already running: count it).
func (r *Runner) reserve(appID string, res runner.Resources, force bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.nodes[appID]; ok {
		return fmt.Errorf("local runner: app %s already has a node", appID)
	}
	free := runner.Resources{MemoryMiB: r.cfg.Capacity.MemoryMiB - r.used.MemoryMiB, Cores: r.cfg.Capacity.Cores - r.used.Cores}
	if !force && (res.MemoryMiB > free.MemoryMiB || res.Cores > free.Cores) {
		return fmt.Errorf("%w: the hardware needs %d MiB and %d cores, %d MiB and %d cores are free; stop an app or choose smaller hardware",
			runner.ErrNoCapacity, res.MemoryMiB, res.Cores, free.MemoryMiB, free.Cores)
	}
	r.used.MemoryMiB += res.MemoryMiB
	r.used.Cores += res.Cores
	r.nodes[appID] = &node{res: res}
	return nil
}

func (r *Runner) release(appID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.nodes[appID]
	if !ok {
		return
	}
	r.used.MemoryMiB -= n.res.MemoryMiB
	r.used.Cores -= n.res.Cores
	if n.qe != nil {
		_ = n.qe.Close()
	}
	delete(r.nodes, appID)
}

func (r *Runner) nodeDir(appID string) (string, error) {
	if appID == "" || filepath.Base(appID) != appID || appID[0] == '.' {
		return "", fmt.Errorf("local runner: invalid app id %q", appID)
	}
	return filepath.Join(r.cfg.Dir, appID), nil
}

// qeSocket is where a node's quoting service listens: in its directory, or,
// when that path is too long for a unix socket (108 bytes), in a private
// directory under the system's temporary directory.
func qeSocket(appID, dir string) (string, error) {
	sock := filepath.Join(dir, "qe.sock")
	if len(sock) < 100 {
		return sock, nil
	}
	short := filepath.Join(os.TempDir(), "mse-qe-"+appID)
	if err := os.MkdirAll(short, 0o700); err != nil {
		return "", err
	}
	return filepath.Join(short, "qe.sock"), nil
}

// serveQE starts the simulated quoting service of appID's node (already
// reserved) and returns its socket path.
func (r *Runner) serveQE(appID, dir string) (string, error) {
	sock, err := qeSocket(appID, dir)
	if err != nil {
		return "", err
	}
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return "", fmt.Errorf("local runner: quoting service socket: %w", err)
	}
	_ = os.Chmod(sock, 0o600)
	id := sim.Identity{Measurement: r.measurement, Signer: r.cfg.Signer, TCBStatus: r.cfg.TCBStatus, Debug: r.cfg.Debug}
	srv := &http.Server{Handler: sim.NewQuotingService(r.cfg.Platform, id, time.Now), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	r.mu.Lock()
	r.nodes[appID].qe = srv
	r.mu.Unlock()
	return sock, nil
}

// Spawn implements runner.Runner.
func (r *Runner) Spawn(ctx context.Context, appID string, s runner.SpawnSpec) ([]byte, error) {
	dir, err := r.nodeDir(appID)
	if err != nil {
		return nil, err
	}
	res := runner.Resources{MemoryMiB: s.Hardware.MemoryMiB, Cores: s.Hardware.Cores}
	if err := r.reserve(appID, res, false); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			r.release(appID)
		}
	}()
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(filepath.Join(dir, "work"), 0o700); err != nil {
		return nil, err
	}
	specJSON, err := json.Marshal(s.App)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "spec.json"), specJSON, 0o600); err != nil {
		return nil, err
	}
	sock, err := r.serveQE(appID, dir)
	if err != nil {
		return nil, err
	}

	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "node.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := []string{
		"--app-id", appID,
		"--spec", filepath.Join(dir, "spec.json"),
		"--bundle", s.BundlePath,
		"--listen", addr,
		"--workdir", filepath.Join(dir, "work"),
		"--tee", attest.TypeSim,
		"--sim-socket", sock,
	}
	args = append(args, r.cfg.ExtraArgs...)
	cmd := exec.Command(r.cfg.NodeBinary, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "LANG=C.UTF-8"}
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Its own process group: a node outlives a backend crash and is adopted
	// again on restart.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("local runner: start %s: %w", r.cfg.NodeBinary, err)
	}
	_ = os.WriteFile(filepath.Join(dir, "node.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	go func() { _ = cmd.Wait() }() // reap it; liveness is read from /proc (adopted nodes are not our children)
	h, _ := json.Marshal(handle{PID: cmd.Process.Pid, Addr: addr, Dir: dir, Resources: res})
	ok = true
	r.log.Info("node spawned", "app_id", appID, "pid", cmd.Process.Pid, "addr", addr)
	return h, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func parseHandle(b []byte) (*handle, error) {
	var h handle
	if err := json.Unmarshal(b, &h); err != nil || h.PID <= 0 || h.Dir == "" {
		return nil, fmt.Errorf("local runner: bad node handle")
	}
	return &h, nil
}

// alive reports whether pid is a live mse-node process for appID (not a
// zombie, not a reused pid).
func alive(pid int, appID string) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	return bytes.Contains(cmdline, []byte("\x00"+appID+"\x00"))
}

// Status implements runner.Runner.
func (r *Runner) Status(ctx context.Context, appID string, hb []byte) (runner.NodeState, error) {
	h, err := parseHandle(hb)
	if err != nil {
		return runner.NodeState{}, err
	}
	var st nodeapi.Status
	if b, err := os.ReadFile(filepath.Join(h.Dir, "work", "status.json")); err == nil {
		_ = json.Unmarshal(b, &st)
	}
	ns := runner.NodeState{State: st.State, Error: st.Error, Fingerprint: st.Fingerprint}
	if !alive(h.PID, appID) {
		r.mu.Lock()
		_, known := r.nodes[appID]
		r.mu.Unlock()
		if !known {
			ns.State = runner.StateLost
			if ns.Error == "" {
				ns.Error = "the node process is gone"
			}
			return ns, nil
		}
		ns.State = runner.StateExited
		if ns.Error == "" {
			ns.Error = "the node process ended unexpectedly; its last log line" + lastLogLine(filepath.Join(h.Dir, "node.log"))
		}
	}
	if ns.State == "" {
		ns.State = nodeapi.StateStarting
	}
	return ns, nil
}

func lastLogLine(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > 4096 {
		_, _ = f.Seek(-4096, io.SeekEnd)
	}
	var last string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); l != "" {
			last = l
		}
	}
	if last == "" {
		return ""
	}
	if len(last) > 300 {
		last = last[:300]
	}
	return ": " + last
}

// Addr implements runner.Runner.
func (r *Runner) Addr(appID string, hb []byte) (string, error) {
	h, err := parseHandle(hb)
	if err != nil {
		return "", err
	}
	return h.Addr, nil
}

// Stop implements runner.Runner.
func (r *Runner) Stop(ctx context.Context, appID string, hb []byte) error {
	defer r.release(appID)
	if len(hb) == 0 {
		return nil
	}
	h, err := parseHandle(hb)
	if err != nil {
		return err
	}
	r.kill(h.PID, appID)
	if sock, err := qeSocket(appID, h.Dir); err == nil && filepath.Dir(sock) != h.Dir {
		_ = os.RemoveAll(filepath.Dir(sock))
	}
	// The node's private directory holds the decrypted code and secrets (in
	// simulation they are on the operator's disk): remove them, keep the log.
	_ = os.RemoveAll(filepath.Join(h.Dir, "work"))
	return nil
}

func (r *Runner) kill(pid int, appID string) {
	if !alive(pid, appID) {
		return
	}
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid, appID) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if alive(pid, appID) {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// Logs implements runner.Runner.
func (r *Runner) Logs(ctx context.Context, appID string, hb []byte, tail int64, follow bool) (io.ReadCloser, error) {
	dir, err := r.nodeDir(appID)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(dir, "node.log"))
	if err != nil {
		return nil, fmt.Errorf("no logs for app %s", appID)
	}
	if st, err := f.Stat(); err == nil && tail > 0 && st.Size() > tail {
		_, _ = f.Seek(-tail, io.SeekEnd)
	}
	if !follow {
		return f, nil
	}
	var pid int
	if h, err := parseHandle(hb); err == nil {
		pid = h.PID
	}
	return &follower{ctx: ctx, f: f, live: func() bool { return pid > 0 && alive(pid, appID) }}, nil
}

type follower struct {
	ctx  context.Context
	f    *os.File
	live func() bool
}

func (fl *follower) Read(p []byte) (int, error) {
	for {
		n, err := fl.f.Read(p)
		if n > 0 {
			return n, nil
		}
		if err != nil && err != io.EOF {
			return 0, err
		}
		if !fl.live() {
			// One last read for what was written just before the exit.
			if n, _ := fl.f.Read(p); n > 0 {
				return n, nil
			}
			return 0, io.EOF
		}
		select {
		case <-fl.ctx.Done():
			return 0, io.EOF
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (fl *follower) Close() error { return fl.f.Close() }

// Adopt implements runner.Runner.
func (r *Runner) Adopt(ctx context.Context, nodes map[string][]byte) (map[string]string, error) {
	lost := map[string]string{}
	for appID, hb := range nodes {
		h, err := parseHandle(hb)
		if err != nil {
			lost[appID] = err.Error()
			continue
		}
		if !alive(h.PID, appID) {
			lost[appID] = "the node process ended while the backend was down; its last log line" + lastLogLine(filepath.Join(h.Dir, "node.log"))
			_ = os.RemoveAll(filepath.Join(h.Dir, "work"))
			continue
		}
		if err := r.reserve(appID, h.Resources, true); err != nil {
			lost[appID] = err.Error()
			continue
		}
		if _, err := r.serveQE(appID, h.Dir); err != nil {
			r.log.Warn("adopted node has no quoting service: it cannot give fresh evidence", "app_id", appID, "err", err)
		}
		r.log.Info("node adopted", "app_id", appID, "pid", h.PID)
	}
	// Nodes that no app claims are orphans: end them.
	ents, _ := os.ReadDir(r.cfg.Dir)
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if _, ok := nodes[e.Name()]; ok {
			continue
		}
		dir := filepath.Join(r.cfg.Dir, e.Name())
		if b, err := os.ReadFile(filepath.Join(dir, "node.pid")); err == nil {
			if pid, err := strconv.Atoi(string(b)); err == nil && alive(pid, e.Name()) {
				r.log.Warn("ending an orphan node", "app_id", e.Name(), "pid", pid)
				r.kill(pid, e.Name())
			}
		}
		_ = os.RemoveAll(filepath.Join(dir, "work"))
	}
	return lost, nil
}

// Close implements runner.Runner: quoting services stop; nodes keep running.
func (r *Runner) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.nodes {
		if n.qe != nil {
			_ = n.qe.Close()
		}
	}
	return nil
}
