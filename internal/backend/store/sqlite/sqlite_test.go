package sqlite

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/backend/store/storetest"
)

func openTemp(t testing.TB) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mse.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := openTemp(t)
		return s
	})
}

// Two handles on one file (as `mse-backend domain reserve` beside a serving
// backend): writes of both serialize on the file's lock.
func TestReplicas(t *testing.T) {
	storetest.RunReplicas(t, func(t *testing.T) (store.Store, store.Store) {
		a, path := openTemp(t)
		b, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return a, b
	})
}

func TestConformanceMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := Open(":memory:")
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

var ctx = context.Background()

func TestPragmas(t *testing.T) {
	s, _ := openTemp(t)
	for _, c := range []struct {
		db     string
		pragma string
		want   string
	}{
		{"w", "journal_mode", "wal"},
		{"w", "foreign_keys", "1"},
		{"w", "synchronous", "2"},
		{"w", "busy_timeout", "10000"},
		{"r", "foreign_keys", "1"},
		{"r", "busy_timeout", "10000"},
		{"r", "query_only", "1"},
	} {
		db := s.w
		if c.db == "r" {
			db = s.r
		}
		var got string
		if err := db.QueryRow("PRAGMA " + c.pragma).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("%s: PRAGMA %s = %s, want %s", c.db, c.pragma, got, c.want)
		}
	}
	if v, err := s.SchemaVersion(ctx); err != nil || v != 3 {
		t.Errorf("SchemaVersion = %d, %v", v, err)
	}
}

