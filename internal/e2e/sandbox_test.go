package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/e2e/e2eutil"
	"github.com/mse-in-go/mse/internal/testenv"
)

// probeResult is what testdata/probe answers on /probe.
type probeResult struct {
	UID          int               `json:"uid"`
	GID          int               `json:"gid"`
	Home         string            `json:"home"`
	HomeWritable string            `json:"home_writable"`
	Paths        map[string]string `json:"paths"`
	Writes       map[string]string `json:"writes"`
	PIDs         map[string]string `json:"pids"`
	TCP          map[string]string `json:"tcp"`
	Unix         map[string]string `json:"unix"`
	Procs        []int             `json:"procs"`
	Cmdlines     []string          `json:"cmdlines"`
}

// probeApp writes the probe app with the given targets as its secrets.
func probeApp(t *testing.T, name string, targets any) string {
	t.Helper()
	dir := t.TempDir()
	e2eutil.CopyTree(t, filepath.Join(testenv.RepoRoot(), "internal", "e2e", "testdata", "probe"), filepath.Join(dir, "code"))
	b, err := json.Marshal(targets)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secrets.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("name = %q\npython_application = \"app:app\"\nhealthcheck_endpoint = \"/health\"\n\n[cloud]\ncode = \"code\"\nhardware = \"1g\"\nsecrets = \"secrets.json\"\ndocker = \"flask\"\n", name)
	p := filepath.Join(dir, "mse.toml")
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// getPath GETs https://domain/path through the router, trusting the
// app's verified certificate.
func getPath(t *testing.T, routerAddr string, d *deployed, path string) (int, []byte) {
	t.Helper()
	tc := &tls.Config{RootCAs: e2eutil.CertPool(t, d.Certificate), ServerName: d.Domain}
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", routerAddr)
		},
		TLSClientConfig: tc,
	}}
	resp, err := hc.Get("https://" + d.Domain + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func probe(t *testing.T, routerAddr string, d *deployed) probeResult {
	t.Helper()
	code, b := getPath(t, routerAddr, d, "/probe")
	if code != 200 {
		t.Fatalf("GET /probe: HTTP %d: %s", code, b)
	}
	var r probeResult
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("probe answered %q: %v", b, err)
	}
	return r
}

// containerPID is the host PID of a node's sandboxed init (the node).
func containerPID(t *testing.T, b *testenv.Backend, appID string) int {
	t.Helper()
	out, err := exec.Command("runc", "--root", filepath.Join(b.DataDir, "nodes", ".runc"), "state", filepath.Base(b.NodeDir(appID))).Output()
	if err != nil {
		t.Fatalf("runc state %s: %v", appID, err)
	}
	var st struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal(out, &st); err != nil || st.PID <= 0 {
		t.Fatalf("runc state %s: %s", appID, out)
	}
	return st.PID
}

