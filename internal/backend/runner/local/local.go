// Package local runs nodes on this machine, each in its own sandbox inside
// its runtime image, with the sim TEE: the runner plays the hardware. It
// copies the mse-node executable once into a sealed memfd, measures those
// bytes and executes exactly them; it checks the runtime's root filesystem
// against its image before each spawn and states the runtime's digest in the
// node's quotes; it serves the simulated quoting service on a unix socket in
// the node's run directory, so the attestation key never enters the node.
//
// The sandbox is an OCI container run by runc (docs/runtimes.md): its own
// UID, no capabilities, its own mount, PID, network, IPC and UTS namespaces,
// the runtime read-only, a private tmpfs for code, secrets and HOME, and
// memory, CPU and PID limits from the hardware entry (cgroups). The router
// reaches the node through a unix socket; the node has no network beyond its
// own loopback. Without root the sandboxes are rootless (rootless.go): a
// user namespace per node, the runner's UID for all nodes, cgroup limits
// only where a cgroup is delegated.
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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sim"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/runtimes"
	"github.com/mse-in-go/mse/internal/runtimes/image"
)

// Config configures the local runner.
type Config struct {
	// Dir holds one private directory per node.
	Dir string
	// NodeBinary is the mse-node executable.
	NodeBinary string
	// Runtimes gives the verified root filesystem of a runtime image.
	Runtimes Runtimes
	// Runc is the runc executable (default: "runc" in PATH); its state
	// lives under Dir/.runc.
	Runc string
	// UIDBase is the first of the UIDs given to nodes (default 200000); each
	// running node has its own.
	UIDBase  int
	Platform *sim.Platform
	// Capacity is what the machine offers to apps.
	Capacity runner.Resources
	// Signer and TCBStatus are what the simulated hardware reports.
	Signer    [32]byte
	TCBStatus string
	// Debug marks the simulated enclaves as debug enclaves (for tests).
	Debug  bool
	Logger *slog.Logger
}

// Runtimes gives the root filesystem of a runtime image, checked against
// the image (runtimes/image.Store).
type Runtimes interface {
	Rootfs(ctx context.Context, digest string) (string, error)
}

// maxNodes bounds the UIDs handed out.
const maxNodes = 10000

// Runner is the local runner.
type Runner struct {
	cfg         Config
	log         *slog.Logger
	measurement [32]byte
	nodeExe     *os.File // sealed memfd: the measured mse-node bytes
	runc        string
	rootless    *rootless // nil under root

	mu    sync.Mutex
	used  runner.Resources
	nodes map[string]*node
}

type node struct {
	res runner.Resources
	uid int
	qe  *http.Server
}

