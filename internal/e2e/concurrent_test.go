package e2e

import (
	"crypto/tls"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/e2e/e2eutil"
	"github.com/mse-in-go/mse/internal/testenv"
)

// TestConcurrentDeploys runs 50 `mse cloud deploy`s at once, each to its own
// sandbox: all succeed and all serve (the unix-socket routing has no port to
// race for).
func TestConcurrentDeploys(t *testing.T) {
	const n = 50
	b := testenv.Start(t, testenv.Options{})
	login(t, b, b.AdminToken)
	policy := b.PolicyFile(t, "")
	tomls := make([]string, n)
	for i := range tomls {
		tomls[i] = helloApp(t, fmt.Sprintf("conc-%02d", i), "")
	}
	start := time.Now()
	var wg sync.WaitGroup
	results := make([]*deployed, n)
	errs := make([]string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			d, e, code := deployJSON(t, "--path", tomls[i], "--policy", policy)
			if code != 0 {
				errs[i] = e
				return
			}
			results[i] = d
		}(i)
	}
	wg.Wait()
	t.Logf("%d concurrent deploys in %s", n, time.Since(start).Round(time.Millisecond))
	failed := 0
	for i, d := range results {
		if d == nil {
			failed++
			t.Errorf("deploy %d failed:\n%s", i, errs[i])
			continue
		}
		if page, err := e2eutil.GetVia(b.RouterAddr, d.Domain, &tls.Config{RootCAs: e2eutil.CertPool(t, d.Certificate)}); err != nil || page != "Hello world!" {
			t.Errorf("app %d: GET = %q, %v", i, page, err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d concurrent deploys failed", failed, n)
	}
}
