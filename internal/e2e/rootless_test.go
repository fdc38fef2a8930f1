package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/e2e/e2eutil"
	"github.com/mse-in-go/mse/internal/testenv"
	"github.com/mse-in-go/mse/internal/testenv/ciskip"
)

// rootlessUser is the unprivileged system user the rootless backend runs
// as (added when missing).
const rootlessUser = "mse-rootless"

// needRootless fails (under CI=true) or skips the test unless this test can
// run a backend as an unprivileged user that may create user namespaces:
// the test itself must be root (to add that user and hand it a data
// directory), and the kernel must let that user create user namespaces.
func needRootless(t *testing.T, cred *syscall.Credential) {
	t.Helper()
	if cred == nil {
		ciskip.Missing(t, "this test runs mse-backend as another, unprivileged user, and needs root to add that user and give it a data directory")
		return
	}
	cmd := exec.Command("unshare", "--user", "true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		b, _ := os.ReadFile("/proc/sys/user/max_user_namespaces")
		ciskip.Missing(t, "user %s cannot create a user namespace (unshare --user: %v %s; user.max_user_namespaces = %s): rootless sandboxes need them",
			rootlessUser, err, strings.TrimSpace(string(out)), strings.TrimSpace(string(b)))
	}
}

// rootlessCredential returns the rootless user's credential, adding the
// user when missing; nil when this test is not root.
func rootlessCredential(t *testing.T) (*syscall.Credential, *user.User) {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(rootlessUser)
	if err != nil {
		out, err := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
			"--shell", "/usr/sbin/nologin", rootlessUser).CombinedOutput()
		if err != nil {
			t.Fatalf("useradd %s: %v\n%s", rootlessUser, err, out)
		}
		if u, err = user.Lookup(rootlessUser); err != nil {
			t.Fatal(err)
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if uid == 0 {
		t.Fatalf("user %s is root", rootlessUser)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, u
}

// asUser runs a command as cred and returns its stdout.
func asUser(t *testing.T, cred *syscall.Credential, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s (as %s): %v\n%s", name, strings.Join(args, " "), rootlessUser, err, stderr.String())
	}
	return out
}

func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// nsOf reads the namespaces of pid ("self" for this process).
func nsOf(t *testing.T, pid string) map[string]string {
	t.Helper()
	ns := map[string]string{}
	for _, k := range []string{"user", "mnt", "pid", "net", "ipc", "uts"} {
		l, err := os.Readlink(filepath.Join("/proc", pid, "ns", k))
		if err != nil {
			t.Fatal(err)
		}
		ns[k] = l
	}
	return ns
}

// procStatus reads the fields of /proc/PID/status: the real, effective,
// saved and filesystem UIDs and GIDs as the host sees them, the capability
// sets.
func procStatus(t *testing.T, pid int) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	st := map[string][]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			st[k] = strings.Fields(v)
		}
	}
	return st
}

