package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

func scanInt64(r *sql.Rows) (int64, error) {
	var v int64
	return v, r.Scan(&v)
}

// Prune implements qsync.RetentionStore. Each batch is its own write
// transaction, so ingest waits for one batch at most, never for the whole
// prune.
//
// Events keep seq order even with deletes: the newest event of every
// project, hence the newest of all, is never pruned, so no seq is handed
// out twice (SQLite's seq is a plain INTEGER PRIMARY KEY, max(seq)+1).
func (s *Store) Prune(ctx context.Context, before time.Time, batch int) (qsync.PruneReport, error) {
	var rep qsync.PruneReport
	if batch <= 0 {
		return rep, s.errf("prune: batch must be positive")
	}
	// The newest event per project stays: it is the project's last
	// delivery. Events only get newer, so the set taken once holds.
	rows, err := s.query(ctx, `SELECT max(seq) FROM events GROUP BY project`)
	keep, err := collect(rows, err, scanInt64)
	if err != nil {
		return rep, s.errf("prune: %w", err)
	}
	keepJSON, _ := json.Marshal(append([]int64{}, keep...))
	// after is a cursor: each batch looks past the seqs the previous one
	// examined, so the table is scanned once in all. A snapshot's last_seq
	// only grows, so an event found folded stays folded; a delivery made
	// pending again (a dead letter retried) is a status change the NOT
	// EXISTS sees in the same transaction.
	var after int64
	for {
		var seqs, gone []int64
		err := s.Tx(ctx, func(tx *Tx) error {
			rows, err := tx.Query(`SELECT e.seq FROM events e
				JOIN snapshots sn ON sn.project = e.project AND sn.kind = e.kind AND sn.entity_id = e.entity_id
				WHERE e.seq > $1 AND e.received_at < $2 AND e.seq <= sn.last_seq
				AND e.seq NOT IN (`+s.d.IntList("$3")+`)
				AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.status = 'pending')
				ORDER BY e.seq LIMIT $4`, after, s.d.Time(before), string(keepJSON), batch)
			if seqs, err = collect(rows, err, scanInt64); err != nil || len(seqs) == 0 {
				return err
			}
			// The delete checks for pending deliveries again: on
			// PostgreSQL a dead letter may have been retried since the
			// select.
			list, _ := json.Marshal(seqs)
			rows, err = tx.Query(`DELETE FROM events WHERE seq IN (`+s.d.IntList("$1")+`)
				AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = events.seq AND d.status = 'pending')
				RETURNING seq`, string(list))
			if gone, err = collect(rows, err, scanInt64); err != nil || len(gone) == 0 {
				return err
			}
			list, _ = json.Marshal(gone)
			_, err = tx.Exec(`DELETE FROM deliveries WHERE event_seq IN (`+s.d.IntList("$1")+`)`, string(list))
			return err
		})
		if err != nil {
			return rep, s.errf("prune events: %w", err)
		}
		rep.Events += len(gone)
		if len(seqs) < batch {
			break
		}
		after = seqs[len(seqs)-1]
	}
	for _, p := range []struct {
		n    *int
		what string
		q    string
	}{
		{&rep.Ledger, "ledger", `DELETE FROM ledger WHERE id IN (SELECT id FROM ledger WHERE at < $1 ORDER BY id LIMIT $2)`},
		{&rep.DeadLetters, "dead letters", `DELETE FROM dead_letters WHERE id IN (SELECT dl.id FROM dead_letters dl
			WHERE dl.created_at < $1 AND NOT EXISTS (SELECT 1 FROM jobs j
				WHERE j.route = dl.route AND j.project = dl.project AND j.kind = dl.kind AND j.entity_id = dl.entity_id)
			ORDER BY dl.id LIMIT $2)`},
		{&rep.Passes, "reconcile passes", `DELETE FROM reconcile_passes WHERE id IN (SELECT id FROM reconcile_passes WHERE started_at < $1 ORDER BY id LIMIT $2)`},
	} {
		n, err := s.pruneBatches(ctx, p.q, before, batch)
		*p.n = n
		if err != nil {
			return rep, s.errf("prune %s: %w", p.what, err)
		}
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
		n, err := s.exec(ctx, q, s.d.Time(before), batch)
		if err != nil {
			return total, err
		}
		total += int(n)
		if int(n) < batch {
			return total, nil
		}
	}
}
