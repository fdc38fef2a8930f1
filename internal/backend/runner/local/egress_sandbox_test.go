package local_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest/sim"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/backend/runner/local"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/runtimes/image"
	"github.com/mse-in-go/mse/internal/spec"
	"github.com/mse-in-go/mse/internal/testenv"
)

// probe runs inside a node's sandbox (runc exec, as the node's UID): it
// tries the network directly, then the egress proxy, allowed and not.
const probe = `
import socket, sys
allowed, other = sys.argv[1], sys.argv[2]
host, port = allowed.rsplit(":", 1)
try:
    socket.create_connection((host, int(port)), timeout=2)
    print("direct: connected")
except OSError as e:
    print("direct: refused", type(e).__name__)
def connect(target, line):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect("/run/mse/egress.sock")
    s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)).encode())
    f = s.makefile("rb")
    status = f.readline().decode().strip()
    while f.readline() not in (b"\r\n", b""):
        pass
    if status.split()[1] == "200":
        s.sendall(line.encode() + b"\n")
        return status + " | " + f.readline().decode().strip()
    return status
print("allowed:", connect(allowed, "ping"))
print("other:", connect(other, "ping"))
`

type egressEnv struct {
	r        *local.Runner
	cfg      local.Config
	rootfs   string
	spec     spec.Spec
	bundle   string
	hw       runner.Hardware
	echo     string
	logs     *syncWriter
	runcRoot string
}

func newEgressEnv(t *testing.T, pool int) *egressEnv {
	t.Helper()
	rts := testenv.Runtimes(t) // needs root, runc, mmdebstrap (fails under CI=true)
	st, err := image.Open(testenv.RuntimeDir(), image.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	platform, err := sim.NewPlatformInMemory()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "egr-") // short: socket paths
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncWriter{b: &strings.Builder{}}
	cfg := local.Config{Dir: dir, NodeBinary: testenv.Build(t, "mse-node"), Runtimes: st, Platform: platform,
		Capacity: runner.Resources{MemoryMiB: 8 << 10, Cores: 8}, Pool: pool, EgressPrivate: true,
		Logger: slog.New(slog.NewTextHandler(logs, nil))}
	r, err := local.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &egressEnv{r: r, cfg: cfg, logs: logs, runcRoot: filepath.Join(dir, ".runc"), echo: echo(t),
		hw: runner.Hardware{Name: "small", MemoryMiB: 512, Cores: 1}}
	t.Cleanup(func() {
		_ = e.r.Close()
		out, _ := exec.Command("runc", "--root", e.runcRoot, "list", "--quiet").Output()
		for _, id := range strings.Fields(string(out)) {
			_ = exec.Command("runc", "--root", e.runcRoot, "delete", "--force", id).Run()
		}
		os.RemoveAll(dir)
	})
	e.bundle = filepath.Join(t.TempDir(), "bundle")
	if err := os.WriteFile(e.bundle, []byte("not a real bundle: the node waits for its key before opening it"), 0o644); err != nil {
		t.Fatal(err)
	}
	rt := rts[0]
	e.spec = spec.Spec{Domains: []string{"app.example.test"}, PythonApplication: "app:app", ExpiresAt: time.Now().Add(time.Hour).Truncate(time.Second),
		TLSMode: spec.TLSACME, ACME: &spec.ACME{DirectoryURL: "https://" + e.echo + "/dir"},
		Runtime: spec.Runtime{Name: rt.Name, Image: rt.Image, Digest: rt.Digest, Kind: rt.Kind}}
	return e
}

type syncWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func echo(t *testing.T) string {
	return testenv.Listen(t, func(c net.Conn) {
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			_, _ = io.WriteString(c, "echo: "+sc.Text()+"\n")
		}
	})
}

type nodeHandle struct {
	Container string `json:"container"`
	RunDir    string `json:"run_dir"`
	UID       int    `json:"uid"`
	Egress    string `json:"egress"`
}

func (e *egressEnv) spawn(t *testing.T, appID string, s spec.Spec) ([]byte, nodeHandle) {
	t.Helper()
	s.AppID = appID
	hb, err := e.r.Spawn(context.Background(), appID, runner.SpawnSpec{App: s, BundlePath: e.bundle, Hardware: e.hw})
	if err != nil {
		t.Fatal(err)
	}
	var h nodeHandle
	if err := json.Unmarshal(hb, &h); err != nil {
		t.Fatal(err)
	}
	return hb, h
}

// waitStarted waits until the node has written its status.
func (e *egressEnv) waitStarted(t *testing.T, appID string, hb []byte) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if st, err := e.r.Status(context.Background(), appID, hb); err == nil && st.State != nodeapi.StateStarting {
			return
		}
	}
	t.Fatalf("node %s did not start\n%s", appID, e.logs.String())
}

