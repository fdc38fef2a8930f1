package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/backend/service/servicetest"
	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/client"
)

// seedApps inserts n running apps of owner straight into the store, newest
// last, each with a node of the fake runner (so that the router's Lookup
// finds a route), and returns their ids newest first (the
// API's order).
func seedApps(tb testing.TB, e *servicetest.Env, owner *store.User, n int) []string {
	tb.Helper()
	ctx := context.Background()
	p, err := e.Service.CreateProject(ctx, owner, "default")
	if err != nil {
		tb.Fatal(err)
	}
	ids := make([]string, n)
	base := e.Now().Add(-time.Hour)
	for i := 0; i < n; i++ {
		a := &store.App{
			ID: fmt.Sprintf("%s-0000-4000-8000-%012d", owner.ID[:8], i), OwnerID: owner.ID, ProjectID: p.ID,
			Name: fmt.Sprintf("app%d", i), Status: store.StatusRunning, Hardware: "1g",
			Domains: []string{fmt.Sprintf("app%d-%s.mse.test", i, owner.Name)}, Spec: []byte(`{"tls_mode":"self"}`),
			CodeDigest: fmt.Sprintf("%064x", i), BundleSize: 1 << 20,
			CreatedAt: base.Add(time.Duration(i/3) * time.Second), // ties of three
			UpdatedAt: base, ExpiresAt: base.Add(24 * time.Hour),
		}
		// No resources: the fake runner's capacity does not limit seeding.
		h, err := e.Runner.Spawn(ctx, a.ID, runner.SpawnSpec{Hardware: runner.Hardware{Name: "1g"}})
		if err != nil {
			tb.Fatal(err)
		}
		a.Node = h
		if err := e.Store.CreateApp(ctx, a); err != nil {
			tb.Fatal(err)
		}
		ids[n-1-i] = a.ID
	}
	return ids
}

func (f *fixture) user(t testing.TB, name string) *store.User {
	u, err := f.env.Store.GetUserByName(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestPagination: GET /v1/apps answers pages with a cursor to the next; the
// client follows them, so a caller sees every app once, in order.
func TestPagination(t *testing.T) {
	f := newFixture(t)
	alice := f.user(t, "alice")
	bob, bobTok := f.env.User(t, "bob", false)
	want := seedApps(t, f.env, alice, 1000)
	bobIDs := seedApps(t, f.env, bob, 3)

	apps, err := f.c.Apps(context.Background(), client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, len(apps))
	for i, a := range apps {
		got[i] = a.ID
	}
	if !slices.Equal(got, want) {
		t.Fatalf("client.Apps: %d apps, want the 1000 in order (first %v)", len(got), got[:min(3, len(got))])
	}

	// By hand: pages of 100, the header on all but the last.
	get := func(query, token string) (int, []client.App, string) {
		req, _ := http.NewRequest("GET", f.srv.URL+"/v1/apps?"+query, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var page []client.App
		if resp.StatusCode == 200 {
			if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, page, resp.Header.Get(client.HeaderNextCursor)
	}
	cursor, pages := "", 0
	for {
		q := "limit=100"
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		code, page, next := get(q, f.token)
		if code != 200 || len(page) > 100 {
			t.Fatalf("page %d: HTTP %d, %d apps", pages, code, len(page))
		}
		pages++
		if next == "" {
			if len(page) != 100 || pages != 10 {
				t.Errorf("last page: %d apps after %d pages", len(page), pages)
			}
			break
		}
		if next != page[len(page)-1].ID {
			t.Errorf("cursor %q is not the page's last app", next)
		}
		cursor = next
	}
	// The default page is 100.
	if _, page, next := get("", f.token); len(page) != 100 || next == "" {
		t.Errorf("default page: %d apps, next %q", len(page), next)
	}
	for _, q := range []string{"limit=0", "limit=501", "limit=x", "cursor=nope", "cursor=" + bobIDs[0]} {
		if code, _, _ := get(q, f.token); code != 400 {
			t.Errorf("%s: HTTP %d, want 400", q, code)
		}
	}
	if code, page, next := get("", bobTok); code != 200 || len(page) != 3 || next != "" {
		t.Errorf("bob: HTTP %d, %d apps, next %q", code, len(page), next)
	}
}

// BenchmarkListApps: GET /v1/apps, one page of 100 of 1,000 apps, through
// HTTP on loopback (fake runner; SQLite in a temporary directory).
func BenchmarkListApps(b *testing.B) {
	e := servicetest.New(b)
	h := mustAPI(b, e)
	u, tok := e.User(b, "alice", false)
	seedApps(b, e, u, 1000)
	req, _ := http.NewRequest("GET", h.URL+"/v1/apps?limit=100", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		var page []client.App
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil || len(page) != 100 {
			b.Fatalf("page: %d apps, %v", len(page), err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
