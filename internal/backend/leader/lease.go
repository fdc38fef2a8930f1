package leader

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
)

// Defaults of LeaseConfig: client-go's usual values (kube-scheduler and
// kube-controller-manager use the same).
const (
	DefaultLeaseName     = "mse-backend-leader"
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// LeaseConfig configures a Lease elector.
type LeaseConfig struct {
	// Client reaches the API server; its identity needs LeaseRules on the
	// Lease's namespace.
	Client kubernetes.Interface
	// Namespace holds the Lease (required; the backend's own namespace).
	Namespace string
	// Name of the Lease (default DefaultLeaseName). Backends that compete
	// name the same Lease.
	Name string
	// Identity is this replica's holderIdentity, unique among replicas
	// (default "HOST_pid-PID_RANDOM": in a pod, HOST is the pod's name).
	Identity string
	// LeaseDuration is how long followers wait, after the last renewal
	// they saw, before they take a lease over (default
	// DefaultLeaseDuration). RenewDeadline is how long the leader retries
	// a failed renewal before it gives up leadership and cancels its loops
	// (default DefaultRenewDeadline); it must be below LeaseDuration (the
	// margin is what absorbs clock drift between replicas), and above
	// 1.2 RetryPeriod. RetryPeriod is the pause between attempts (default
	// DefaultRetryPeriod).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Logger                                    *slog.Logger
}

// Lease elects with a coordination.k8s.io Lease through client-go's
// leaderelection: the replica named in the Lease's holderIdentity, renewing
// it every RetryPeriod, leads.
//
// A leader that cannot renew for RenewDeadline (API server unreachable, the
// Lease taken over by another holder) cancels lead's context then; a follower
// takes over no sooner than LeaseDuration after the last renewal it saw, so
// with clocks running at the same rate the old loops have stopped before the
// new ones start (the store's conditional transitions cover what remains: a
// write in flight that lands late). A leader killed outright is replaced
// after LeaseDuration plus up to RetryPeriod. When Run's context ends, the
// leader waits for lead to return, then releases the Lease (holder emptied),
// and a follower takes over at its next attempt, within RetryPeriod.
//
// A Lease that disappears (deleted by hand) is created again by whichever
// replica tries first: the leader usually, which then keeps leading.
type Lease struct {
	cfg  LeaseConfig
	log  *slog.Logger
	lock *resourcelock.LeaseLock

	leading atomic.Bool
	mu      sync.Mutex
	holder  string
}

// LeaseRules are what a Lease elector does in its namespace: its identity
// needs a Role with them there.
func LeaseRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
	}
}

// NewLease returns a Lease elector.
func NewLease(cfg LeaseConfig) (*Lease, error) {
	if cfg.Client == nil {
		return nil, errors.New("leader: no Kubernetes client for the Lease")
	}
	if cfg.Namespace == "" {
		return nil, errors.New("leader: no namespace for the Lease (the backend's own namespace)")
	}
	if cfg.Name == "" {
		cfg.Name = DefaultLeaseName
	}
	if cfg.Identity == "" {
		host, _ := os.Hostname()
		cfg.Identity = fmt.Sprintf("%s_pid-%d_%s", host, os.Getpid(), randomHex(4))
	}
	if cfg.LeaseDuration <= 0 {
		cfg.LeaseDuration = DefaultLeaseDuration
	}
	if cfg.RenewDeadline <= 0 {
		cfg.RenewDeadline = DefaultRenewDeadline
	}
	if cfg.RetryPeriod <= 0 {
		cfg.RetryPeriod = DefaultRetryPeriod
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	l := &Lease{cfg: cfg, log: cfg.Logger, lock: &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: cfg.Namespace, Name: cfg.Name},
		Client:     cfg.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: cfg.Identity},
	}}
	// client-go checks the durations (LeaseDuration > RenewDeadline >
	// 1.2 RetryPeriod): refuse them here rather than at Run.
	if _, err := l.elector(func(context.Context) {}); err != nil {
		return nil, fmt.Errorf("leader: Lease %s/%s: %w", cfg.Namespace, cfg.Name, err)
	}
	return l, nil
}

// Identity is this replica's holderIdentity.
func (l *Lease) Identity() string { return l.cfg.Identity }