// TestRootless runs the real mse-backend as an unprivileged user, deploys
// examples/helloworld through it and fetches the page through its router,
// deploys a second tenant's probe app that tries to reach the first node and
// the operator's data (all of them one host UID: only namespaces stand in
// the way), and checks that each node runs in its own user, mount, PID,
// network, IPC and UTS namespaces (neither the host's nor the other node's),
// as the backend's UID on the host (the only ID its user namespace maps),
// with no capabilities.
func TestRootless(t *testing.T) {
	cred, u := rootlessCredential(t)
	needRootless(t, cred)
	uid, gid := int(cred.Uid), int(cred.Gid)
	entries := testenv.Runtimes(t)[:1] // flask: helloworld's runtime

	base, err := os.MkdirTemp("", "mse-rootless-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) }) // runs last: after the backend and its nodes are gone
	for _, d := range []string{"bin", "home", "data", "runtimes"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	testenv.RuntimesOwnedBy(t, filepath.Join(base, "runtimes"), uid, gid, entries)
	t.Logf("runtime store for %s copied in %v", rootlessUser, time.Since(start).Round(time.Millisecond))
	backendBin, nodeBin := filepath.Join(base, "bin", "mse-backend"), filepath.Join(base, "bin", "mse-node")
	copyExecutable(t, testenv.Build(t, "mse-backend"), backendBin)
	copyExecutable(t, testenv.Build(t, "mse-node"), nodeBin)
	dataDir := filepath.Join(base, "data")
	testenv.WriteCatalog(t, filepath.Join(dataDir, "runtimes.json"), entries)
	if err := testenv.ChownTree(base, uid, gid); err != nil {
		t.Fatal(err)
	}

	// The backend, as the unprivileged user.
	cmd := exec.Command(backendBin, "serve", "--data-dir", dataDir, "--runtime-dir", filepath.Join(base, "runtimes"),
		"--api-addr", "127.0.0.1:0", "--router-addr", "127.0.0.1:0", "--node-binary", nodeBin, "--poll-interval", "100ms",
		"--capacity-memory-mib", "8192", "--capacity-cores", "8")
	cmd.Dir = filepath.Join(base, "home")
	cmd.Env = []string{"HOME=" + filepath.Join(base, "home"), "USER=" + u.Username, "LOGNAME=" + u.Username,
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	logPath := filepath.Join(t.TempDir(), "backend.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		// Nodes outlive their backend by design: end what is left.
		if ids := strings.Fields(string(runcAs(cred, dataDir, "list", "--quiet"))); len(ids) > 0 {
			if !t.Failed() {
				t.Errorf("sandboxes left after the apps were stopped: %v", ids)
			}
			for _, id := range ids {
				runcAs(cred, dataDir, "delete", "--force", id)
			}
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("mse-backend log:\n%s", b)
			nodeLogs, _ := filepath.Glob(filepath.Join(dataDir, "nodes", "*", "node.log"))
			for _, p := range nodeLogs {
				b, _ := os.ReadFile(p)
				t.Logf("%s:\n%s", p, b)
			}
		}
	})
	api, router := readyAddrs(t, out)

	tok, err := os.ReadFile(filepath.Join(dataDir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("MSE_CONFIG_DIR", t.TempDir())
	t.Setenv("MSE_BACKEND_URL", "")
	t.Setenv("MSE_TOKEN", "")
	mustRun(t, "cloud", "login", "--url", api, "--token", strings.TrimSpace(string(tok)))
	policyPath := filepath.Join(t.TempDir(), "policy.toml")
	policy := "tee_types = [\"sim\"]\nallow_simulation = true\nmeasurements = [\"" + testenv.Measure(t, nodeBin) + "\"]\n"
	if err := os.WriteFile(policyPath, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}

	self := nsOf(t, "self")
	backendNS := nsOf(t, strconv.Itoa(cmd.Process.Pid))
	if backendNS["user"] != self["user"] {
		t.Fatalf("the backend runs in user namespace %s, not the host's %s: the test would not show what it means to", backendNS["user"], self["user"])
	}
	var nodes []map[string]string
	var ids []string
	var first *deployed
	var firstPID int
	for _, name := range []string{"rootless1", "rootless2"} {
		var d *deployed
		if first == nil {
			d = mustDeploy(t, "--path", helloApp(t, name, ""), "--policy", policyPath)
			page, err := e2eutil.GetVia(router, d.Domain, &tls.Config{RootCAs: e2eutil.CertPool(t, d.Certificate)})
			if err != nil || page != "Hello world!" {
				t.Fatalf("GET https://%s/ through the router = %q, %v", d.Domain, page, err)
			}
		} else {
			// The second tenant's app tries to reach the first's node and
			// the operator's data: all nodes and the backend share one host
			// UID, so only the namespaces keep it out.
			d = mustDeploy(t, "--path", probeApp(t, name, rootlessTargets(t, dataDir, first.AppID, firstPID, cmd.Process.Pid, api, router)),
				"--policy", policyPath)
			checkProbe(t, probe(t, router, d), first.AppID)
		}
		ids = append(ids, d.AppID)

		var st struct {
			PID    int    `json:"pid"`
			Status string `json:"status"`
		}
		cid := filepath.Base(testenv.NodeDir(dataDir, d.AppID)) // the app id, or pool-… from the warm pool
		if b := runcAs(cred, dataDir, "state", cid); json.Unmarshal(b, &st) != nil || st.PID <= 0 || st.Status != "running" {
			t.Fatalf("runc state %s of app %s (as %s): %s", cid, d.AppID, rootlessUser, b)
		}
		// On the host: the backend's UID and GID, all four of each, and no
		// capability in any set.
		ps := procStatus(t, st.PID)
		if want := strings.Repeat(strconv.Itoa(uid)+" ", 4); strings.Join(ps["Uid"], " ")+" " != want {
			t.Errorf("node %s runs as host UIDs %v, want all %d (the backend's)", name, ps["Uid"], uid)
		}
		if want := strings.Repeat(strconv.Itoa(gid)+" ", 4); strings.Join(ps["Gid"], " ")+" " != want {
			t.Errorf("node %s runs as host GIDs %v, want all %d (the backend's)", name, ps["Gid"], gid)
		}
		for _, c := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
			if len(ps[c]) != 1 || ps[c][0] != "0000000000000000" {
				t.Errorf("node %s has capabilities %s = %v, want none", name, c, ps[c])
			}
		}
		if g := ps["Groups"]; len(g) != 0 {
			t.Errorf("node %s has supplementary groups %v", name, g)
		}
		if nnp := ps["NoNewPrivs"]; len(nnp) != 1 || nnp[0] != "1" {
			t.Errorf("node %s NoNewPrivs = %v", name, nnp)
		}
		// Its user namespace maps one ID: its root, which is the backend's UID.
		for _, f := range []string{"uid_map", "gid_map"} {
			id := uid
			if f == "gid_map" {
				id = gid
			}
			m, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", st.PID, f))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Fields(string(m)); strings.Join(got, " ") != fmt.Sprintf("0 %d 1", id) {
				t.Errorf("node %s %s = %q, want \"0 %d 1\" (its root is the backend's ID, and nothing else is mapped)", name, f, m, id)
			}
		}
		ns := nsOf(t, strconv.Itoa(st.PID))
		for k, v := range ns {
			if v == self[k] {
				t.Errorf("node %s shares the host's %s namespace (%s)", name, k, v)
			}
			for i, other := range nodes {
				if v == other[k] {
					t.Errorf("node %s shares its %s namespace with node %s (%s)", name, k, ids[i], v)
				}
			}
		}
		nodes = append(nodes, ns)
		if first == nil {
			first, firstPID = d, st.PID
		}
	}
	mustRun(t, append([]string{"cloud", "stop"}, ids...)...)

	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "sandboxes are rootless"); n != 1 {
		t.Errorf("the backend said %d times that its sandboxes are rootless, want once:\n%s", n, b)
	}
}

// runcAs runs runc on the rootless backend's state directory as cred.
func runcAs(cred *syscall.Credential, dataDir string, args ...string) []byte {
	cmd := exec.Command("runc", append([]string{"--root", filepath.Join(dataDir, "nodes", ".runc"), "--rootless", "true"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, _ := cmd.CombinedOutput()
	return out
}

// readyAddrs reads the API and router addresses a starting backend prints.
func readyAddrs(t *testing.T, out io.Reader) (api, router string) {
	t.Helper()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(30 * time.Second)
	for api == "" || router == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("mse-backend exited before it was ready")
			}
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "API:"); ok {
				api = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "router:"); ok {
				router = strings.TrimSpace(v)
			}
		case <-deadline:
			t.Fatal("mse-backend not ready within 30s")
		}
	}
	go func() {
		for range lines {
		}
	}()
	return api, router
}

