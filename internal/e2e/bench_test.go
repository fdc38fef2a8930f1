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
//
//	go test ./internal/e2e -run '^$' -bench Deploy -benchtime 20x
func BenchmarkDeploy(b *testing.B) {
	be := testenv.Start(b, testenv.Options{})
	cfgDir := b.TempDir()
	b.Setenv("MSE_CONFIG_DIR", cfgDir)
	b.Setenv("MSE_BACKEND_URL", "")
	b.Setenv("MSE_TOKEN", "")
	if code := runB(b, "cloud", "login", "--url", be.APIURL, "--token", be.AdminToken); code != 0 {
		b.Fatal("login failed")
	}
	policy := be.PolicyFile(b, "")
	toml := helloAppB(b, "bench")
	var d []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		out, code := runOut(b, "cloud", "deploy", "--path", toml, "--policy", policy, "--json", "-y")
		d = append(d, time.Since(start))
		if code != 0 {
			b.Fatalf("deploy %d failed", i)
		}
		b.StopTimer()
		id := jsonField(b, out, "app_id")
		if code := runB(b, "cloud", "stop", id); code != 0 {
			b.Fatal("stop failed")
		}
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(d[len(d)*9/10].Milliseconds()), "p90-ms")
	fmt.Printf("deploy latency over %d deploys: p50 %s, p90 %s, min %s, max %s\n", len(d), d[len(d)/2], d[len(d)*9/10], d[0], d[len(d)-1])
}
