package sqlite

import (
	"context"
	"errors"
	"fmt"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// TryLease implements qsync.CoordinationStore: one upsert, whose WHERE
// lets it through only for a free, ended or own lease.
func (s *Store) TryLease(ctx context.Context, name, owner string, now time.Time, ttl time.Duration) (bool, error) {
	if name == "" || owner == "" {
		return false, errors.New("sqlite: try lease: empty name or owner")
	}
	res, err := s.exec(ctx, `INSERT INTO leases (name, owner, until) VALUES (?1, ?2, ?3)
		ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until
		WHERE leases.owner = excluded.owner OR leases.until <= ?4`, name, owner, us(now.Add(ttl)), us(now))
	if err != nil {
		return false, fmt.Errorf("sqlite: try lease %s: %w", name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("sqlite: try lease %s: %w", name, err)
	}
	return n == 1, nil
}

// ReleaseLease implements qsync.CoordinationStore.
func (s *Store) ReleaseLease(ctx context.Context, name, owner string) error {
	if _, err := s.exec(ctx, `DELETE FROM leases WHERE name = ? AND owner = ?`, name, owner); err != nil {
		return fmt.Errorf("sqlite: release lease %s: %w", name, err)
	}
	return nil
}

// RecordPass implements qsync.CoordinationStore.
func (s *Store) RecordPass(ctx context.Context, p qsync.ReconcilePass) error {
	if _, err := s.exec(ctx, `INSERT INTO reconcile_passes (started_at, owner, checked, enqueued) VALUES (?, ?, ?, ?)`,
		us(p.Started), p.Owner, p.Checked, p.Enqueued); err != nil {
		return fmt.Errorf("sqlite: record pass: %w", err)
	}
	return nil
}

// ReconcilePasses implements qsync.CoordinationStore.
func (s *Store) ReconcilePasses(ctx context.Context, since time.Time) ([]qsync.ReconcilePass, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, started_at, owner, checked, enqueued FROM reconcile_passes
		WHERE started_at >= ? ORDER BY started_at, id`, us(since))
	if err != nil {
		return nil, fmt.Errorf("sqlite: reconcile passes: %w", err)
	}
	defer rows.Close()
	var out []qsync.ReconcilePass
	for rows.Next() {
		var p qsync.ReconcilePass
		var started int64
		if err := rows.Scan(&p.ID, &started, &p.Owner, &p.Checked, &p.Enqueued); err != nil {
			return nil, fmt.Errorf("sqlite: reconcile passes: %w", err)
		}
		p.Started = fromUS(started)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: reconcile passes: %w", err)
	}
	return out, nil
}
