// Package leader elects, among the backend replicas that share one store, the
// one that runs the loops that must run once: reconciling apps (spawning,
// statuses, expiry, the key timeout) and sweeping blobs. The API and the
// router run on every replica.
//
// Implementations: Postgres (a session-level advisory lock held on a
// dedicated connection), Lease (a Kubernetes Lease through client-go's
// leaderelection), and Always (tests, or a store no other process can open:
// a SQLite database, whose one process Exclusive's lock file guarantees; a
// second process is refused).
package leader

import (
	"context"
)

// Elector decides whether this replica runs the loops.
type Elector interface {
	// Run campaigns until ctx ends. Each time this replica becomes leader,
	// Run calls lead with a context that is cancelled as soon as leadership
	// is lost (or ctx ends), and waits for lead to return before it
	// campaigns again: two calls of lead never overlap in one process, and a
	// lost leadership cancels lead's context before another replica can
	// take over (as far as the implementation can tell; see each one). When
	// ctx ends, Run releases leadership, so that another replica takes over
	// at once, and returns nil. It returns an error only for a
	// configuration that can never lead.
	Run(ctx context.Context, lead func(ctx context.Context)) error
}

// Always leads at once, for as long as Run runs: for a store that no other
// replica can use, and for tests.
type Always struct{}

// Run implements Elector.
func (Always) Run(ctx context.Context, lead func(ctx context.Context)) error {
	lead(ctx)
	<-ctx.Done()
	return nil
}
