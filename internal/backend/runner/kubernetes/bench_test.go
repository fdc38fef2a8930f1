package kubernetes_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/backend/runner"
	. "github.com/mse-in-go/mse/internal/backend/runner/kubernetes"
)

// BenchmarkSpawnToRunning: from the runner's Spawn (ConfigMap, Secret,
// NetworkPolicy, Pod) to the pod's phase Running as a watch sees it, on the
// kwok cluster of testenv.Kube: the API server, the scheduler and kwok's
// fake kubelet, no container (kwok runs none). One pod at a time, and 50
// spawned at once; each on a kwok node of its own with room for them, the
// pods deleted between iterations (not timed).
func BenchmarkSpawnToRunning(b *testing.B) {
	for _, n := range []int{1, 50} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			e := newEnv(b)
			node := "kwok-bench-" + e.ns
			e.k.AddKwokNode(b, node, 64, 128<<30, map[string]string{"mse.test/bench": e.ns},
				[]corev1.Taint{{Key: "mse.test/bench", Value: e.ns, Effect: corev1.TaintEffectNoSchedule}})
			hw := runner.Hardware{Name: "bench", MemoryMiB: 256, Cores: 1, TEE: attest.TypeSim, Kubernetes: &runner.KubeScheduling{
				NodeSelector: map[string]string{"mse.test/bench": e.ns},
				Tolerations:  []runner.KubeToleration{{Key: "mse.test/bench", Operator: "Equal", Value: e.ns, Effect: "NoSchedule"}},
			}}
			r := e.runner(b, nil)
			var all, each []time.Duration
			for i := 0; i < b.N; i++ {
				ids := make([]string, n)
				for j := range ids {
					ids[j] = uuid.NewString()
				}
				wall, lat := spawnAll(b, e, r, ids, hw)
				all, each = append(all, wall), append(each, lat...)
				b.StopTimer()
				for _, id := range ids {
					if err := r.Stop(context.Background(), id, nil); err != nil {
						b.Fatalf("stop: %v", err)
					}
				}
				for _, id := range ids {
					e.gone(b, id)
				}
				b.StartTimer()
			}
			b.StopTimer()
			slices.Sort(each)
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
			b.ReportMetric(ms(each[len(each)/2]), "p50-ms")
			b.ReportMetric(ms(each[len(each)*9/10]), "p90-ms")
			b.ReportMetric(ms(each[len(each)-1]), "max-ms")
			if n > 1 {
				var sum time.Duration
				for _, d := range all {
					sum += d
				}
				b.ReportMetric(ms(sum/time.Duration(len(all))), "all-running-ms")
			}
		})
	}
}

// spawnAll spawns ids at once and waits until each pod is Running: the
// time until the last one, and each pod's time from its Spawn call.
func spawnAll(b *testing.B, e *env, r *Runner, ids []string, hw runner.Hardware) (time.Duration, []time.Duration) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w, err := e.admin.CoreV1().Pods(e.ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatalf("watch pods: %v", err)
	}
	defer func() { w.Stop() }()
	rv, rewatches := "", 0
	var mu sync.Mutex
	began := map[string]time.Time{}
	start := time.Now()
	errs := make(chan error, len(ids))
	for _, id := range ids {
		go func() {
			mu.Lock()
			began[ObjectName(id)] = time.Now()
			mu.Unlock()
			_, err := r.Spawn(ctx, id, spawnSpec(id, hw))
			errs <- err
		}()
	}
	running := map[string]time.Time{}
	spawned := 0
	for len(running) < len(ids) || spawned < len(ids) {
		select {
		case err := <-errs:
			if err != nil {
				b.Fatalf("spawn: %v", err)
			}
			spawned++
		case ev, ok := <-w.ResultChan():
			if !ok {
				// The API server ends a watch whose reader falls
				// behind (the test process is busy spawning): resume
				// from the last event seen.
				if rewatches++; rewatches > 20 {
					b.Fatalf("the pod watch ended %d times, with %d of %d pods Running", rewatches, len(running), len(ids))
				}
				if w, err = e.admin.CoreV1().Pods(e.ns).Watch(ctx, metav1.ListOptions{ResourceVersion: rv}); err != nil {
					b.Fatalf("watch pods again: %v", err)
				}
				continue
			}
			if ev.Type == watch.Error {
				b.Fatalf("pod watch: %v", ev.Object)
			}
			p, isPod := ev.Object.(*corev1.Pod)
			if isPod {
				rv = p.ResourceVersion
			}
			if !isPod || p.Status.Phase != corev1.PodRunning {
				continue
			}
			if _, seen := running[p.Name]; !seen {
				running[p.Name] = time.Now()
			}
		case <-ctx.Done():
			b.Fatalf("%d of %d pods Running after 2 minutes", len(running), len(ids))
		}
	}
	var last time.Time
	lat := make([]time.Duration, 0, len(ids))
	mu.Lock()
	defer mu.Unlock()
	for name, at := range running {
		lat = append(lat, at.Sub(began[name]))
		if at.After(last) {
			last = at
		}
	}
	return last.Sub(start), lat
}
