package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// Prune implements qsync.RetentionStore. Each batch is its own statement
// (its own transaction); deliveries go with their events (ON DELETE
// CASCADE).
func (s *Store) Prune(ctx context.Context, before time.Time, batch int) (qsync.PruneReport, error) {
	var rep qsync.PruneReport
	if batch <= 0 {
		return rep, errors.New("postgres: prune: batch must be positive")
	}
	// The newest event per project stays: it is the project's last
	// delivery. Events only get newer, so the set taken once holds.
	rows, err := s.pool.Query(ctx, `SELECT max(seq) FROM events GROUP BY project`)
	if err != nil {
		return rep, fmt.Errorf("postgres: prune: %w", err)
	}
	keep, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return rep, fmt.Errorf("postgres: prune: %w", err)
	}
	if keep == nil {
		keep = []int64{}
	}
	// after is a cursor: each batch looks past the seqs the previous one
	// examined. A snapshot's last_seq only grows, so an event found folded
	// stays folded; a delivery made pending again (a dead letter retried)
	// is a status change the NOT EXISTS sees in the same statement.
	var after int64
	for {
		rows, err := s.pool.Query(ctx, `DELETE FROM events WHERE seq IN (
				SELECT e.seq FROM events e
				JOIN snapshots sn ON sn.project = e.project AND sn.kind = e.kind AND sn.entity_id = e.entity_id
				WHERE e.seq > $1 AND e.received_at < $2 AND e.seq <= sn.last_seq AND e.seq <> ALL($3::bigint[])
				AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.status = 'pending')
				ORDER BY e.seq LIMIT $4)
			RETURNING seq`, after, before, keep, batch)
		if err != nil {
			return rep, fmt.Errorf("postgres: prune events: %w", err)
		}
		seqs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return rep, fmt.Errorf("postgres: prune events: %w", err)
		}
		rep.Events += len(seqs)
		if len(seqs) < batch {
			break
		}
		for _, q := range seqs {
			after = max(after, q)
		}
	}
	n, err := s.pruneBatches(ctx, `DELETE FROM ledger WHERE id IN (SELECT id FROM ledger WHERE at < $1 ORDER BY id LIMIT $2)`, before, batch)
	rep.Ledger = n
	if err != nil {
		return rep, fmt.Errorf("postgres: prune ledger: %w", err)
	}
	n, err = s.pruneBatches(ctx, `DELETE FROM dead_letters WHERE id IN (SELECT dl.id FROM dead_letters dl
		WHERE dl.created_at < $1 AND NOT EXISTS (SELECT 1 FROM jobs j
			WHERE j.route = dl.route AND j.project = dl.project AND j.kind = dl.kind AND j.entity_id = dl.entity_id)
		ORDER BY dl.id LIMIT $2)`, before, batch)
	rep.DeadLetters = n
	if err != nil {
		return rep, fmt.Errorf("postgres: prune dead letters: %w", err)
	}
	n, err = s.pruneBatches(ctx, `DELETE FROM reconcile_passes WHERE id IN (SELECT id FROM reconcile_passes WHERE started_at < $1 ORDER BY id LIMIT $2)`, before, batch)
	rep.Passes = n
	if err != nil {
		return rep, fmt.Errorf("postgres: prune reconcile passes: %w", err)
	}
	return rep, nil
}

// pruneBatches runs a bounded delete ($1 before, $2 batch) until it
// deletes fewer than batch rows.
func (s *Store) pruneBatches(ctx context.Context, q string, before time.Time, batch int) (int, error) {
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		tag, err := s.pool.Exec(ctx, q, before, batch)
		if err != nil {
			return total, err
		}
		n := int(tag.RowsAffected())
		total += n
		if n < batch {
			return total, nil
		}
	}
}
