package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// TryLease implements qsync.CoordinationStore: one upsert, whose WHERE
// lets it through only for a free, ended or own lease. Concurrent callers
// queue on the row lock and re-check the WHERE against the winner's row.
func (s *Store) TryLease(ctx context.Context, name, owner string, now time.Time, ttl time.Duration) (bool, error) {
	if name == "" || owner == "" {
		return false, errors.New("postgres: try lease: empty name or owner")
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO leases (name, owner, until) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until
		WHERE leases.owner = excluded.owner OR leases.until <= $4`, name, clean(owner), now.Add(ttl), now)
	if err != nil {
		return false, fmt.Errorf("postgres: try lease %s: %w", name, err)
	}
	return tag.RowsAffected() == 1, nil
}

// ReleaseLease implements qsync.CoordinationStore.
func (s *Store) ReleaseLease(ctx context.Context, name, owner string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM leases WHERE name = $1 AND owner = $2`, name, clean(owner)); err != nil {
		return fmt.Errorf("postgres: release lease %s: %w", name, err)
	}
	return nil
}

// RecordPass implements qsync.CoordinationStore.
func (s *Store) RecordPass(ctx context.Context, p qsync.ReconcilePass) error {
	if _, err := s.pool.Exec(ctx, `INSERT INTO reconcile_passes (started_at, owner, checked, enqueued) VALUES ($1, $2, $3, $4)`,
		p.Started, clean(p.Owner), p.Checked, p.Enqueued); err != nil {
		return fmt.Errorf("postgres: record pass: %w", err)
	}
	return nil
}

// ReconcilePasses implements qsync.CoordinationStore.
func (s *Store) ReconcilePasses(ctx context.Context, since time.Time) ([]qsync.ReconcilePass, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, started_at, owner, checked, enqueued FROM reconcile_passes
		WHERE started_at >= $1 ORDER BY started_at, id`, since)
	if err != nil {
		return nil, fmt.Errorf("postgres: reconcile passes: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (qsync.ReconcilePass, error) {
		var p qsync.ReconcilePass
		err := r.Scan(&p.ID, &p.Started, &p.Owner, &p.Checked, &p.Enqueued)
		p.Started = utc(p.Started)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: reconcile passes: %w", err)
	}
	return out, nil
}
