package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/qase-sync/qase-sync/adapters/store/internal/storeutil"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// Times are unix microseconds: exact for every time.Time a caller can
// pass, including the zero time.
func us(t time.Time) int64     { return t.UnixMicro() }
func fromUS(v int64) time.Time { return time.UnixMicro(v).UTC() }

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func keyArgs(k qsync.Key) []any       { return []any{k.Route, k.Project, string(k.Kind), k.ID} }
func refArgs(r qsync.EntityRef) []any { return []any{r.Project, string(r.Kind), r.ID} }

// limitArg maps "no limit" (<= 0) to a number SQLite accepts.
func limitArg(n int) int64 {
	if n <= 0 {
		return math.MaxInt64
	}
	return int64(n)
}

const keyWhere = `route = ? AND project = ? AND kind = ? AND entity_id = ?`

// uniqueRoutes drops repeated routes: one delivery and one job bump per
// route and event.
func uniqueRoutes(rs []string) []string {
	if len(rs) < 2 {
		return rs
	}
	out := make([]string, 0, len(rs))
	seen := make(map[string]bool, len(rs))
	for _, r := range rs {
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}

// AcceptEvents implements qsync.InboxStore. The batch is written on the
// ingest connection (see rawConn and writeBatch).
func (s *Store) AcceptEvents(ctx context.Context, in []qsync.Inbound, now time.Time) ([]qsync.AcceptResult, error) {
	if len(in) == 0 {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: accept: %w", err)
	}
	patches := make([][]byte, len(in))
	for i, ib := range in {
		if ib.Event.DedupKey == "" {
			return nil, fmt.Errorf("sqlite: accept: event %d (%s %s) has no dedup key", i, ib.Event.Name, ib.Event.Ref)
		}
		b, err := json.Marshal(ib.Event.Patch)
		if err != nil {
			return nil, fmt.Errorf("sqlite: accept: encode patch of %s: %w", ib.Event.Ref, err)
		}
		patches[i] = b
	}
	res, err := s.writeBatch(in, patches, us(now))
	if err != nil {
		return nil, fmt.Errorf("sqlite: accept: %w", err)
	}
	return res, nil
}

// Enqueue implements qsync.JobStore.
func (s *Store) Enqueue(ctx context.Context, keys []qsync.Key, verify bool, now time.Time) error {
	if len(keys) == 0 {
		return nil
	}
	err := s.tx(ctx, func(tx *sql.Tx) error { return enqueue(ctx, tx, keys, verify, now) })
	if err != nil {
		return fmt.Errorf("sqlite: enqueue: %w", err)
	}
	return nil
}

// enqueue makes each key's job due: a new job is due now at Gen 1, an
// existing one keeps its place and gets a new generation (verify or-ed in).
func enqueue(ctx context.Context, tx *sql.Tx, keys []qsync.Key, verify bool, now time.Time) error {
	seen := make(map[qsync.Key]bool, len(keys))
	for _, k := range keys {
		if seen[k] {
			continue
		}
		seen[k] = true
		if _, err := tx.ExecContext(ctx, `INSERT INTO jobs
			(route, project, kind, entity_id, gen, attempts, last_error, verify, first_at, due_at)
			VALUES (?1, ?2, ?3, ?4, 1, 0, '', ?5, ?6, ?6)
			ON CONFLICT (route, project, kind, entity_id)
			DO UPDATE SET gen = jobs.gen + 1, verify = jobs.verify OR excluded.verify`,
			k.Route, k.Project, string(k.Kind), k.ID, boolInt(verify), us(now)); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
	}
	return nil
}

const jobCols = `route, project, kind, entity_id, gen, attempts, last_error, verify, first_at, due_at, lease_token`

func scanJob(sc interface{ Scan(...any) error }) (qsync.Job, error) {
	var j qsync.Job
	var kind string
	var verify int
	var first, due int64
	var token sql.NullString
	err := sc.Scan(&j.Key.Route, &j.Key.Project, &kind, &j.Key.ID, &j.Gen, &j.Attempts, &j.LastError, &verify, &first, &due, &token)
	j.Key.Kind = qsync.Kind(kind)
	j.Verify = verify != 0
	j.FirstAt, j.DueAt = fromUS(first), fromUS(due)
	j.Lease = token.String
	return j, err
}

// Lease implements qsync.JobStore. The single writer connection makes the
// select-and-mark atomic with respect to every other caller. Each job's
// fencing token is the call's random prefix plus the job's rowid.
//
// Projects take turns (fairness): the batch starts with the oldest due job
// of each of the next projects after the one the previous batch ended on,
// in project order and wrapping around, one job per project; a batch with
// room left (fewer projects than limit) fills it with the oldest due jobs.
// One project's burst so cannot hold the queue. Each turn is one seek on
// jobs_project_due.
func (s *Store) Lease(ctx context.Context, owner string, limit int, now time.Time, lease time.Duration) ([]qsync.Job, error) {
	if limit <= 0 {
		return nil, nil
	}
	if owner == "" {
		return nil, errors.New("sqlite: lease: empty owner")
	}
	var jobs []qsync.Job
	err := s.tx(ctx, func(tx *sql.Tx) error {
		jobs = jobs[:0]
		ids, last, err := pickFair(ctx, tx, s.turn, limit, us(now))
		if err != nil || len(ids) == 0 {
			return err
		}
		list, _ := json.Marshal(ids)
		rows, err := tx.QueryContext(ctx, `UPDATE jobs SET lease_owner = ?1, lease_until = ?2, lease_token = ?4 || rowid
			WHERE rowid IN (SELECT value FROM json_each(?5))
			AND due_at <= ?3 AND (lease_until IS NULL OR lease_until < ?3)
			RETURNING `+jobCols, owner, us(now.Add(lease)), us(now), storeutil.LeasePrefix(owner), string(list))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			j, err := scanJob(rows)
			if err != nil {
				return err
			}
			jobs = append(jobs, j)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		s.turn = last
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: lease: %w", err)
	}
	sortJobs(jobs)
	return jobs, nil
}

// pickFair chooses up to limit due, unleased jobs (rowids): one per
// project, from the project after turn on (wrapping), then the oldest due
// jobs. last is the project the walk ended on.
func pickFair(ctx context.Context, tx *sql.Tx, turn string, limit int, now int64) (ids []int64, last string, err error) {
	const due = ` AND due_at <= ?2 AND (lease_until IS NULL OR lease_until < ?2) ORDER BY project, due_at LIMIT 1`
	next, err := tx.PrepareContext(ctx, `SELECT project, rowid FROM jobs WHERE project > ?1`+due)
	if err != nil {
		return nil, "", err
	}
	defer next.Close()
	wrap, err := tx.PrepareContext(ctx, `SELECT project, rowid FROM jobs WHERE project > ?1 AND project <= ?3`+due)
	if err != nil {
		return nil, "", err
	}
	defer wrap.Close()
	last = turn
	picked := map[int64]bool{}
	after, wrapped := turn, turn == ""
	for len(ids) < limit {
		var p string
		var id int64
		if wrapped && turn != "" {
			err = wrap.QueryRowContext(ctx, after, now, turn).Scan(&p, &id)
		} else {
			err = next.QueryRowContext(ctx, after, now).Scan(&p, &id)
		}
		if errors.Is(err, sql.ErrNoRows) {
			if wrapped {
				break
			}
			wrapped, after = true, ""
			continue
		}
		if err != nil {
			return nil, "", err
		}
		ids, picked[id], after, last = append(ids, id), true, p, p
	}
	if len(ids) == limit {
		return ids, last, nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT rowid FROM jobs WHERE due_at <= ?1 AND (lease_until IS NULL OR lease_until < ?1)
		ORDER BY due_at, rowid LIMIT ?2`, now, 2*limit)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	for rows.Next() && len(ids) < limit {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, "", err
		}
		if !picked[id] {
			ids = append(ids, id)
		}
	}
	return ids, last, rows.Err()
}

// sortJobs orders by due time (RETURNING order is unspecified).
func sortJobs(js []qsync.Job) {
	sort.Slice(js, func(i, j int) bool {
		if !js[i].DueAt.Equal(js[j].DueAt) {
			return js[i].DueAt.Before(js[j].DueAt)
		}
		return js[i].Key.String() < js[j].Key.String()
	})
}

// leaseWhere matches the job row a fencing token still holds. A job
// leased before tokens existed has none, and an empty token never matches.
const leaseWhere = keyWhere + ` AND lease_token = ?`

func leaseArgs(job qsync.Job) []any { return append(keyArgs(job.Key), job.Lease) }

// holds reports whether job.Lease still holds the job, inside tx.
func holds(ctx context.Context, tx *sql.Tx, job qsync.Job) (gen int64, err error) {
	err = tx.QueryRowContext(ctx, `SELECT gen FROM jobs WHERE `+leaseWhere, leaseArgs(job)...).Scan(&gen)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, qsync.ErrLeaseLost
	}
	return gen, err
}

// Renew implements qsync.JobStore. A lease that expired but was not taken
// over is still held by its token, so Renew (like Complete and Retry)
// succeeds on it: nobody else can have written meanwhile.
func (s *Store) Renew(ctx context.Context, job qsync.Job, until time.Time) error {
	res, err := s.exec(ctx, `UPDATE jobs SET lease_until = ? WHERE `+leaseWhere, append([]any{us(until)}, leaseArgs(job)...)...)
	if err != nil {
		return fmt.Errorf("sqlite: renew %s: %w", job.Key, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlite: renew %s: %w", job.Key, err)
	} else if n == 0 {
		return fmt.Errorf("sqlite: renew %s: %w", job.Key, qsync.ErrLeaseLost)
	}
	return nil
}

// Complete implements qsync.JobStore.
func (s *Store) Complete(ctx context.Context, job qsync.Job, outcome qsync.Outcome, entry qsync.LedgerEntry, now time.Time) error {
	switch outcome {
	case qsync.OutcomeApplied, qsync.OutcomeNoop, qsync.OutcomeDead:
	default:
		return fmt.Errorf("sqlite: complete %s: unknown outcome %q", job.Key, outcome)
	}
	entry = storeutil.FillEntry(entry, job, outcome, now)
	ops, err := json.Marshal(entry.Ops)
	if err != nil {
		return fmt.Errorf("sqlite: complete %s: %w", job.Key, err)
	}
	drift, err := storeutil.MarshalDrift(entry.Drift)
	if err != nil {
		return fmt.Errorf("sqlite: complete %s: %w", job.Key, err)
	}
	k := job.Key
	err = s.tx(ctx, func(tx *sql.Tx) error {
		gen, err := holds(ctx, tx, job)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE deliveries SET status = ?
			WHERE `+keyWhere+` AND gen <= ? AND status = 'pending'`,
			append(append([]any{string(outcome)}, keyArgs(k)...), job.Gen)...); err != nil {
			return err
		}
		ek := entry.Key
		if _, err := tx.ExecContext(ctx, `INSERT INTO ledger
			(at, route, project, kind, entity_id, gen, outcome, ops, drift, detail, issue, request)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			us(entry.At), ek.Route, ek.Project, string(ek.Kind), ek.ID, entry.Gen, string(entry.Outcome),
			ops, drift, entry.Detail, entry.Issue, entry.Request); err != nil {
			return err
		}
		if outcome == qsync.OutcomeDead {
			if _, err := tx.ExecContext(ctx, `INSERT INTO dead_letters
				(route, project, kind, entity_id, reason, attempts, last_request, created_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
				k.Route, k.Project, string(k.Kind), k.ID, entry.Detail, job.Attempts+1, entry.Request, us(now)); err != nil {
				return err
			}
		}
		if gen <= job.Gen {
			_, err = tx.ExecContext(ctx, `DELETE FROM jobs WHERE `+keyWhere, keyArgs(k)...)
			return err
		}
		// Events arrived while we worked: hand the key back, due now, as a
		// fresh job for those events. A verify asked for meanwhile (the
		// reconciler) survives unless this attempt already verified.
		_, err = tx.ExecContext(ctx, `UPDATE jobs SET lease_owner = NULL, lease_until = NULL, lease_token = NULL,
			attempts = 0, last_error = '', verify = verify AND NOT ?, due_at = ?, first_at = ? WHERE `+keyWhere,
			append([]any{boolInt(job.Verify), us(now), us(now)}, keyArgs(k)...)...)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: complete %s: %w", k, err)
	}
	return nil
}

// Retry implements qsync.JobStore.
func (s *Store) Retry(ctx context.Context, job qsync.Job, due time.Time, lastErr string, charge bool, now time.Time) error {
	res, err := s.exec(ctx, `UPDATE jobs SET attempts = attempts + ?, last_error = ?, due_at = ?,
		lease_owner = NULL, lease_until = NULL, lease_token = NULL WHERE `+leaseWhere,
		append([]any{boolInt(charge), lastErr, us(due)}, leaseArgs(job)...)...)
	if err != nil {
		return fmt.Errorf("sqlite: retry %s: %w", job.Key, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlite: retry %s: %w", job.Key, err)
	} else if n == 0 {
		return fmt.Errorf("sqlite: retry %s: %w", job.Key, qsync.ErrLeaseLost)
	}
	return nil
}

// Release implements qsync.JobStore: lease_owner is the owner every token
// of the job's lease was issued to.
func (s *Store) Release(ctx context.Context, owner string) error {
	if _, err := s.exec(ctx, `UPDATE jobs SET lease_owner = NULL, lease_until = NULL, lease_token = NULL
		WHERE lease_owner = ?`, owner); err != nil {
		return fmt.Errorf("sqlite: release: %w", err)
	}
	return nil
}

// QueueDepth implements qsync.JobStore.
func (s *Store) QueueDepth(ctx context.Context) (int, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM jobs`).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: queue depth: %w", err)
	}
	return n, nil
}

// Snapshot implements qsync.SnapshotStore.
func (s *Store) Snapshot(ctx context.Context, ref qsync.EntityRef) (qsync.Snapshot, error) {
	snap := qsync.Snapshot{Ref: ref}
	var state []byte
	err := s.r.QueryRowContext(ctx, `SELECT last_seq, state FROM snapshots WHERE project = ? AND kind = ? AND entity_id = ?`,
		refArgs(ref)...).Scan(&snap.LastSeq, &state)
	if errors.Is(err, sql.ErrNoRows) {
		return snap, nil
	}
	if err == nil {
		err = json.Unmarshal(state, &snap.State)
	}
	if err != nil {
		return qsync.Snapshot{}, fmt.Errorf("sqlite: snapshot %s: %w", ref, err)
	}
	return snap, nil
}

// EventsAfter implements qsync.SnapshotStore.
func (s *Store) EventsAfter(ctx context.Context, ref qsync.EntityRef, after int64, limit int) ([]qsync.Event, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT seq, dedup_key, name, ts, received_at, actor_id, patch, payload
		FROM events WHERE project = ? AND kind = ? AND entity_id = ? AND seq > ? ORDER BY seq LIMIT ?`,
		append(refArgs(ref), after, limitArg(limit))...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: events of %s: %w", ref, err)
	}
	defer rows.Close()
	var evs []qsync.Event
	for rows.Next() {
		ev := qsync.Event{Ref: ref}
		var ts, recv int64
		var patch, payload []byte
		if err := rows.Scan(&ev.Seq, &ev.DedupKey, &ev.Name, &ts, &recv, &ev.ActorID, &patch, &payload); err != nil {
			return nil, fmt.Errorf("sqlite: events of %s: %w", ref, err)
		}
		ev.Timestamp, ev.ReceivedAt = fromUS(ts), fromUS(recv)
		if err := json.Unmarshal(patch, &ev.Patch); err != nil {
			return nil, fmt.Errorf("sqlite: event %d: patch: %w", ev.Seq, err)
		}
		if len(payload) > 0 {
			ev.Payload = payload
		}
		evs = append(evs, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: events of %s: %w", ref, err)
	}
	return evs, nil
}

// SaveSnapshot implements qsync.SnapshotStore.
func (s *Store) SaveSnapshot(ctx context.Context, snap qsync.Snapshot, prevSeq int64) (bool, error) {
	state, err := json.Marshal(snap.State)
	if err != nil {
		return false, fmt.Errorf("sqlite: save snapshot %s: %w", snap.Ref, err)
	}
	var res sql.Result
	if prevSeq == 0 {
		// No row counts as LastSeq 0.
		res, err = s.exec(ctx, `INSERT INTO snapshots (project, kind, entity_id, last_seq, state)
			VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (project, kind, entity_id) DO UPDATE SET last_seq = excluded.last_seq, state = excluded.state
			WHERE snapshots.last_seq = 0`, append(refArgs(snap.Ref), snap.LastSeq, state)...)
	} else {
		res, err = s.exec(ctx, `UPDATE snapshots SET last_seq = ?, state = ?
			WHERE project = ? AND kind = ? AND entity_id = ? AND last_seq = ?`,
			append(append([]any{snap.LastSeq, state}, refArgs(snap.Ref)...), prevSeq)...)
	}
	if err != nil {
		return false, fmt.Errorf("sqlite: save snapshot %s: %w", snap.Ref, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("sqlite: save snapshot %s: %w", snap.Ref, err)
	}
	return n == 1, nil
}

const linkCols = `route, project, kind, entity_id, state, tracker, marker_id, marker_label,
	issue_project, issue_id, issue_key, issue_url, applied, fingerprint, intent_at, created_at, updated_at`

func scanLink(sc interface{ Scan(...any) error }) (qsync.Link, error) {
	var l qsync.Link
	var kind, state string
	var applied []byte
	var intent, created, updated int64
	err := sc.Scan(&l.Key.Route, &l.Key.Project, &kind, &l.Key.ID, &state, &l.Tracker, &l.Marker.ID, &l.Marker.Label,
		&l.Issue.Project, &l.Issue.ID, &l.Issue.Key, &l.Issue.URL, &applied, &l.Fingerprint, &intent, &created, &updated)
	if err != nil {
		return l, err
	}
	l.Key.Kind, l.State = qsync.Kind(kind), qsync.LinkState(state)
	l.IntentAt, l.CreatedAt, l.UpdatedAt = fromUS(intent), fromUS(created), fromUS(updated)
	if err := json.Unmarshal(applied, &l.Applied); err != nil {
		return l, fmt.Errorf("applied: %w", err)
	}
	return l, nil
}

// Link implements qsync.LinkStore.
func (s *Store) Link(ctx context.Context, k qsync.Key) (qsync.Link, bool, error) {
	l, err := scanLink(s.r.QueryRowContext(ctx, `SELECT `+linkCols+` FROM links WHERE `+keyWhere, keyArgs(k)...))
	if errors.Is(err, sql.ErrNoRows) {
		return qsync.Link{}, false, nil
	}
	if err != nil {
		return qsync.Link{}, false, fmt.Errorf("sqlite: link %s: %w", k, err)
	}
	return l, true, nil
}

const saveLinkSQL = `INSERT INTO links (` + linkCols + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (route, project, kind, entity_id) DO UPDATE SET
			state = excluded.state, tracker = excluded.tracker,
			marker_id = excluded.marker_id, marker_label = excluded.marker_label,
			issue_project = excluded.issue_project, issue_id = excluded.issue_id,
			issue_key = excluded.issue_key, issue_url = excluded.issue_url,
			applied = excluded.applied, fingerprint = excluded.fingerprint,
			intent_at = excluded.intent_at, created_at = excluded.created_at, updated_at = excluded.updated_at`

func saveLinkArgs(l qsync.Link) ([]any, error) {
	applied, err := json.Marshal(l.Applied)
	if err != nil {
		return nil, err
	}
	return []any{l.Key.Route, l.Key.Project, string(l.Key.Kind), l.Key.ID, string(l.State), l.Tracker, l.Marker.ID, l.Marker.Label,
		l.Issue.Project, l.Issue.ID, l.Issue.Key, l.Issue.URL, applied, l.Fingerprint,
		us(l.IntentAt), us(l.CreatedAt), us(l.UpdatedAt)}, nil
}

// SaveLink implements qsync.LinkStore.
func (s *Store) SaveLink(ctx context.Context, l qsync.Link) error {
	args, err := saveLinkArgs(l)
	if err == nil {
		_, err = s.exec(ctx, saveLinkSQL, args...)
	}
	if err != nil {
		return fmt.Errorf("sqlite: save link %s: %w", l.Key, err)
	}
	return nil
}

// SaveLinkFenced implements qsync.LinkStore: the token check and the write
// share one write transaction, so no Lease can come between them.
func (s *Store) SaveLinkFenced(ctx context.Context, l qsync.Link, job qsync.Job) error {
	if l.Key != job.Key {
		return fmt.Errorf("sqlite: save link %s: fenced by the job of another key (%s)", l.Key, job.Key)
	}
	args, err := saveLinkArgs(l)
	if err == nil {
		err = s.tx(ctx, func(tx *sql.Tx) error {
			if _, err := holds(ctx, tx, job); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, saveLinkSQL, args...)
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("sqlite: save link %s: %w", l.Key, err)
	}
	return nil
}

// DeleteLink implements qsync.LinkStore.
func (s *Store) DeleteLink(ctx context.Context, k qsync.Key) error {
	if _, err := s.exec(ctx, `DELETE FROM links WHERE `+keyWhere, keyArgs(k)...); err != nil {
		return fmt.Errorf("sqlite: delete link %s: %w", k, err)
	}
	return nil
}

// DeleteLinkFenced implements qsync.LinkStore.
func (s *Store) DeleteLinkFenced(ctx context.Context, k qsync.Key, job qsync.Job) error {
	if k != job.Key {
		return fmt.Errorf("sqlite: delete link %s: fenced by the job of another key (%s)", k, job.Key)
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := holds(ctx, tx, job); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM links WHERE `+keyWhere, keyArgs(k)...)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: delete link %s: %w", k, err)
	}
	return nil
}

