package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/qase-sync/qase-sync/adapters/store/internal/storeutil"
	qsync "github.com/qase-sync/qase-sync/sync"
)

func utc(t time.Time) time.Time { return t.UTC() }

// clean makes s storable as PostgreSQL text (no NUL, valid UTF-8).
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

// limitArg maps "no limit" (<= 0) to a bigint.
func limitArg(n int) int64 {
	if n <= 0 {
		return math.MaxInt64
	}
	return int64(n)
}

func keyArgs(k qsync.Key) []any { return []any{k.Route, k.Project, string(k.Kind), k.ID} }

func uniqueRoutes(rs []string) []string {
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

// acceptSQL stores one event, enqueues or bumps its routes' jobs, and, if
// the event is new, records its deliveries, in one statement. A duplicate
// stores no row of its own but still bumps the jobs (invariant I6: an equal
// body may still be news; a job leased meanwhile is then released, not
// deleted). It returns (seq, false) for a new event and (existing seq,
// true) for a duplicate. The advisory
// lock held by AcceptEvents means no concurrent insert of the same dedup
// key can be in flight, so the duplicate's row is always visible here.
const acceptSQL = `WITH ins AS (
	INSERT INTO events (dedup_key, name, project, kind, entity_id, ts, received_at, actor_id, patch, payload)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
	ON CONFLICT (dedup_key) DO NOTHING
	RETURNING seq
), job AS (
	INSERT INTO jobs (route, project, kind, entity_id, gen, attempts, last_error, verify, first_at, due_at)
	SELECT r, $3, $4, $5, 1, 0, '', false, $12, $12
	FROM unnest($11::text[]) AS r
	ON CONFLICT (route, project, kind, entity_id) DO UPDATE SET gen = jobs.gen + 1
	RETURNING route, gen
), del AS (
	INSERT INTO deliveries (event_seq, route, project, kind, entity_id, gen, status)
	SELECT ins.seq, job.route, $3, $4, $5, job.gen, 'pending' FROM ins, job
)
SELECT seq, false FROM ins
UNION ALL
SELECT seq, true FROM events WHERE dedup_key = $1 AND NOT EXISTS (SELECT 1 FROM ins)`

// AcceptEvents implements qsync.InboxStore: one transaction, one round
// trip for the whole batch (pipelined).
func (s *Store) AcceptEvents(ctx context.Context, in []qsync.Inbound, now time.Time) ([]qsync.AcceptResult, error) {
	if len(in) == 0 {
		return nil, nil
	}
	b := &pgx.Batch{}
	b.Queue(`SELECT pg_advisory_xact_lock($1)`, lockAccept)
	for i, ib := range in {
		ev := ib.Event
		if ev.DedupKey == "" {
			return nil, fmt.Errorf("postgres: accept: event %d (%s %s) has no dedup key", i, ev.Name, ev.Ref)
		}
		patch, err := json.Marshal(ev.Patch)
		if err != nil {
			return nil, fmt.Errorf("postgres: accept: encode patch of %s: %w", ev.Ref, err)
		}
		b.Queue(acceptSQL, clean(ev.DedupKey), clean(ev.Name), ev.Ref.Project, string(ev.Ref.Kind), ev.Ref.ID,
			ev.Timestamp, ev.ReceivedAt, ev.ActorID, string(patch), ev.Payload, uniqueRoutes(ib.Routes), now)
	}
	res := make([]qsync.AcceptResult, len(in))
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		br := tx.SendBatch(ctx, b)
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return err
		}
		for i := range in {
			if err := br.QueryRow().Scan(&res[i].Seq, &res[i].Duplicate); err != nil {
				_ = br.Close()
				return fmt.Errorf("event %s: %w", in[i].Event.Ref, err)
			}
		}
		return br.Close()
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: accept: %w", err)
	}
	return res, nil
}

// Enqueue implements qsync.JobStore.
func (s *Store) Enqueue(ctx context.Context, keys []qsync.Key, verify bool, now time.Time) error {
	if len(keys) == 0 {
		return nil
	}
	if err := enqueue(ctx, s.pool, keys, verify, now); err != nil {
		return fmt.Errorf("postgres: enqueue: %w", err)
	}
	return nil
}

