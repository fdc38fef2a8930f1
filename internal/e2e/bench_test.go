package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/testenv"
)

// BenchmarkDeploy measures `mse cloud deploy` of examples/helloworld end to
// end (package, encrypt, upload, spawn, verify, fresh evidence, key, start,
// first page through the router), in simulation, and reports the p50 and
// p90 over b.N deploys. Each deployed app is stopped outside the timing.
// pool: the backend's default, a warm pool of one sandbox per runtime and
// hardware (the first deploy of each run is cold); cold: no pool.
//
//	go test ./internal/e2e -run '^$' -bench 'Deploy$' -benchtime 30x
func BenchmarkDeploy(b *testing.B) {
	b.Run("pool", func(b *testing.B) { benchDeploy(b, 0) })
	b.Run("cold", func(b *testing.B) { benchDeploy(b, -1) })
}

func benchDeploy(b *testing.B, pool int) {
	be := testenv.Start(b, testenv.Options{WarmPool: pool})
	login(b, be, be.AdminToken)
	policy := be.PolicyFile(b, "")
	toml := helloApp(b, "bench", "")
	var d []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		r := mustDeploy(b, "--path", toml, "--policy", policy)
		d = append(d, time.Since(start))
		b.StopTimer()
		mustRun(b, "cloud", "stop", r.AppID)
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(d[len(d)*9/10].Milliseconds()), "p90-ms")
	fmt.Printf("deploy latency over %d deploys: p50 %s, p90 %s, min %s, max %s\n", len(d), d[len(d)/2], d[len(d)*9/10], d[0], d[len(d)-1])
}
