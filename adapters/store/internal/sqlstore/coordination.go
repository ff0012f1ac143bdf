package sqlstore

import (
	"context"
	"database/sql"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// TryLease implements qsync.CoordinationStore: one upsert, whose WHERE
// lets it through only for a free, ended or own lease. On PostgreSQL
// concurrent callers queue on the row lock and re-check the WHERE against
// the winner's row.
func (s *Store) TryLease(ctx context.Context, name, owner string, now time.Time, ttl time.Duration) (bool, error) {
	if name == "" || owner == "" {
		return false, s.errf("try lease: empty name or owner")
	}
	n, err := s.exec(ctx, `INSERT INTO leases (name, owner, until) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until
		WHERE leases.owner = excluded.owner OR leases.until <= $4`,
		s.d.Text(name), s.d.Text(owner), s.d.Time(now.Add(ttl)), s.d.Time(now))
	if err != nil {
		return false, s.errf("try lease %s: %w", name, err)
	}
	return n == 1, nil
}

// ReleaseLease implements qsync.CoordinationStore.
func (s *Store) ReleaseLease(ctx context.Context, name, owner string) error {
	if _, err := s.exec(ctx, `DELETE FROM leases WHERE name = $1 AND owner = $2`, s.d.Text(name), s.d.Text(owner)); err != nil {
		return s.errf("release lease %s: %w", name, err)
	}
	return nil
}

// RecordPass implements qsync.CoordinationStore.
func (s *Store) RecordPass(ctx context.Context, p qsync.ReconcilePass) error {
	if _, err := s.exec(ctx, `INSERT INTO reconcile_passes (started_at, owner, checked, enqueued) VALUES ($1, $2, $3, $4)`,
		s.d.Time(p.Started), s.d.Text(p.Owner), p.Checked, p.Enqueued); err != nil {
		return s.errf("record pass: %w", err)
	}
	return nil
}

// ReconcilePasses implements qsync.CoordinationStore.
func (s *Store) ReconcilePasses(ctx context.Context, since time.Time) ([]qsync.ReconcilePass, error) {
	rows, err := s.query(ctx, `SELECT id, started_at, owner, checked, enqueued FROM reconcile_passes
		WHERE started_at >= $1 ORDER BY started_at, id`, s.d.Time(since))
	out, err := collect(rows, err, func(r *sql.Rows) (qsync.ReconcilePass, error) {
		var p qsync.ReconcilePass
		return p, r.Scan(&p.ID, At(&p.Started), &p.Owner, &p.Checked, &p.Enqueued)
	})
	if err != nil {
		return nil, s.errf("reconcile passes: %w", err)
	}
	return out, nil
}
