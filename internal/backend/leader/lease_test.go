package leader_test

// The Lease elector against a real kube-apiserver (testenv.Kube), each
// replica with its own client acting as the unprivileged identity
// mse-backend, which has exactly leader.LeaseRules in the test's namespace.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/util/retry"

	"github.com/mse-in-go/mse/internal/backend/leader"
	"github.com/mse-in-go/mse/internal/testenv"
)

// Short durations, so that the tests take seconds: a killed leader is
// replaced within about leaseDuration.
const (
	leaseDuration = 2 * time.Second
	renewDeadline = time.Second
	retryPeriod   = 200 * time.Millisecond
)

type leaseEnv struct {
	k  *testenv.KubeCluster
	ns string
}

func newLeaseEnv(tb testing.TB) *leaseEnv {
	tb.Helper()
	k := testenv.Kube(tb)
	e := &leaseEnv{k: k, ns: k.Namespace(tb)}
	ctx := context.Background()
	rbac := k.Client.RbacV1()
	if _, err := rbac.Roles(e.ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "mse-leader"}, Rules: leader.LeaseRules()}, metav1.CreateOptions{}); err != nil {
		tb.Fatal(err)
	}
	if _, err := rbac.RoleBindings(e.ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "mse-leader"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "mse-backend"}},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "mse-leader"}}, metav1.CreateOptions{}); err != nil {
		tb.Fatal(err)
	}
	return e
}

// cuttable fails every request while cut: a replica cut off from the API
// server (a network partition), its process still running.
type cuttable struct {
	rt  http.RoundTripper
	cut *atomic.Bool
}

func (c cuttable) RoundTrip(r *http.Request) (*http.Response, error) {
	if c.cut.Load() {
		return nil, errors.New("test: cut off from the API server")
	}
	return c.rt.RoundTrip(r)
}

// leaseReplica is one Lease elector running in the test.
type leaseReplica struct {
	*record
	el  *leader.Lease
	cut atomic.Bool
}

func (r *leaseReplica) leading() bool { return r.el.Leading() }

func (e *leaseEnv) replica(tb testing.TB, name string, tr *tracker) *leaseReplica {
	tb.Helper()
	r := &leaseReplica{}
	cfg := e.k.UserConfig("mse-backend")
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return cuttable{rt: rt, cut: &r.cut} }
	c, err := clientset.NewForConfig(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	r.el, err = leader.NewLease(leader.LeaseConfig{Client: c, Namespace: e.ns, Identity: "replica " + name,
		LeaseDuration: leaseDuration, RenewDeadline: renewDeadline, RetryPeriod: retryPeriod, Logger: quiet().With("replica", name)})
	if err != nil {
		tb.Fatal(err)
	}
	r.record = campaign(tb, name, r.el, tr, 3*renewDeadline)
	return r
}

func (e *leaseEnv) lease(tb testing.TB) *coordinationv1.Lease {
	tb.Helper()
	l, err := e.k.Client.CoordinationV1().Leases(e.ns).Get(context.Background(), leader.DefaultLeaseName, metav1.GetOptions{})
	if err != nil {
		tb.Fatalf("the Lease: %v", err)
	}
	return l
}

func TestLeaseExactlyOneLeads(t *testing.T) {
	e := newLeaseEnv(t)
	tr := &tracker{}
	a, b := e.replica(t, "a", tr), e.replica(t, "b", tr)
	l, f := theLeader(t, a, b)
	// Longer than a lease duration: the follower's attempts change nothing.
	time.Sleep(leaseDuration + time.Second)
	if !l.el.Leading() || f.el.Leading() || l.leads() != 1 || f.leads() != 0 {
		t.Fatalf("after %s: %s leading %v (%d leads), %s leading %v (%d leads)", leaseDuration+time.Second, l.name, l.el.Leading(), l.leads(), f.name, f.el.Leading(), f.leads())
	}
	if m := tr.max.Load(); m != 1 {
		t.Fatalf("%d leads ran at once", m)
	}
	if h := f.el.Holder(); h != "replica "+l.name {
		t.Errorf("follower's Holder() = %q, want %q", h, "replica "+l.name)
	}
	if got := e.lease(t).Spec.HolderIdentity; got == nil || *got != l.el.Identity() {
		t.Errorf("the Lease's holderIdentity = %v, want %q", got, l.el.Identity())
	}
}

