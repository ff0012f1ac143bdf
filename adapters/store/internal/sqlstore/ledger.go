package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// Ledger implements qsync.LedgerStore (newest first).
func (s *Store) Ledger(ctx context.Context, k qsync.Key, limit int) ([]qsync.LedgerEntry, error) {
	rows, err := s.query(ctx, `SELECT id, at, gen, outcome, ops, drift, detail, issue, request
		FROM ledger WHERE `+keyWhere+` ORDER BY id DESC LIMIT $5`, append(keyArgs(k), limitArg(limit))...)
	es, err := collect(rows, err, func(r *sql.Rows) (qsync.LedgerEntry, error) {
		e := qsync.LedgerEntry{Key: k}
		var outcome string
		var ops, drift []byte
		if err := r.Scan(&e.ID, At(&e.At), &e.Gen, &outcome, &ops, &drift, &e.Detail, &e.Issue, &e.Request); err != nil {
			return e, err
		}
		e.Outcome = qsync.Outcome(outcome)
		if err := json.Unmarshal(ops, &e.Ops); err != nil {
			return e, fmt.Errorf("ops: %w", err)
		}
		var err error
		if e.Drift, err = UnmarshalDrift(drift); err != nil {
			return e, fmt.Errorf("drift: %w", err)
		}
		return e, nil
	})
	if err != nil {
		return nil, s.errf("ledger %s: %w", k, err)
	}
	return es, nil
}

// EventStatus implements qsync.LedgerStore. Each event is ranked by its
// deliveries (pending > dead > applied > noop; none = noop).
func (s *Store) EventStatus(ctx context.Context) (qsync.EventStatus, error) {
	var st qsync.EventStatus
	err := s.queryRow(ctx, `SELECT
		count(*) FILTER (WHERE r = 3), count(*) FILTER (WHERE r = 2),
		count(*) FILTER (WHERE r = 1), count(*) FILTER (WHERE r = 0)
		FROM (SELECT COALESCE(MAX(CASE d.status WHEN 'pending' THEN 3 WHEN 'dead' THEN 2 WHEN 'applied' THEN 1 ELSE 0 END), 0) AS r
			FROM events e LEFT JOIN deliveries d ON d.event_seq = e.seq GROUP BY e.seq) AS ranked`).
		Scan(&st.Pending, &st.Dead, &st.Applied, &st.Noop)
	if err != nil {
		return qsync.EventStatus{}, s.errf("event status: %w", err)
	}
	return st, nil
}

const deadCols = `id, route, project, kind, entity_id, reason, attempts, last_request, created_at`

func scanDead(sc interface{ Scan(...any) error }) (qsync.DeadLetter, error) {
	var d qsync.DeadLetter
	var kind string
	err := sc.Scan(&d.ID, &d.Key.Route, &d.Key.Project, &kind, &d.Key.ID, &d.Reason, &d.Attempts, &d.LastRequest, At(&d.CreatedAt))
	d.Key.Kind = qsync.Kind(kind)
	return d, err
}

// DeadLetters implements qsync.LedgerStore (newest first).
func (s *Store) DeadLetters(ctx context.Context, limit int) ([]qsync.DeadLetter, error) {
	rows, err := s.query(ctx, `SELECT `+deadCols+` FROM dead_letters ORDER BY id DESC LIMIT $1`, limitArg(limit))
	ds, err := collect(rows, err, func(r *sql.Rows) (qsync.DeadLetter, error) { return scanDead(r) })
	if err != nil {
		return nil, s.errf("dead letters: %w", err)
	}
	return ds, nil
}

// DeadLetter implements qsync.LedgerStore.
func (s *Store) DeadLetter(ctx context.Context, id int64) (qsync.DeadLetter, bool, error) {
	d, err := scanDead(s.queryRow(ctx, `SELECT `+deadCols+` FROM dead_letters WHERE id = $1`, id))
	if errNoRows(err) {
		return qsync.DeadLetter{}, false, nil
	}
	if err != nil {
		return qsync.DeadLetter{}, false, s.errf("dead letter %d: %w", id, err)
	}
	return d, true, nil
}

// DropDeadLetter implements qsync.LedgerStore.
func (s *Store) DropDeadLetter(ctx context.Context, id int64) error {
	n, err := s.exec(ctx, `DELETE FROM dead_letters WHERE id = $1`, id)
	if err != nil {
		return s.errf("drop dead letter %d: %w", id, err)
	}
	if n == 0 {
		return s.errf("dead letter %d: %w", id, qsync.ErrNotFound)
	}
	return nil
}

