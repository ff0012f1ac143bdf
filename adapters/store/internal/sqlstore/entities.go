package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// Snapshot implements qsync.SnapshotStore.
func (s *Store) Snapshot(ctx context.Context, ref qsync.EntityRef) (qsync.Snapshot, error) {
	return s.snapshot(ctx, s.r, ref)
}

func (s *Store) snapshot(ctx context.Context, r reader, ref qsync.EntityRef) (qsync.Snapshot, error) {
	snap := qsync.Snapshot{Ref: ref}
	var state []byte
	err := r.QueryRowContext(ctx, s.q(`SELECT last_seq, state FROM snapshots WHERE project = $1 AND kind = $2 AND entity_id = $3`),
		refArgs(ref)...).Scan(&snap.LastSeq, &state)
	if errNoRows(err) {
		return snap, nil
	}
	if err == nil {
		err = json.Unmarshal(state, &snap.State)
	}
	if err != nil {
		return qsync.Snapshot{}, s.errf("snapshot %s: %w", ref, err)
	}
	return snap, nil
}

// ReadKey implements qsync.KeyReader.
func (s *Store) ReadKey(ctx context.Context, k qsync.Key, limit int) (qsync.KeyRead, error) {
	var r reader = s.r
	if s.d.SharedReads {
		tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
		if err != nil {
			return qsync.KeyRead{}, s.errf("read %s: %w", k, err)
		}
		defer tx.Rollback() // it only read
		r = tx
	}
	var kr qsync.KeyRead
	var err error
	if kr.Snapshot, err = s.snapshot(ctx, r, k.EntityRef); err != nil {
		return qsync.KeyRead{}, err
	}
	if kr.Events, err = s.eventsAfter(ctx, r, k.EntityRef, kr.Snapshot.LastSeq, limit); err != nil {
		return qsync.KeyRead{}, err
	}
	if kr.Link, kr.Linked, err = s.link(ctx, r, k); err != nil {
		return qsync.KeyRead{}, err
	}
	return kr, nil
}

// EventsAfter implements qsync.SnapshotStore.
func (s *Store) EventsAfter(ctx context.Context, ref qsync.EntityRef, after int64, limit int) ([]qsync.Event, error) {
	return s.eventsAfter(ctx, s.r, ref, after, limit)
}

func (s *Store) eventsAfter(ctx context.Context, r reader, ref qsync.EntityRef, after int64, limit int) ([]qsync.Event, error) {
	lim := limitClause(limit)
	if s.d.TempTrees {
		lim = "" // collectN stops at limit
	}
	rows, err := r.QueryContext(ctx, s.q(`SELECT seq, dedup_key, name, ts, received_at, actor_id, patch, payload
		FROM events WHERE project = $1 AND kind = $2 AND entity_id = $3 AND seq > $4 ORDER BY seq`+lim),
		append(refArgs(ref), after)...)
	evs, err := collectN(rows, err, limit, func(r *sql.Rows) (qsync.Event, error) {
		ev := qsync.Event{Ref: ref}
		var patch, payload []byte
		if err := r.Scan(&ev.Seq, &ev.DedupKey, &ev.Name, At(&ev.Timestamp), At(&ev.ReceivedAt), &ev.ActorID, &patch, &payload); err != nil {
			return ev, err
		}
		if err := json.Unmarshal(patch, &ev.Patch); err != nil {
			return ev, fmt.Errorf("event %d: patch: %w", ev.Seq, err)
		}
		if len(payload) > 0 {
			ev.Payload = payload
		}
		return ev, nil
	})
	if err != nil {
		return nil, s.errf("events of %s: %w", ref, err)
	}
	return evs, nil
}

// SaveSnapshot implements qsync.SnapshotStore.
func (s *Store) SaveSnapshot(ctx context.Context, snap qsync.Snapshot, prevSeq int64) (bool, error) {
	var ok bool
	err := s.Tx(ctx, func(tx *Tx) (err error) {
		ok, err = s.saveSnapshot(tx, snap, prevSeq)
		return err
	})
	if err != nil {
		return false, s.errf("save snapshot %s: %w", snap.Ref, err)
	}
	return ok, nil
}

// saveSnapshot writes snap in tx if the stored LastSeq still equals
// prevSeq (no row counts as 0).
func (s *Store) saveSnapshot(tx *Tx, snap qsync.Snapshot, prevSeq int64) (bool, error) {
	state, err := json.Marshal(snap.State)
	if err != nil {
		return false, err
	}
	q := `UPDATE snapshots SET last_seq = $4, state = $5
		WHERE project = $1 AND kind = $2 AND entity_id = $3 AND last_seq = $6`
	if prevSeq == 0 {
		// On PostgreSQL a concurrent inserter makes this wait, then
		// re-check the condition against its row.
		q = `INSERT INTO snapshots (project, kind, entity_id, last_seq, state) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (project, kind, entity_id) DO UPDATE SET last_seq = excluded.last_seq, state = excluded.state
			WHERE snapshots.last_seq = $6`
	}
	res, err := tx.Exec(q, append(refArgs(snap.Ref), snap.LastSeq, string(state), prevSeq)...)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}
