package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Checkpoints implements qsync.CheckpointStore.
func (s *Store) Checkpoints(ctx context.Context) (map[string]time.Time, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT name, at FROM reconcile_checkpoints`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: checkpoints: %w", err)
	}
	defer rows.Close()
	out := map[string]time.Time{}
	for rows.Next() {
		var name string
		var at int64
		if err := rows.Scan(&name, &at); err != nil {
			return nil, fmt.Errorf("sqlite: checkpoints: %w", err)
		}
		out[name] = fromUS(at)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: checkpoints: %w", err)
	}
	return out, nil
}

// SaveCheckpoints implements qsync.CheckpointStore: one upsert per name in
// one transaction, whose max() keeps a checkpoint from moving back.
func (s *Store) SaveCheckpoints(ctx context.Context, at map[string]time.Time) error {
	if len(at) == 0 {
		return nil
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		for _, name := range slices.Sorted(maps.Keys(at)) {
			if _, err := tx.ExecContext(ctx, `INSERT INTO reconcile_checkpoints (name, at) VALUES (?1, ?2)
				ON CONFLICT (name) DO UPDATE SET at = max(reconcile_checkpoints.at, excluded.at)`, name, us(at[name])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: save checkpoints: %w", err)
	}
	return nil
}