// querier is a pool or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func enqueue(ctx context.Context, db querier, keys []qsync.Key, verify bool, now time.Time) error {
	// One row per key: ON CONFLICT cannot touch a row twice in a statement.
	seen := make(map[qsync.Key]bool, len(keys))
	var routes, projects, kinds []string
	var ids []int64
	for _, k := range keys {
		if seen[k] {
			continue
		}
		seen[k] = true
		routes, projects, kinds, ids = append(routes, k.Route), append(projects, k.Project), append(kinds, string(k.Kind)), append(ids, k.ID)
	}
	_, err := db.Exec(ctx, `INSERT INTO jobs (route, project, kind, entity_id, gen, attempts, last_error, verify, first_at, due_at)
		SELECT r, p, k, i, 1, 0, '', $5, $6, $6 FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS t (r, p, k, i)
		ON CONFLICT (route, project, kind, entity_id)
		DO UPDATE SET gen = jobs.gen + 1, verify = jobs.verify OR excluded.verify`,
		routes, projects, kinds, ids, verify, now)
	return err
}

func scanJob(row pgx.Row) (qsync.Job, error) {
	var j qsync.Job
	var kind string
	var token *string
	err := row.Scan(&j.Key.Route, &j.Key.Project, &kind, &j.Key.ID, &j.Gen, &j.Attempts, &j.LastError, &j.Verify, &j.FirstAt, &j.DueAt, &token)
	j.Key.Kind = qsync.Kind(kind)
	j.FirstAt, j.DueAt = utc(j.FirstAt), utc(j.DueAt)
	if token != nil {
		j.Lease = *token
	}
	return j, err
}

// Lease implements qsync.JobStore. SKIP LOCKED lets concurrent leasers pass
// over rows another transaction is taking; the row re-check under the lock
// drops rows whose lease was just set by someone else. Each job's fencing
// token is the call's random prefix plus its row number in the call.
//
// Projects take turns (fairness): the batch starts with the oldest due job
// of each of the next projects after the one this replica's previous batch
// ended on, in project order and wrapping around, one job per project; a
// batch with room left (fewer projects than limit) fills it with the
// oldest due jobs. One project's burst so cannot hold the queue. Each turn
// is one seek on jobs_project_due.
func (s *Store) Lease(ctx context.Context, owner string, limit int, now time.Time, lease time.Duration) ([]qsync.Job, error) {
	if limit <= 0 {
		return nil, nil
	}
	if owner == "" {
		return nil, errors.New("postgres: lease: empty owner")
	}
	s.turnMu.Lock()
	defer s.turnMu.Unlock()
	var jobs []qsync.Job
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		keys, last, err := pickFair(ctx, tx, s.turn, limit, now)
		if err != nil || len(keys) == 0 {
			return err
		}
		var routes, projects, kinds []string
		var ids []int64
		for _, k := range keys {
			routes, projects, kinds, ids = append(routes, k.Route), append(projects, k.Project), append(kinds, string(k.Kind)), append(ids, k.ID)
		}
		rows, err := tx.Query(ctx, `UPDATE jobs j SET lease_owner = $1, lease_until = $2, lease_token = $4 || n.n
			FROM unnest($5::text[], $6::text[], $7::text[], $8::bigint[]) WITH ORDINALITY AS n(route, project, kind, entity_id, n)
			WHERE j.route = n.route AND j.project = n.project AND j.kind = n.kind AND j.entity_id = n.entity_id
			AND j.due_at <= $3 AND (j.lease_until IS NULL OR j.lease_until < $3)
			RETURNING j.route, j.project, j.kind, j.entity_id, j.gen, j.attempts, j.last_error, j.verify, j.first_at, j.due_at, j.lease_token`,
			owner, now.Add(lease), now, storeutil.LeasePrefix(owner), routes, projects, kinds, ids)
		if err != nil {
			return err
		}
		jobs, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (qsync.Job, error) { return scanJob(r) })
		if err != nil {
			return err
		}
		s.turn = last
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: lease: %w", err)
	}
	sort.Slice(jobs, func(i, j int) bool { // RETURNING order is unspecified
		if !jobs[i].DueAt.Equal(jobs[j].DueAt) {
			return jobs[i].DueAt.Before(jobs[j].DueAt)
		}
		return jobs[i].Key.String() < jobs[j].Key.String()
	})
	return jobs, nil
}

