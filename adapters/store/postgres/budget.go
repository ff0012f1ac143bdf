package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ReserveRate reserves n tokens of the request budget key, refilled at
// perSecond up to burst, shared by every replica on this database, and
// returns how long from now until each may be spent. One UPDATE of the
// budget's row moves its theoretical arrival time (GCRA, on the database
// clock, so replicas' clocks need not agree) by n intervals; a token
// after the burst is simply further off, so a replica asks once per
// batch of requests, never in a loop. No replica holds a share, so a dead
// one costs at most the tokens it had reserved.
func (s *Store) ReserveRate(ctx context.Context, key string, n int, perSecond float64, burst int) ([]time.Duration, error) {
	if key == "" || n < 1 || perSecond <= 0 || burst < 1 {
		return nil, errors.New("postgres: reserve rate: empty key, n, rate or burst")
	}
	interval := 1 / perSecond
	// ahead is tat - now after the reservation, in seconds. A now read
	// before waiting for the row lock is earlier than the truth, which
	// only puts the tokens later.
	var ahead float64
	q := func() error {
		return s.db.QueryRowContext(ctx, `
			WITH now AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS t)
			UPDATE rate_budgets b SET tat = greatest(b.tat, now.t) + $2::int * $3::float8
			FROM now
			WHERE b.key = $1
			RETURNING b.tat - now.t`, key, n, interval).Scan(&ahead)
	}
	err := q()
	if errors.Is(err, sql.ErrNoRows) {
		// First use of this budget on the database: it starts full.
		if _, err = s.db.ExecContext(ctx, `INSERT INTO rate_budgets (key, tat) VALUES ($1, 0) ON CONFLICT (key) DO NOTHING`, key); err == nil {
			err = q()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: reserve rate: %w", err)
	}
	// Token k (1..n) may be spent once tat_before + k*interval lies within
	// burst intervals of now.
	out := make([]time.Duration, n)
	for k := 1; k <= n; k++ {
		at := ahead - float64(n-k)*interval - float64(burst)*interval
		out[k-1] = max(0, time.Duration(at*float64(time.Second)))
	}
	return out, nil
}
