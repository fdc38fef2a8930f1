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

	"github.com/mse-in-go/mse/internal/backend"
	"github.com/mse-in-go/mse/internal/testenv"
)

func TestMain(m *testing.M) { testenv.KubeMain(m) }

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
		"--bundle-url", "https://mse-backend.mse.svc:8081", "--node-measurement", "ab12"})
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
	if !strings.Contains(out.String(), "ab12") {
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