// Links implements qsync.LinkStore: keyset pagination in key order (bytewise).
func (s *Store) Links(ctx context.Context, route string, after qsync.Key, limit int) ([]qsync.Link, error) {
	q := `SELECT ` + linkCols + ` FROM links WHERE 1 = 1`
	var args []any
	if route != "" {
		q += ` AND route = ?`
		args = append(args, route)
	}
	if after != (qsync.Key{}) {
		q += ` AND (route, project, kind, entity_id) > (?, ?, ?, ?)`
		args = append(args, keyArgs(after)...)
	}
	q += ` ORDER BY route, project, kind, entity_id LIMIT ?`
	args = append(args, limitArg(limit))
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: links: %w", err)
	}
	defer rows.Close()
	var ls []qsync.Link
	for rows.Next() {
		l, err := scanLink(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: links: %w", err)
		}
		ls = append(ls, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: links: %w", err)
	}
	return ls, nil
}

// Ledger implements qsync.LedgerStore (newest first).
func (s *Store) Ledger(ctx context.Context, k qsync.Key, limit int) ([]qsync.LedgerEntry, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, at, gen, outcome, ops, drift, detail, issue, request
		FROM ledger WHERE `+keyWhere+` ORDER BY id DESC LIMIT ?`, append(keyArgs(k), limitArg(limit))...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: ledger %s: %w", k, err)
	}
	defer rows.Close()
	var es []qsync.LedgerEntry
	for rows.Next() {
		e := qsync.LedgerEntry{Key: k}
		var at int64
		var outcome string
		var ops, drift []byte
		if err := rows.Scan(&e.ID, &at, &e.Gen, &outcome, &ops, &drift, &e.Detail, &e.Issue, &e.Request); err != nil {
			return nil, fmt.Errorf("sqlite: ledger %s: %w", k, err)
		}
		e.At, e.Outcome = fromUS(at), qsync.Outcome(outcome)
		if err := json.Unmarshal(ops, &e.Ops); err != nil {
			return nil, fmt.Errorf("sqlite: ledger %s: ops: %w", k, err)
		}
		var err error
		if e.Drift, err = storeutil.UnmarshalDrift(drift); err != nil {
			return nil, fmt.Errorf("sqlite: ledger %s: drift: %w", k, err)
		}
		es = append(es, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: ledger %s: %w", k, err)
	}
	return es, nil
}

// eventStatusSQL ranks each event by its deliveries (pending > dead >
// applied > noop; no deliveries = noop) and counts the ranks.
const eventStatusSQL = `SELECT
	count(*) FILTER (WHERE r = 3), count(*) FILTER (WHERE r = 2),
	count(*) FILTER (WHERE r = 1), count(*) FILTER (WHERE r = 0)
	FROM (SELECT COALESCE(MAX(CASE d.status WHEN 'pending' THEN 3 WHEN 'dead' THEN 2 WHEN 'applied' THEN 1 ELSE 0 END), 0) AS r
		FROM events e LEFT JOIN deliveries d ON d.event_seq = e.seq GROUP BY e.seq) AS ranked`

// EventStatus implements qsync.LedgerStore.
func (s *Store) EventStatus(ctx context.Context) (qsync.EventStatus, error) {
	var st qsync.EventStatus
	if err := s.r.QueryRowContext(ctx, eventStatusSQL).Scan(&st.Pending, &st.Dead, &st.Applied, &st.Noop); err != nil {
		return qsync.EventStatus{}, fmt.Errorf("sqlite: event status: %w", err)
	}
	return st, nil
}

const deadCols = `id, route, project, kind, entity_id, reason, attempts, last_request, created_at`

func scanDead(sc interface{ Scan(...any) error }) (qsync.DeadLetter, error) {
	var d qsync.DeadLetter
	var kind string
	var created int64
	err := sc.Scan(&d.ID, &d.Key.Route, &d.Key.Project, &kind, &d.Key.ID, &d.Reason, &d.Attempts, &d.LastRequest, &created)
	d.Key.Kind, d.CreatedAt = qsync.Kind(kind), fromUS(created)
	return d, err
}

// DeadLetters implements qsync.LedgerStore (newest first).
func (s *Store) DeadLetters(ctx context.Context, limit int) ([]qsync.DeadLetter, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+deadCols+` FROM dead_letters ORDER BY id DESC LIMIT ?`, limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("sqlite: dead letters: %w", err)
	}
	defer rows.Close()
	var ds []qsync.DeadLetter
	for rows.Next() {
		d, err := scanDead(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: dead letters: %w", err)
		}
		ds = append(ds, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: dead letters: %w", err)
	}
	return ds, nil
}

// DeadLetter implements qsync.LedgerStore.
func (s *Store) DeadLetter(ctx context.Context, id int64) (qsync.DeadLetter, bool, error) {
	d, err := scanDead(s.r.QueryRowContext(ctx, `SELECT `+deadCols+` FROM dead_letters WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return qsync.DeadLetter{}, false, nil
	}
	if err != nil {
		return qsync.DeadLetter{}, false, fmt.Errorf("sqlite: dead letter %d: %w", id, err)
	}
	return d, true, nil
}

