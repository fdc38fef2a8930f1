package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// ExecForTest runs a statement on the store's database (tests only).
func ExecForTest(ctx context.Context, s *Store, sql string) error {
	return s.run(ctx, func(c querier) error {
		_, err := c.Exec(ctx, sql)
		return err
	})
}

// HoldConnsForTest takes n connections from the store's pool and keeps them
// until release is called (tests only).
func HoldConnsForTest(ctx context.Context, s *Store, n int) (release func(), err error) {
	var held []*pgx.Conn
	release = func() {
		for _, c := range held {
			s.pool.release(c)
		}
	}
	for range n {
		c, err := s.pool.acquire(ctx)
		if err != nil {
			release()
			return nil, err
		}
		held = append(held, c)
	}
	return release, nil
}