func TestReopen(t *testing.T) {
	s, path := openTemp(t)
	u := &store.User{ID: "u1", Name: "alice", CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	a := &store.App{ID: "a1", OwnerID: "u1", Name: "x", Status: store.StatusRunning, Domains: []string{"x.example"}, Spec: []byte(`{"a": 1}`)}
	if err := s.CreateApp(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.GetUser(ctx, "u1")
	if err != nil || !got.CreatedAt.Equal(u.CreatedAt) {
		t.Fatalf("after reopen: %+v, %v", got, err)
	}
	h, err := s2.AppByDomain(ctx, "x.example")
	if err != nil || h.ID != "a1" || string(h.Spec) != `{"a": 1}` {
		t.Fatalf("AppByDomain after reopen: %+v, %v", h, err)
	}
	if v, err := s2.SchemaVersion(ctx); err != nil || v != 3 {
		t.Errorf("SchemaVersion after reopen = %d, %v (migrations applied twice?)", v, err)
	}
}

// TestConcurrentOpen: several stores opening one new file at once all
// migrate it without error (BEGIN IMMEDIATE + busy_timeout) and share it.
func TestConcurrentOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mse.db")
	var wg sync.WaitGroup
	stores := make([]*Store, 6)
	errs := make([]error, len(stores))
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = Open(path)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	if err := stores[0].CreateUser(ctx, &store.User{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := stores[5].GetUserByName(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	// Two writers on one file from different Store values (as two processes
	// would be) do not surface SQLITE_BUSY.
	var wg2 sync.WaitGroup
	for i, s := range stores {
		wg2.Add(1)
		go func() {
			defer wg2.Done()
			for j := range 20 {
				if err := s.CreateUser(ctx, &store.User{Name: string(rune('a'+i)) + string(rune('a'+j)) + "-user"}); err != nil {
					t.Errorf("store %d: %v", i, err)
				}
			}
		}()
	}
	wg2.Wait()
}

func TestNewerSchemaRefused(t *testing.T) {
	s, path := openTemp(t)
	if _, err := s.w.Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, '0999_future', 'x')"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(path); err == nil {
		t.Fatal("Open of a database with a newer schema succeeded")
	}
}

func TestBadPath(t *testing.T) {
	for _, p := range []string{"", "a?b", filepath.Join(t.TempDir(), "no", "such", "dir", "x.db")} {
		if s, err := Open(p); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", p)
		}
	}
}

// TestCreateAppRollback: CreateApp failing after its app row is written (a
// domain conflict found late) leaves no row behind.
func TestCreateAppRollback(t *testing.T) {
	s, _ := openTemp(t)
	s.CreateUser(ctx, &store.User{ID: "u", Name: "u"})
	s.CreateApp(ctx, &store.App{ID: "holder", OwnerID: "u", Status: store.StatusRunning, Domains: []string{"z.example"}})
	var inserted bool
	testHookCreateAppAfterInsert = func() { inserted = true }
	defer func() { testHookCreateAppAfterInsert = nil }()
	err := s.CreateApp(ctx, &store.App{ID: "late", OwnerID: "u", Status: store.StatusSpawning, Domains: []string{"a.example", "z.example"}})
	if !errors.Is(err, store.ErrConflict) || !inserted {
		t.Fatalf("CreateApp: %v (row inserted before the conflict: %v)", err, inserted)
	}
	var n int
	s.w.QueryRow("SELECT COUNT(*) FROM apps WHERE id = 'late'").Scan(&n)
	var d int
	s.w.QueryRow("SELECT COUNT(*) FROM app_domains WHERE app_id = 'late'").Scan(&d)
	if n != 0 || d != 0 {
		t.Fatalf("partial CreateApp left %d app rows, %d domain rows", n, d)
	}
}

const crashEnv = "MSE_SQLITE_CRASH_CHILD"

// TestCrashMidTransaction: a process killed (SIGKILL) inside CreateApp's
// transaction, after the app row is written and before the commit, leaves a
// consistent file: no app row, no domain claims, integrity_check ok, and the
// domain claimable.
func TestCrashMidTransaction(t *testing.T) {
	if path := os.Getenv(crashEnv); path != "" {
		crashChild(path)
		return
	}
	path := filepath.Join(t.TempDir(), "mse.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, &store.User{ID: "u", Name: "u"}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashMidTransaction$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die by SIGKILL: %v\n%s", err, out)
	}
	// The cut transaction's pages reached the WAL (uncommitted frames), so
	// the reopen below exercises recovery, not just an untouched file.
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() < 1<<20 {
		t.Fatalf("WAL left by the child: %v, %v; want the uncommitted, spilled pages (MiBs) in it", fi, err)
	}

	s, err = Open(path)
	if err != nil {
		t.Fatalf("reopen after crash: %v", err)
	}
	defer s.Close()
	var check string
	if err := s.w.QueryRow("PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check = %q, %v", check, err)
	}
	var fk int
	rows, err := s.w.Query("PRAGMA foreign_key_check")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		fk++
	}
	rows.Close()
	if fk != 0 {
		t.Fatalf("foreign_key_check: %d violations", fk)
	}
	if _, err := s.GetApp(ctx, "crashed"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetApp of the app whose transaction was cut: %v", err)
	}
	var n int
	s.w.QueryRow("SELECT COUNT(*) FROM apps").Scan(&n)
	var d int
	s.w.QueryRow("SELECT COUNT(*) FROM app_domains").Scan(&d)
	if n != 1 || d != 1 {
		t.Fatalf("after crash: %d apps, %d domain claims; want the committed one only", n, d)
	}
	if _, err := s.GetApp(ctx, "committed"); err != nil {
		t.Fatalf("committed app lost: %v", err)
	}
	if err := s.CreateApp(ctx, &store.App{ID: "again", OwnerID: "u", Status: store.StatusSpawning, Domains: []string{"crash.example"}}); err != nil {
		t.Fatalf("domain of the cut transaction not claimable: %v", err)
	}
}

func crashChild(path string) {
	s, err := Open(path)
	if err != nil {
		os.Exit(3)
	}
	if err := s.CreateApp(ctx, &store.App{ID: "committed", OwnerID: "u", Status: store.StatusRunning, Domains: []string{"ok.example"}}); err != nil {
		os.Exit(4)
	}
	testHookCreateAppAfterInsert = func() {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	s.CreateApp(ctx, &store.App{ID: "crashed", OwnerID: "u", Status: store.StatusSpawning, Domains: []string{"crash.example"},
		Spec: make([]byte, 8<<20)}) // 8 MiB: more than the page cache (2 MiB) holds, so pages spill to the WAL uncommitted
	os.Exit(5)
}

func BenchmarkSQLite(b *testing.B) {
	storetest.Benchmark(b, func(tb testing.TB) store.Store {
		s, _ := openTemp(tb)
		return s
	})
}