// handle is the JSON the backend stores for a node.
type handle struct {
	PID       int              `json:"pid"` // the runc process
	Addr      string           `json:"addr"`
	Dir       string           `json:"dir"`
	RunDir    string           `json:"run_dir"`
	UID       int              `json:"uid"`
	Runtime   string           `json:"runtime"`
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
	if cfg.Runtimes == nil {
		return nil, errors.New("local runner: no runtime store")
	}
	if cfg.UIDBase <= 0 {
		cfg.UIDBase = 200000
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	runc := cfg.Runc
	if runc == "" {
		runc = "runc"
	}
	runcPath, err := exec.LookPath(runc)
	if err != nil {
		return nil, fmt.Errorf("local runner: runc is needed to sandbox nodes and was not found (%v); install it (apt-get install runc) or pass --runc PATH", err)
	}
	var rl *rootless
	if os.Geteuid() != 0 {
		if rl, err = newRootless(runcPath, cfg.Logger); err != nil {
			return nil, err
		}
		rl.logOnce(cfg.Logger)
	}
	exe, m, err := sealedCopy(cfg.NodeBinary)
	if err != nil {
		return nil, fmt.Errorf("local runner: read the node binary %s: %w (build it with `make build` or pass --node-binary)", cfg.NodeBinary, err)
	}
	return &Runner{cfg: cfg, log: cfg.Logger, measurement: m, nodeExe: exe, runc: runcPath, rootless: rl, nodes: map[string]*node{}}, nil
}

// runcCmd is a runc command on this runner's state directory.
func (r *Runner) runcCmd(ctx context.Context, args ...string) *exec.Cmd {
	global := []string{"--root", filepath.Join(r.cfg.Dir, ".runc")}
	if r.rootless != nil {
		global = append(global, "--rootless", "true")
	}
	return exec.CommandContext(ctx, r.runc, append(global, args...)...)
}

// allocUID picks the lowest free node UID; r.mu is held.
func (r *Runner) allocUID() (int, error) {
	used := map[int]bool{}
	for _, n := range r.nodes {
		used[n.uid] = true
	}
	for i := 0; i < maxNodes; i++ {
		if !used[r.cfg.UIDBase+i] {
			return r.cfg.UIDBase + i, nil
		}
	}
	return 0, fmt.Errorf("%w: %d nodes run already", runner.ErrNoCapacity, maxNodes)
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
func (r *Runner) reserve(appID string, res runner.Resources, uid int, force bool) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.nodes[appID]; ok {
		return 0, fmt.Errorf("local runner: app %s already has a node", appID)
	}
	if uid == 0 {
		var err error
		if uid, err = r.allocUID(); err != nil {
			return 0, err
		}
	}
	free := runner.Resources{MemoryMiB: r.cfg.Capacity.MemoryMiB - r.used.MemoryMiB, Cores: r.cfg.Capacity.Cores - r.used.Cores}
	if !force && (res.MemoryMiB > free.MemoryMiB || res.Cores > free.Cores) {
		return 0, fmt.Errorf("%w: the hardware needs %d MiB and %d cores, %d MiB and %d cores are free; stop an app or choose smaller hardware",
			runner.ErrNoCapacity, res.MemoryMiB, res.Cores, free.MemoryMiB, free.Cores)
	}
	r.used.MemoryMiB += res.MemoryMiB
	r.used.Cores += res.Cores
	r.nodes[appID] = &node{res: res, uid: uid}
	return uid, nil
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

// runDir is the host side of a node's /run/mse: in its directory, or, when
// a socket path there would be too long for a unix socket (108 bytes), a
// private directory under the system's temporary directory.
func runDir(appID, dir string) string {
	d := filepath.Join(dir, "run")
	if len(d)+len("/node.sock") < 100 {
		return d
	}
	return filepath.Join(os.TempDir(), "mse-run-"+appID)
}

// serveQE starts the simulated quoting service of appID's node (already
// reserved) on the socket run/qe.sock, owned by the node's UID so that only
// that node can reach it, stating the runtime the node runs in. Rootless, the
// node's host UID is the runner's: the socket is the runner's, 0600, and only
// this node's mount namespace has this run directory.
func (r *Runner) serveQE(appID, run string, uid int, runtimeDigest string) (string, error) {
	rd, err := runtimes.DigestBytes(runtimeDigest)
	if err != nil {
		return "", fmt.Errorf("local runner: %w", err)
	}
	sock := filepath.Join(run, "qe.sock")
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return "", fmt.Errorf("local runner: quoting service socket: %w", err)
	}
	if r.rootless == nil {
		if err := os.Chown(sock, uid, uid); err != nil {
			ln.Close()
			return "", fmt.Errorf("local runner: quoting service socket: %w", err)
		}
	}
	_ = os.Chmod(sock, 0o600)
	id := sim.Identity{Measurement: r.measurement, Signer: r.cfg.Signer, TCBStatus: r.cfg.TCBStatus, Debug: r.cfg.Debug}
	copy(id.RuntimeDigest[:], rd)
	srv := &http.Server{Handler: sim.NewQuotingService(r.cfg.Platform, id, time.Now), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	r.mu.Lock()
	r.nodes[appID].qe = srv
	r.mu.Unlock()
	return sock, nil
}

// Spawn implements runner.Runner: it checks the runtime's root filesystem,
// prepares the node's run directory and OCI bundle, starts the quoting
// service and runs the node's sandbox with runc.
func (r *Runner) Spawn(ctx context.Context, appID string, s runner.SpawnSpec) ([]byte, error) {
	dir, err := r.nodeDir(appID)
	if err != nil {
		return nil, err
	}
	// The runtime first: what the node will run must be what the image
	// holds, and the quote will say which image that is.
	rootfs, err := r.cfg.Runtimes.Rootfs(ctx, s.App.Runtime.Digest)
	if err != nil {
		r.log.Error("runtime refused: nothing started", "app_id", appID, "runtime", s.App.Runtime.Name, "err", err)
		return nil, fmt.Errorf("%w: the operator's copy of runtime %s (%s) is not that image%s; nothing was started; ask the operator to re-extract it",
			runner.ErrRuntime, s.App.Runtime.Name, s.App.Runtime.Digest, modifiedPath(err))
	}
	res := runner.Resources{MemoryMiB: s.Hardware.MemoryMiB, Cores: s.Hardware.Cores}
	uid, err := r.reserve(appID, res, 0, false)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			r.release(appID)
		}
	}()
	_ = os.RemoveAll(dir)
	run := runDir(appID, dir)
	_ = os.RemoveAll(run)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(run, 0o700); err != nil {
		return nil, err
	}
	if r.rootless == nil { // rootless, it is the runner's UID: the node's inside its user namespace
		if err := os.Chown(run, uid, uid); err != nil {
			return nil, err
		}
	}
	specJSON, err := json.Marshal(s.App)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(run, "spec.json"), specJSON, 0o444); err != nil {
		return nil, err
	}
	if _, err := r.serveQE(appID, run, uid, s.App.Runtime.Digest); err != nil {
		return nil, err
	}
	args := []string{
		"--app-id", appID,
		"--spec", sandboxRunDir + "/spec.json",
		"--bundle-fd", strconv.Itoa(bundleFD),
		"--listen", "unix:" + sandboxRunDir + "/node.sock",
		"--workdir", sandboxWorkDir,
		"--status-file", sandboxRunDir + "/status.json",
		"--tee", attest.TypeSim,
		"--sim-socket", sandboxRunDir + "/qe.sock",
	}
	ss := sandboxSpec{AppID: appID, Rootfs: rootfs, RunDir: run, UID: uid, MemoryMiB: res.MemoryMiB, Cores: res.Cores, Args: args}
	if r.rootless != nil {
		r.rootless.apply(&ss)
	}
	if err := writeBundle(dir, ss); err != nil {
		return nil, err
	}
	bundleFile, err := os.Open(s.BundlePath)
	if err != nil {
		return nil, fmt.Errorf("local runner: open the bundle: %w", err)
	}
	defer bundleFile.Close()
	logf, err := os.OpenFile(filepath.Join(dir, "node.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// Each container gets its own session keyring (runc's default): nodes
	// share no kernel keyring with the backend or each other.
	// Not CommandContext: the node outlives this request, and a backend
	// crash; it is adopted again on restart.
	cmd := r.runcCmd(context.Background(), "run", "--bundle", dir, "--preserve-fds", "2", appID)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.ExtraFiles = []*os.File{bundleFile, r.nodeExe} // fds 3 and 4
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("local runner: start %s: %w", r.runc, err)
	}
	_ = os.WriteFile(filepath.Join(dir, "node.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	go func() { _ = cmd.Wait() }() // reap it; liveness is read from /proc (adopted nodes are not our children)
	addr := "unix:" + filepath.Join(run, "node.sock")
	h, _ := json.Marshal(handle{PID: cmd.Process.Pid, Addr: addr, Dir: dir, RunDir: run, UID: uid, Runtime: s.App.Runtime.Digest, Resources: res})
	ok = true
	hostUID := uid
	if r.rootless != nil {
		hostUID = r.rootless.uid // uid is only the runner's bookkeeping then
	}
	r.log.Info("node spawned", "app_id", appID, "pid", cmd.Process.Pid, "uid", hostUID, "runtime", s.App.Runtime.Name, "addr", addr)
	return h, nil
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
	if b, err := os.ReadFile(filepath.Join(h.RunDir, "status.json")); err == nil && len(b) <= 64<<10 {
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
	r.kill(ctx, h.PID, appID)
	r.cleanup(appID, h.Dir, h.RunDir)
	return nil
}

// cleanup removes what a node left on the host: its run directory (socket,
// status), its OCI bundle. The code and secrets were in the sandbox's tmpfs,
// gone with it. The log stays.
func (r *Runner) cleanup(appID, dir, run string) {
	if run == "" {
		run = runDir(appID, dir)
	}
	_ = os.RemoveAll(run)
	_ = os.Remove(filepath.Join(dir, "config.json"))
}

// kill ends a node's sandbox: SIGTERM to the node (its PID 1), SIGKILL to
// the whole container after 10 s, then the container's state is deleted.
func (r *Runner) kill(ctx context.Context, pid int, appID string) {
	if alive(pid, appID) {
		_ = r.runcCmd(ctx, "kill", appID, "TERM").Run()
		deadline := time.Now().Add(10 * time.Second)
		for alive(pid, appID) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid, appID) {
			_ = r.runcCmd(ctx, "kill", "--all", appID, "KILL").Run()
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
	_ = r.runcCmd(ctx, "delete", "--force", appID).Run()
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
			_ = r.runcCmd(ctx, "delete", "--force", appID).Run()
			r.cleanup(appID, h.Dir, h.RunDir)
			continue
		}
		if _, err := r.reserve(appID, h.Resources, h.UID, true); err != nil {
			lost[appID] = err.Error()
			continue
		}
		if _, err := r.serveQE(appID, h.RunDir, h.UID, h.Runtime); err != nil {
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
		if _, err := r.nodeDir(e.Name()); err != nil {
			continue // .runc and other non-node entries
		}
		dir := filepath.Join(r.cfg.Dir, e.Name())
		if b, err := os.ReadFile(filepath.Join(dir, "node.pid")); err == nil {
			if pid, err := strconv.Atoi(string(b)); err == nil && alive(pid, e.Name()) {
				r.log.Warn("ending an orphan node", "app_id", e.Name(), "pid", pid)
				r.kill(ctx, pid, e.Name())
			}
		}
		r.cleanup(e.Name(), dir, "")
	}
	// Containers no app claims (a runc process killed with its backend).
	if out, err := r.runcCmd(ctx, "list", "--quiet").Output(); err == nil {
		for _, id := range strings.Fields(string(out)) {
			if _, ok := nodes[id]; !ok {
				r.log.Warn("ending an orphan sandbox", "app_id", id)
				_ = r.runcCmd(ctx, "delete", "--force", id).Run()
			}
		}
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

// modifiedPath names the file that differs, when the store said which (the
// path inside the image: nothing of the host's layout).
func modifiedPath(err error) string {
	var me *image.ModifiedError
	if errors.As(err, &me) && me.Path != "" {
		return fmt.Sprintf(": file %s %s", me.Path, me.Problem)
	}
	return ""
}
