package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/bundle"
	"github.com/mse-in-go/mse/internal/bundle/pack"
	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/e2e/e2eutil"
	"github.com/mse-in-go/mse/internal/testenv"
)

// backendProc runs the real mse-backend program.
type backendProc struct {
	cmd    *exec.Cmd
	api    string
	router string
}

func startBackendProc(t *testing.T, dataDir, nodeBin string) *backendProc {
	t.Helper()
	bin := testenv.Build(t, "mse-backend")
	testenv.WriteCatalog(t, filepath.Join(dataDir, "runtimes.json"), testenv.Runtimes(t))
	cmd := exec.Command(bin, "serve", "--data-dir", dataDir, "--runtime-dir", testenv.RuntimeDir(), "--api-addr", "127.0.0.1:0", "--router-addr", "127.0.0.1:0",
		"--node-binary", nodeBin, "--poll-interval", "100ms", "--capacity-memory-mib", "65536", "--capacity-cores", "64")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(t.TempDir(), "backend.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &backendProc{cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("mse-backend log:\n%s", b)
		}
	})
	sc := bufio.NewScanner(out)
	deadline := time.After(30 * time.Second)
	lines := make(chan string)
	go func() {
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	for p.api == "" || p.router == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("mse-backend exited before it was ready")
			}
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "API:"); ok {
				p.api = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "router:"); ok {
				p.router = strings.TrimSpace(v)
			}
		case <-deadline:
			t.Fatal("mse-backend not ready within 30s")
		}
	}
	go func() {
		for range lines {
		}
	}()
	return p
}

// TestBackendCrash kills mse-backend with SIGKILL while an app runs and one
// is half deployed, restarts it on the same data directory, and checks that
// nothing was lost: the running app is adopted (still routed, still
// verifiable), and the half-deployed one is consistent.
func TestBackendCrash(t *testing.T) {
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
	d := mustDeploy(t, "--path", helloApp(t, "crash1", ""), "--policy", policyPath)

	// A second app, half deployed: uploaded, its node waits for secrets.
	var buf bytes.Buffer
	key, _ := bundle.NewKey()
	sealed, err := pack.Seal(filepath.Join(testenv.RepoRoot(), "examples", "helloworld", "mse_src"), &buf, key, bundle.DefaultLimits(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := client.New(p.api, token)
	half, err := c.CreateApp(context.Background(), client.CreateAppRequest{
		Name: "half", PythonApplication: "app:app", ExpiresAt: time.Now().Add(time.Hour).Truncate(time.Second),
		TLSMode: "self", CodeDigest: hex.EncodeToString(sealed.Digest[:]),
	}, &buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitStatus(context.Background(), half.ID, 50*time.Millisecond, "initializing"); err != nil {
		t.Fatal(err)
	}

	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()

	// The node outlived the backend: it still serves, straight to its port.
	page, err := e2eutil.GetVia(nodeAddr(t, dir, d.AppID), d.Domain, &tls.Config{RootCAs: e2eutil.CertPool(t, d.Certificate)})
	if err != nil || page != "Hello world!" {
		t.Fatalf("the node did not outlive the backend: %q, %v", page, err)
	}

	p2 := startBackendProc(t, dir, nodeBin)
	mustRun(t, "cloud", "login", "--url", p2.api, "--token", token)
	c = client.New(p2.api, token)
	a, err := c.App(context.Background(), d.AppID)
	if err != nil || a.Status != "running" {
		t.Fatalf("after the crash: %+v %v", a, err)
	}
	page, err = e2eutil.GetVia(p2.router, d.Domain, &tls.Config{RootCAs: e2eutil.CertPool(t, d.Certificate)})
	if err != nil || page != "Hello world!" {
		t.Fatalf("GET after the crash = %q, %v", page, err)
	}
	mustRun(t, "cloud", "verify", d.Domain, "--addr", p2.router, "--fingerprint", d.Fingerprint, "--policy", policyPath)

	// The half-deployed app still waits, and its node can still attest
	// afresh: the quoting service came back with the adopted node.
	h, err := c.App(context.Background(), half.ID)
	if err != nil || h.Status != "initializing" {
		t.Fatalf("half-deployed app after the crash: %+v %v", h, err)
	}
	mustRun(t, "cloud", "verify", h.Domains[0], "--addr", p2.router, "--policy", policyPath)
	mustRun(t, "cloud", "stop", d.AppID, half.ID)
}
