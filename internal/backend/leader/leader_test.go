package leader_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/backend/leader"
	"github.com/mse-in-go/mse/internal/backend/leader/leadertest"
	"github.com/mse-in-go/mse/internal/backend/store/pgtest"
	"github.com/mse-in-go/mse/internal/backend/store/postgres"
	"github.com/mse-in-go/mse/internal/testenv"
)

// TestMain stops the components tests started: the throwaway PostgreSQL
// and the Kubernetes test cluster (the Lease tests).
func TestMain(m *testing.M) { pgtest.Main(m, testenv.StopKube) }

// replica is one Postgres elector running in the test.
type replica struct {
	*record
	el *leader.Postgres
}

func (r *replica) leading() bool { return r.el.Leading() }

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
	return &replica{record: campaign(t, name, el, tr, 10*time.Second), el: el}
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
		at := leadertest.KillPostgresLeader(t, url)
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
	waitFor(t, 500*time.Millisecond, f.name+" leads after "+l.name+" released", func() bool { return f.el.Leading() && f.leads() == 1 })
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
