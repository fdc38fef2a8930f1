package kubernetes_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientset "k8s.io/client-go/kubernetes"

	"github.com/mse-in-go/mse/internal/backend/runner"
	. "github.com/mse-in-go/mse/internal/backend/runner/kubernetes"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/testenv"
)

// proxiedClient is the runner's identity reaching the shared API server
// through a proxy the test can cut: the other tests' clients are untouched.
func (e *env) proxiedClient(t *testing.T) (clientset.Interface, *testenv.TCPProxy) {
	t.Helper()
	cfg := e.k.UserConfig("mse-backend")
	u, err := url.Parse(cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	px := testenv.StartTCPProxy(t, u.Host)
	u.Host = px.Addr()
	cfg.Host = u.String()
	cfg.Timeout = 5 * time.Second
	c, err := clientset.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, px
}

// The API server unreachable for a while: the runner says so rather than
// report stale or lost states, routes keep their address, and when it
// returns the state converges (a pod deleted meanwhile is lost, a running
// one runs).
func TestAPIServerUnreachable(t *testing.T) {
	e := newEnv(t)
	client, px := e.proxiedClient(t)
	r := e.runner(t, func(c *Config) {
		c.Client = client
		c.HealthInterval = 200 * time.Millisecond
		// The node answers its probe: it serves.
		c.NodeStatus = func(context.Context, string, string) (runner.NodeState, error) {
			return runner.NodeState{State: nodeapi.StateRunning, Fingerprint: "fp"}, nil
		}
	})
	ctx := context.Background()
	kept, hKept := e.spawn(t, r, hw2g)
	deleted, hDeleted := e.spawn(t, r, hw2g)
	e.waitRunning(t, kept)
	e.waitRunning(t, deleted)
	for _, a := range [][2]any{{kept, hKept}, {deleted, hDeleted}} {
		eventually(t, 10*time.Second, func() (bool, string) {
			st, err := r.Status(ctx, a[0].(string), a[1].([]byte))
			return err == nil && st.State == nodeapi.StateRunning, fmt.Sprintf("%+v %v", st, err)
		})
	}
	addr, err := r.Addr(kept, hKept)
	if err != nil {
		t.Fatal(err)
	}
	if _, total := r.Capacity(); total.Cores == 0 {
		t.Fatalf("capacity %+v before the cut", total)
	}

	px.Cut()
	unreachable := func(err error) bool {
		return errors.Is(err, ErrAPIUnreachable) && strings.Contains(err.Error(), "API server is unreachable")
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		st, err := r.Status(ctx, kept, hKept)
		return unreachable(err), fmt.Sprintf("status during the cut: %+v %v", st, err)
	})
	// Behind the backend's back, while it cannot see.
	if err := e.admin.CoreV1().Pods(e.ns).Delete(ctx, ObjectName(deleted), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		for _, a := range [][2]any{{kept, hKept}, {deleted, hDeleted}} {
			st, err := r.Status(ctx, a[0].(string), a[1].([]byte))
			if !unreachable(err) {
				t.Fatalf("status of %s during the cut: %+v, %v; want an error saying the API server is unreachable", a[0], st, err)
			}
			if strings.Contains(err.Error(), "lost") || strings.Contains(err.Error(), "deleted") {
				t.Fatalf("status error during the cut names a lost pod: %v", err)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if used, total := r.Capacity(); total != (runner.Resources{}) || used != (runner.Resources{}) {
		t.Fatalf("capacity during the cut: used %+v total %+v; want nothing offered", used, total)
	}
	other := "00000000-0000-4000-8000-000000000001"
	if _, err := r.Spawn(ctx, other, spawnSpec(other, hw2g)); !unreachable(err) {
		t.Fatalf("spawn during the cut: %v; want an error saying the API server is unreachable", err)
	}
	if got, err := r.Addr(kept, hKept); err != nil || got != addr {
		t.Fatalf("addr during the cut: %q, %v; want %q (routes keep serving)", got, err, addr)
	}

	px.Heal()
	// The first state after the heal is the current one, not the watch
	// cache's view from before the cut (which still holds the pod).
	eventually(t, 40*time.Second, func() (bool, string) {
		st, err := r.Status(ctx, deleted, hDeleted)
		if err == nil && st.State != runner.StateLost {
			t.Fatalf("deleted pod after the heal: %+v; want lost", st)
		}
		return err == nil, fmt.Sprintf("deleted pod after the heal: %+v %v", st, err)
	})
	st, err := r.Status(ctx, kept, hKept)
	if err != nil || st.State != nodeapi.StateRunning {
		t.Fatalf("kept pod after the heal: %+v %v; want running", st, err)
	}
	eventually(t, 40*time.Second, func() (bool, string) {
		used, total := r.Capacity()
		return total.Cores > 0 && used == runner.Resources{MemoryMiB: 2048, Cores: 1}, fmt.Sprintf("capacity after the heal: used %+v total %+v", used, total)
	})
	id, _ := e.spawn(t, r, hw2g)
	e.waitRunning(t, id)
}