// pickFair locks up to limit due, unleased jobs: one per project, from the
// project after turn on (wrapping), then the oldest due jobs. last is the
// project the walk ended on.
func pickFair(ctx context.Context, tx pgx.Tx, turn string, limit int, now time.Time) (keys []qsync.Key, last string, err error) {
	const cols = `SELECT route, project, kind, entity_id FROM jobs WHERE `
	const due = ` AND due_at <= $2 AND (lease_until IS NULL OR lease_until < $2) ORDER BY project, due_at LIMIT 1 FOR UPDATE SKIP LOCKED`
	scan := func(row pgx.Row) (qsync.Key, error) {
		var k qsync.Key
		var kind string
		err := row.Scan(&k.Route, &k.Project, &kind, &k.ID)
		k.Kind = qsync.Kind(kind)
		return k, err
	}
	last = turn
	picked := map[qsync.Key]bool{}
	after, wrapped := turn, turn == ""
	for len(keys) < limit {
		var k qsync.Key
		if wrapped && turn != "" {
			k, err = scan(tx.QueryRow(ctx, cols+`project > $1 AND project <= $3`+due, after, now, turn))
		} else {
			k, err = scan(tx.QueryRow(ctx, cols+`project > $1`+due, after, now))
		}
		if errors.Is(err, pgx.ErrNoRows) {
			if wrapped {
				break
			}
			wrapped, after = true, ""
			continue
		}
		if err != nil {
			return nil, "", err
		}
		keys, picked[k], after, last = append(keys, k), true, k.Project, k.Project
	}
	if len(keys) == limit {
		return keys, last, nil
	}
	rows, err := tx.Query(ctx, cols+`due_at <= $1 AND (lease_until IS NULL OR lease_until < $1)
		ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED`, now, 2*limit)
	if err != nil {
		return nil, "", err
	}
	more, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (qsync.Key, error) { return scan(r) })
	if err != nil {
		return nil, "", err
	}
	for _, k := range more {
		if len(keys) < limit && !picked[k] {
			keys = append(keys, k)
		}
	}
	return keys, last, nil
}

// leaseWhere matches the job row a fencing token still holds. A job
// leased before tokens existed has none, and an empty token never matches.
const leaseWhere = `route = $1 AND project = $2 AND kind = $3 AND entity_id = $4 AND lease_token = $5`

func leaseArgs(job qsync.Job) []any { return append(keyArgs(job.Key), job.Lease) }

// holds locks the job row while job.Lease still holds it (a concurrent
// Lease then skips it) and returns its gen; ErrLeaseLost otherwise.
func holds(ctx context.Context, tx pgx.Tx, job qsync.Job) (gen int64, err error) {
	err = tx.QueryRow(ctx, `SELECT gen FROM jobs WHERE `+leaseWhere+` FOR UPDATE`, leaseArgs(job)...).Scan(&gen)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, qsync.ErrLeaseLost
	}
	return gen, err
}

