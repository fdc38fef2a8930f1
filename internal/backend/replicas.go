package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientset "k8s.io/client-go/kubernetes"

	"github.com/mse-in-go/mse/internal/backend/leader"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/backend/runner/local"
	"github.com/mse-in-go/mse/internal/backend/service"
	"github.com/mse-in-go/mse/internal/backend/store/postgres"
)

// isPostgres reports whether db names a PostgreSQL database.
func isPostgres(db string) bool {
	return strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://")
}

// sqlitePath is the SQLite file OpenStore opens for db ("" for none).
func sqlitePath(dataDir, db string) string {
	switch {
	case isPostgres(db), db == ":memory:":
		return ""
	case db == "":
		return filepath.Join(dataDir, "mse.db")
	}
	return db
}

// lockSQLite refuses a second backend on one SQLite database: its writes
// are safe because one process holds the only writer connection, and its
// loops because they run once. The lock is DB.lock beside the database.
func lockSQLite(dataDir, db string) (*leader.ExclusiveLock, error) {
	path := sqlitePath(dataDir, db)
	if path == "" {
		return nil, nil
	}
	l, err := leader.Exclusive(path + ".lock")
	if errors.Is(err, leader.ErrHeld) {
		return nil, fmt.Errorf("backend: another mse-backend serves the SQLite database %s (%v): one backend per SQLite database; stop the other one, or run several replicas on PostgreSQL (--db postgres://...)", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}
	return l, nil
}

// sharedRunner reports whether run's nodes are reachable from every replica
// (the kubernetes runner's pods): then several replicas may serve one
// PostgreSQL database. The local runner's nodes are processes of this
// machine, known to this process only.
func sharedRunner(run runner.Runner) bool {
	_, isLocal := run.(*local.Runner)
	return !isLocal
}

// replicas is how this backend shares its store with others.
type replicas struct {
	// elector drives service.Lead; started says Start runs before the API
	// serves (a backend alone on its store).
	elector leader.Elector
	started bool
	// spawnGuard is service.Config.SpawnGuard: set where replicas share the
	// runner (and so a spawn claim, which the service derives from it).
	spawnGuard service.SpawnGuard
	// lost is closed when a backend that must be alone on its PostgreSQL
	// database (local runner) loses the database's lock: it must stop.
	lost  <-chan struct{}
	close func()
}

// guardTimeout is how long a backend that must be alone on its PostgreSQL
// database waits for the lock at start before it gives up.
const guardTimeout = 3 * time.Second

// Leader elections (Config.LeaderElection, --leader-election).
const (
	LeaderPostgres = "postgres"
	LeaderLease    = "lease"
)

// minLeaseDuration is the shortest --leader-lease-duration: below it, a
// pause of the API server of a second or two makes the leader resign.
const minLeaseDuration = 3 * time.Second

// leaseTimes are the Lease's timings from cfg.LeaderLeaseDuration, which
// only the lease election takes.
func leaseTimes(cfg Config) (leader.LeaseConfig, error) {
	d := cfg.LeaderLeaseDuration
	if d == 0 || d == leader.DefaultLeaseDuration {
		return leader.LeaseConfig{}, nil // the defaults
	}
	if cfg.LeaderElection != LeaderLease {
		return leader.LeaseConfig{}, errors.New("backend: --leader-lease-duration is for --leader-election lease (the postgres election hands over as soon as the leader's session ends)")
	}
	if d < minLeaseDuration {
		return leader.LeaseConfig{}, fmt.Errorf("backend: --leader-lease-duration %s is below %s: a short pause of the API server would make the leader resign", d, minLeaseDuration)
	}
	return leader.LeaseConfig{LeaseDuration: d, RenewDeadline: d * 2 / 3, RetryPeriod: d * 2 / 15}, nil
}

// openReplicas sets up the election for a backend on db; kube is the
// kubernetes runner's client (nil with another runner).
func openReplicas(cfg Config, run runner.Runner, kube clientset.Interface, log *slog.Logger) (*replicas, error) {
	switch cfg.LeaderElection {
	case "", LeaderPostgres:
	case LeaderLease:
		if kube == nil {
			return nil, errors.New("backend: --leader-election lease needs the kubernetes runner (--runner kubernetes); with the local runner one backend serves a database")
		}
		if !isPostgres(cfg.DB) {
			return nil, errors.New("backend: --leader-election lease is for several replicas on one PostgreSQL database (--db postgres://...); a SQLite database has one backend")
		}
	default:
		return nil, fmt.Errorf("backend: unknown --leader-election %q (postgres or lease)", cfg.LeaderElection)
	}
	lease, err := leaseTimes(cfg)
	if err != nil {
		return nil, err
	}
	if !isPostgres(cfg.DB) {
		// SQLite: the lock taken before the store opened makes this
		// process the only one.
		return &replicas{elector: leader.Always{}, started: true, close: func() {}}, nil
	}
	cc, err := postgres.ConnConfig(cfg.DB)
	if err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}
	var guard *leader.SpawnGuard
	if sharedRunner(run) {
		if guard, err = leader.NewSpawnGuard(cc, 0); err != nil {
			return nil, fmt.Errorf("backend: %w", err)
		}
	}
	if cfg.LeaderElection == LeaderLease && sharedRunner(run) {
		lease.Client, lease.Namespace, lease.Logger = kube, cfg.Kube.Namespace, log.With("component", "leader")
		el, err := leader.NewLease(lease)
		if err != nil {
			return nil, fmt.Errorf("backend: %w", err)
		}
		log.Info("several replicas may serve this database: this one runs the loops while it holds the Lease", "lease", cfg.Kube.Namespace+"/"+leader.DefaultLeaseName, "identity", el.Identity())
		return &replicas{elector: el, spawnGuard: guard, close: guard.Close}, nil
	}
	el, err := leader.NewPostgres(leader.PostgresConfig{Conn: cc, Logger: log.With("component", "leader")})
	if err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}
	if sharedRunner(run) {
		log.Info("several replicas may serve this database: this one runs the loops while it holds the leader lock", "leader_lock", leader.DefaultKey)
		return &replicas{elector: el, spawnGuard: guard, close: guard.Close}, nil
	}
	// The local runner: this backend must be the only one on the database
	// for as long as it runs. It holds the lock throughout, and stops if it
	// loses it.
	ctx, cancel := context.WithCancel(context.Background())
	acquired, lost, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var onceA, onceL sync.Once
	go func() {
		defer close(done)
		_ = el.Run(ctx, func(lctx context.Context) {
			onceA.Do(func() { close(acquired) })
			<-lctx.Done()
			if ctx.Err() == nil {
				onceL.Do(func() { close(lost) })
			}
		})
	}()
	stop := func() { cancel(); <-done }
	select {
	case <-acquired:
	case <-time.After(guardTimeout):
		stop()
		holder := el.Holder()
		if holder == "" {
			holder = "a session this backend could not see, or PostgreSQL is unreachable"
		}
		return nil, fmt.Errorf("backend: another mse-backend leads the database (%s): with the local runner (nodes are processes of one machine) one backend serves a database; "+
			"stop the other one (if its machine died, PostgreSQL frees the lock when it notices, or end its session with pg_terminate_backend(PID)), or run several replicas with a shared runner", holder)
	}
	log.Info("this backend is the only one on this database (local runner): it leads, and stops if it loses the database's lock")
	return &replicas{elector: leader.Always{}, started: true, lost: lost, close: stop}, nil
}
