package service

import (
	"context"
	"io"
	"sync"

	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/backend/store"
)

// usage is what a user holds, against their quota.
type usage struct {
	apps        int
	memoryMiB   int64
	cores       int
	bundleBytes int64
}

func (u *usage) add(o usage) {
	u.apps += o.apps
	u.memoryMiB += o.memoryMiB
	u.cores += o.cores
	u.bundleBytes += o.bundleBytes
}

func (u *usage) sub(o usage) {
	u.apps -= o.apps
	u.memoryMiB -= o.memoryMiB
	u.cores -= o.cores
	u.bundleBytes -= o.bundleBytes
}

// quotas tracks, in this process, the creations under way (counted against
// the quota from the check until the app row exists) and the log streams
// followed. With several backends on one PostgreSQL database, creations on
// different backends are not counted by each other.
type quotas struct {
	mu      sync.Mutex
	pending map[string]usage
	follows map[string]int
}

func (s *Service) quotaState() *quotas {
	s.quotaOnce.Do(func() {
		s.quota = &quotas{pending: map[string]usage{}, follows: map[string]int{}}
	})
	return s.quota
}

// held is what u's active apps hold.
func (s *Service) held(ctx context.Context, userID string) (usage, error) {
	apps, err := s.st.ListApps(ctx, store.AppFilter{OwnerID: userID, Statuses: store.ActiveStatuses})
	if err != nil {
		return usage{}, err
	}
	var h usage
	for _, a := range apps {
		h.apps++
		h.bundleBytes += a.BundleSize
		if hw, err := s.lookupHardware(a.Hardware); err == nil {
			h.memoryMiB += hw.MemoryMiB
			h.cores += hw.Cores
		}
	}
	return h, nil
}

// reservation is a creation counted against its owner's quota.
type reservation struct {
	s     *Service
	user  string
	quota *store.Quota
	held  usage // what was held at the check, pending creations included
	res   usage
}

// reserve checks that one more app on hw fits u's quota and counts it as
// pending until release. maxBundle is then the largest bundle the quota
// leaves room for (0: no quota on bytes).
func (s *Service) reserve(ctx context.Context, u *store.User, hw runner.Hardware) (*reservation, error) {
	q, err := s.st.GetQuota(ctx, u.ID)
	if err != nil {
		return nil, err
	}
	h, err := s.held(ctx, u.ID)
	if err != nil {
		return nil, err
	}
	qs := s.quotaState()
	qs.mu.Lock()
	defer qs.mu.Unlock()
	h.add(qs.pending[u.ID])
	const more = "; stop an app (`mse cloud stop`) or ask the operator to raise your quota"
	switch {
	case q.ActiveApps > 0 && h.apps+1 > q.ActiveApps:
		return nil, errf(ErrQuota, "you have %d active apps (deploys under way included) and your quota is %d%s", h.apps, q.ActiveApps, more)
	case q.MemoryMiB > 0 && h.memoryMiB+hw.MemoryMiB > q.MemoryMiB:
		return nil, errf(ErrQuota, "hardware %s needs %d MiB; your active apps hold %d MiB of your %d MiB memory quota%s", hw.Name, hw.MemoryMiB, h.memoryMiB, q.MemoryMiB, more)
	case q.Cores > 0 && h.cores+hw.Cores > q.Cores:
		return nil, errf(ErrQuota, "hardware %s needs %d cores; your active apps hold %d of your %d cores quota%s", hw.Name, hw.Cores, h.cores, q.Cores, more)
	case q.BundleBytes > 0 && h.bundleBytes >= q.BundleBytes:
		return nil, errf(ErrQuota, "your active apps' bundles hold %d bytes of your %d bytes storage quota%s", h.bundleBytes, q.BundleBytes, more)
	}
	r := &reservation{s: s, user: u.ID, quota: q, held: h, res: usage{apps: 1, memoryMiB: hw.MemoryMiB, cores: hw.Cores}}
	p := qs.pending[u.ID]
	p.add(r.res)
	qs.pending[u.ID] = p
	return r, nil
}