// Renew implements qsync.JobStore. A lease that expired but was not taken
// over is still held by its token, so Renew (like Complete and Retry)
// succeeds on it: nobody else can have written meanwhile.
func (s *Store) Renew(ctx context.Context, job qsync.Job, until time.Time) error {
	tag, err := s.pool.Exec(ctx, `UPDATE jobs SET lease_until = $6 WHERE `+leaseWhere, append(leaseArgs(job), until)...)
	if err != nil {
		return fmt.Errorf("postgres: renew %s: %w", job.Key, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: renew %s: %w", job.Key, qsync.ErrLeaseLost)
	}
	return nil
}

// Complete implements qsync.JobStore.
func (s *Store) Complete(ctx context.Context, job qsync.Job, outcome qsync.Outcome, entry qsync.LedgerEntry, now time.Time) error {
	switch outcome {
	case qsync.OutcomeApplied, qsync.OutcomeNoop, qsync.OutcomeDead:
	default:
		return fmt.Errorf("postgres: complete %s: unknown outcome %q", job.Key, outcome)
	}
	entry = storeutil.FillEntry(entry, job, outcome, now)
	ops, err := json.Marshal(entry.Ops)
	if err != nil {
		return fmt.Errorf("postgres: complete %s: %w", job.Key, err)
	}
	drift, err := storeutil.MarshalDrift(entry.Drift)
	if err != nil {
		return fmt.Errorf("postgres: complete %s: %w", job.Key, err)
	}
	k := job.Key
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		gen, err := holds(ctx, tx, job)
		if err != nil {
			return err
		}
		b := &pgx.Batch{}
		b.Queue(`UPDATE deliveries SET status = $1
			WHERE route = $2 AND project = $3 AND kind = $4 AND entity_id = $5 AND gen <= $6 AND status = 'pending'`,
			string(outcome), k.Route, k.Project, string(k.Kind), k.ID, job.Gen)
		ek := entry.Key
		b.Queue(`INSERT INTO ledger (at, route, project, kind, entity_id, gen, outcome, ops, drift, detail, issue, request)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
			entry.At, ek.Route, ek.Project, string(ek.Kind), ek.ID, entry.Gen, string(entry.Outcome),
			string(ops), string(drift), clean(entry.Detail), clean(entry.Issue), clean(entry.Request))
		if outcome == qsync.OutcomeDead {
			b.Queue(`INSERT INTO dead_letters (route, project, kind, entity_id, reason, attempts, last_request, created_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
				k.Route, k.Project, string(k.Kind), k.ID, clean(entry.Detail), job.Attempts+1, clean(entry.Request), now)
		}
		if gen <= job.Gen {
			b.Queue(`DELETE FROM jobs WHERE route = $1 AND project = $2 AND kind = $3 AND entity_id = $4`, keyArgs(k)...)
		} else {
			// Events arrived while we worked: hand the key back, due
			// now, as a fresh job for those events. A verify asked for
			// meanwhile (the reconciler) survives unless this attempt verified.
			b.Queue(`UPDATE jobs SET lease_owner = NULL, lease_until = NULL, lease_token = NULL, attempts = 0, last_error = '',
				verify = verify AND NOT $6, due_at = $5, first_at = $5
				WHERE route = $1 AND project = $2 AND kind = $3 AND entity_id = $4`, append(keyArgs(k), now, job.Verify)...)
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("postgres: complete %s: %w", k, err)
	}
	return nil
}

// Retry implements qsync.JobStore.
func (s *Store) Retry(ctx context.Context, job qsync.Job, due time.Time, lastErr string, charge bool, now time.Time) error {
	tag, err := s.pool.Exec(ctx, `UPDATE jobs SET attempts = attempts + CASE WHEN $8 THEN 1 ELSE 0 END,
		last_error = $6, due_at = $7, lease_owner = NULL, lease_until = NULL, lease_token = NULL
		WHERE `+leaseWhere,
		append(leaseArgs(job), clean(lastErr), due, charge)...)
	if err != nil {
		return fmt.Errorf("postgres: retry %s: %w", job.Key, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: retry %s: %w", job.Key, qsync.ErrLeaseLost)
	}
	return nil
}

// Release implements qsync.JobStore: lease_owner is the owner every token
// of the job's lease was issued to.
func (s *Store) Release(ctx context.Context, owner string) error {
	if _, err := s.pool.Exec(ctx, `UPDATE jobs SET lease_owner = NULL, lease_until = NULL, lease_token = NULL
		WHERE lease_owner = $1`, owner); err != nil {
		return fmt.Errorf("postgres: release: %w", err)
	}
	return nil
}

// QueueDepth implements qsync.JobStore.
func (s *Store) QueueDepth(ctx context.Context) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM jobs`).Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres: queue depth: %w", err)
	}
	return n, nil
}

// Snapshot implements qsync.SnapshotStore.
func (s *Store) Snapshot(ctx context.Context, ref qsync.EntityRef) (qsync.Snapshot, error) {
	snap := qsync.Snapshot{Ref: ref}
	var state []byte
	err := s.pool.QueryRow(ctx, `SELECT last_seq, state FROM snapshots WHERE project = $1 AND kind = $2 AND entity_id = $3`,
		ref.Project, string(ref.Kind), ref.ID).Scan(&snap.LastSeq, &state)
	if errors.Is(err, pgx.ErrNoRows) {
		return snap, nil
	}
	if err == nil {
		err = json.Unmarshal(state, &snap.State)
	}
	if err != nil {
		return qsync.Snapshot{}, fmt.Errorf("postgres: snapshot %s: %w", ref, err)
	}
	return snap, nil
}

// EventsAfter implements qsync.SnapshotStore.
func (s *Store) EventsAfter(ctx context.Context, ref qsync.EntityRef, after int64, limit int) ([]qsync.Event, error) {
	rows, err := s.pool.Query(ctx, `SELECT seq, dedup_key, name, ts, received_at, actor_id, patch, payload
		FROM events WHERE project = $1 AND kind = $2 AND entity_id = $3 AND seq > $4 ORDER BY seq LIMIT $5`,
		ref.Project, string(ref.Kind), ref.ID, after, limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("postgres: events of %s: %w", ref, err)
	}
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (qsync.Event, error) {
		ev := qsync.Event{Ref: ref}
		var patch []byte
		if err := r.Scan(&ev.Seq, &ev.DedupKey, &ev.Name, &ev.Timestamp, &ev.ReceivedAt, &ev.ActorID, &patch, &ev.Payload); err != nil {
			return ev, err
		}
		ev.Timestamp, ev.ReceivedAt = utc(ev.Timestamp), utc(ev.ReceivedAt)
		if len(ev.Payload) == 0 {
			ev.Payload = nil
		}
		if err := json.Unmarshal(patch, &ev.Patch); err != nil {
			return ev, fmt.Errorf("event %d: patch: %w", ev.Seq, err)
		}
		return ev, nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: events of %s: %w", ref, err)
	}
	return evs, nil
}

// SaveSnapshot implements qsync.SnapshotStore.
func (s *Store) SaveSnapshot(ctx context.Context, snap qsync.Snapshot, prevSeq int64) (bool, error) {
	state, err := json.Marshal(snap.State)
	if err != nil {
		return false, fmt.Errorf("postgres: save snapshot %s: %w", snap.Ref, err)
	}
	r := snap.Ref
	var sql string
	if prevSeq == 0 {
		// No row counts as LastSeq 0. A concurrent inserter makes this
		// wait, then re-check the condition against its row.
		sql = `INSERT INTO snapshots (project, kind, entity_id, last_seq, state) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (project, kind, entity_id) DO UPDATE SET last_seq = excluded.last_seq, state = excluded.state
			WHERE snapshots.last_seq = $6`
	} else {
		sql = `UPDATE snapshots SET last_seq = $4, state = $5
			WHERE project = $1 AND kind = $2 AND entity_id = $3 AND last_seq = $6`
	}
	tag, err := s.pool.Exec(ctx, sql, r.Project, string(r.Kind), r.ID, snap.LastSeq, string(state), prevSeq)
	if err != nil {
		return false, fmt.Errorf("postgres: save snapshot %s: %w", r, err)
	}
	return tag.RowsAffected() == 1, nil
}

const linkCols = `route, project, kind, entity_id, state, tracker, marker_id, marker_label,
	issue_project, issue_id, issue_key, issue_url, applied, fingerprint, intent_at, created_at, updated_at`

func scanLink(row pgx.Row) (qsync.Link, error) {
	var l qsync.Link
	var kind, state string
	var applied []byte
	err := row.Scan(&l.Key.Route, &l.Key.Project, &kind, &l.Key.ID, &state, &l.Tracker, &l.Marker.ID, &l.Marker.Label,
		&l.Issue.Project, &l.Issue.ID, &l.Issue.Key, &l.Issue.URL, &applied, &l.Fingerprint, &l.IntentAt, &l.CreatedAt, &l.UpdatedAt)
	if err != nil {
		return l, err
	}
	l.Key.Kind, l.State = qsync.Kind(kind), qsync.LinkState(state)
	l.IntentAt, l.CreatedAt, l.UpdatedAt = utc(l.IntentAt), utc(l.CreatedAt), utc(l.UpdatedAt)
	if err := json.Unmarshal(applied, &l.Applied); err != nil {
		return l, fmt.Errorf("applied: %w", err)
	}
	return l, nil
}

// Link implements qsync.LinkStore.
func (s *Store) Link(ctx context.Context, k qsync.Key) (qsync.Link, bool, error) {
	l, err := scanLink(s.pool.QueryRow(ctx, `SELECT `+linkCols+` FROM links
		WHERE route = $1 AND project = $2 AND kind = $3 AND entity_id = $4`, keyArgs(k)...))
	if errors.Is(err, pgx.ErrNoRows) {
		return qsync.Link{}, false, nil
	}
	if err != nil {
		return qsync.Link{}, false, fmt.Errorf("postgres: link %s: %w", k, err)
	}
	return l, true, nil
}

const saveLinkSQL = `INSERT INTO links (` + linkCols + `)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
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
		l.Issue.Project, l.Issue.ID, l.Issue.Key, l.Issue.URL, string(applied), l.Fingerprint,
		l.IntentAt, l.CreatedAt, l.UpdatedAt}, nil
}