// rootlessTargets is what the probe app tries to reach: the first node's
// files, sockets and process, the backend's data, process and ports.
func rootlessTargets(t *testing.T, dataDir, appID string, nodePID, backendPID int, api, router string) map[string]any {
	t.Helper()
	nodeDir := testenv.NodeDir(dataDir, appID)
	keys, _ := filepath.Glob(filepath.Join(dataDir, "sim", "*"))
	if len(keys) == 0 {
		t.Fatal("no simulated platform files to probe")
	}
	var ports []int
	for _, a := range []string{strings.TrimPrefix(api, "http://"), router} {
		_, p, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatalf("address %q: %v", a, err)
		}
		n, _ := strconv.Atoi(p)
		ports = append(ports, n)
	}
	return map[string]any{
		"paths": append([]string{
			filepath.Join(dataDir, "admin-token"),
			filepath.Join(dataDir, "mse.db"),
			filepath.Join(nodeDir, "node.log"),
			filepath.Join(nodeDir, "config.json"),
			filepath.Join(nodeDir, "run", "spec.json"),
			fmt.Sprintf("/proc/%d/environ", nodePID),
			fmt.Sprintf("/proc/%d/root/run/work/secrets.json", nodePID),
			fmt.Sprintf("/proc/%d/environ", backendPID),
		}, keys...),
		"writes":  []string{"/usr/bin/python3", "/etc/passwd", "/usr/lib/probe-was-here"},
		"pids":    []int{nodePID, backendPID, os.Getpid()},
		"ports":   ports,
		"sockets": []string{filepath.Join(nodeDir, "run", "node.sock"), filepath.Join(nodeDir, "run", "qe.sock")},
	}
}