// RetryDeadLetter implements qsync.LedgerStore.
func (s *Store) RetryDeadLetter(ctx context.Context, id int64, now time.Time) error {
	err := s.Tx(ctx, func(tx *Tx) error {
		var k qsync.Key
		var kind string
		err := tx.QueryRow(`DELETE FROM dead_letters WHERE id = $1 RETURNING route, project, kind, entity_id`, id).
			Scan(&k.Route, &k.Project, &kind, &k.ID)
		if errNoRows(err) {
			return qsync.ErrNotFound
		}
		if err != nil {
			return err
		}
		k.Kind = qsync.Kind(kind)
		if err := s.enqueue(tx, []qsync.Key{k}, false, now); err != nil {
			return err
		}
		// The key's dead events get another chance: pending again, at the
		// job's new gen, so the retry's outcome is theirs.
		_, err = tx.Exec(`UPDATE deliveries SET status = 'pending', gen = (SELECT gen FROM jobs WHERE `+keyWhere+`)
			WHERE `+keyWhere+` AND status = 'dead'`, keyArgs(k)...)
		return err
	})
	if err != nil {
		return s.errf("retry dead letter %d: %w", id, err)
	}
	return nil
}

// Deliveries implements qsync.InsightStore: through the entity's events
// (indexed), then each one's delivery on the route (primary key).
func (s *Store) Deliveries(ctx context.Context, k qsync.Key, limit int) ([]qsync.Delivery, error) {
	rows, err := s.query(ctx, `SELECT d.event_seq, d.gen, d.status FROM events e
		JOIN deliveries d ON d.event_seq = e.seq AND d.route = $1
		WHERE e.project = $2 AND e.kind = $3 AND e.entity_id = $4 ORDER BY e.seq DESC LIMIT $5`,
		append(keyArgs(k), limitArg(limit))...)
	out, err := collect(rows, err, func(r *sql.Rows) (qsync.Delivery, error) {
		var d qsync.Delivery
		return d, r.Scan(&d.EventSeq, &d.Gen, &d.Status)
	})
	if err != nil {
		return nil, s.errf("deliveries %s: %w", k, err)
	}
	return out, nil
}

// Overview implements qsync.InsightStore. The last delivery per project
// scans the events table (SQLite has no project index: one halved ingest
// throughput); callers are an operator's page and a once-a-minute
// notifier check, not the hot path.
func (s *Store) Overview(ctx context.Context, since time.Time) (qsync.Overview, error) {
	o := qsync.Overview{Outcomes: map[qsync.Outcome]int{}, LastDelivery: map[string]time.Time{}}
	if err := s.queryRow(ctx, `SELECT count(*), min(first_at) FROM jobs`).Scan(&o.QueueDepth, At(&o.OldestPending)); err != nil {
		return o, s.errf("overview: %w", err)
	}
	if err := s.queryRow(ctx, `SELECT count(*) FROM dead_letters`).Scan(&o.DeadLetters); err != nil {
		return o, s.errf("overview: %w", err)
	}
	rows, err := s.query(ctx, `SELECT outcome, count(*) FROM ledger WHERE at >= $1 GROUP BY outcome`, s.d.Time(since))
	_, err = collect(rows, err, func(r *sql.Rows) (struct{}, error) {
		var k string
		var n int
		err := r.Scan(&k, &n)
		o.Outcomes[qsync.Outcome(k)] = n
		return struct{}{}, err
	})
	if err != nil {
		return o, s.errf("overview: %w", err)
	}
	// Qase deliveries only: a tracker's webhook (two-way routes) must not
	// make a project whose Qase webhook died look alive.
	rows, err = s.query(ctx, `SELECT project, max(received_at) FROM events WHERE name NOT LIKE $1 GROUP BY project`, qsync.TrackerEventPrefix+"%")
	_, err = collect(rows, err, func(r *sql.Rows) (struct{}, error) {
		var p string
		var t time.Time
		err := r.Scan(&p, At(&t))
		o.LastDelivery[p] = t
		return struct{}{}, err
	})
	if err != nil {
		return o, s.errf("overview: %w", err)
	}
	return o, nil
}