// SaveLink implements qsync.LinkStore.
func (s *Store) SaveLink(ctx context.Context, l qsync.Link) error {
	args, err := saveLinkArgs(l)
	if err == nil {
		_, err = s.pool.Exec(ctx, saveLinkSQL, args...)
	}
	if err != nil {
		return fmt.Errorf("postgres: save link %s: %w", l.Key, err)
	}
	return nil
}

// SaveLinkFenced implements qsync.LinkStore: the job row stays locked from
// the token check to the commit, so no Lease can take it in between.
func (s *Store) SaveLinkFenced(ctx context.Context, l qsync.Link, job qsync.Job) error {
	if l.Key != job.Key {
		return fmt.Errorf("postgres: save link %s: fenced by the job of another key (%s)", l.Key, job.Key)
	}
	args, err := saveLinkArgs(l)
	if err == nil {
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := holds(ctx, tx, job); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, saveLinkSQL, args...)
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("postgres: save link %s: %w", l.Key, err)
	}
	return nil
}

// DeleteLink implements qsync.LinkStore.
func (s *Store) DeleteLink(ctx context.Context, k qsync.Key) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM links WHERE route = $1 AND project = $2 AND kind = $3 AND entity_id = $4`,
		keyArgs(k)...); err != nil {
		return fmt.Errorf("postgres: delete link %s: %w", k, err)
	}
	return nil
}

// DeleteLinkFenced implements qsync.LinkStore.
func (s *Store) DeleteLinkFenced(ctx context.Context, k qsync.Key, job qsync.Job) error {
	if k != job.Key {
		return fmt.Errorf("postgres: delete link %s: fenced by the job of another key (%s)", k, job.Key)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := holds(ctx, tx, job); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM links WHERE route = $1 AND project = $2 AND kind = $3 AND entity_id = $4`, keyArgs(k)...)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: delete link %s: %w", k, err)
	}
	return nil
}

