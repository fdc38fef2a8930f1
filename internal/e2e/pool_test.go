package e2e

import (
	"context"
	"crypto/tls"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/e2e/e2eutil"
	"github.com/mse-in-go/mse/internal/testenv"
)

// idlePool waits until dataDir holds an idle pooled sandbox other than
// those in not (its standby node listens for an assignment) and returns its
// container id.
func idlePool(t *testing.T, dataDir string, not ...string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		socks, _ := filepath.Glob(filepath.Join(dataDir, "nodes", "pool-*", "run", "assign.sock"))
		for _, s := range socks {
			if cid := filepath.Base(filepath.Dir(filepath.Dir(s))); !slices.Contains(not, cid) {
				if _, err := os.Stat(filepath.Join(filepath.Dir(s), "spec.json")); os.IsNotExist(err) {
					return cid
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no idle pooled sandbox within 30s after a spawn")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func runcIDs(t *testing.T, dataDir string) []string {
	t.Helper()
	out, err := exec.Command("runc", "--root", filepath.Join(dataDir, "nodes", ".runc"), "list", "--quiet").Output()
	if err != nil {
		t.Fatalf("runc list: %v", err)
	}
	return strings.Fields(string(out))
}

// TestWarmPool: after a first (cold) deploy, the runner keeps a pre-warmed
// sandbox of that runtime and hardware; the second deploy is served by it
// (attested and verified as any), its logs and stop work; after a backend
// crash the pooled node is adopted and the idle sandbox is ended, not
// adopted.
func TestWarmPool(t *testing.T) {
	dir := t.TempDir()
	nodeBin := testenv.Build(t, "mse-node")
	p := startBackendProc(t, dir, nodeBin)
	tok, err := os.ReadFile(filepath.Join(dir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tok))
	t.Setenv("MSE_CONFIG_DIR", t.TempDir())
	t.Setenv("MSE_BACKEND_URL", "")
	t.Setenv("MSE_TOKEN", "")
	mustRun(t, "cloud", "login", "--url", p.api, "--token", token)
	policyPath := filepath.Join(t.TempDir(), "policy.toml")
	m := testenv.Measure(t, nodeBin)
	if err := os.WriteFile(policyPath, []byte("tee_types = [\"sim\"]\nallow_simulation = true\nmeasurements = [\""+m+"\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	a := mustDeploy(t, "--path", helloApp(t, "pool-a", ""), "--policy", policyPath)
	if got := filepath.Base(testenv.NodeDir(dir, a.AppID)); got != a.AppID {
		t.Fatalf("the first deploy of a runtime came from the pool (%s): there was none yet", got)
	}
	idle := idlePool(t, dir)

	b := mustDeploy(t, "--path", helloApp(t, "pool-b", ""), "--policy", policyPath)
	bDir := testenv.NodeDir(dir, b.AppID)
	if filepath.Base(bDir) != idle {
		t.Fatalf("the second deploy ran in %s, not in the idle pooled sandbox %s", bDir, idle)
	}
	logb, err := os.ReadFile(filepath.Join(bDir, "node.log"))
	if err != nil || !strings.Contains(string(logb), "app host already warm") {
		t.Fatalf("the pooled node did not use its warm host: %v\n%s", err, logb)
	}
	out, _ := mustRun(t, "cloud", "logs", b.AppID)
	if !strings.Contains(out, "app running") || !strings.Contains(out, b.AppID) {
		t.Fatalf("cloud logs of the pooled app:\n%s", out)
	}
	mustRun(t, "cloud", "verify", b.Domain, "--addr", p.router, "--fingerprint", b.Fingerprint, "--policy", policyPath)
	idle2 := idlePool(t, dir, idle)

	// Crash: the pooled node is adopted, the idle sandbox ended.
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	p2 := startBackendProc(t, dir, nodeBin)
	mustRun(t, "cloud", "login", "--url", p2.api, "--token", token)
	c := client.New(p2.api, token)
	for _, d := range []*deployed{a, b} {
		st, err := c.App(context.Background(), d.AppID)
		if err != nil || st.Status != "running" {
			t.Fatalf("%s after the crash: %+v %v", d.AppID, st, err)
		}
		page, err := e2eutil.GetVia(p2.router, d.Domain, &tls.Config{RootCAs: e2eutil.CertPool(t, d.Certificate)})
		if err != nil || page != "Hello world!" {
			t.Fatalf("GET %s after the crash = %q, %v", d.AppID, page, err)
		}
	}
	// The adopted pooled node attests afresh: its quoting service is back.
	mustRun(t, "cloud", "verify", b.Domain, "--addr", p2.router, "--fingerprint", b.Fingerprint, "--policy", policyPath)
	ids := runcIDs(t, dir)
	if slices.Contains(ids, idle2) || !slices.Contains(ids, idle) || !slices.Contains(ids, a.AppID) {
		t.Fatalf("after the crash runc runs %v: want %s (a) and %s (b), not the idle %s", ids, a.AppID, idle, idle2)
	}

	mustRun(t, "cloud", "stop", b.AppID)
	if ids := runcIDs(t, dir); slices.Contains(ids, idle) {
		t.Fatalf("the stopped pooled node's container %s is still there: %v", idle, ids)
	}
	if _, err := e2eutil.GetVia(p2.router, b.Domain, &tls.Config{RootCAs: e2eutil.CertPool(t, b.Certificate)}); err == nil {
		t.Fatal("a stopped pooled app is still routed")
	}
	mustRun(t, "cloud", "stop", a.AppID)
}
