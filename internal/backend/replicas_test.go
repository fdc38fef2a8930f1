package backend

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/mse-in-go/mse/internal/backend/leader"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/backend/runner/local"
	"github.com/mse-in-go/mse/internal/backend/service/servicetest"
	"github.com/mse-in-go/mse/internal/backend/store/pgtest"
)

// No TestMain here (package backend's tests share one with the Kubernetes
// runner's): the throwaway PostgreSQL of pgtest, if one starts, ends with the
// test binary (its parent-death signal), and its directory is swept by a later
// run.

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// A second backend on one SQLite database is refused at start.
func TestLockSQLite(t *testing.T) {
	dir := t.TempDir()
	for _, db := range []string{"", filepath.Join(t.TempDir(), "other.db")} {
		l, err := lockSQLite(dir, db)
		if err != nil || l == nil {
			t.Fatalf("lockSQLite(%q): %v, %v", db, l, err)
		}
		_, err = lockSQLite(dir, db)
		if err == nil || !strings.Contains(err.Error(), "another mse-backend serves the SQLite database") || !strings.Contains(err.Error(), "PostgreSQL") {
			t.Fatalf("second lockSQLite(%q): %v", db, err)
		}
		l.Close()
		l, err = lockSQLite(dir, db)
		if err != nil {
			t.Fatalf("lockSQLite(%q) after the first closed: %v", db, err)
		}
		l.Close()
	}
	for _, db := range []string{":memory:", "postgres://x@127.0.0.1/db"} {
		if l, err := lockSQLite(dir, db); l != nil || err != nil {
			t.Errorf("lockSQLite(%q) = %v, %v; want nothing to lock", db, l, err)
		}
	}
}