// Links implements qsync.LinkStore: keyset pagination in bytewise key order
// (the key columns use the C collation).
func (s *Store) Links(ctx context.Context, route string, after qsync.Key, limit int) ([]qsync.Link, error) {
	q := `SELECT ` + linkCols + ` FROM links WHERE true`
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if route != "" {
		q += ` AND route = ` + arg(route)
	}
	if after != (qsync.Key{}) {
		q += fmt.Sprintf(` AND (route, project, kind, entity_id) > (%s, %s, %s, %s)`,
			arg(after.Route), arg(after.Project), arg(string(after.Kind)), arg(after.ID))
	}
	q += ` ORDER BY route, project, kind, entity_id LIMIT ` + arg(limitArg(limit))
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: links: %w", err)
	}
	ls, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (qsync.Link, error) { return scanLink(r) })
	if err != nil {
		return nil, fmt.Errorf("postgres: links: %w", err)
	}
	return ls, nil
}

// Ledger implements qsync.LedgerStore (newest first).
func (s *Store) Ledger(ctx context.Context, k qsync.Key, limit int) ([]qsync.LedgerEntry, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, at, gen, outcome, ops, drift, detail, issue, request FROM ledger
		WHERE route = $1 AND project = $2 AND kind = $3 AND entity_id = $4 ORDER BY id DESC LIMIT $5`,
		append(keyArgs(k), limitArg(limit))...)
	if err != nil {
		return nil, fmt.Errorf("postgres: ledger %s: %w", k, err)
	}
	es, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (qsync.LedgerEntry, error) {
		e := qsync.LedgerEntry{Key: k}
		var outcome string
		var ops, drift []byte
		if err := r.Scan(&e.ID, &e.At, &e.Gen, &outcome, &ops, &drift, &e.Detail, &e.Issue, &e.Request); err != nil {
			return e, err
		}
		e.At, e.Outcome = utc(e.At), qsync.Outcome(outcome)
		if err := json.Unmarshal(ops, &e.Ops); err != nil {
			return e, fmt.Errorf("ops: %w", err)
		}
		var err error
		if e.Drift, err = storeutil.UnmarshalDrift(drift); err != nil {
			return e, fmt.Errorf("drift: %w", err)
		}
		return e, nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: ledger %s: %w", k, err)
	}
	return es, nil
}

// EventStatus implements qsync.LedgerStore. Each event is ranked by its
// deliveries (pending > dead > applied > noop; none = noop).
func (s *Store) EventStatus(ctx context.Context) (qsync.EventStatus, error) {
	var st qsync.EventStatus
	err := s.pool.QueryRow(ctx, `SELECT
		count(*) FILTER (WHERE r = 3), count(*) FILTER (WHERE r = 2),
		count(*) FILTER (WHERE r = 1), count(*) FILTER (WHERE r = 0)
		FROM (SELECT COALESCE(MAX(CASE d.status WHEN 'pending' THEN 3 WHEN 'dead' THEN 2 WHEN 'applied' THEN 1 ELSE 0 END), 0) AS r
			FROM events e LEFT JOIN deliveries d ON d.event_seq = e.seq GROUP BY e.seq) AS ranked`).
		Scan(&st.Pending, &st.Dead, &st.Applied, &st.Noop)
	if err != nil {
		return qsync.EventStatus{}, fmt.Errorf("postgres: event status: %w", err)
	}
	return st, nil
}

const deadCols = `id, route, project, kind, entity_id, reason, attempts, last_request, created_at`

func scanDead(row pgx.Row) (qsync.DeadLetter, error) {
	var d qsync.DeadLetter
	var kind string
	err := row.Scan(&d.ID, &d.Key.Route, &d.Key.Project, &kind, &d.Key.ID, &d.Reason, &d.Attempts, &d.LastRequest, &d.CreatedAt)
	d.Key.Kind, d.CreatedAt = qsync.Kind(kind), utc(d.CreatedAt)
	return d, err
}

// DeadLetters implements qsync.LedgerStore (newest first).
func (s *Store) DeadLetters(ctx context.Context, limit int) ([]qsync.DeadLetter, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+deadCols+` FROM dead_letters ORDER BY id DESC LIMIT $1`, limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("postgres: dead letters: %w", err)
	}
	ds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (qsync.DeadLetter, error) { return scanDead(r) })
	if err != nil {
		return nil, fmt.Errorf("postgres: dead letters: %w", err)
	}
	return ds, nil
}

// DeadLetter implements qsync.LedgerStore.
func (s *Store) DeadLetter(ctx context.Context, id int64) (qsync.DeadLetter, bool, error) {
	d, err := scanDead(s.pool.QueryRow(ctx, `SELECT `+deadCols+` FROM dead_letters WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return qsync.DeadLetter{}, false, nil
	}
	if err != nil {
		return qsync.DeadLetter{}, false, fmt.Errorf("postgres: dead letter %d: %w", id, err)
	}
	return d, true, nil
}

