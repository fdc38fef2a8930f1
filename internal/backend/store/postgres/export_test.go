package postgres

import (
	"context"
)

// ExecForTest runs a statement on the store's database (tests only).
func ExecForTest(ctx context.Context, s *Store, sql string) error {
	return s.run(ctx, func(c querier) error {
		_, err := c.Exec(ctx, sql)
		return err
	})
}