// A leader cut off from the API server stops its loops within the renew
// deadline, and the follower leads only after that, within the lease
// duration (and a retry period) of the last renewal; when the cut heals, the
// old leader follows.
func TestLeasePartitionedLeaderHandsOver(t *testing.T) {
	e := newLeaseEnv(t)
	tr := &tracker{}
	a, b := e.replica(t, "a", tr), e.replica(t, "b", tr)
	l, f := theLeader(t, a, b)
	at := time.Now()
	l.cut.Store(true)
	waitFor(t, renewDeadline+2*retryPeriod+time.Second, l.name+"'s lead context ends", func() bool { return l.ends() == 1 })
	waitFor(t, leaseDuration+2*retryPeriod+time.Second, f.name+" leads", func() bool { return f.el.Leading() && f.leads() == 1 })
	lost, took := l.lastEnd().Sub(at), f.lastStart().Sub(at)
	t.Logf("%s cut off: its loops stopped after %s; %s led after %s", l.name, lost, f.name, took)
	if !f.lastStart().After(l.lastEnd()) {
		t.Errorf("%s led (%s after the cut) before %s's loops stopped (%s)", f.name, took, l.name, lost)
	}
	if m := tr.max.Load(); m != 1 {
		t.Errorf("%d leads ran at once", m)
	}
	l.cut.Store(false)
	time.Sleep(leaseDuration)
	if l.el.Leading() || !f.el.Leading() || l.leads() != 1 || f.leads() != 1 {
		t.Errorf("after the cut healed: %s leading %v (%d leads), %s leading %v (%d leads)", l.name, l.el.Leading(), l.leads(), f.name, f.el.Leading(), f.leads())
	}
}

// A Lease taken over by another holder (an operator's kubectl, a replica of
// another configuration) ends the leader's loops within the renew deadline.
// The replicas take over once the intruder stops renewing.
func TestLeaseStolenLeaderStops(t *testing.T) {
	e := newLeaseEnv(t)
	tr := &tracker{}
	a, b := e.replica(t, "a", tr), e.replica(t, "b", tr)
	l, _ := theLeader(t, a, b)
	intruder := "intruder"
	var at time.Time
	// The leader renews the Lease meanwhile: read it again on a conflict.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		lease := e.lease(t)
		now := metav1.NewMicroTime(time.Now())
		lease.Spec.HolderIdentity = &intruder
		lease.Spec.RenewTime, lease.Spec.AcquireTime = &now, &now
		at = time.Now()
		_, err := e.k.Client.CoordinationV1().Leases(e.ns).Update(context.Background(), lease, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("steal the Lease: %v", err)
	}
	waitFor(t, renewDeadline+2*retryPeriod+time.Second, l.name+"'s lead context ends", func() bool { return l.ends() == 1 })
	t.Logf("the Lease stolen: %s's loops stopped after %s", l.name, l.lastEnd().Sub(at))
	waitFor(t, leaseDuration+2*retryPeriod+time.Second, "a replica leads again", func() bool { return a.el.Leading() || b.el.Leading() })
	if h := e.lease(t).Spec.HolderIdentity; h == nil || *h == intruder {
		t.Errorf("the Lease's holder = %v after the intruder's lease expired", h)
	}
	if m := tr.max.Load(); m != 1 {
		t.Errorf("%d leads ran at once", m)
	}
}

// A leader that stops cleanly releases the Lease once its loops returned:
// the follower leads at its next attempt, well within the lease duration.
func TestLeaseReleaseHandsOver(t *testing.T) {
	e := newLeaseEnv(t)
	tr := &tracker{}
	a, b := e.replica(t, "a", tr), e.replica(t, "b", tr)
	l, f := theLeader(t, a, b)
	at := time.Now()
	l.stop(t)
	waitFor(t, 2*retryPeriod+500*time.Millisecond, f.name+" leads after "+l.name+" stopped", func() bool { return f.el.Leading() && f.leads() == 1 })
	t.Logf("%s stopped: %s led after %s", l.name, f.name, f.lastStart().Sub(at))
	if !f.lastStart().After(l.lastEnd()) {
		t.Errorf("%s led before %s's loops stopped", f.name, l.name)
	}
	if got := e.lease(t).Spec.HolderIdentity; got == nil || *got != f.el.Identity() {
		t.Errorf("the Lease's holderIdentity = %v, want %q", got, f.el.Identity())
	}
}