// DropDeadLetter implements qsync.LedgerStore.
func (s *Store) DropDeadLetter(ctx context.Context, id int64) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM dead_letters WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("postgres: drop dead letter %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: dead letter %d: %w", id, qsync.ErrNotFound)
	}
	return nil
}

// RetryDeadLetter implements qsync.LedgerStore.
func (s *Store) RetryDeadLetter(ctx context.Context, id int64, now time.Time) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var k qsync.Key
		var kind string
		err := tx.QueryRow(ctx, `DELETE FROM dead_letters WHERE id = $1 RETURNING route, project, kind, entity_id`, id).
			Scan(&k.Route, &k.Project, &kind, &k.ID)
		if errors.Is(err, pgx.ErrNoRows) {
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
		_, err = tx.Exec(ctx, `UPDATE deliveries d SET status = 'pending', gen = j.gen
			FROM jobs j
			WHERE j.route = $1 AND j.project = $2 AND j.kind = $3 AND j.entity_id = $4
			  AND d.route = j.route AND d.project = j.project AND d.kind = j.kind AND d.entity_id = j.entity_id
			  AND d.status = 'dead'`, keyArgs(k)...)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: retry dead letter %d: %w", id, err)
	}
	return nil
}

// Deliveries implements qsync.InsightStore.
func (s *Store) Deliveries(ctx context.Context, k qsync.Key, limit int) ([]qsync.Delivery, error) {
	rows, err := s.pool.Query(ctx, `SELECT d.event_seq, d.gen, d.status FROM events e
		JOIN deliveries d ON d.event_seq = e.seq AND d.route = $1
		WHERE e.project = $2 AND e.kind = $3 AND e.entity_id = $4 ORDER BY e.seq DESC LIMIT $5`,
		append(keyArgs(k), limitArg(limit))...)
	if err != nil {
		return nil, fmt.Errorf("postgres: deliveries %s: %w", k, err)
	}
	defer rows.Close()
	var out []qsync.Delivery
	for rows.Next() {
		var d qsync.Delivery
		if err := rows.Scan(&d.EventSeq, &d.Gen, &d.Status); err != nil {
			return nil, fmt.Errorf("postgres: deliveries %s: %w", k, err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: deliveries %s: %w", k, err)
	}
	return out, nil
}

// Overview implements qsync.InsightStore.
func (s *Store) Overview(ctx context.Context, since time.Time) (qsync.Overview, error) {
	o := qsync.Overview{Outcomes: map[qsync.Outcome]int{}, LastDelivery: map[string]time.Time{}}
	var oldest *time.Time
	if err := s.pool.QueryRow(ctx, `SELECT count(*), min(first_at) FROM jobs`).Scan(&o.QueueDepth, &oldest); err != nil {
		return o, fmt.Errorf("postgres: overview: %w", err)
	}
	if oldest != nil {
		o.OldestPending = oldest.UTC()
	}
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM dead_letters`).Scan(&o.DeadLetters); err != nil {
		return o, fmt.Errorf("postgres: overview: %w", err)
	}
	rows, err := s.pool.Query(ctx, `SELECT outcome, count(*) FROM ledger WHERE at >= $1 GROUP BY outcome`, since)
	if err != nil {
		return o, fmt.Errorf("postgres: overview: %w", err)
	}
	for rows.Next() {
		var k string
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			rows.Close()
			return o, fmt.Errorf("postgres: overview: %w", err)
		}
		o.Outcomes[qsync.Outcome(k)] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return o, fmt.Errorf("postgres: overview: %w", err)
	}
	rows, err = s.pool.Query(ctx, `SELECT project, max(received_at) FROM events GROUP BY project`)
	if err != nil {
		return o, fmt.Errorf("postgres: overview: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var p string
		var t time.Time
		if err := rows.Scan(&p, &t); err != nil {
			return o, fmt.Errorf("postgres: overview: %w", err)
		}
		o.LastDelivery[p] = t.UTC()
	}
	if err := rows.Err(); err != nil {
		return o, fmt.Errorf("postgres: overview: %w", err)
	}
	return o, nil
}