// TestSandboxIsolation deploys two tenants' apps and has the second one try
// everything a co-tenant should not be able to do: read the first node's
// files, the operator's data directory, its keys and admin token; signal or
// trace the first node; connect to its sockets and to the operator's ports;
// write to the runtime. Each attempt must fail, and each app runs as its
// own UID, sees only its own processes, and has a writable HOME.
func TestSandboxIsolation(t *testing.T) {
	b := testenv.Start(t, testenv.Options{})
	ctx := context.Background()
	admin := apiFor(b, b.AdminToken)
	alice, err := admin.CreateUser(ctx, "alice", false)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := admin.CreateUser(ctx, "bob", false)
	if err != nil {
		t.Fatal(err)
	}

	login(t, b, alice.Token)
	a := mustDeploy(t, "--path", probeApp(t, "alice", map[string]any{}), "--policy", b.PolicyFile(t, ""))
	ra := probe(t, b.RouterAddr, a)

	aliceDir := b.NodeDir(a.AppID)
	keys, _ := filepath.Glob(filepath.Join(b.DataDir, "sim", "*"))
	if len(keys) == 0 {
		t.Fatal("no simulated platform files to probe")
	}
	apiURL, _ := url.Parse(b.APIURL)
	apiPort, _ := strconv.Atoi(apiURL.Port())
	_, rp, _ := net.SplitHostPort(b.RouterListenAddr)
	routerPort, _ := strconv.Atoi(rp)
	nodePID := containerPID(t, b, a.AppID)
	targets := map[string]any{
		"paths": append([]string{
			filepath.Join(b.DataDir, "admin-token"),
			filepath.Join(b.DataDir, "mse.db"),
			filepath.Join(aliceDir, "node.log"),
			filepath.Join(aliceDir, "config.json"),
			filepath.Join(aliceDir, "run", "spec.json"),
			fmt.Sprintf("/proc/%d/environ", nodePID),
			fmt.Sprintf("/proc/%d/root/run/work/secrets.json", nodePID),
		}, keys...),
		"writes":  []string{"/usr/bin/python3", "/etc/passwd", "/usr/lib/probe-was-here"},
		"pids":    []int{nodePID, os.Getpid(), 1 << 20},
		"ports":   []int{apiPort, routerPort},
		"sockets": []string{filepath.Join(aliceDir, "run", "node.sock"), filepath.Join(aliceDir, "run", "qe.sock")},
	}
	login(t, b, bob.Token)
	bd := mustDeploy(t, "--path", probeApp(t, "bob", targets), "--policy", b.PolicyFile(t, ""))
	r := probe(t, b.RouterAddr, bd)

	if r.UID == 0 || ra.UID == 0 || r.UID == ra.UID || r.GID == ra.GID {
		t.Errorf("apps run as uid %d/gid %d (alice) and %d/%d (bob): each needs its own, never root", ra.UID, ra.GID, r.UID, r.GID)
	}
	if r.HomeWritable != "wrote" {
		t.Errorf("HOME %s is not writable: %s", r.Home, r.HomeWritable)
	}
	for p, got := range r.Paths {
		if got == "read" {
			t.Errorf("bob's app read %s", p)
		}
	}
	for p, got := range r.Writes {
		if got == "wrote" {
			t.Errorf("bob's app wrote %s in its runtime", p)
		} else if got != "OSError" && got != "PermissionError" {
			t.Logf("write %s: %s", p, got)
		}
	}
	for pid, got := range r.PIDs {
		if got != "ProcessLookupError" {
			t.Errorf("bob's app signalling host pid %s: %s, want ProcessLookupError (not even visible)", pid, got)
		}
	}
	for port, got := range r.TCP {
		if got == "connected" {
			t.Errorf("bob's app connected to the operator's port %s", port)
		}
	}
	for s, got := range r.Unix {
		if got == "connected" {
			t.Errorf("bob's app connected to alice's socket %s", s)
		}
	}
	// Its own processes only: the node (PID 1) and the app server.
	if len(r.Procs) == 0 || r.Procs[0] != 1 || len(r.Procs) > 8 {
		t.Errorf("bob's app sees processes %v", r.Procs)
	}
	for _, c := range r.Cmdlines {
		if strings.Contains(c, a.AppID) || strings.Contains(c, "runc") || strings.Contains(c, "mse-backend") {
			t.Errorf("bob's app sees a process of someone else: %q", c)
		}
	}
	// The kernel enforces the hardware entry's limits on the node's cgroup
	// (hardware "1g": 1024 MiB, 1 core; 4096 PIDs).
	checkCgroupLimits(t, containerPID(t, b, a.AppID), 1024<<20, 100000, 4096)
	// The results are what the probe saw, not a failed probe: its own files it reads.
	if _, b2 := getPath(t, b.RouterAddr, bd, "/"); string(b2) != "probe" {
		t.Errorf("probe root: %q", b2)
	}
	t.Logf("alice uid %d, bob uid %d; bob's attempts: paths %v, writes %v, pids %v, tcp %v, unix %v, procs %v",
		ra.UID, r.UID, r.Paths, r.Writes, r.PIDs, r.TCP, r.Unix, r.Procs)
}

// checkCgroupLimits reads the cgroup v1 files of a process's memory, cpu and
// pids controllers.
func checkCgroupLimits(t *testing.T, pid int, mem, quota, pids int64) {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 {
			for _, c := range strings.Split(parts[1], ",") {
				paths[c] = parts[2]
			}
		}
	}
	read := func(ctrl, file string) int64 {
		p, ok := paths[ctrl]
		if !ok {
			t.Fatalf("the node is in no %s cgroup (%s)", ctrl, raw)
		}
		b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", ctrl, p, file))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			t.Fatalf("%s = %q", file, b)
		}
		return v
	}
	if got := read("memory", "memory.limit_in_bytes"); got != mem {
		t.Errorf("memory limit %d, want %d", got, mem)
	}
	if got := read("cpu", "cpu.cfs_quota_us"); got != quota {
		t.Errorf("cpu quota %d µs per period, want %d", got, quota)
	}
	if got := read("pids", "pids.max"); got != pids {
		t.Errorf("pids limit %d, want %d", got, pids)
	}
}
