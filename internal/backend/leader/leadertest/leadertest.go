// Package leadertest helps tests of replicas that elect their leader with
// leader.Postgres: it ends the leader's session as a crash of the leader's
// machine, or a network cut the server notices, would.
package leadertest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mse-in-go/mse/internal/backend/leader"
)

// lockDB is the condition on pg_locks rows of the database connected to.
const lockDB = `locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`

// electionLock is the condition on pg_locks rows of the election lock, the
// key $1 (not leader.SpawnGuard's, say).
const electionLock = `objsubid = 1 AND classid = ($1::bigint >> 32)::oid AND objid = ($1::bigint & 4294967295)::oid`

// KillPostgresLeader ends, from a connection of its own to url, the session
// that holds the election lock (leader.DefaultKey) once another session
// waits for it (a follower not still reconnecting after an earlier kill,
// which the killed leader could beat to the lock), and returns when it did.
func KillPostgresLeader(tb testing.TB, url string) time.Time {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close(ctx)
	for waiting := 0; waiting == 0; {
		if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE `+lockDB+` AND NOT granted AND `+electionLock, leader.DefaultKey).Scan(&waiting); err != nil {
			tb.Fatalf("waiting for a follower to wait for the lock: %v", err)
		}
		if waiting == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	at := time.Now()
	var ok bool
	err = c.QueryRow(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE `+lockDB+` AND granted AND `+electionLock, leader.DefaultKey).Scan(&ok)
	if err != nil || !ok {
		tb.Fatalf("terminate the session holding the election lock: %v, %v", ok, err)
	}
	return at
}
