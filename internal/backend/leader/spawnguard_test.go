package leader_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mse-in-go/mse/internal/backend/leader"
	"github.com/mse-in-go/mse/internal/backend/store/pgtest"
	"github.com/mse-in-go/mse/internal/backend/store/postgres"
)

func newGuard(t *testing.T, url string) *leader.SpawnGuard {
	t.Helper()
	cc, err := postgres.ConnConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	g, err := leader.NewSpawnGuard(cc, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}

// hold runs f in the background; the returned channel gets its release
// function (or nil on error) once it holds.
func hold(t *testing.T, f func(context.Context) (func(), error)) <-chan func() {
	ch := make(chan func(), 1)
	go func() {
		rel, err := f(context.Background())
		if err != nil {
			t.Errorf("hold: %v", err)
		}
		ch <- rel
	}()
	return ch
}

func held(t *testing.T, ch <-chan func(), within time.Duration, what string) func() {
	t.Helper()
	select {
	case rel := <-ch:
		if rel == nil {
			t.Fatalf("%s: failed", what)
		}
		return rel
	case <-time.After(within):
		t.Fatalf("%s: not held within %s", what, within)
		return nil
	}
}

func waiting(t *testing.T, ch <-chan func(), what string) {
	t.Helper()
	select {
	case rel := <-ch:
		if rel != nil {
			rel()
		}
		t.Fatalf("%s: held while it must wait", what)
	case <-time.After(200 * time.Millisecond):
	}
}

// Spawns on two replicas hold the guard at once; an adoption waits for both,
// and a spawn that begins while the adoption waits waits behind it.
func TestSpawnGuardOrdersSpawnsAndAdoption(t *testing.T) {
	url := pgtest.URL(t)
	a, b := newGuard(t, url), newGuard(t, url)
	sa := held(t, hold(t, a.Spawning), 5*time.Second, "a spawns")
	sb := held(t, hold(t, b.Spawning), 5*time.Second, "b spawns at the same time")
	adopt := hold(t, b.Adopting)
	waiting(t, adopt, "the adoption while two spawns run")
	late := hold(t, a.Spawning)
	waiting(t, late, "a spawn begun while the adoption waits")
	sa()
	waiting(t, adopt, "the adoption while one spawn runs")
	sb()
	ad := held(t, adopt, 5*time.Second, "the adoption once the spawns ended")
	waiting(t, late, "a spawn while the adoption runs")
	ad()
	held(t, late, 5*time.Second, "the spawn once the adoption ended")()
	// Released twice: nothing more happens, even to the next hold, on the
	// session the first release put back for reuse.
	once := held(t, hold(t, a.Spawning), 5*time.Second, "a spawns once more")
	once()
	again := held(t, hold(t, a.Spawning), 5*time.Second, "a spawns again, on the kept session")
	once()
	sa()
	adopt = hold(t, b.Adopting)
	waiting(t, adopt, "the adoption while a's new spawn runs, after a second release of the hold before it")
	again()
	held(t, adopt, 5*time.Second, "the adoption once a's new spawn ended")()
	held(t, hold(t, a.Adopting), 5*time.Second, "an adoption with no spawn in flight")()
}

// A replica that dies mid-spawn holds nothing: its session ends with it.
func TestSpawnGuardDiesWithItsSession(t *testing.T) {
	url := pgtest.URL(t)
	a, b := newGuard(t, url), newGuard(t, url)
	held(t, hold(t, a.Spawning), 5*time.Second, "a spawns")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	if _, err := b.Adopting(ctx); err == nil {
		t.Fatal("the adoption held while a spawn runs")
	}
	cancel()
	adopt := hold(t, b.Adopting)
	waiting(t, adopt, "the adoption while the spawn runs")
	// a's session ends as when its process is killed.
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted AND mode = 'ShareLock'
		AND classid = ($1::bigint >> 32)::oid AND objid = ($1::bigint & 4294967295)::oid
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, leader.DefaultSpawnKey).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminate the spawning session: %d, %v", n, err)
	}
	held(t, adopt, 5*time.Second, "the adoption once the spawning replica died")()
	// a's guard goes on with a new session.
	held(t, hold(t, a.Spawning), 5*time.Second, "a spawns again")()
}