// checkProbe fails the test for each thing the probe reached.
func checkProbe(t *testing.T, r probeResult, otherAppID string) {
	t.Helper()
	if len(r.Paths) == 0 || len(r.Writes) == 0 || len(r.PIDs) == 0 || len(r.TCP) == 0 || len(r.Unix) == 0 {
		t.Fatalf("the probe did not try its targets: %+v", r)
	}
	if r.HomeWritable != "wrote" {
		t.Errorf("HOME %s is not writable: %s", r.Home, r.HomeWritable)
	}
	for p, got := range r.Paths {
		if got == "read" {
			t.Errorf("the second tenant's app read %s", p)
		}
	}
	for p, got := range r.Writes {
		if got == "wrote" {
			t.Errorf("the second tenant's app wrote %s in its runtime", p)
		}
	}
	for pid, got := range r.PIDs {
		if got != "ProcessLookupError" {
			t.Errorf("the second tenant's app signalling host pid %s: %s, want ProcessLookupError (not even visible)", pid, got)
		}
	}
	for port, got := range r.TCP {
		if got == "connected" {
			t.Errorf("the second tenant's app connected to the operator's port %s", port)
		}
	}
	for s, got := range r.Unix {
		if got == "connected" {
			t.Errorf("the second tenant's app connected to the first's socket %s", s)
		}
	}
	if len(r.Procs) == 0 || r.Procs[0] != 1 || len(r.Procs) > 8 {
		t.Errorf("the second tenant's app sees processes %v", r.Procs)
	}
	for _, c := range r.Cmdlines {
		if strings.Contains(c, otherAppID) || strings.Contains(c, "runc") || strings.Contains(c, "mse-backend") {
			t.Errorf("the second tenant's app sees a process of someone else: %q", c)
		}
	}
	t.Logf("probe as uid %d inside: paths %v, writes %v, pids %v, tcp %v, unix %v, procs %v", r.UID, r.Paths, r.Writes, r.PIDs, r.TCP, r.Unix, r.Procs)
}
