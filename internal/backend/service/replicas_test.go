package service_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mse-in-go/mse/internal/backend/leader"
	"github.com/mse-in-go/mse/internal/backend/leader/leadertest"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/backend/service"
	"github.com/mse-in-go/mse/internal/backend/service/servicetest"
	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/backend/store/pgtest"
	"github.com/mse-in-go/mse/internal/backend/store/postgres"
	"github.com/mse-in-go/mse/internal/nodeapi"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// replica is one service of a backend with several replicas on one
// PostgreSQL database: its own store handle (pool), its own elector, the
// runner, blobs and clock shared with the others.
type replica struct {
	name string
	env  *servicetest.Env
	el   *leader.Postgres
	stop context.CancelFunc
	done chan struct{}
	// statuses counts the runner's Status calls this replica made (its
	// reconcile loop at work).
	statuses atomic.Int64
	onStatus atomic.Pointer[func()]
}

// countingRunner is the shared fake runner as one replica sees it.
type countingRunner struct {
	*servicetest.Runner
	r *replica
}

func (c countingRunner) Status(ctx context.Context, appID string, h []byte) (runner.NodeState, error) {
	c.r.statuses.Add(1)
	if f := c.r.onStatus.Load(); f != nil {
		(*f)()
	}
	return c.Runner.Status(ctx, appID, h)
}

func replicaConfig(r *replica, rn *servicetest.Runner, guard service.SpawnGuard) func(*service.Config) {
	return func(c *service.Config) {
		c.PollInterval = 20 * time.Millisecond
		c.SpawnClaim = service.DefaultSpawnTimeout + service.SpawnClaimMargin
		c.SpawnGuard = guard
		c.Runner = countingRunner{Runner: rn, r: r}
		if testing.Verbose() {
			c.Logger = slog.Default().With("replica", r.name)
		}
	}
}

