package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// Prune implements qsync.RetentionStore. Each batch is its own write
// transaction, so ingest waits for one batch at most, never for the whole
// prune.
//
// Events keep seq order even with deletes: seq is a plain INTEGER PRIMARY
// KEY (max(seq)+1 on insert), and the newest event of every project,
// hence the newest of all, is never pruned, so no seq is handed out twice.
func (s *Store) Prune(ctx context.Context, before time.Time, batch int) (qsync.PruneReport, error) {
	var rep qsync.PruneReport
	if batch <= 0 {
		return rep, errors.New("sqlite: prune: batch must be positive")
	}
	// The newest event per project stays: it is the project's last
	// delivery. Events only get newer, so the set taken once holds.
	var keep []int64
	rows, err := s.r.QueryContext(ctx, `SELECT max(seq) FROM events GROUP BY project`)
	if err != nil {
		return rep, fmt.Errorf("sqlite: prune: %w", err)
	}
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			rows.Close()
			return rep, fmt.Errorf("sqlite: prune: %w", err)
		}
		keep = append(keep, seq)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return rep, fmt.Errorf("sqlite: prune: %w", err)
	}
	keepJSON, _ := json.Marshal(keep)
	// after is a cursor: each batch looks past the seqs the previous one
	// examined, so the table is scanned once in all.
	var after int64
	for {
		var seqs []int64
		err := s.tx(ctx, func(tx *sql.Tx) error {
			seqs = seqs[:0]
			rows, err := tx.QueryContext(ctx, `SELECT e.seq FROM events e
				JOIN snapshots sn ON sn.project = e.project AND sn.kind = e.kind AND sn.entity_id = e.entity_id
				WHERE e.seq > ? AND e.received_at < ? AND e.seq <= sn.last_seq
				AND e.seq NOT IN (SELECT value FROM json_each(?))
				AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.status = 'pending')
				ORDER BY e.seq LIMIT ?`, after, us(before), string(keepJSON), batch)
			if err != nil {
				return err
			}
			for rows.Next() {
				var seq int64
				if err := rows.Scan(&seq); err != nil {
					rows.Close()
					return err
				}
				seqs = append(seqs, seq)
			}
			rows.Close()
			if err := rows.Err(); err != nil || len(seqs) == 0 {
				return err
			}
			list, _ := json.Marshal(seqs)
			if _, err := tx.ExecContext(ctx, `DELETE FROM deliveries WHERE event_seq IN (SELECT value FROM json_each(?))`, string(list)); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `DELETE FROM events WHERE seq IN (SELECT value FROM json_each(?))`, string(list))
			return err
		})
		if err != nil {
			return rep, fmt.Errorf("sqlite: prune events: %w", err)
		}
		rep.Events += len(seqs)
		if len(seqs) < batch {
			break
		}
		after = seqs[len(seqs)-1]
	}
	n, err := s.pruneBatches(ctx, `DELETE FROM ledger WHERE id IN (SELECT id FROM ledger WHERE at < ? ORDER BY id LIMIT ?)`, before, batch)
	rep.Ledger = n
	if err != nil {
		return rep, fmt.Errorf("sqlite: prune ledger: %w", err)
	}
	n, err = s.pruneBatches(ctx, `DELETE FROM dead_letters WHERE id IN (SELECT dl.id FROM dead_letters dl
		WHERE dl.created_at < ? AND NOT EXISTS (SELECT 1 FROM jobs j
			WHERE j.route = dl.route AND j.project = dl.project AND j.kind = dl.kind AND j.entity_id = dl.entity_id)
		ORDER BY dl.id LIMIT ?)`, before, batch)
	rep.DeadLetters = n
	if err != nil {
		return rep, fmt.Errorf("sqlite: prune dead letters: %w", err)
	}
	n, err = s.pruneBatches(ctx, `DELETE FROM reconcile_passes WHERE id IN (SELECT id FROM reconcile_passes WHERE started_at < ? ORDER BY id LIMIT ?)`, before, batch)
	rep.Passes = n
	if err != nil {
		return rep, fmt.Errorf("sqlite: prune reconcile passes: %w", err)
	}
	return rep, nil
}

// pruneBatches runs a bounded delete (args: before, batch) until it
// deletes fewer than batch rows.
func (s *Store) pruneBatches(ctx context.Context, q string, before time.Time, batch int) (int, error) {
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		res, err := s.exec(ctx, q, us(before), batch)
		if err != nil {
			return total, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, err
		}
		total += int(n)
		if int(n) < batch {
			return total, nil
		}
	}
}