// Run waits for lead to return before it campaigns again or returns.
func TestLeaseRunWaitsForLead(t *testing.T) {
	e := newLeaseEnv(t)
	c, err := clientset.NewForConfig(e.k.UserConfig("mse-backend"))
	if err != nil {
		t.Fatal(err)
	}
	el, err := leader.NewLease(leader.LeaseConfig{Client: c, Namespace: e.ns, LeaseDuration: leaseDuration, RenewDeadline: renewDeadline, RetryPeriod: retryPeriod, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var returned atomic.Bool
	ran := make(chan struct{})
	runDone := make(chan error, 1)
	go func() {
		runDone <- el.Run(ctx, func(lctx context.Context) {
			close(ran)
			<-lctx.Done()
			time.Sleep(300 * time.Millisecond) // loops finishing a step
			returned.Store(true)
		})
	}()
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("a lone replica did not lead within 5 s")
	}
	cancel()
	if err := <-runDone; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !returned.Load() {
		t.Fatal("Run returned before lead did")
	}
	if h := e.lease(t).Spec.HolderIdentity; h != nil && *h != "" {
		t.Errorf("the Lease still names %q after Run returned", *h)
	}
}

func TestNewLeaseRefuses(t *testing.T) {
	c := fake.NewClientset()
	for _, tc := range []struct {
		name string
		cfg  leader.LeaseConfig
		want string
	}{
		{"no client", leader.LeaseConfig{Namespace: "mse"}, "no Kubernetes client"},
		{"no namespace", leader.LeaseConfig{Client: c}, "no namespace"},
		{"renew deadline not below the lease duration", leader.LeaseConfig{Client: c, Namespace: "mse", LeaseDuration: time.Second, RenewDeadline: time.Second, RetryPeriod: 100 * time.Millisecond}, "leaseDuration must be greater than renewDeadline"},
		{"retry period too long for the renew deadline", leader.LeaseConfig{Client: c, Namespace: "mse", RenewDeadline: time.Second, RetryPeriod: time.Second}, "renewDeadline must be greater than retryPeriod"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := leader.NewLease(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewLease: %v, want an error with %q", err, tc.want)
			}
		})
	}
	el, err := leader.NewLease(leader.LeaseConfig{Client: c, Namespace: "mse"})
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if id := el.Identity(); id == "" {
		t.Error("no default identity")
	}
	el2, _ := leader.NewLease(leader.LeaseConfig{Client: c, Namespace: "mse"})
	if el.Identity() == el2.Identity() {
		t.Errorf("two electors of one process share the identity %q", el.Identity())
	}
}

// BenchmarkLeaseFailover: from the leader's end to the follower's first lead
// call. release: the leader stops (Run's context ends; it releases the
// Lease). partition: the leader is cut off from the API server (as if
// killed: it renews no more); the follower waits for the lease to expire.
// Lease duration 2 s, renew deadline 1 s, retry period 200 ms.
func BenchmarkLeaseFailover(b *testing.B) {
	for _, mode := range []string{"release", "partition"} {
		b.Run(mode, func(b *testing.B) {
			e := newLeaseEnv(b)
			tr := &tracker{}
			reps := map[string]*leaseReplica{"a": e.replica(b, "a", tr), "b": e.replica(b, "b", tr)}
			n := 2
			var total time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				l, f := theLeader(b, reps["a"], reps["b"])
				before := f.leads()
				b.StartTimer()
				at := time.Now()
				if mode == "release" {
					l.cancel()
				} else {
					l.cut.Store(true)
				}
				waitFor(b, leaseDuration+time.Second+2*retryPeriod, fmt.Sprintf("%s leads (iteration %d)", f.name, i), func() bool { return f.leads() > before })
				total += f.lastStart().Sub(at)
				b.StopTimer()
				if mode == "release" {
					<-l.done
					n++
					name := fmt.Sprintf("r%d", n)
					reps[lkey(reps, l)] = e.replica(b, name, tr)
				} else {
					l.cut.Store(false)
					waitFor(b, 2*leaseDuration, l.name+" stops leading", func() bool { return !l.el.Leading() })
				}
				b.StartTimer()
			}
			b.StopTimer()
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "failover-ms")
			if m := tr.max.Load(); m != 1 {
				b.Errorf("%d leads ran at once", m)
			}
		})
	}
}

func lkey(reps map[string]*leaseReplica, r *leaseReplica) string {
	for k, v := range reps {
		if v == r {
			return k
		}
	}
	panic("not a replica")
}
