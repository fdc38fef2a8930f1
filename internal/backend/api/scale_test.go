package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/backend/service"
	"github.com/mse-in-go/mse/internal/backend/service/servicetest"
	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/backend/store/pgtest"
	"github.com/mse-in-go/mse/internal/backend/store/postgres"
	"github.com/mse-in-go/mse/internal/client"
)

// scaleApps is how many apps the scale benchmarks put on one backend.
const scaleApps = 1000

// scaleStores are the two store drivers the scale benchmarks run on.
var scaleStores = []struct {
	name string
	env  func(tb testing.TB) *servicetest.Env
}{
	{"sqlite", func(tb testing.TB) *servicetest.Env { return servicetest.New(tb) }},
	{"postgres", func(tb testing.TB) *servicetest.Env {
		st, err := postgres.Open(context.Background(), pgtest.URL(tb))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { st.Close() })
		return servicetest.NewOn(tb, st)
	}},
}

// latencies collects one duration per operation and reports percentiles.
type latencies []time.Duration

func (l latencies) report(b *testing.B) {
	b.Helper()
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(l[len(l)/2]), "p50-ms")
	b.ReportMetric(ms(l[len(l)*99/100]), "p99-ms")
}

// BenchmarkThousandApps: one backend with 1,000 running apps of one tenant
// (with 1,000 of another beside them), on SQLite in a temporary directory
// and on PostgreSQL (pgtest), with the fake runner of servicetest:
//
//   - list: GET /v1/apps?limit=100, a page at a random cursor, through HTTP
//     on loopback (the real api and service);
//   - status: GET /v1/apps/{id} of a random app, the same way;
//   - lookup: the router's Lookup of a random app's domain (service.Lookup,
//     the store read the router makes per connection; backend.go wires it).
func BenchmarkThousandApps(b *testing.B) {
	for _, sc := range scaleStores {
		b.Run(sc.name, func(b *testing.B) {
			e := sc.env(b)
			h := mustAPI(b, e)
			u, tok := e.User(b, "alice", false)
			other, _ := e.User(b, "bob", false)
			ids := seedApps(b, e, u, scaleApps)
			seedApps(b, e, other, scaleApps)
			ctx := context.Background()
			domains := make([]string, len(ids))
			for i, id := range ids {
				a, err := e.Store.GetApp(ctx, id)
				if err != nil {
					b.Fatal(err)
				}
				domains[i] = a.Domains[0]
			}
			get := func(b *testing.B, path string, into any) {
				req, _ := http.NewRequest("GET", h.URL+path, nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("GET %s: HTTP %d", path, resp.StatusCode)
				}
				if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
					b.Fatalf("GET %s: %v", path, err)
				}
			}
			rng := rand.New(rand.NewPCG(1, 2))

			b.Run("list", func(b *testing.B) {
				lat := make(latencies, 0, b.N)
				for b.Loop() {
					// A cursor is the last app of the page before: any
					// app but the last 100 starts a full page.
					path := "/v1/apps?limit=100&cursor=" + ids[rng.IntN(len(ids)-100)]
					t0 := time.Now()
					var page []client.App
					get(b, path, &page)
					lat = append(lat, time.Since(t0))
					if len(page) != 100 {
						b.Fatalf("%s: %d apps, want 100", path, len(page))
					}
				}
				lat.report(b)
			})
			b.Run("status", func(b *testing.B) {
				lat := make(latencies, 0, b.N)
				for b.Loop() {
					id := ids[rng.IntN(len(ids))]
					t0 := time.Now()
					var a client.App
					get(b, "/v1/apps/"+id, &a)
					lat = append(lat, time.Since(t0))
					if a.ID != id || a.Status != string(store.StatusRunning) {
						b.Fatalf("GET /v1/apps/%s: app %s, status %q", id, a.ID, a.Status)
					}
				}
				lat.report(b)
			})
			b.Run("lookup", func(b *testing.B) {
				lat := make(latencies, 0, b.N)
				for b.Loop() {
					i := rng.IntN(len(ids))
					t0 := time.Now()
					rt, err := e.Service.Lookup(ctx, domains[i])
					lat = append(lat, time.Since(t0))
					if err != nil || rt.AppID != ids[i] || rt.Addr == "" {
						b.Fatalf("Lookup(%s) = %+v, %v; want app %s", domains[i], rt, err, ids[i])
					}
				}
				if _, err := e.Service.Lookup(ctx, "nobody.mse.test"); !errors.Is(err, service.ErrNoRoute) {
					b.Fatalf("Lookup of an unknown name: %v, want ErrNoRoute", err)
				}
				lat.report(b)
			})
		})
	}
}
