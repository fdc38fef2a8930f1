package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mse-in-go/mse/internal/backend/leader"
	"github.com/mse-in-go/mse/internal/backend/store"
)

// Several backends may share one store (docs/store.md, "Several replicas"):
// every replica serves the API and the router; the loops (reconcile, sweeps)
// run on the leader only (Lead). Work that two replicas could both start is
// guarded in the store: status changes are compare-and-set transitions, so a
// stop, an expiry or a key timeout happens once, and whoever wins one
// finishes it (stopAfter); a spawn is claimed (store.ClaimSpawn) for
// SpawnClaim, and bounded by SpawnTimeout, so that it happens once.

const (
	// DefaultSpawnTimeout bounds one spawn (Runner.Spawn and recording the node).
	DefaultSpawnTimeout = 2 * time.Minute
	// DefaultOrphanGrace is how long a bundle no active app claims is kept
	// by the leader's sweeps: another replica may be between storing a new
	// app's bundle and recording the app.
	DefaultOrphanGrace = 10 * time.Minute
	// stopTimeout bounds the end of a stop once its transition is won.
	stopTimeout = time.Minute
	// SpawnClaimMargin is what backends running several replicas add to
	// SpawnTimeout for SpawnClaim: room for the replicas' clocks to differ.
	SpawnClaimMargin = 30 * time.Second
)

// Lead runs the loops whenever this replica leads (el), until ctx ends; it
// sets mse_backend_leader. Each time it becomes leader it takes over: it
// sweeps partial uploads (bundles no app claims are deleted by the sweeps
// after OrphanGrace), and adopts the nodes (Runner.Adopt: reattached, or lost
// and marked on_error; those no app claims ended) once no spawn is in flight
// on any replica (Config.SpawnGuard), beside the loop, which starts at once.
// started says that Start already ran in this process (before the API
// served): the first leadership skips the take-over.
func (s *Service) Lead(ctx context.Context, el leader.Elector, started bool) error {
	first := true
	return el.Run(ctx, func(lctx context.Context) {
		s.mLeader.Set(1)
		defer s.mLeader.Set(0)
		s.mTakeovers.Inc()
		if !(first && started) {
			adopted := s.takeOver(lctx)
			// Nothing of this leadership outlives it.
			defer func() { <-adopted }()
		}
		first = false
		s.Run(lctx)
	})
}

