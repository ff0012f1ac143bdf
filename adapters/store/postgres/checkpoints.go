package postgres

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Checkpoints implements qsync.CheckpointStore.
func (s *Store) Checkpoints(ctx context.Context) (map[string]time.Time, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, at FROM reconcile_checkpoints`)
	if err != nil {
		return nil, fmt.Errorf("postgres: checkpoints: %w", err)
	}
	defer rows.Close()
	out := map[string]time.Time{}
	for rows.Next() {
		var name string
		var at time.Time
		if err := rows.Scan(&name, &at); err != nil {
			return nil, fmt.Errorf("postgres: checkpoints: %w", err)
		}
		out[name] = utc(at)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: checkpoints: %w", err)
	}
	return out, nil
}

// SaveCheckpoints implements qsync.CheckpointStore: one upsert per name in
// one transaction (sorted, so concurrent savers lock rows in one order),
// whose greatest() keeps a checkpoint from moving back.
func (s *Store) SaveCheckpoints(ctx context.Context, at map[string]time.Time) error {
	if len(at) == 0 {
		return nil
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, name := range slices.Sorted(maps.Keys(at)) {
			b.Queue(`INSERT INTO reconcile_checkpoints (name, at) VALUES ($1, $2)
				ON CONFLICT (name) DO UPDATE SET at = greatest(reconcile_checkpoints.at, excluded.at)`, clean(name), at[name])
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("postgres: save checkpoints: %w", err)
	}
	return nil
}