// inside runs the probe in the node's sandbox.
func (e *egressEnv) inside(t *testing.T, h nodeHandle) string {
	t.Helper()
	user := "0:0"
	if os.Geteuid() == 0 {
		user = strconv.Itoa(h.UID) + ":" + strconv.Itoa(h.UID)
	}
	var out []byte
	var err error
	for i := 0; i < 100; i++ { // the container may still be starting
		out, err = exec.Command("runc", "--root", e.runcRoot, "exec", "--user", user, h.Container,
			"/usr/bin/python3", "-c", probe, e.echo, "127.0.0.1:1").CombinedOutput()
		if err == nil {
			return string(out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("runc exec in %s: %v\n%s\nrunner log:\n%s", h.Container, err, out, e.logs.String())
	return ""
}

func checkProbe(t *testing.T, out string) {
	t.Helper()
	t.Logf("inside the sandbox:\n%s", out)
	for _, want := range []string{"direct: refused", "allowed: HTTP/1.1 200 Connection established | echo: ping", "other: HTTP/1.1 403 Forbidden"} {
		if !strings.Contains(out, want) {
			t.Errorf("inside the sandbox: no %q in\n%s", want, out)
		}
	}
}

// TestSandboxEgressCold: a node spawned cold in tls_mode acme has no
// network but its egress proxy, which relays to its CA's host:port only;
// the socket goes when the node stops. A node in another mode has none.
func TestSandboxEgressCold(t *testing.T) {
	e := newEgressEnv(t, 0)
	hb, h := e.spawn(t, "egresscold", e.spec)
	if h.Egress != e.echo {
		t.Errorf("handle egress %q, want %q", h.Egress, e.echo)
	}
	cfg, err := os.ReadFile(filepath.Join(filepath.Dir(h.RunDir), "config.json"))
	if err != nil || !strings.Contains(string(cfg), `"unix:/run/mse/egress.sock"`) {
		t.Errorf("the node is not told where its egress is (%v)", err)
	}
	checkProbe(t, e.inside(t, h))
	if !strings.Contains(e.logs.String(), "egress refused") || !strings.Contains(e.logs.String(), "target=127.0.0.1:1") {
		t.Errorf("the refusal is not logged:\n%s", e.logs.String())
	}

	// The runner restarts: its proxy ends with it, and comes back when the
	// new runner adopts the node, from the handle.
	if err := e.r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(h.RunDir, "egress.sock")); !os.IsNotExist(err) {
		t.Errorf("egress socket after the runner closed: %v", err)
	}
	if e.r, err = local.New(e.cfg); err != nil {
		t.Fatal(err)
	}
	if lost, err := e.r.Adopt(context.Background(), map[string][]byte{"egresscold": hb}); err != nil || len(lost) != 0 {
		t.Fatalf("adopt: %v %v", lost, err)
	}
	checkProbe(t, e.inside(t, h))
	stopStart := time.Now()
	if err := e.r.Stop(context.Background(), "egresscold", hb); err != nil {
		t.Fatal(err)
	}
	t.Logf("stop took %v", time.Since(stopStart))
	if _, err := os.Stat(filepath.Join(h.RunDir, "egress.sock")); !os.IsNotExist(err) {
		t.Errorf("egress socket after stop: %v", err)
	}

	self := e.spec
	self.TLSMode, self.ACME = spec.TLSSelf, nil
	hb, h = e.spawn(t, "egressself", self)
	defer e.r.Stop(context.Background(), "egressself", hb)
	e.waitStarted(t, "egressself", hb) // a node stopped while it starts takes runc's 10 s
	if h.Egress != "" {
		t.Errorf("tls_mode self has egress %q", h.Egress)
	}
	if _, err := os.Stat(filepath.Join(h.RunDir, "egress.sock")); !os.IsNotExist(err) {
		t.Errorf("tls_mode self has an egress socket: %v", err)
	}
}

// TestSandboxEgressPooled: a standby sandbox, started before its spec was
// known, gets its egress socket when it is assigned an app in tls_mode
// acme.
func TestSandboxEgressPooled(t *testing.T) {
	e := newEgressEnv(t, 1)
	self := e.spec
	self.TLSMode, self.ACME = spec.TLSSelf, nil
	hb, _ := e.spawn(t, "first", self) // cold; the pool fills behind it
	defer e.r.Stop(context.Background(), "first", hb)
	deadline := time.Now().Add(90 * time.Second)
	for {
		m, _ := filepath.Glob(filepath.Join(filepath.Dir(e.runcRoot), "pool-*", "run", "assign.sock"))
		long, _ := filepath.Glob(filepath.Join(os.TempDir(), "mse-run-pool-*", "assign.sock"))
		if len(m)+len(long) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pooled sandbox came up\n%s", e.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	hb2, h := e.spawn(t, "pooled", e.spec)
	defer e.r.Stop(context.Background(), "pooled", hb2)
	if !strings.HasPrefix(h.Container, "pool-") {
		t.Fatalf("not served from the pool: %+v\n%s", h, e.logs.String())
	}
	if h.Egress != e.echo {
		t.Errorf("handle egress %q", h.Egress)
	}
	checkProbe(t, e.inside(t, h))
}