// takeOver is Start for a replica that becomes leader while the API serves:
// orphan bundles are left to the sweeps' grace. The adoption goes on in the
// background until it succeeds or ctx ends (the returned channel closes
// then): it may wait for spawns in flight, which the loop need not.
func (s *Service) takeOver(ctx context.Context) <-chan struct{} {
	s.sweep(ctx)
	s.logSweepOrphans(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			err := s.adoptGuarded(ctx)
			if err == nil || ctx.Err() != nil {
				return
			}
			// The loop runs meanwhile: Reconcile marks what it cannot
			// reach.
			s.log.Error("take over as leader: adopt the nodes; trying again", "in", adoptWait, "err", err)
			t := time.NewTimer(adoptWait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}()
	return done
}

// SpawnGuard orders spawns against adoptions across replicas
// (leader.SpawnGuard): a spawn holds Spawning from before it creates the
// node until the node is recorded; a new leader's adoption holds Adopting,
// which waits for the spawns in flight on every replica.
type SpawnGuard interface {
	Spawning(ctx context.Context) (release func(), err error)
	Adopting(ctx context.Context) (release func(), err error)
}

// adoptWait bounds a new leader's wait for the spawns in flight before it
// adopts: spawns that begin meanwhile wait behind it, so a spawn stuck on
// its runner must not hold every replica's creations for long. Past it,
// the adoption tries again after as long.
const adoptWait = 10 * time.Second

// adoptGuarded is adopt while no spawn is in flight on any replica
// (Config.SpawnGuard): a node created but not yet recorded is no orphan.
func (s *Service) adoptGuarded(ctx context.Context) error {
	if g := s.cfg.SpawnGuard; g != nil {
		wctx, cancel := context.WithTimeout(ctx, adoptWait)
		release, err := g.Adopting(wctx)
		cancel()
		if err != nil {
			return fmt.Errorf("wait for the spawns in flight (within %s): %w", adoptWait, err)
		}
		defer release()
	}
	return s.adopt(ctx)
}

// adopt hands the runner the nodes of active apps; those it cannot reattach
// are on_error, and their bundles deleted.
func (s *Service) adopt(ctx context.Context) error {
	apps, err := s.st.ListApps(ctx, store.AppFilter{Statuses: store.ActiveStatuses})
	if err != nil {
		return err
	}
	nodes := map[string][]byte{}
	for _, a := range apps {
		if len(a.Node) > 0 {
			nodes[a.ID] = a.Node
		}
	}
	lost, err := s.cfg.Runner.Adopt(ctx, nodes)
	if err != nil {
		return err
	}
	for id, why := range lost {
		if s.transition(ctx, id, store.ActiveStatuses, store.StatusOnError, why) {
			_ = s.cfg.Blobs.Delete(ctx, id)
		}
	}
	return nil
}

// sweepOrphans deletes bundles that no active app has claimed for grace
// (seen so by two sweeps at least that far apart; 0: at once): what a crash
// between storing a bundle and recording its app, or between a stop and its
// bundle's deletion, left. A concurrent sweeper (a replica that led before)
// is harmless: deleting a deleted blob succeeds. It fails only when it
// cannot list the bundles or the apps; a bundle it cannot delete is logged,
// and tried again at the next sweep.
func (s *Service) sweepOrphans(ctx context.Context, grace time.Duration) error {
	keys, err := s.cfg.Blobs.List(ctx)
	if err != nil {
		return fmt.Errorf("list the bundles for the orphan sweep: %w", err)
	}
	if len(keys) == 0 {
		clear(s.orphans)
		return nil
	}
	// Keys first, then apps: a bundle stored after the list of keys is not
	// looked at; one whose app is recorded after the list of apps is seen
	// again at the next sweep, long before its grace ends.
	apps, err := s.st.ListApps(ctx, store.AppFilter{Statuses: store.ActiveStatuses})
	if err != nil {
		return fmt.Errorf("list the active apps for the orphan sweep: %w", err)
	}
	active := make(map[string]bool, len(apps))
	for _, a := range apps {
		active[a.ID] = true
	}
	now := s.cfg.Now()
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		seen[k] = true
		if active[k] {
			delete(s.orphans, k)
			continue
		}
		first, ok := s.orphans[k]
		if !ok {
			first = now
			s.orphans[k] = now
		}
		if now.Sub(first) < grace {
			continue
		}
		s.log.Info("removing an orphan bundle", "key", k, "orphan_since", first.UTC().Format(time.RFC3339))
		if err := s.cfg.Blobs.Delete(ctx, k); err != nil {
			s.log.Error("remove an orphan bundle", "key", k, "err", err)
			continue
		}
		delete(s.orphans, k)
	}
	for k := range s.orphans {
		if !seen[k] {
			delete(s.orphans, k)
		}
	}
	return nil
}

// logSweepOrphans is sweepOrphans for the leader's loop: with OrphanGrace,
// and its failure logged (the next sweep tries again).
func (s *Service) logSweepOrphans(ctx context.Context) {
	if err := s.sweepOrphans(ctx, s.cfg.OrphanGrace); err != nil {
		s.log.Error("sweep orphan bundles", "err", err)
	}
}

// claimSpawn reports whether this replica may spawn a's node now, claiming
// it in the store: not while another replica's claim (or the creation of the
// app, whose replica spawns it at once) is younger than SpawnClaim.
func (s *Service) claimSpawn(ctx context.Context, a *store.App) bool {
	now := s.cfg.Now().UTC()
	if s.cfg.SpawnClaim > 0 && now.Sub(a.UpdatedAt) < s.cfg.SpawnClaim {
		return false
	}
	err := s.st.ClaimSpawn(ctx, a.ID, a.UpdatedAt, now)
	if err != nil {
		if !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
			s.log.Error("claim a spawn", "app_id", a.ID, "err", err)
		}
		return false
	}
	a.UpdatedAt = now
	return true
}

// detached is ctx without its cancellation, bounded by d: for work that must
// be finished once started (a won transition's consequences, a claimed
// spawn), whether or not the request or the leadership that started it
// lasts.
func detached(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), d)
}
