package leader_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/backend/leader"
)

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

func waitFor(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// record is an elector running in the test (one replica), with what its
// lead calls saw.
type record struct {
	name       string
	cancel     context.CancelFunc
	done       chan struct{}
	stopWithin time.Duration

	mu      sync.Mutex
	started []time.Time // each lead call
	ended   []time.Time // each lead context's end
}

// campaign runs el until the test ends (or stop): each lead call enters tr,
// is recorded, and waits for its context to end. Run must return within
// stopWithin of its context's end.
func campaign(tb testing.TB, name string, el leader.Elector, tr *tracker, stopWithin time.Duration) *record {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &record{name: name, cancel: cancel, done: make(chan struct{}), stopWithin: stopWithin}
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
			tb.Errorf("%s: Run: %v", name, err)
		}
	}()
	tb.Cleanup(func() { r.stop(tb) })
	return r
}

func (r *record) stop(tb testing.TB) {
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(r.stopWithin):
		tb.Errorf("%s: Run did not return %s after its context ended", r.name, r.stopWithin)
	}
}

func (r *record) leads() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.started)
}

func (r *record) ends() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ended)
}

// lastStart and lastEnd are the times of the last lead call and of its
// context's end: wait for leads or ends first (an elector's Leading turns
// true before its lead call starts).
func (r *record) lastStart() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.started[len(r.started)-1]
}

func (r *record) lastEnd() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ended[len(r.ended)-1]
}

// theLeader waits until exactly one of a and b leads (a first acquisition
// waits for no expiry: within a few attempts) and returns it and the other.
func theLeader[R interface{ leading() bool }](tb testing.TB, a, b R) (leader, follower R) {
	tb.Helper()
	waitFor(tb, 5*time.Second, "one replica leads", func() bool { return a.leading() != b.leading() })
	if a.leading() {
		return a, b
	}
	return b, a
}