// DropDeadLetter implements qsync.LedgerStore.
func (s *Store) DropDeadLetter(ctx context.Context, id int64) error {
	res, err := s.exec(ctx, `DELETE FROM dead_letters WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("sqlite: drop dead letter %d: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlite: drop dead letter %d: %w", id, err)
	} else if n == 0 {
		return fmt.Errorf("sqlite: dead letter %d: %w", id, qsync.ErrNotFound)
	}
	return nil
}

// RetryDeadLetter implements qsync.LedgerStore.
func (s *Store) RetryDeadLetter(ctx context.Context, id int64, now time.Time) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var k qsync.Key
		var kind string
		err := tx.QueryRowContext(ctx, `DELETE FROM dead_letters WHERE id = ? RETURNING route, project, kind, entity_id`, id).
			Scan(&k.Route, &k.Project, &kind, &k.ID)
		if errors.Is(err, sql.ErrNoRows) {
			return qsync.ErrNotFound
		}
		if err != nil {
			return err
		}
		k.Kind = qsync.Kind(kind)
		if err := enqueue(ctx, tx, []qsync.Key{k}, false, now); err != nil {
			return err
		}
		// The key's dead events get another chance: pending again, at the
		// job's new gen, so the retry's outcome is theirs.
		_, err = tx.ExecContext(ctx, `UPDATE deliveries SET status = 'pending',
			gen = (SELECT gen FROM jobs WHERE `+keyWhere+`)
			WHERE route = ? AND project = ? AND kind = ? AND entity_id = ? AND status = 'dead'`,
			append(keyArgs(k), keyArgs(k)...)...)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: retry dead letter %d: %w", id, err)
	}
	return nil
}

// Deliveries implements qsync.InsightStore.
func (s *Store) Deliveries(ctx context.Context, k qsync.Key, limit int) ([]qsync.Delivery, error) {
	// Through the entity's events (indexed), then each one's delivery on
	// the route (primary key).
	rows, err := s.r.QueryContext(ctx, `SELECT d.event_seq, d.gen, d.status FROM events e
		JOIN deliveries d ON d.event_seq = e.seq AND d.route = ?
		WHERE e.entity_id = ? AND e.project = ? AND e.kind = ? ORDER BY e.seq DESC LIMIT ?`,
		k.Route, k.ID, k.Project, string(k.Kind), limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("sqlite: deliveries %s: %w", k, err)
	}
	defer rows.Close()
	var out []qsync.Delivery
	for rows.Next() {
		var d qsync.Delivery
		if err := rows.Scan(&d.EventSeq, &d.Gen, &d.Status); err != nil {
			return nil, fmt.Errorf("sqlite: deliveries %s: %w", k, err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: deliveries %s: %w", k, err)
	}
	return out, nil
}

// Overview implements qsync.InsightStore. The last delivery per project
// scans the events table (it has no project index: one halved ingest
// throughput); callers are an operator's page and a once-a-minute
// notifier check, not the hot path.
func (s *Store) Overview(ctx context.Context, since time.Time) (qsync.Overview, error) {
	o := qsync.Overview{Outcomes: map[qsync.Outcome]int{}, LastDelivery: map[string]time.Time{}}
	var oldest sql.NullInt64
	if err := s.r.QueryRowContext(ctx, `SELECT count(*), min(first_at) FROM jobs`).Scan(&o.QueueDepth, &oldest); err != nil {
		return o, fmt.Errorf("sqlite: overview: %w", err)
	}
	if oldest.Valid {
		o.OldestPending = fromUS(oldest.Int64)
	}
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM dead_letters`).Scan(&o.DeadLetters); err != nil {
		return o, fmt.Errorf("sqlite: overview: %w", err)
	}
	scan := func(q string, arg []any, f func(k string, n int64)) error {
		rows, err := s.r.QueryContext(ctx, q, arg...)
		if err != nil {
			return fmt.Errorf("sqlite: overview: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var k string
			var n int64
			if err := rows.Scan(&k, &n); err != nil {
				return fmt.Errorf("sqlite: overview: %w", err)
			}
			f(k, n)
		}
		return rows.Err()
	}
	if err := scan(`SELECT outcome, count(*) FROM ledger WHERE at >= ? GROUP BY outcome`, []any{us(since)},
		func(k string, n int64) { o.Outcomes[qsync.Outcome(k)] = int(n) }); err != nil {
		return o, err
	}
	if err := scan(`SELECT project, max(received_at) FROM events GROUP BY project`, nil,
		func(k string, n int64) { o.LastDelivery[k] = fromUS(n) }); err != nil {
		return o, err
	}
	return o, nil
}
