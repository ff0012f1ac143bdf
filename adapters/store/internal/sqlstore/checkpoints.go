package sqlstore

import (
	"context"
	"database/sql"
	"maps"
	"slices"
	"time"
)

// Checkpoints implements qsync.CheckpointStore.
func (s *Store) Checkpoints(ctx context.Context) (map[string]time.Time, error) {
	type cp struct {
		name string
		at   time.Time
	}
	rows, err := s.query(ctx, `SELECT name, at FROM reconcile_checkpoints`)
	cps, err := collect(rows, err, func(r *sql.Rows) (cp, error) {
		var c cp
		return c, r.Scan(&c.name, At(&c.at))
	})
	if err != nil {
		return nil, s.errf("checkpoints: %w", err)
	}
	out := make(map[string]time.Time, len(cps))
	for _, c := range cps {
		out[c.name] = c.at
	}
	return out, nil
}

// SaveCheckpoints implements qsync.CheckpointStore: one upsert per name in
// one transaction, in name order (concurrent savers lock rows in one
// order); the CASE keeps a checkpoint from moving back (PostgreSQL's
// greatest() and SQLite's max() are spelled differently, CASE is not).
func (s *Store) SaveCheckpoints(ctx context.Context, at map[string]time.Time) error {
	if len(at) == 0 {
		return nil
	}
	err := s.Tx(ctx, func(tx *Tx) error {
		for _, name := range slices.Sorted(maps.Keys(at)) {
			if _, err := tx.Exec(`INSERT INTO reconcile_checkpoints (name, at) VALUES ($1, $2)
				ON CONFLICT (name) DO UPDATE SET at = CASE WHEN excluded.at > reconcile_checkpoints.at
					THEN excluded.at ELSE reconcile_checkpoints.at END`, s.d.Text(name), s.d.Time(at[name])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return s.errf("save checkpoints: %w", err)
	}
	return nil
}
