package backend_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mse-in-go/mse/internal/backend"
	"github.com/mse-in-go/mse/internal/backend/leader"
	"github.com/mse-in-go/mse/internal/backend/store/pgtest"
	"github.com/mse-in-go/mse/internal/testenv"
)

func TestMain(m *testing.M) { pgtest.Main(m, testenv.StopKube) }

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// `mse-backend serve --runner kubernetes` starts against a real API server
// and offers the catalog's hardware with its TEE types.
func TestServeWithTheKubernetesRunner(t *testing.T) {
	k := testenv.Kube(t)
	ns := k.Namespace(t)
	dir := t.TempDir()
	hw := filepath.Join(dir, "hardware.json")
	if err := os.WriteFile(hw, []byte(`[
		{"name":"sgx-4g","memory_mib":4096,"cores":2,"tee":"sgx","kubernetes":{"node_selector":{"mse.tee":"sgx"},
		 "tolerations":[{"key":"mse.tee","value":"sgx","effect":"NoSchedule"}],"resources":{"sgx.intel.com/epc":"512Mi"}}}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := backend.Command()
	out := &syncBuf{}
	cmd.SetOut(out)
	cmd.SetErr(out)
	cmd.SetArgs([]string{"serve", "--data-dir", filepath.Join(dir, "data"), "--api-addr", "127.0.0.1:0", "--router-addr", "127.0.0.1:0",
		"--runner", "kubernetes", "--kubeconfig", k.Kubeconfig, "--namespace", ns, "--hardware", hw,
		"--node-image", "mse/node@sha256:1111111111111111111111111111111111111111111111111111111111111111",
		"--bundle-url", "https://mse-backend.mse.svc:8081", "--node-measurement", testMeasurement})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	}()
	api := regexp.MustCompile(`API:\s+(http://\S+)`)
	var url string
	deadline := time.Now().Add(60 * time.Second)
	for url == "" {
		if m := api.FindStringSubmatch(out.String()); m != nil {
			url = m[1]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("serve ended: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready within 60s:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(out.String(), testMeasurement) {
		t.Fatalf("the node measurement is not shown:\n%s", out.String())
	}
	resp, err := http.Get(url + "/v1/platform")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p struct {
		TEE string `json:"tee"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || p.TEE != "sgx" {
		t.Fatalf("platform tee %q (%v); want sgx", p.TEE, err)
	}
}

// Two `mse-backend serve --leader-election lease` on one PostgreSQL database
// with the kubernetes runner: one leads through the Lease, the other
// follows, and takes over when the leader stops.
func TestServeLeaseElection(t *testing.T) {
	k := testenv.Kube(t)
	ns := k.Namespace(t)
	db := pgtest.URL(t)
	type replica struct {
		out    *syncBuf
		cancel context.CancelFunc
		done   chan error
	}
	start := func(name string) *replica {
		dir := filepath.Join(t.TempDir(), name)
		cmd := backend.Command()
		r := &replica{out: &syncBuf{}, done: make(chan error, 1)}
		cmd.SetOut(r.out)
		cmd.SetErr(r.out)
		cmd.SetArgs([]string{"serve", "--data-dir", dir, "--db", db, "--api-addr", "127.0.0.1:0", "--router-addr", "127.0.0.1:0",
			"--runner", "kubernetes", "--kubeconfig", k.Kubeconfig, "--namespace", ns, "--leader-election", "lease",
			"--node-image", "mse/node@sha256:1111111111111111111111111111111111111111111111111111111111111111",
			"--bundle-url", "https://mse-backend.mse.svc:8081", "--node-measurement", testMeasurement})
		ctx, cancel := context.WithCancel(context.Background())
		r.cancel = cancel
		go func() { r.done <- cmd.ExecuteContext(ctx) }()
		t.Cleanup(func() {
			cancel()
			select {
			case err := <-r.done:
				if err != nil {
					t.Errorf("serve %s: %v", name, err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("serve %s did not stop", name)
			}
			if t.Failed() {
				t.Logf("serve %s:\n%s", name, r.out.String())
			}
		})
		return r
	}
	// Logs go to the process's stderr: the Lease tells who leads (both
	// replicas are this process: their identities differ by a random
	// suffix).
	holder := func() string {
		l, err := k.Client.CoordinationV1().Leases(ns).Get(context.Background(), leader.DefaultLeaseName, metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	wait := func(within time.Duration, what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(within)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("not within %s: %s", within, what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	a := start("a")
	wait(60*time.Second, "a holds the Lease", func() bool { return holder() != "" })
	first := holder()
	b := start("b")
	wait(60*time.Second, "b serves", func() bool { return strings.Contains(b.out.String(), "mse-backend ready") })
	// Several of b's attempts (every 2 s): a keeps the Lease.
	time.Sleep(5 * time.Second)
	if h := holder(); h != first {
		t.Fatalf("the Lease moved from %q to %q while its holder ran", first, h)
	}
	a.cancel()
	if err := <-a.done; err != nil {
		t.Fatalf("serve a: %v", err)
	}
	a.done <- nil // for the cleanup
	// a released the Lease: b takes over at its next attempt.
	wait(5*time.Second, "b holds the Lease after a stopped", func() bool { h := holder(); return h != "" && h != first })
}

// testMeasurement plays the node image's mse-node SHA-256 (--node-measurement).
const testMeasurement = "ab12000000000000000000000000000000000000000000000000000000000000"