// Leading reports whether this replica leads now.
func (l *Lease) Leading() bool { return l.leading.Load() }

// Holder is the holderIdentity this replica last saw in the Lease ("" if
// none yet).
func (l *Lease) Holder() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.holder
}

func (l *Lease) elector(started func(context.Context)) (*leaderelection.LeaderElector, error) {
	return leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:          l.lock,
		Name:          l.cfg.Namespace + "/" + l.cfg.Name,
		LeaseDuration: l.cfg.LeaseDuration,
		RenewDeadline: l.cfg.RenewDeadline,
		RetryPeriod:   l.cfg.RetryPeriod,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: started,
			OnStoppedLeading: func() {},
			OnNewLeader: func(id string) {
				l.mu.Lock()
				l.holder = id
				l.mu.Unlock()
				if id != l.cfg.Identity {
					l.log.Info("leader election: another replica leads; this one follows (API and router only)", "leader", id, "lease", l.cfg.Namespace+"/"+l.cfg.Name)
				}
			},
		},
		// Released by Run itself, once lead has returned: client-go's
		// release would run before lead's context is cancelled.
		ReleaseOnCancel: false,
	})
}

// Run implements Elector.
func (l *Lease) Run(ctx context.Context, lead func(ctx context.Context)) error {
	// client-go logs through klog: into this elector's logger.
	ctx = klog.NewContext(ctx, logr.FromSlogHandler(l.log.With("from", "client-go leaderelection").Handler()))
	for ctx.Err() == nil {
		// client-go starts lead in a goroutine and does not wait for it:
		// after its Run returns, either lead has begun (wait for it to
		// return) or it never will (abandoned).
		var (
			mu        sync.Mutex
			done      chan struct{}
			abandoned bool
		)
		le, err := l.elector(func(lctx context.Context) {
			mu.Lock()
			if abandoned {
				mu.Unlock()
				return
			}
			done = make(chan struct{})
			mu.Unlock()
			defer close(done)
			l.leading.Store(true)
			defer l.leading.Store(false)
			l.log.Info("leader election: this replica leads (it runs the reconcile loop and the sweeps)", "lease", l.cfg.Namespace+"/"+l.cfg.Name)
			lead(lctx)
		})
		if err != nil {
			return fmt.Errorf("leader: Lease %s/%s: %w", l.cfg.Namespace, l.cfg.Name, err)
		}
		// Run returns when ctx ends or a renewal fails; lead's context is
		// cancelled then.
		le.Run(ctx)
		mu.Lock()
		d := done
		abandoned = d == nil
		mu.Unlock()
		if d != nil {
			<-d
		}
		if ctx.Err() != nil {
			l.release()
			return nil
		}
		if d == nil {
			continue
		}
		l.log.Error("leader election: this replica lost leadership (its Lease was not renewed within the renew deadline); its loops are stopped and it campaigns again",
			"lease", l.cfg.Namespace+"/"+l.cfg.Name, "renew_deadline", l.cfg.RenewDeadline)
	}
	return nil
}

// release empties the Lease's holder if this replica still holds it, as
// client-go's own release does (a one-second lease with no holder), so that
// a follower takes over at its next attempt.
func (l *Lease) release() {
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.RenewDeadline)
	defer cancel()
	for {
		rec, _, err := l.lock.Get(ctx)
		if err != nil {
			if !apierrors.IsNotFound(err) {
				l.log.Warn("leader election: releasing the Lease failed; followers take over when it expires", "lease_duration", l.cfg.LeaseDuration, "err", err)
			}
			return
		}
		if rec.HolderIdentity != l.cfg.Identity {
			return
		}
		now := metav1.Now()
		err = l.lock.Update(ctx, resourcelock.LeaderElectionRecord{
			LeaderTransitions: rec.LeaderTransitions, LeaseDurationSeconds: 1, RenewTime: now, AcquireTime: now,
		})
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			l.log.Warn("leader election: releasing the Lease failed; followers take over when it expires", "lease_duration", l.cfg.LeaseDuration, "err", err)
			return
		}
		l.log.Info("leader election: leadership released", "lease", l.cfg.Namespace+"/"+l.cfg.Name)
		return
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
