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
// own loopback, except, in tls_mode acme, a CONNECT proxy to its ACME CA's
// host and port only (egress.go). Without root the sandboxes are rootless (rootless.go): a
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
	// Pool is how many idle pre-warmed sandboxes the runner keeps per
	// runtime and hardware entry once one was spawned (pool.go); 0: none,
	// every node starts cold.
	Pool int
	// EgressPrivate lets a node's egress proxy (egress.go) reach loopback,
	// private and link-local addresses: a CA on the operator's own network,
	// or a test CA on 127.0.0.1. Off, an owner cannot point its node's ACME
	// CA at the operator's internal services.
	EgressPrivate bool
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

	// egressTune adjusts each egress proxy before it serves (tests).
	egressTune func(*egressProxy)

	mu    sync.Mutex
	used  runner.Resources
	nodes map[string]*node
	pool  pool
}

type node struct {
	res    runner.Resources
	uid    int
	qe     *http.Server
	egress *egressProxy // tls_mode acme only
}

// handle is the JSON the backend stores for a node.
type handle struct {
	PID int `json:"pid"` // the runc process
	// Container is the runc container id, also the name of Dir: the app id
	// for a node spawned cold, pool-… for one from the warm pool. Handles
	// stored before the pool have none: the app id.
	Container string           `json:"container,omitempty"`
	Addr      string           `json:"addr"`
	Dir       string           `json:"dir"`
	RunDir    string           `json:"run_dir"`
	UID       int              `json:"uid"`
	Runtime   string           `json:"runtime"`
	Resources runner.Resources `json:"resources"`
	// Egress is the host:port the node's egress proxy relays to (tls_mode
	// acme), from the spec the runner was given: kept here, not read back
	// from the node's run directory, when a restarted runner adopts it.
	Egress string `json:"egress,omitempty"`
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
	return &Runner{cfg: cfg, log: cfg.Logger, measurement: m, nodeExe: exe, runc: runcPath, rootless: rl, nodes: map[string]*node{}, pool: newPool()}, nil
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
	for uid := range r.pool.uids {
		used[uid] = true
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
	n.egress.close()
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
	srv, sock, err := r.startQE(run, uid, runtimeDigest)
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	r.nodes[appID].qe = srv
	r.mu.Unlock()
	return sock, nil
}

// startQE serves the simulated quoting service on run/qe.sock for a node of
// that UID in that runtime. Its identity names no app: a pooled sandbox's
// is served before its app is known.
func (r *Runner) startQE(run string, uid int, runtimeDigest string) (*http.Server, string, error) {
	rd, err := runtimes.DigestBytes(runtimeDigest)
	if err != nil {
		return nil, "", fmt.Errorf("local runner: %w", err)
	}
	sock := filepath.Join(run, "qe.sock")
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, "", fmt.Errorf("local runner: quoting service socket: %w", err)
	}
	if r.rootless == nil {
		if err := os.Chown(sock, uid, uid); err != nil {
			ln.Close()
			return nil, "", fmt.Errorf("local runner: quoting service socket: %w", err)
		}
	}
	_ = os.Chmod(sock, 0o600)
	id := sim.Identity{Measurement: r.measurement, Signer: r.cfg.Signer, TCBStatus: r.cfg.TCBStatus, Debug: r.cfg.Debug}
	copy(id.RuntimeDigest[:], rd)
	srv := &http.Server{Handler: sim.NewQuotingService(r.cfg.Platform, id, time.Now), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv, sock, nil
}

// Spawn implements runner.Runner: it checks the runtime's root filesystem,
// then assigns the app to an idle pre-warmed sandbox of that runtime and
// hardware when the pool has one (pool.go), or prepares the node's run
// directory and OCI bundle, starts the quoting service and runs the node's
// sandbox with runc.
func (r *Runner) Spawn(ctx context.Context, appID string, s runner.SpawnSpec) ([]byte, error) {
	dir, err := r.nodeDir(appID)
	if err != nil {
		return nil, err
	}
	// The runtime first: what the node will run must be what the image
	// holds, and the quote will say which image that is. Checked before
	// each spawn, pooled or not.
	rootfs, err := r.cfg.Runtimes.Rootfs(ctx, s.App.Runtime.Digest)
	if err != nil {
		r.log.Error("runtime refused: nothing started", "app_id", appID, "runtime", s.App.Runtime.Name, "err", err)
		return nil, fmt.Errorf("%w: the operator's copy of runtime %s (%s) is not that image%s; nothing was started; ask the operator to re-extract it",
			runner.ErrRuntime, s.App.Runtime.Name, s.App.Runtime.Digest, modifiedPath(err))
	}
	res := runner.Resources{MemoryMiB: s.Hardware.MemoryMiB, Cores: s.Hardware.Cores}
	specJSON, err := json.Marshal(s.App)
	if err != nil {
		return nil, err
	}
	egress, err := egressTarget(s.App)
	if err != nil {
		return nil, err
	}
	key := poolKey{runtime: s.App.Runtime.Digest, hardware: s.Hardware.Name, res: res}
	if r.cfg.Pool > 0 {
		h, err := r.assignPooled(appID, key, specJSON, s.BundlePath, egress)
		if err == nil {
			r.refill(key, h.RunDir)
			b, _ := json.Marshal(h)
			return b, nil
		}
		if errors.Is(err, runner.ErrNoCapacity) {
			return nil, err
		}
		if !errors.Is(err, errNoIdle) {
			r.log.Warn("pooled sandbox refused its assignment: spawning cold", "app_id", appID, "err", err)
		}
	}
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
	bundleFile, err := os.Open(s.BundlePath)
	if err != nil {
		return nil, fmt.Errorf("local runner: open the bundle: %w", err)
	}
	defer bundleFile.Close()
	sb, err := r.startSandbox(appID, dir, rootfs, uid, res, s.App.Runtime.Digest, specJSON, bundleFile, egress)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.nodes[appID].qe = sb.qe
	r.nodes[appID].egress = sb.egress
	r.mu.Unlock()
	h, _ := json.Marshal(sb.handle())
	ok = true
	r.log.Info("node spawned", "app_id", appID, "pid", sb.pid, "uid", r.hostUID(uid), "runtime", s.App.Runtime.Name, "addr", sb.addr())
	if r.cfg.Pool > 0 {
		r.refill(key, sb.run)
	}
	return h, nil
}

func (r *Runner) hostUID(uid int) int {
	if r.rootless != nil {
		return r.rootless.uid // uid is only the runner's bookkeeping then
	}
	return uid
}

// sandbox is one runc container running mse-node.
type sandbox struct {
	cid, dir, run string
	pid, uid      int
	qe            *http.Server
	res           runner.Resources
	runtime       string
	egress        *egressProxy // a cold node in tls_mode acme
	egressTarget  string
}

func (sb *sandbox) addr() string { return "unix:" + filepath.Join(sb.run, "node.sock") }

func (sb *sandbox) handle() handle {
	return handle{PID: sb.pid, Container: sb.cid, Addr: sb.addr(), Dir: sb.dir, RunDir: sb.run, UID: sb.uid, Runtime: sb.runtime, Resources: sb.res, Egress: sb.egressTarget}
}

// startSandbox prepares the container cid's directory dir, its run
// directory and OCI bundle, serves its quoting service and starts it with
// runc. With specJSON and bundle, the node runs that app at once (cold);
// without, it is a standby node waiting for its assignment. egress is the
// host:port a cold node may reach through its egress proxy ("" none); a
// standby node is always told where the proxy will be (egress.go).
func (r *Runner) startSandbox(cid, dir, rootfs string, uid int, res runner.Resources, digest string, specJSON []byte, bundle *os.File, egress string) (_ *sandbox, err error) {
	_ = os.RemoveAll(dir)
	run := runDir(cid, dir)
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
	standby := bundle == nil
	if !standby {
		if err := os.WriteFile(filepath.Join(run, "spec.json"), specJSON, 0o444); err != nil {
			return nil, err
		}
	}
	qe, _, err := r.startQE(run, uid, digest)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = qe.Close()
		}
	}()
	var ep *egressProxy
	if egress != "" && !standby {
		if ep, err = r.startEgress(run, uid, egress, cid); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				ep.close()
			}
		}()
	}
	args := []string{
		"--spec", sandboxRunDir + "/spec.json",
		"--listen", "unix:" + sandboxRunDir + "/node.sock",
		"--workdir", sandboxWorkDir,
		"--status-file", sandboxRunDir + "/status.json",
		"--tee", attest.TypeSim,
		"--sim-socket", sandboxRunDir + "/qe.sock",
	}
	if standby || egress != "" {
		args = append(args, "--egress", egressArg)
	}
	if standby {
		args = append([]string{"--standby", "--assign-socket", sandboxRunDir + "/" + assignSocket}, args...)
		if bundle, err = os.Open(os.DevNull); err != nil { // descriptor 3 until the assignment brings the bundle
			return nil, err
		}
		defer bundle.Close()
	} else {
		args = append([]string{"--app-id", cid, "--bundle-fd", strconv.Itoa(bundleFD)}, args...)
	}
	ss := sandboxSpec{AppID: cid, Rootfs: rootfs, RunDir: run, UID: uid, MemoryMiB: res.MemoryMiB, Cores: res.Cores, Args: args}
	if r.rootless != nil {
		r.rootless.apply(&ss)
	}
	if err := writeBundle(dir, ss); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "node.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// Each container gets its own session keyring (runc's default): nodes
	// share no kernel keyring with the backend or each other.
	// Not CommandContext: the node outlives this request, and a backend
	// crash; it is adopted again on restart.
	cmd := r.runcCmd(context.Background(), "run", "--bundle", dir, "--preserve-fds", "2", cid)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.ExtraFiles = []*os.File{bundle, r.nodeExe} // fds 3 and 4
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("local runner: start %s: %w", r.runc, err)
	}
	_ = os.WriteFile(filepath.Join(dir, "node.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	go func() { _ = cmd.Wait() }() // reap it; liveness is read from /proc (adopted nodes are not our children)
	sb := &sandbox{cid: cid, dir: dir, run: run, pid: cmd.Process.Pid, uid: uid, qe: qe, res: res, runtime: digest, egress: ep}
	if ep != nil {
		sb.egressTarget = egress
	}
	return sb, nil
}

func parseHandle(b []byte) (*handle, error) {
	var h handle
	if err := json.Unmarshal(b, &h); err != nil || h.PID <= 0 || h.Dir == "" {
		return nil, fmt.Errorf("local runner: bad node handle")
	}
	return &h, nil
}

// container is the runc container id of appID's node.
func (h *handle) container(appID string) string {
	if h.Container != "" {
		return h.Container
	}
	return appID
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
	ns := runner.NodeState{State: st.State, Error: st.Error, Fingerprint: st.Fingerprint, TLS: st.TLS}
	if !alive(h.PID, h.container(appID)) {
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
	r.kill(ctx, h.PID, h.container(appID))
	r.cleanup(h.container(appID), h.Dir, h.RunDir)
	return nil
}

// cleanup removes what container cid left on the host: its run directory
// (socket, status), its OCI bundle. The code and secrets were in the
// sandbox's tmpfs, gone with it. The log stays.
func (r *Runner) cleanup(cid, dir, run string) {
	if run == "" {
		run = runDir(cid, dir)
	}
	_ = os.RemoveAll(run)
	_ = os.Remove(filepath.Join(dir, "config.json"))
}

// kill ends container cid: SIGTERM to the node (its PID 1), SIGKILL to the
// whole container after 10 s, then the container's state is deleted.
func (r *Runner) kill(ctx context.Context, pid int, cid string) {
	if alive(pid, cid) {
		_ = r.runcCmd(ctx, "kill", cid, "TERM").Run()
		deadline := time.Now().Add(10 * time.Second)
		for alive(pid, cid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid, cid) {
			_ = r.runcCmd(ctx, "kill", "--all", cid, "KILL").Run()
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
	_ = r.runcCmd(ctx, "delete", "--force", cid).Run()
}

// Logs implements runner.Runner.
func (r *Runner) Logs(ctx context.Context, appID string, hb []byte, tail int64, follow bool) (io.ReadCloser, error) {
	dir, err := r.nodeDir(appID)
	if err != nil {
		return nil, err
	}
	h, herr := parseHandle(hb)
	if herr == nil {
		dir = h.Dir
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
	pid, cid := 0, appID
	if herr == nil {
		pid, cid = h.PID, h.container(appID)
	}
	return &follower{ctx: ctx, f: f, live: func() bool { return pid > 0 && alive(pid, cid) }}, nil
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
	claimed := map[string]bool{} // container ids
	for appID, hb := range nodes {
		claimed[appID] = true
		h, err := parseHandle(hb)
		if err != nil {
			lost[appID] = err.Error()
			continue
		}
		cid := h.container(appID)
		claimed[cid] = true
		if !alive(h.PID, cid) {
			lost[appID] = "the node process ended while the backend was down; its last log line" + lastLogLine(filepath.Join(h.Dir, "node.log"))
			_ = r.runcCmd(ctx, "delete", "--force", cid).Run()
			r.cleanup(cid, h.Dir, h.RunDir)
			continue
		}
		if _, err := r.reserve(appID, h.Resources, h.UID, true); err != nil {
			lost[appID] = err.Error()
			continue
		}
		if _, err := r.serveQE(appID, h.RunDir, h.UID, h.Runtime); err != nil {
			r.log.Warn("adopted node has no quoting service: it cannot give fresh evidence", "app_id", appID, "err", err)
		}
		if h.Egress != "" {
			if ep, err := r.startEgress(h.RunDir, h.UID, h.Egress, appID); err != nil {
				r.log.Warn("adopted node has no egress: it cannot renew its ACME certificate", "app_id", appID, "err", err)
			} else {
				r.mu.Lock()
				r.nodes[appID].egress = ep
				r.mu.Unlock()
			}
		}
		r.log.Info("node adopted", "app_id", appID, "pid", h.PID)
	}
	// Nodes that no app claims are orphans: end them. So are idle pooled
	// sandboxes of the previous run: a pool is never adopted.
	ents, _ := os.ReadDir(r.cfg.Dir)
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if claimed[e.Name()] {
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
			if !claimed[id] {
				r.log.Warn("ending an orphan sandbox", "app_id", id)
				_ = r.runcCmd(ctx, "delete", "--force", id).Run()
			}
		}
	}
	return lost, nil
}

// Close implements runner.Runner: quoting services stop; nodes keep
// running, but idle pooled sandboxes are ended (the next start's orphan
// sweep would end them anyway).
func (r *Runner) Close() error {
	r.closePool()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.nodes {
		if n.qe != nil {
			_ = n.qe.Close()
		}
		n.egress.close()
		n.egress = nil
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
