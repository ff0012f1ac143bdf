package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// TakeRate takes up to n tokens from the request budget key, refilled at
// perSecond up to burst, shared by every replica on this database: one
// UPDATE of the budget's row (GCRA on the database clock, so replicas'
// clocks need not agree) that grants what is free and says how long
// until the next token when nothing is. No replica holds a share, so a
// dead one costs nothing.
func (s *Store) TakeRate(ctx context.Context, key string, n int, perSecond float64, burst int) (int, time.Duration, error) {
	if key == "" || n < 1 || perSecond <= 0 || burst < 1 {
		return 0, 0, errors.New("postgres: take rate: empty key, n, rate or burst")
	}
	interval := 1 / perSecond
	q := func() (granted int, ahead float64, err error) {
		// ahead: tat - now after the take, in seconds.
		err = s.pool.QueryRow(ctx, `
			WITH now AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS t)
			UPDATE rate_budgets b SET
				granted = `+grantSQL+`,
				tat = greatest(b.tat, now.t) + `+grantSQL+` * $3
			FROM now
			WHERE b.key = $1
			RETURNING b.granted, b.tat - now.t`, key, n, interval, float64(burst)).Scan(&granted, &ahead)
		return granted, ahead, err
	}
	granted, ahead, err := q()
	if errors.Is(err, pgx.ErrNoRows) {
		// First use of this budget on the database: start it full.
		if _, err = s.pool.Exec(ctx, `INSERT INTO rate_budgets (key, tat) VALUES ($1, 0) ON CONFLICT (key) DO NOTHING`, key); err == nil {
			granted, ahead, err = q()
		}
	}
	if err != nil {
		return 0, 0, fmt.Errorf("postgres: take rate: %w", err)
	}
	if granted > 0 {
		return granted, 0, nil
	}
	// The next token is free once tat - now <= (burst-1) * interval.
	wait := time.Duration((ahead - float64(burst-1)*interval) * float64(time.Second))
	return 0, max(wait, time.Millisecond), nil
}

// grantSQL is how many of $2 tokens the budget row b grants at now.t:
// what fits under burst ($4) intervals ($3 seconds) ahead of now. A row
// updated by another replica meanwhile is read again under its lock
// (READ COMMITTED re-evaluates SET), and a now taken before that wait is
// earlier than the truth, which can only grant less.
const grantSQL = `greatest(0, least($2::int, floor($4::float8 - (greatest(b.tat, now.t) - now.t) / $3 + 1e-9)))::int`
