package storetest

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/backend/store"
)

// Benchmark measures the hot paths of a driver. open returns a fresh, empty
// store (Benchmark closes it). Every sub-benchmark reports ops/s.
//
//	go test -run '^$' -bench . ./internal/backend/store/...
func Benchmark(b *testing.B, open func(tb testing.TB) store.Store) {
	bench := func(name string, setup func(b *testing.B, s store.Store) func(b *testing.B, i int)) {
		b.Run(name, func(b *testing.B) {
			s := open(b)
			b.Cleanup(func() { s.Close() })
			op := setup(b, s)
			b.ResetTimer()
			start := time.Now()
			for i := 0; b.Loop(); i++ {
				op(b, i)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
		})
	}
	parallel := func(name string, setup func(b *testing.B, s store.Store) func(b *testing.B, worker, i int)) {
		b.Run(name, func(b *testing.B) {
			s := open(b)
			b.Cleanup(func() { s.Close() })
			op := setup(b, s)
			var workers atomic.Int64
			b.SetParallelism(4) // 4×GOMAXPROCS goroutines: many API requests at once
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				w := int(workers.Add(1))
				for i := 0; pb.Next(); i++ {
					op(b, w, i)
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
		})
	}
	user := func(b *testing.B, s store.Store, name string) *store.User {
		u := &store.User{Name: name}
		if err := s.CreateUser(ctx, u); err != nil {
			b.Fatal(err)
		}
		return u
	}
	var seq atomic.Int64
	app := func(owner *store.User, name string) *store.App {
		n := seq.Add(1)
		return &store.App{
			OwnerID: owner.ID, Name: name, Status: store.StatusSpawning, Hardware: "sim-small",
			Domains:    []string{fmt.Sprintf("app%d.example.com", n)},
			Spec:       []byte(`{"name":"bench","entrypoint":"./server","domains":["x.example.com"],"tls":"self"}`),
			CodeDigest: fmt.Sprintf("%064x", n), BundleSize: 1 << 20,
			ExpiresAt: time.Now().Add(24 * time.Hour),
		}
	}

	bench("CreateApp", func(b *testing.B, s store.Store) func(*testing.B, int) {
		u := user(b, s, "alice")
		return func(b *testing.B, i int) {
			if err := s.CreateApp(ctx, app(u, "a")); err != nil {
				b.Fatal(err)
			}
		}
	})
	parallel("CreateAppParallel", func(b *testing.B, s store.Store) func(*testing.B, int, int) {
		u := user(b, s, "alice")
		return func(b *testing.B, w, i int) {
			if err := s.CreateApp(ctx, app(u, "a")); err != nil {
				b.Error(err)
			}
		}
	})
	bench("TransitionApp", func(b *testing.B, s store.Store) func(*testing.B, int) {
		u := user(b, s, "alice")
		a := app(u, "a")
		a.Status = store.StatusRunning
		if err := s.CreateApp(ctx, a); err != nil {
			b.Fatal(err)
		}
		statuses := [2]store.AppStatus{store.StatusRunning, store.StatusInitializing}
		return func(b *testing.B, i int) {
			from, to := statuses[i%2], statuses[(i+1)%2]
			if err := s.TransitionApp(ctx, a.ID, []store.AppStatus{from}, to, "", time.Now()); err != nil {
				b.Fatal(err)
			}
		}
	})
	parallel("TransitionAppParallel", func(b *testing.B, s store.Store) func(*testing.B, int, int) {
		u := user(b, s, "alice")
		apps := make([]string, 1024) // one app per worker
		for i := range apps {
			a := app(u, "a")
			a.Status = store.StatusRunning
			if err := s.CreateApp(ctx, a); err != nil {
				b.Fatal(err)
			}
			apps[i] = a.ID
		}
		statuses := [2]store.AppStatus{store.StatusRunning, store.StatusInitializing}
		return func(b *testing.B, w, i int) {
			from, to := statuses[i%2], statuses[(i+1)%2]
			if err := s.TransitionApp(ctx, apps[w%len(apps)], []store.AppStatus{from}, to, "", time.Now()); err != nil {
				b.Error(err)
			}
		}
	})
	// 2000 apps of 20 owners, half of them stopped; a list is one owner's
	// active apps: 50 rows.
	listSetup := func(b *testing.B, s store.Store) []string {
		var owners []string
		for o := range 20 {
			u := user(b, s, fmt.Sprint("owner", o))
			owners = append(owners, u.ID)
			for i := range 100 {
				a := app(u, fmt.Sprint("app", i%10))
				if i%2 == 1 {
					a.Status = store.StatusStopped
				}
				if err := s.CreateApp(ctx, a); err != nil {
					b.Fatal(err)
				}
			}
		}
		return owners
	}
	activeSt := store.ActiveStatuses
	bench("ListApps50", func(b *testing.B, s store.Store) func(*testing.B, int) {
		owners := listSetup(b, s)
		return func(b *testing.B, i int) {
			as, err := s.ListApps(ctx, store.AppFilter{OwnerID: owners[i%len(owners)], Statuses: activeSt})
			if err != nil || len(as) != 50 {
				b.Fatalf("ListApps: %d, %v", len(as), err)
			}
		}
	})
	parallel("ListApps50Parallel", func(b *testing.B, s store.Store) func(*testing.B, int, int) {
		owners := listSetup(b, s)
		return func(b *testing.B, w, i int) {
			as, err := s.ListApps(ctx, store.AppFilter{OwnerID: owners[(w+i)%len(owners)], Statuses: activeSt})
			if err != nil || len(as) != 50 {
				b.Errorf("ListApps: %d, %v", len(as), err)
			}
		}
	})
	bench("AppByDomain", func(b *testing.B, s store.Store) func(*testing.B, int) {
		u := user(b, s, "alice")
		var domains []string
		for range 500 {
			a := app(u, "a")
			if err := s.CreateApp(ctx, a); err != nil {
				b.Fatal(err)
			}
			domains = append(domains, a.Domains[0])
		}
		return func(b *testing.B, i int) {
			if _, err := s.AppByDomain(ctx, domains[i%len(domains)]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
