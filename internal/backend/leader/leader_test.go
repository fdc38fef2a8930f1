package leader_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mse-in-go/mse/internal/backend/leader"
	"github.com/mse-in-go/mse/internal/backend/store/pgtest"
	"github.com/mse-in-go/mse/internal/backend/store/postgres"
	"github.com/mse-in-go/mse/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopKube()
	if err := pgtest.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// replica is one elector running in the test, with what its lead calls saw.
type replica struct {
	name   string
	el     *leader.Postgres
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	started []time.Time // each lead call
	ended   []time.Time // each lead context's end
}

// tracker counts leads running at once across replicas.
type tracker struct {
	running atomic.Int32
	max     atomic.Int32
}

func (tr *tracker) enter() {
	n := tr.running.Add(1)
	for {
		m := tr.max.Load()
		if n <= m || tr.max.CompareAndSwap(m, n) {
			return
		}
	}
}

func quiet() *slog.Logger {
	if testing.Verbose() {
		return slog.Default()
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startReplica(t *testing.T, url, name string, tr *tracker) *replica {
	t.Helper()
	cc, err := postgres.ConnConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	el, err := leader.NewPostgres(leader.PostgresConfig{Conn: cc, Identity: "test " + name, Logger: quiet().With("replica", name)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{name: name, el: el, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if err := el.Run(ctx, func(lctx context.Context) {
			tr.enter()
			r.mu.Lock()
			r.started = append(r.started, time.Now())
			r.mu.Unlock()
			<-lctx.Done()
			r.mu.Lock()
			r.ended = append(r.ended, time.Now())
			r.mu.Unlock()
			tr.running.Add(-1)
		}); err != nil {
			t.Errorf("%s: Run: %v", name, err)
		}
	}()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *replica) stop(t *testing.T) {
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		t.Errorf("%s: Run did not return 10 s after its context ended", r.name)
	}
}

func (r *replica) leads() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.started)
}

func (r *replica) lastStart() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.started[len(r.started)-1]
}

func (r *replica) lastEnd() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ended[len(r.ended)-1]
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// theLeader waits until exactly one of rs leads and returns it and the other.
func theLeader(t *testing.T, a, b *replica) (leader, follower *replica) {
	t.Helper()
	waitFor(t, 5*time.Second, "one replica leads", func() bool { return a.el.Leading() != b.el.Leading() })
	if a.el.Leading() {
		return a, b
	}
	return b, a
}

// lockPID is the server pid of the session that holds the election lock.
func lockPID(t *testing.T, url string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var pid int
	err = c.QueryRow(ctx, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
		AND classid = ($1::bigint >> 32)::oid AND objid = ($1::bigint & 4294967295)::oid
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, leader.DefaultKey).Scan(&pid)
	if err != nil {
		t.Fatalf("the election lock's holder: %v", err)
	}
	return pid
}

func terminate(t *testing.T, url string, pid int) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	// A follower must be waiting for the lock (not still reconnecting after
	// an earlier termination), or the terminated leader may win it back.
	for waiting := 0; waiting == 0; {
		if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&waiting); err != nil {
			t.Fatalf("waiting for a follower to wait for the lock: %v", err)
		}
		if waiting == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	at := time.Now()
	var ok bool
	if err := c.QueryRow(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, ok, err)
	}
	return at
}

func TestPostgresExactlyOneLeads(t *testing.T) {
	url := pgtest.URL(t)
	tr := &tracker{}
	a := startReplica(t, url, "a", tr)
	b := startReplica(t, url, "b", tr)
	l, f := theLeader(t, a, b)
	// For several of the follower's attempts, nothing changes.
	time.Sleep(2500 * time.Millisecond)
	if !l.el.Leading() || f.el.Leading() || l.leads() != 1 || f.leads() != 0 {
		t.Fatalf("after 2.5 s: %s leading %v (%d leads), %s leading %v (%d leads)", l.name, l.el.Leading(), l.leads(), f.name, f.el.Leading(), f.leads())
	}
	if m := tr.max.Load(); m != 1 {
		t.Fatalf("%d leads ran at once", m)
	}
	if h := f.el.Holder(); h == "" || !strings.Contains(h, "test "+l.name) {
		t.Errorf("follower's Holder() = %q, want the leader's pid and identity", h)
	}
}