// maxBundle is the largest bundle the quota leaves room for, or limit if
// that is smaller.
func (r *reservation) maxBundle(limit int64) int64 {
	if r.quota.BundleBytes <= 0 {
		return limit
	}
	return min(limit, r.quota.BundleBytes-r.held.bundleBytes)
}

// tooLarge is the error for a bundle over the room the quota leaves.
func (r *reservation) tooLarge() error {
	return errf(ErrQuota, "the bundle is larger than the %d bytes left of your %d bytes storage quota (your active apps' bundles hold %d)"+
		"; stop an app (`mse cloud stop`) or ask the operator to raise your quota", r.quota.BundleBytes-r.held.bundleBytes, r.quota.BundleBytes, r.held.bundleBytes)
}

// stored counts n more bytes of bundle, checked again against what is held
// now: a concurrent creation may have stored its bundle meanwhile.
func (r *reservation) stored(ctx context.Context, n int64) error {
	if r.quota.BundleBytes <= 0 {
		return nil
	}
	h, err := r.s.held(ctx, r.user)
	if err != nil {
		return err
	}
	qs := r.s.quotaState()
	qs.mu.Lock()
	defer qs.mu.Unlock()
	others := qs.pending[r.user]
	others.sub(r.res)
	if h.bundleBytes+others.bundleBytes+n > r.quota.BundleBytes {
		return r.tooLarge()
	}
	p := qs.pending[r.user]
	p.bundleBytes += n
	qs.pending[r.user] = p
	r.res.bundleBytes += n
	return nil
}

// release ends the reservation: the app row exists (and counts from the
// store), or the creation failed.
func (r *reservation) release() {
	qs := r.s.quotaState()
	qs.mu.Lock()
	defer qs.mu.Unlock()
	p := qs.pending[r.user]
	p.sub(r.res)
	if p == (usage{}) {
		delete(qs.pending, r.user)
	} else {
		qs.pending[r.user] = p
	}
}

// follow counts a followed log stream against u's quota; the returned
// reader gives it back on Close.
func (s *Service) follow(ctx context.Context, u *store.User, rc func() (io.ReadCloser, error)) (io.ReadCloser, error) {
	q, err := s.st.GetQuota(ctx, u.ID)
	if err != nil {
		return nil, err
	}
	qs := s.quotaState()
	qs.mu.Lock()
	n := qs.follows[u.ID]
	if q.LogFollows > 0 && n >= q.LogFollows {
		qs.mu.Unlock()
		return nil, errf(ErrQuota, "you follow %d logs at once and your quota is %d; end one (Ctrl-C) or read without --follow", n, q.LogFollows)
	}
	qs.follows[u.ID] = n + 1
	qs.mu.Unlock()
	done := func() {
		qs.mu.Lock()
		defer qs.mu.Unlock()
		if qs.follows[u.ID]--; qs.follows[u.ID] <= 0 {
			delete(qs.follows, u.ID)
		}
	}
	r, err := rc()
	if err != nil {
		done()
		return nil, err
	}
	return &followed{ReadCloser: r, done: done}, nil
}

type followed struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (f *followed) Close() error {
	f.once.Do(f.done)
	return f.ReadCloser.Close()
}

// Quota returns a user's quota and what they hold (for operators and tests).
func (s *Service) Quota(ctx context.Context, u *store.User) (q *store.Quota, activeApps int, memoryMiB int64, cores int, bundleBytes int64, err error) {
	if q, err = s.st.GetQuota(ctx, u.ID); err != nil {
		return nil, 0, 0, 0, 0, err
	}
	h, err := s.held(ctx, u.ID)
	if err != nil {
		return nil, 0, 0, 0, 0, err
	}
	return q, h.apps, h.memoryMiB, h.cores, h.bundleBytes, nil
}
