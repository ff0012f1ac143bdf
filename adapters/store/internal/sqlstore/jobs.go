package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

func keyArgs(k qsync.Key) []any       { return []any{k.Route, k.Project, string(k.Kind), k.ID} }
func refArgs(r qsync.EntityRef) []any { return []any{r.Project, string(r.Kind), r.ID} }

// keyWhere matches a key's row; its arguments are $1..$4 (keyArgs).
const keyWhere = `route = $1 AND project = $2 AND kind = $3 AND entity_id = $4`

// limitArg maps "no limit" (<= 0) to a number both databases accept.
func limitArg(n int) int64 {
	if n <= 0 {
		return math.MaxInt64
	}
	return int64(n)
}

// UniqueRoutes drops repeated routes: one delivery and one job bump per
// route and event.
func UniqueRoutes(rs []string) []string {
	if len(rs) < 2 {
		return rs
	}
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// AcceptEvents implements qsync.InboxStore: the batch is checked and its
// patches encoded here, and written by the backend's AcceptFunc.
func (s *Store) AcceptEvents(ctx context.Context, in []qsync.Inbound, now time.Time) ([]qsync.AcceptResult, error) {
	if len(in) == 0 {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, s.errf("accept: %w", err)
	}
	patches := make([][]byte, len(in))
	for i, ib := range in {
		if ib.Event.DedupKey == "" {
			return nil, s.errf("accept: event %d (%s %s) has no dedup key", i, ib.Event.Name, ib.Event.Ref)
		}
		b, err := json.Marshal(ib.Event.Patch)
		if err != nil {
			return nil, s.errf("accept: encode patch of %s: %w", ib.Event.Ref, err)
		}
		patches[i] = b
	}
	res, err := s.accept(ctx, in, patches, now)
	if err != nil {
		return nil, s.errf("accept: %w", err)
	}
	return res, nil
}

// Enqueue implements qsync.JobStore.
func (s *Store) Enqueue(ctx context.Context, keys []qsync.Key, verify bool, now time.Time) error {
	if len(keys) == 0 {
		return nil
	}
	if err := s.Tx(ctx, func(tx *Tx) error { return s.enqueue(tx, keys, verify, now) }); err != nil {
		return s.errf("enqueue: %w", err)
	}
	return nil
}

// enqueueChunk bounds the keys of one INSERT (SQLite takes at most 32766
// arguments in a statement).
const enqueueChunk = 200

// enqueue makes each key's job due: a new job is due now at Gen 1, an
// existing one keeps its place and gets a new generation (verify or-ed
// in). Keys go in sorted order, so two transactions upserting
// overlapping keys lock their rows in the same order.
func (s *Store) enqueue(tx *Tx, keys []qsync.Key, verify bool, now time.Time) error {
	keys = slices.Clone(keys)
	slices.SortFunc(keys, compareKeys)
	keys = slices.Compact(keys) // ON CONFLICT cannot touch a row twice in a statement
	for len(keys) > 0 {
		n := min(len(keys), enqueueChunk)
		args := []any{verify, s.d.Time(now)}
		var b strings.Builder
		for i, k := range keys[:n] {
			if i > 0 {
				b.WriteString(", ")
			}
			p := len(args)
			fmt.Fprintf(&b, "($%d, $%d, $%d, $%d, 1, 0, '', $1, $2, $2)", p+1, p+2, p+3, p+4)
			args = append(args, keyArgs(k)...)
		}
		if _, err := tx.Exec(`INSERT INTO jobs (route, project, kind, entity_id, gen, attempts, last_error, verify, first_at, due_at)
			VALUES `+b.String()+`
			ON CONFLICT (route, project, kind, entity_id)
			DO UPDATE SET gen = jobs.gen + 1, verify = jobs.verify OR excluded.verify`, args...); err != nil {
			return err
		}
		keys = keys[n:]
	}
	return nil
}

func compareKeys(a, b qsync.Key) int {
	if c := strings.Compare(a.Route, b.Route); c != 0 {
		return c
	}
	if c := strings.Compare(a.Project, b.Project); c != 0 {
		return c
	}
	if c := strings.Compare(string(a.Kind), string(b.Kind)); c != 0 {
		return c
	}
	return int(a.ID - b.ID) // ids are Qase's: far from overflowing
}

const jobCols = `route, project, kind, entity_id, gen, attempts, last_error, verify, first_at, due_at, lease_token`

func scanJob(sc interface{ Scan(...any) error }) (qsync.Job, error) {
	var j qsync.Job
	var kind string
	var token sql.NullString
	err := sc.Scan(&j.Key.Route, &j.Key.Project, &kind, &j.Key.ID, &j.Gen, &j.Attempts, &j.LastError, &j.Verify,
		At(&j.FirstAt), At(&j.DueAt), &token)
	j.Key.Kind = qsync.Kind(kind)
	j.Lease = token.String
	return j, err
}

// Lease implements qsync.JobStore. On PostgreSQL, SKIP LOCKED lets
// concurrent leasers pass over rows another transaction is taking, and
// the update's re-check drops rows whose lease was just set by someone
// else; SQLite has one writer at a time. Each job's fencing token is the
// call's random prefix plus its place in the batch.
//
// Projects take turns (fairness): the batch starts with the oldest due job
// of each of the next projects after the one this instance's previous
// batch ended on, in project order and wrapping around, one job per
// project; a batch with room left (fewer projects than limit) fills it
// with the oldest due jobs. One project's burst so cannot hold the queue.
// Each turn is one seek on jobs_project_due.
//
// A lease is not waited for on disk (txSoon): the job's first write that
// must be durable is ordered after it.
func (s *Store) Lease(ctx context.Context, owner string, limit int, now time.Time, lease time.Duration) ([]qsync.Job, error) {
	if limit <= 0 {
		return nil, nil
	}
	if owner == "" {
		return nil, s.errf("lease: empty owner")
	}
	s.turnMu.Lock()
	defer s.turnMu.Unlock()
	var jobs []qsync.Job
	err := s.txSoon(ctx, func(tx *Tx) error {
		jobs = jobs[:0]
		keys, last, err := s.pickFair(tx, s.turn, limit, now)
		if err != nil || len(keys) == 0 {
			return err
		}
		prefix := LeasePrefix(s.d.Text(owner))
		for i, k := range keys {
			j, err := s.leaseOne(tx, k, append(keyArgs(k), s.d.Text(owner), s.d.Time(now.Add(lease)), prefix+strconv.Itoa(i+1), s.d.Time(now)))
			if errNoRows(err) {
				continue
			}
			if err != nil {
				return err
			}
			jobs = append(jobs, j)
		}
		s.turn = last
		return nil
	})
	if err != nil {
		return nil, s.errf("lease: %w", err)
	}
	slices.SortFunc(jobs, func(a, b qsync.Job) int {
		if c := a.DueAt.Compare(b.DueAt); c != 0 {
			return c
		}
		return strings.Compare(a.Key.String(), b.Key.String())
	})
	return jobs, nil
}

// leaseOne leases one job if it is still due and unleased (args: the
// key, owner, until, token, now) and returns it; sql.ErrNoRows if not.
func (s *Store) leaseOne(tx *Tx, k qsync.Key, args []any) (qsync.Job, error) {
	const set = `UPDATE jobs SET lease_owner = $5, lease_until = $6, lease_token = $7
		WHERE ` + keyWhere + ` AND due_at <= $8 AND (lease_until IS NULL OR lease_until < $8)`
	if !s.d.TempTrees {
		return scanJob(tx.QueryRow(set+` RETURNING `+jobCols, args...))
	}
	res, err := tx.Exec(set, args...)
	if err != nil {
		return qsync.Job{}, err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return qsync.Job{}, cmp.Or(err, sql.ErrNoRows)
	}
	return scanJob(tx.QueryRow(`SELECT `+jobCols+` FROM jobs WHERE `+keyWhere, keyArgs(k)...))
}

// pickFair chooses (and on PostgreSQL locks) up to limit due, unleased
// jobs: one per project, from the project after turn on (wrapping), then
// the oldest due jobs. last is the project the walk ended on.
func (s *Store) pickFair(tx *Tx, turn string, limit int, now time.Time) (keys []qsync.Key, last string, err error) {
	const cols = `SELECT route, project, kind, entity_id FROM jobs WHERE `
	due := ` AND due_at <= $2 AND (lease_until IS NULL OR lease_until < $2) ORDER BY project, due_at LIMIT 1` + s.d.SkipLocked
	scan := func(row interface{ Scan(...any) error }) (qsync.Key, error) {
		var k qsync.Key
		var kind string
		err := row.Scan(&k.Route, &k.Project, &kind, &k.ID)
		k.Kind = qsync.Kind(kind)
		return k, err
	}
	t := s.d.Time(now)
	last = turn
	var picked []qsync.Key
	after, wrapped := turn, turn == ""
	for len(keys) < limit {
		var k qsync.Key
		if wrapped && turn != "" {
			k, err = scan(tx.QueryRow(cols+`project > $1 AND project <= $3`+due, after, t, turn))
		} else {
			k, err = scan(tx.QueryRow(cols+`project > $1`+due, after, t))
		}
		if errNoRows(err) {
			if wrapped {
				break
			}
			wrapped, after = true, ""
			continue
		}
		if err != nil {
			return nil, "", err
		}
		keys, picked, after, last = append(keys, k), append(picked, k), k.Project, k.Project
	}
	if len(keys) == limit {
		return keys, last, nil
	}
	rows, err := tx.Query(cols+`due_at <= $1 AND (lease_until IS NULL OR lease_until < $1)
		ORDER BY due_at`+limitClause(2*limit)+s.d.SkipLocked, t)
	more, err := collect(rows, err, func(r *sql.Rows) (qsync.Key, error) { return scan(r) })
	if err != nil {
		return nil, "", err
	}
	for _, k := range more {
		if len(keys) < limit && !slices.Contains(picked, k) {
			keys = append(keys, k)
		}
	}
	return keys, last, nil
}

// leaseWhere matches the job row a fencing token still holds. A job
// leased before tokens existed has none, and an empty token never
// matches. Its arguments are $1..$5 (leaseArgs).
const leaseWhere = keyWhere + ` AND lease_token = $5`

func leaseArgs(job qsync.Job) []any { return append(keyArgs(job.Key), job.Lease) }

// holds reports whether job.Lease still holds the job and returns its
// gen, keeping the row locked to the end of tx (on PostgreSQL a
// concurrent Lease then skips it; on SQLite the transaction is the only
// writer); ErrLeaseLost otherwise.
func (s *Store) holds(tx *Tx, job qsync.Job) (gen int64, err error) {
	err = tx.QueryRow(`SELECT gen FROM jobs WHERE `+leaseWhere+s.d.ForUpdate, leaseArgs(job)...).Scan(&gen)
	if errNoRows(err) {
		return 0, qsync.ErrLeaseLost
	}
	return gen, err
}

// Renew implements qsync.JobStore. A lease that expired but was not taken
// over is still held by its token, so Renew (like Complete and Retry)
// succeeds on it: nobody else can have written meanwhile. Like a lease,
// a renewal is not waited for on disk.
func (s *Store) Renew(ctx context.Context, job qsync.Job, until time.Time) error {
	n, err := s.execTx(ctx, false, `UPDATE jobs SET lease_until = $6 WHERE `+leaseWhere, append(leaseArgs(job), s.d.Time(until))...)
	if err != nil {
		return s.errf("renew %s: %w", job.Key, err)
	}
	if n == 0 {
		return s.errf("renew %s: %w", job.Key, qsync.ErrLeaseLost)
	}
	return nil
}

// Complete implements qsync.JobStore.
func (s *Store) Complete(ctx context.Context, job qsync.Job, outcome qsync.Outcome, entry qsync.LedgerEntry, now time.Time) error {
	if outcome == "" {
		return s.errf("complete %s: no outcome", job.Key)
	}
	if err := s.finish(ctx, job, qsync.JobOutcome{Outcome: outcome, Entry: entry}, now); err != nil {
		return s.errf("complete %s: %w", job.Key, err)
	}
	return nil
}

// Retry implements qsync.JobStore.
func (s *Store) Retry(ctx context.Context, job qsync.Job, due time.Time, lastErr string, charge bool, now time.Time) error {
	if err := s.finish(ctx, job, qsync.JobOutcome{RetryAt: due, LastErr: lastErr, Charge: charge}, now); err != nil {
		return s.errf("retry %s: %w", job.Key, err)
	}
	return nil
}

// Finish implements qsync.JobStore.
func (s *Store) Finish(ctx context.Context, job qsync.Job, o qsync.JobOutcome, now time.Time) error {
	if err := s.finish(ctx, job, o, now); err != nil {
		return s.errf("finish %s: %w", job.Key, err)
	}
	return nil
}

// finish is Finish, Complete and Retry: the job row stays locked from the
// token check to the commit, so no Lease can come between them.
//
// An outcome is not waited for on disk (txSoon). Losing it to a power cut
// is losing the attempt to a crash just before it: the job and its
// deliveries are pending again, and the next attempt starts from the last
// saved link, which holds whatever had to be durable before a tracker
// call (a create's intent, a comment marked pending). The next write that
// does wait, an acknowledged delivery or an intent, covers it, since the
// log keeps commit order.
func (s *Store) finish(ctx context.Context, job qsync.Job, o qsync.JobOutcome, now time.Time) error {
	switch o.Outcome {
	case "", qsync.OutcomeApplied, qsync.OutcomeNoop, qsync.OutcomeDead:
	default:
		return fmt.Errorf("unknown outcome %q", o.Outcome)
	}
	if o.Link != nil && o.Link.Key != job.Key {
		return fmt.Errorf("link of %s fenced by the job of another key", o.Link.Key)
	}
	if o.Snapshot != nil && o.Snapshot.Ref != job.Key.EntityRef {
		return fmt.Errorf("snapshot of %s fenced by the job of another entity", o.Snapshot.Ref)
	}
	entry := FillEntry(o.Entry, job, o.Outcome, now)
	ops, err := json.Marshal(entry.Ops)
	if err != nil {
		return err
	}
	drift, err := MarshalDrift(entry.Drift)
	if err != nil {
		return err
	}
	return s.txSoon(ctx, func(tx *Tx) error {
		gen, err := s.holds(tx, job)
		if err != nil {
			return err
		}
		if o.Snapshot != nil {
			if _, err := s.saveSnapshot(tx, *o.Snapshot, o.PrevSeq); err != nil {
				return err
			}
		}
		if o.Link != nil {
			if err := s.saveLink(tx, *o.Link); err != nil {
				return err
			}
		}
		if o.Outcome == "" {
			_, err := tx.Exec(`UPDATE jobs SET attempts = attempts + CASE WHEN $5 THEN 1 ELSE 0 END,
				last_error = $6, due_at = $7, lease_owner = NULL, lease_until = NULL, lease_token = NULL
				WHERE `+keyWhere, append(keyArgs(job.Key), o.Charge, s.d.Text(o.LastErr), s.d.Time(o.RetryAt))...)
			return err
		}
		return s.complete(tx, job, gen, entry, string(ops), string(drift), now)
	})
}

// complete ends a held job (current gen gen) with entry.Outcome: events
// of the key up to job.Gen get that outcome, the ledger entry is written
// (and a dead letter for OutcomeDead), and the job is removed, or
// released due now if it was re-enqueued meanwhile.
func (s *Store) complete(tx *Tx, job qsync.Job, gen int64, entry qsync.LedgerEntry, ops, drift string, now time.Time) error {
	k := job.Key
	if err := s.settleDeliveries(tx, k, job.Gen, entry.Outcome); err != nil {
		return err
	}
	ek := entry.Key
	if _, err := tx.Exec(`INSERT INTO ledger
		(at, route, project, kind, entity_id, gen, outcome, ops, drift, detail, issue, request)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		s.d.Time(entry.At), ek.Route, ek.Project, string(ek.Kind), ek.ID, entry.Gen, string(entry.Outcome),
		ops, drift, s.d.Text(entry.Detail), s.d.Text(entry.Issue), s.d.Text(entry.Request)); err != nil {
		return err
	}
	if entry.Outcome == qsync.OutcomeDead {
		if _, err := tx.Exec(`INSERT INTO dead_letters
			(route, project, kind, entity_id, reason, attempts, last_request, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			append(keyArgs(k), s.d.Text(entry.Detail), job.Attempts+1, s.d.Text(entry.Request), s.d.Time(now))...); err != nil {
			return err
		}
	}
	if gen <= job.Gen {
		_, err := tx.Exec(`DELETE FROM jobs WHERE `+keyWhere, keyArgs(k)...)
		return err
	}
	// Events arrived while we worked: hand the key back, due now, as a
	// fresh job for those events. A verify asked for meanwhile (the
	// reconciler) survives unless this attempt already verified.
	_, err := tx.Exec(`UPDATE jobs SET lease_owner = NULL, lease_until = NULL, lease_token = NULL,
		attempts = 0, last_error = '', verify = verify AND NOT $5, due_at = $6, first_at = $6 WHERE `+keyWhere,
		append(keyArgs(k), job.Verify, s.d.Time(now))...)
	return err
}

// settleDeliveries gives k's pending deliveries up to gen the outcome.
// SQLite finds them through the partial index on pending deliveries,
// which the UPDATE changes, so it would first copy their keys into a
// temporary b-tree (Dialect.TempTrees): there they are read, then updated
// one by one by primary key.
func (s *Store) settleDeliveries(tx *Tx, k qsync.Key, gen int64, outcome qsync.Outcome) error {
	const pending = ` WHERE ` + keyWhere + ` AND gen <= $5 AND status = 'pending'`
	if !s.d.TempTrees {
		_, err := tx.Exec(`UPDATE deliveries SET status = $6`+pending, append(keyArgs(k), gen, string(outcome))...)
		return err
	}
	rows, err := tx.Query(`SELECT event_seq FROM deliveries`+pending, append(keyArgs(k), gen)...)
	seqs, err := collect(rows, err, func(r *sql.Rows) (int64, error) {
		var seq int64
		return seq, r.Scan(&seq)
	})
	if err != nil {
		return err
	}
	for _, seq := range seqs {
		if _, err := tx.Exec(`UPDATE deliveries SET status = $1 WHERE event_seq = $2 AND route = $3`, string(outcome), seq, k.Route); err != nil {
			return err
		}
	}
	return nil
}

// Release implements qsync.JobStore: lease_owner is the owner every token
// of the job's lease was issued to.
func (s *Store) Release(ctx context.Context, owner string) error {
	if _, err := s.exec(ctx, `UPDATE jobs SET lease_owner = NULL, lease_until = NULL, lease_token = NULL
		WHERE lease_owner = $1`, s.d.Text(owner)); err != nil {
		return s.errf("release: %w", err)
	}
	return nil
}

// QueueDepth implements qsync.JobStore.
func (s *Store) QueueDepth(ctx context.Context) (int, error) {
	var n int
	if err := s.queryRow(ctx, `SELECT count(*) FROM jobs`).Scan(&n); err != nil {
		return 0, s.errf("queue depth: %w", err)
	}
	return n, nil
}