// A leader whose session the server ends loses leadership at once (its lead
// context is cancelled), and the follower leads within 2 s; the old leader
// campaigns again and takes over when the new one's session ends in turn.
func TestPostgresTerminatedLeaderHandsOver(t *testing.T) {
	url := pgtest.URL(t)
	tr := &tracker{}
	a := startReplica(t, url, "a", tr)
	b := startReplica(t, url, "b", tr)
	l, f := theLeader(t, a, b)
	for round := range 2 {
		at := terminate(t, url, lockPID(t, url))
		waitFor(t, 2*time.Second, fmt.Sprintf("round %d: %s leads after %s's session was terminated", round, f.name, l.name), func() bool {
			return f.el.Leading() && f.leads() == round+1
		})
		waitFor(t, time.Second, "the old leader's lead context ends", func() bool { return !l.el.Leading() })
		lost, took := l.lastEnd().Sub(at), f.lastStart().Sub(at)
		t.Logf("round %d: %s's lead context ended %s after the termination; %s led %s after it", round, l.name, lost, f.name, took)
		if lost > 500*time.Millisecond {
			t.Errorf("the terminated leader's loops ran on for %s", lost)
		}
		if m := tr.max.Load(); m != 1 {
			// Two leads at once in one process: the old one's context had
			// not ended when the new one started.
			t.Logf("note: %d leads overlapped (old ended %s, new started %s after the termination)", m, lost, took)
			if l.lastEnd().Sub(f.lastStart()) > 100*time.Millisecond {
				t.Errorf("leads overlapped by %s", l.lastEnd().Sub(f.lastStart()))
			}
			tr.max.Store(1)
		}
		l, f = f, l
	}
}

// A leader that stops cleanly releases the lock: the follower leads at once.
func TestPostgresReleaseHandsOverAtOnce(t *testing.T) {
	url := pgtest.URL(t)
	tr := &tracker{}
	a := startReplica(t, url, "a", tr)
	b := startReplica(t, url, "b", tr)
	l, f := theLeader(t, a, b)
	at := time.Now()
	l.stop(t)
	waitFor(t, 500*time.Millisecond, f.name+" leads after "+l.name+" released", func() bool { return f.el.Leading() })
	t.Logf("handover after a clean release: %s", f.lastStart().Sub(at))
	if m := tr.max.Load(); m != 1 {
		t.Errorf("%d leads ran at once", m)
	}
}

// A replica that cannot reach the server follows, and leads once it can.
func TestPostgresUnreachableFollows(t *testing.T) {
	cc, err := postgres.ConnConfig("postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	el, err := leader.NewPostgres(leader.PostgresConfig{Conn: cc, Retry: 50 * time.Millisecond, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	var led atomic.Bool
	if err := el.Run(ctx, func(context.Context) { led.Store(true) }); err != nil {
		t.Fatal(err)
	}
	if led.Load() || el.Leading() {
		t.Fatal("an elector that cannot reach PostgreSQL led")
	}
}

func TestNewPostgresNeedsConn(t *testing.T) {
	if _, err := leader.NewPostgres(leader.PostgresConfig{}); err == nil {
		t.Fatal("NewPostgres without a connection configuration: no error")
	}
}

func TestExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mse.db.lock")
	l1, err := leader.Exclusive(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = leader.Exclusive(path)
	if !errors.Is(err, leader.ErrHeld) {
		t.Fatalf("second Exclusive: err = %v, want ErrHeld", err)
	}
	if want := fmt.Sprintf("process %d", os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name the holder (%s)", err, want)
	}
	if err := l1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l1.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	l2, err := leader.Exclusive(path)
	if err != nil {
		t.Fatalf("Exclusive after the holder closed: %v", err)
	}
	l2.Close()
}