// With the local runner, a backend is alone on its PostgreSQL database: a
// second one is refused, naming the first's session; the first stops when it
// loses the lock.
func TestReplicasLocalRunnerAlone(t *testing.T) {
	url := pgtest.URL(t)
	var run runner.Runner = (*local.Runner)(nil) // only its type matters here
	first, err := openReplicas(Config{DB: url}, run, nil, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer first.close()
	if !first.started || first.spawnGuard != nil {
		t.Errorf("local runner: started %v, spawn guard %v; want Start before serving and no guard (no claim)", first.started, first.spawnGuard)
	}
	if _, ok := first.elector.(leader.Always); !ok {
		t.Errorf("local runner: the loops' elector is %T, want leader.Always (the backend holds the lock itself)", first.elector)
	}
	start := time.Now()
	_, err = openReplicas(Config{DB: url}, run, nil, discard())
	if err == nil || !strings.Contains(err.Error(), "another mse-backend leads the database (server session pid ") || !strings.Contains(err.Error(), "mse-backend leader election") {
		t.Fatalf("second backend: err = %v, want a refusal naming the leader's session", err)
	}
	t.Logf("refused after %s: %v", time.Since(start), err)
	// The first backend loses its lock: it must stop.
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name LIKE 'mse-backend leader election%'`); err != nil {
		t.Fatal(err)
	}
	select {
	case <-first.lost:
	case <-time.After(2 * time.Second):
		t.Fatal("the backend did not notice it lost the database's lock")
	}
	first.close()
	again, err := openReplicas(Config{DB: url}, run, nil, discard())
	if err != nil {
		t.Fatalf("a backend after the first stopped: %v", err)
	}
	again.close()
}

// With a runner whose nodes every replica reaches, replicas share the
// database: the loops follow the election, spawns are claimed.
func TestReplicasSharedRunner(t *testing.T) {
	url := pgtest.URL(t)
	run := servicetest.NewRunner(runner.Resources{MemoryMiB: 1024, Cores: 1})
	var reps []*replicas
	for range 2 {
		r, err := openReplicas(Config{DB: url}, run, nil, discard())
		if err != nil {
			t.Fatal(err)
		}
		defer r.close()
		if r.started || r.spawnGuard == nil || r.lost != nil {
			t.Fatalf("shared runner: started %v, spawn guard %v, lost %v", r.started, r.spawnGuard, r.lost)
		}
		if _, ok := r.elector.(*leader.Postgres); !ok {
			t.Fatalf("shared runner: elector %T", r.elector)
		}
		reps = append(reps, r)
	}
	// Both campaign: exactly one leads.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, r := range reps {
		go func() { _ = r.elector.Run(ctx, func(lctx context.Context) { <-lctx.Done() }) }()
	}
	a, b := reps[0].elector.(*leader.Postgres), reps[1].elector.(*leader.Postgres)
	deadline := time.Now().Add(5 * time.Second)
	for a.Leading() == b.Leading() {
		if time.Now().After(deadline) {
			t.Fatalf("leading: %v and %v, want exactly one", a.Leading(), b.Leading())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// --leader-election lease: a Kubernetes Lease in the runner's namespace,
// only with the kubernetes runner's client and PostgreSQL.
func TestReplicasLeaseElection(t *testing.T) {
	kube := fake.NewClientset()
	run := servicetest.NewRunner(runner.Resources{MemoryMiB: 1024, Cores: 1})
	for _, tc := range []struct {
		name string
		cfg  Config
		kube clientset.Interface
		want string
	}{
		{"unknown election", Config{DB: "postgres://x/y", LeaderElection: "raft"}, kube, `unknown --leader-election "raft"`},
		{"lease without the kubernetes runner", Config{DB: "postgres://x/y", LeaderElection: LeaderLease}, nil, "needs the kubernetes runner"},
		{"lease on SQLite", Config{DB: filepath.Join(t.TempDir(), "mse.db"), LeaderElection: LeaderLease}, kube, "one PostgreSQL database"},
		{"lease without a namespace", Config{DB: "postgres://x/y", LeaderElection: LeaderLease}, kube, "no namespace for the Lease"},
		{"lease duration with the postgres election", Config{DB: "postgres://x/y", LeaderLeaseDuration: 5 * time.Second}, kube, "--leader-lease-duration is for --leader-election lease"},
		{"lease duration too short", Config{DB: "postgres://x/y", LeaderElection: LeaderLease, LeaderLeaseDuration: time.Second, Kube: KubeConfig{Namespace: "mse-apps"}}, kube, "--leader-lease-duration 1s is below 3s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := openReplicas(tc.cfg, run, tc.kube, discard())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				if r != nil {
					r.close()
				}
				t.Fatalf("openReplicas: %v, want an error with %q", err, tc.want)
			}
		})
	}
	cfg := Config{DB: "postgres://postgres@127.0.0.1:1/none?sslmode=disable", LeaderElection: LeaderLease, Kube: KubeConfig{Namespace: "mse-apps"}}
	r, err := openReplicas(cfg, run, kube, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	if _, ok := r.elector.(*leader.Lease); !ok || r.started || r.spawnGuard == nil {
		t.Fatalf("lease: elector %T, started %v, spawn guard %v", r.elector, r.started, r.spawnGuard)
	}
}

func TestLeaseTimes(t *testing.T) {
	for _, c := range []struct {
		d                   time.Duration
		lease, renew, retry time.Duration
	}{
		{0, 0, 0, 0}, // leader.NewLease's defaults
		{leader.DefaultLeaseDuration, 0, 0, 0},
		{6 * time.Second, 6 * time.Second, 4 * time.Second, 800 * time.Millisecond},
		{3 * time.Second, 3 * time.Second, 2 * time.Second, 400 * time.Millisecond},
		{time.Minute, time.Minute, 40 * time.Second, 8 * time.Second},
	} {
		lc, err := leaseTimes(Config{LeaderElection: LeaderLease, LeaderLeaseDuration: c.d})
		if err != nil || lc.LeaseDuration != c.lease || lc.RenewDeadline != c.renew || lc.RetryPeriod != c.retry {
			t.Errorf("leaseTimes(%s) = %s/%s/%s, %v; want %s/%s/%s", c.d, lc.LeaseDuration, lc.RenewDeadline, lc.RetryPeriod, err, c.lease, c.renew, c.retry)
		}
	}
}
