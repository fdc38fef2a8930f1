package postgres_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/backend/store/pgtest"
	"github.com/mse-in-go/mse/internal/backend/store/postgres"
	"github.com/mse-in-go/mse/internal/backend/store/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var ctx = context.Background()

func open(t testing.TB, url string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, pgtest.URL(t)) })
}

func TestReplicas(t *testing.T) {
	storetest.RunReplicas(t, func(t *testing.T) (store.Store, store.Store) {
		url := pgtest.URL(t)
		return open(t, url), open(t, url)
	})
}

func TestReopen(t *testing.T) {
	url := pgtest.URL(t)
	s := open(t, url)
	if err := s.CreateUser(ctx, &store.User{ID: "u1", Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateApp(ctx, &store.App{ID: "a1", OwnerID: "u1", Status: store.StatusRunning, Domains: []string{"x.example"}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.GetUser(ctx, "u1"); err == nil {
		t.Fatal("GetUser on a closed store succeeded")
	}
	s2 := open(t, url)
	if h, err := s2.AppByDomain(ctx, "x.example"); err != nil || h.ID != "a1" {
		t.Fatalf("after reopen: %v, %v", h, err)
	}
	if v, err := s2.SchemaVersion(ctx); err != nil || v != 3 {
		t.Fatalf("SchemaVersion = %d, %v", v, err)
	}
}

// TestConcurrentOpen: backends starting at once on an empty database all
// succeed; the advisory lock makes the migration run once.
func TestConcurrentOpen(t *testing.T) {
	url := pgtest.URL(t)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := postgres.Open(ctx, url)
			if err == nil {
				s.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
		}
	}
	if v, err := open(t, url).SchemaVersion(ctx); err != nil || v != 3 {
		t.Fatalf("SchemaVersion = %d, %v", v, err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	url := pgtest.URL(t)
	s := open(t, url)
	if err := s.CreateUser(ctx, &store.User{Name: "x"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Pretend a newer binary migrated the database.
	s2, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := postgres.ExecForTest(ctx, s2, "INSERT INTO schema_migrations (version, name) VALUES (999, '0999_future')"); err != nil {
		t.Fatal(err)
	}
	if s3, err := postgres.Open(ctx, url); err == nil {
		s3.Close()
		t.Fatal("Open of a database with a newer schema succeeded")
	}
}

func TestPoolMaxConns(t *testing.T) {
	url := pgtest.URL(t)
	s := open(t, url+"&pool_max_conns=2")
	// More concurrent calls than connections: they queue, none fails.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.CreateUser(ctx, &store.User{Name: string(rune('a' + i))}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if _, err := postgres.Open(ctx, url+"&pool_max_conns=0"); err == nil {
		t.Error("pool_max_conns=0 accepted")
	}
	// With every connection in use, a wait for one ends with its context.
	release, err := postgres.HoldConnsForTest(ctx, s, 2)
	if err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := s.ListUsers(c); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ListUsers with the pool exhausted and a 50ms deadline = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the wait for a connection took %v", d)
	}
	release()
	if _, err := s.ListUsers(ctx); err != nil {
		t.Errorf("ListUsers after the connections came back: %v", err)
	}
}

func TestBadURL(t *testing.T) {
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if s, err := postgres.Open(c, "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"); err == nil {
		s.Close()
		t.Fatal("Open of an unreachable server succeeded")
	}
}

func BenchmarkPostgres(b *testing.B) {
	storetest.Benchmark(b, func(tb testing.TB) store.Store { return open(tb, pgtest.URL(tb)) })
}