func openPG(tb testing.TB, url string) store.Store {
	tb.Helper()
	st, err := postgres.Open(context.Background(), url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

// twoReplicas starts two replicas on a fresh database; both lead when they
// can.
func twoReplicas(tb testing.TB) (url string, a, b *replica) {
	tb.Helper()
	url = pgtest.URL(tb)
	a, b = &replica{name: "a"}, &replica{name: "b"}
	rn := servicetest.NewRunner(runner.Resources{MemoryMiB: 64 << 10, Cores: 64})
	// Each replica has its own spawn guard, as each backend process does.
	guard := func() service.SpawnGuard {
		cc, err := postgres.ConnConfig(url)
		if err != nil {
			tb.Fatal(err)
		}
		g, err := leader.NewSpawnGuard(cc, 0)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(g.Close)
		return g
	}
	a.env = servicetest.NewOn(tb, openPG(tb, url), replicaConfig(a, rn, guard()))
	// NewOn made its own runner: the replicas share the one given above.
	a.env.Runner = rn
	b.env = a.env.Replica(tb, openPG(tb, url), replicaConfig(b, rn, guard()))
	for _, r := range []*replica{a, b} {
		cc, err := postgres.ConnConfig(url)
		if err != nil {
			tb.Fatal(err)
		}
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		if testing.Verbose() {
			log = slog.Default().With("replica", r.name)
		}
		if r.el, err = leader.NewPostgres(leader.PostgresConfig{Conn: cc, Identity: "replica " + r.name, Logger: log}); err != nil {
			tb.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		r.stop, r.done = cancel, make(chan struct{})
		go func() {
			defer close(r.done)
			if err := r.env.Service.Lead(ctx, r.el, false); err != nil {
				tb.Errorf("%s: Lead: %v", r.name, err)
			}
		}()
		tb.Cleanup(func() { r.stop(); <-r.done })
	}
	return url, a, b
}

func eventually(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func leaderOf(tb testing.TB, a, b *replica) (l, f *replica) {
	tb.Helper()
	eventually(tb, 5*time.Second, "one replica leads", func() bool { return a.el.Leading() != b.el.Leading() })
	if a.el.Leading() {
		return a, b
	}
	return b, a
}

// counter sums a counter of reg with the given label value.
func counter(tb testing.TB, reg *prometheus.Registry, name, label, value string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

func gauge(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	tb.Fatalf("no gauge %s", name)
	return 0
}

func status(tb testing.TB, st store.Store, id string) store.AppStatus {
	tb.Helper()
	a, err := st.GetApp(context.Background(), id)
	if err != nil {
		tb.Fatal(err)
	}
	return a.Status
}

// Two replicas, apps created through both: each is spawned once; user
// stops sent to both replicas at once, racing the leader's expiry of the
// same apps, stop each app once (one transition, one runner Stop).
func TestReplicasStopAndExpireOnce(t *testing.T) {
	_, a, b := twoReplicas(t)
	l, f := leaderOf(t, a, b)
	if gauge(t, l.env.Registry, "mse_backend_leader") != 1 || gauge(t, f.env.Registry, "mse_backend_leader") != 0 {
		t.Errorf("mse_backend_leader: leader %v, follower %v", gauge(t, l.env.Registry, "mse_backend_leader"), gauge(t, f.env.Registry, "mse_backend_leader"))
	}
	u, _ := a.env.User(t, "alice", false)
	const n = 8
	var apps []*store.App
	for i := range n {
		e := []*servicetest.Env{a.env, b.env}[i%2]
		req := request(e, fmt.Sprintf("app%d", i))
		if i < n/2 {
			req.ExpiresAt = e.Now().Add(time.Hour) // expired by the loop below
		}
		apps = append(apps, create(t, e, u, req))
	}
	for _, app := range apps {
		a.env.Runner.SetState(app.ID, nodeapi.StateRunning, "")
	}
	eventually(t, 5*time.Second, "every app running", func() bool {
		for _, app := range apps {
			if status(t, a.env.Store, app.ID) != store.StatusRunning {
				return false
			}
		}
		return true
	})
	// Now: the first half expires (the leader's loop), and every app is
	// stopped by its owner through both replicas at once.
	a.env.Advance(2 * time.Hour)
	var wg sync.WaitGroup
	for _, app := range apps {
		for _, r := range []*replica{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := r.env.Service.StopApp(context.Background(), u, app.ID); err != nil {
					t.Errorf("%s: StopApp %s: %v", r.name, app.ID, err)
				}
			}()
		}
	}
	wg.Wait()
	eventually(t, 5*time.Second, "every app stopped", func() bool {
		for _, app := range apps {
			if status(t, a.env.Store, app.ID) != store.StatusStopped {
				return false
			}
		}
		return true
	})
	time.Sleep(100 * time.Millisecond) // a few more loops: nothing more may happen
	for _, app := range apps {
		if s, p := a.env.Runner.SpawnCalls(app.ID), a.env.Runner.StopCalls(app.ID); s != 1 || p != 1 {
			t.Errorf("app %s: %d spawns, %d stops; want 1 and 1", app.Name, s, p)
		}
		if a.env.Runner.Live(app.ID) {
			t.Errorf("app %s: its node still runs", app.Name)
		}
	}
	stops := counter(t, a.env.Registry, "mse_app_transitions_total", "to", "stopped") + counter(t, b.env.Registry, "mse_app_transitions_total", "to", "stopped")
	if stops != n {
		t.Errorf("%v transitions to stopped across the replicas, want %d", stops, n)
	}
}

// The leader is killed (its election session terminated) in the middle of
// its loop: while it ends an expired app's node, and while it spawns a node.
// The other replica leads within 2 s and finishes the rest; the old leader's
// stop and spawn in flight complete; nothing is done twice.
func TestReplicasLeaderKilledMidLoop(t *testing.T) {
	url, a, b := twoReplicas(t)
	l, f := leaderOf(t, a, b)
	u, _ := a.env.User(t, "alice", false)
	rn := a.env.Runner
	var expiring []*store.App
	for i := range 4 {
		req := request(a.env, fmt.Sprintf("exp%d", i))
		req.ExpiresAt = a.env.Now().Add(time.Hour)
		expiring = append(expiring, create(t, f.env, u, req))
	}
	respawn := create(t, f.env, u, request(a.env, "respawn"))
	bystander := create(t, f.env, u, request(a.env, "bystander")) // keeps the loop calling the runner
	rn.SetState(bystander.ID, nodeapi.StateRunning, "")
	for _, app := range expiring {
		rn.SetState(app.ID, nodeapi.StateRunning, "")
	}
	eventually(t, 5*time.Second, "apps running", func() bool { return status(t, a.env.Store, expiring[3].ID) == store.StatusRunning })

	// The leader's first stop blocks until released.
	inStop, release := make(chan string, 1), make(chan struct{})
	var stopOnce sync.Once
	releaseStop := func() { stopOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseStop)
	var blocked atomic.Bool
	rn.BeforeStop = func(id string) {
		if blocked.CompareAndSwap(false, true) {
			inStop <- id
			<-release
		}
	}
	a.env.Advance(2 * time.Hour)
	var first string
	select {
	case first = <-inStop:
	case <-time.After(5 * time.Second):
		t.Fatal("the leader did not stop an expired app")
	}
	killed := leadertest.KillPostgresLeader(t, url)
	eventually(t, 2*time.Second, f.name+" leads after "+l.name+"'s session was terminated", func() bool { return f.el.Leading() })
	t.Logf("%s led %s after the termination", f.name, time.Since(killed))
	// The new leader stops the other expired apps; the one in flight is
	// already stopped in the store (the old leader won its transition) and
	// is not stopped again.
	eventually(t, 5*time.Second, "the other expired apps stopped by the new leader", func() bool {
		for _, app := range expiring {
			if app.ID != first && rn.StopCalls(app.ID) != 1 {
				return false
			}
		}
		return true
	})
	if status(t, a.env.Store, first) != store.StatusStopped || rn.StopCalls(first) != 0 {
		t.Fatalf("the app in flight: %s, %d stop calls finished", status(t, a.env.Store, first), rn.StopCalls(first))
	}
	releaseStop() // the old leader finishes its stop
	eventually(t, 5*time.Second, "the old leader's stop finished", func() bool { return rn.StopCalls(first) == 1 })

	// A spawn in flight when the leader dies: the app lost its node record
	// (as when its creator died before recording it) long enough ago that
	// the leader claims it.
	l, f = leaderOf(t, a, b)
	inSpawn, releaseSpawn := make(chan struct{}), make(chan struct{})
	var attempts atomic.Int32 // spawns of the app begun since its node record was lost
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(releaseSpawn) }) }
	t.Cleanup(unblock)
	rn.BeforeSpawn = func(id string) {
		if id == respawn.ID && attempts.Add(1) == 1 {
			close(inSpawn)
			<-releaseSpawn
		}
	}
	if err := a.env.Store.SetAppNode(context.Background(), respawn.ID, nil, a.env.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inSpawn:
	case <-time.After(5 * time.Second):
		t.Fatal("the leader did not spawn the app without a node")
	}
	leadertest.KillPostgresLeader(t, url)
	eventually(t, 2*time.Second, f.name+" leads", func() bool { return f.el.Leading() })
	before := f.statuses.Load()
	eventually(t, 2*time.Second, "the new leader's loop runs", func() bool { return f.statuses.Load() > before+3 })
	if n := attempts.Load(); n != 1 {
		t.Fatalf("while the old leader's claim holds: %d spawns of the app begun, want 1 (the one in flight)", n)
	}
	unblock()
	eventually(t, 5*time.Second, "the spawn in flight recorded its node", func() bool {
		g, err := a.env.Store.GetApp(context.Background(), respawn.ID)
		return err == nil && len(g.Node) > 0
	})
	time.Sleep(100 * time.Millisecond)
	if n, m := rn.SpawnCalls(respawn.ID), attempts.Load(); n != 2 || m != 1 {
		t.Errorf("%d spawns of the app (%d since its node record was lost), want 2 (1)", n, m)
	}
	for _, app := range expiring {
		if n := rn.StopCalls(app.ID); n != 1 || rn.Live(app.ID) || status(t, a.env.Store, app.ID) != store.StatusStopped {
			t.Errorf("expired app %s: %d stops, live %v, %s", app.Name, n, rn.Live(app.ID), status(t, a.env.Store, app.ID))
		}
	}
	stops := counter(t, a.env.Registry, "mse_app_transitions_total", "to", "stopped") + counter(t, b.env.Registry, "mse_app_transitions_total", "to", "stopped")
	if stops != float64(len(expiring)) {
		t.Errorf("%v transitions to stopped, want %d", stops, len(expiring))
	}
}

// A replica that becomes leader while spawns are in flight (their nodes
// made, their handles not yet recorded), on the old leader and in a request
// its own API serves, does not end those nodes as orphans: its adoption
// waits for the spawns (the spawn guard), then finds them recorded. Each app
// keeps its one node.
func TestReplicasTakeOverSparesSpawnsInFlight(t *testing.T) {
	url, a, b := twoReplicas(t)
	l, f := leaderOf(t, a, b)
	u, _ := a.env.User(t, "alice", false)
	rn := a.env.Runner
	inSpawn, release := make(chan string, 2), make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	rn.AfterSpawn = func(id string) {
		inSpawn <- id
		<-release
	}
	created := make(chan error, 2)
	for _, r := range []*replica{l, f} {
		go func() {
			_, err := r.env.Service.CreateApp(context.Background(), u, request(r.env, "inflight-"+r.name), bytes.NewReader(bundleBytes))
			created <- err
		}()
	}
	var ids []string
	for range 2 {
		select {
		case id := <-inSpawn:
			ids = append(ids, id)
		case <-time.After(5 * time.Second):
			t.Fatal("the creations did not reach their spawns")
		}
	}
	leadertest.KillPostgresLeader(t, url)
	eventually(t, 2*time.Second, f.name+" leads", func() bool { return f.el.Leading() })
	time.Sleep(200 * time.Millisecond) // its take-over, were it not waiting
	for _, id := range ids {
		if n := rn.Orphaned(id); n != 0 || !rn.Live(id) {
			t.Fatalf("app %s: its node in flight was ended as an orphan by the new leader's take-over (%d, live %v)", id, n, rn.Live(id))
		}
	}
	unblock()
	for range 2 {
		if err := <-created; err != nil {
			t.Fatalf("CreateApp: %v", err)
		}
	}
	before := f.statuses.Load()
	eventually(t, 5*time.Second, "the new leader's loop runs", func() bool { return f.statuses.Load() > before+3 })
	for _, id := range ids {
		rn.SetState(id, nodeapi.StateRunning, "")
	}
	eventually(t, 5*time.Second, "both apps running", func() bool {
		return status(t, a.env.Store, ids[0]) == store.StatusRunning && status(t, a.env.Store, ids[1]) == store.StatusRunning
	})
	for _, id := range ids {
		if rn.Orphaned(id) != 0 || rn.SpawnCalls(id) != 1 || !rn.Live(id) {
			t.Errorf("app %s: orphaned %d times, %d spawns, live %v; want 0, 1, true", id, rn.Orphaned(id), rn.SpawnCalls(id), rn.Live(id))
		}
	}
}

// A node-less spawning app whose claim has lapsed (its creator died before
// recording the node, and SpawnClaim passed) is spawned by the leader, once;
// one whose claim is fresh is left to its claimant.
func TestReplicasAbandonedSpawn(t *testing.T) {
	_, a, b := twoReplicas(t)
	l, _ := leaderOf(t, a, b)
	u, _ := a.env.User(t, "alice", false)
	rn := a.env.Runner
	fresh := create(t, a.env, u, request(a.env, "fresh"))
	lapsed := create(t, b.env, u, request(a.env, "lapsed"))
	now := a.env.Now()
	claim := service.DefaultSpawnTimeout + service.SpawnClaimMargin
	if err := a.env.Store.SetAppNode(context.Background(), fresh.ID, nil, now.Add(-claim/2)); err != nil {
		t.Fatal(err)
	}
	if err := a.env.Store.SetAppNode(context.Background(), lapsed.ID, nil, now.Add(-claim)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the lapsed app respawned", func() bool { return rn.SpawnCalls(lapsed.ID) == 2 })
	before := l.statuses.Load()
	eventually(t, 2*time.Second, "more loops", func() bool { return l.statuses.Load() > before+5 })
	if n := rn.SpawnCalls(fresh.ID); n != 1 {
		t.Errorf("the app whose claim holds was spawned %d times, want 1 (its creation)", n)
	}
	if n := rn.SpawnCalls(lapsed.ID); n != 2 {
		t.Errorf("the lapsed app was spawned %d times, want 2", n)
	}
	a.env.Advance(claim)
	eventually(t, 5*time.Second, "the app respawned once its claim lapsed", func() bool { return rn.SpawnCalls(fresh.ID) == 2 })
}

// BenchmarkFailover measures the time from the leader's election session
// being terminated to the other replica's first reconcile step (its first
// node status call).
func BenchmarkFailover(b *testing.B) {
	url, x, y := twoReplicas(b)
	u, _ := x.env.User(b, "alice", false)
	app, err := x.env.Service.CreateApp(context.Background(), u, request(x.env, "bench"), bytes.NewReader(bundleBytes))
	if err != nil {
		b.Fatal(err)
	}
	x.env.Runner.SetState(app.ID, nodeapi.StateRunning, "")
	var total time.Duration
	b.ResetTimer()
	for range b.N {
		_, f := leaderOf(b, x, y)
		seen := make(chan time.Time, 1)
		fn := func() {
			select {
			case seen <- time.Now():
			default:
			}
		}
		f.onStatus.Store(&fn)
		killed := leadertest.KillPostgresLeader(b, url)
		select {
		case at := <-seen:
			total += at.Sub(killed)
		case <-time.After(5 * time.Second):
			b.Fatal("no failover within 5 s")
		}
		f.onStatus.Store(nil)
		// The old leader campaigns again: wait until it follows.
		eventually(b, 5*time.Second, "back to one leader", func() bool { return x.el.Leading() != y.el.Leading() })
	}
	b.StopTimer()
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/failover")
}
