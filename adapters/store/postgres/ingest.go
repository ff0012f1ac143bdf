package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/qase-sync/qase-sync/adapters/store/internal/sqlstore"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// acceptSQL stores one event, enqueues or bumps its routes' jobs, and, if
// the event is new, records its deliveries, in one statement. A duplicate
// stores no row of its own but still bumps the jobs (invariant I6: an equal
// body may still be news; a job leased meanwhile is then released, not
// deleted), unless $13 (Inbound.QuietDuplicate: a tracker redelivery). It returns (seq, false) for a new event and (existing seq,
// true) for a duplicate. The entity lock held by accept means no
// concurrent insert of the same dedup key (which names its entity) can be
// in flight, so the duplicate's row is always visible here.
const acceptSQL = `WITH ins AS (
	INSERT INTO events (dedup_key, name, project, kind, entity_id, ts, received_at, actor_id, patch, payload)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
	ON CONFLICT (dedup_key) DO NOTHING
	RETURNING seq
), job AS (
	INSERT INTO jobs (route, project, kind, entity_id, gen, attempts, last_error, verify, first_at, due_at)
	SELECT r, $3, $4, $5, 1, 0, '', false, $12, $12
	FROM unnest($11::text[]) AS r
	WHERE NOT $13::boolean OR EXISTS (SELECT 1 FROM ins)
	ON CONFLICT (route, project, kind, entity_id) DO UPDATE SET gen = jobs.gen + 1
	RETURNING route, gen
), del AS (
	INSERT INTO deliveries (event_seq, route, project, kind, entity_id, gen, status)
	SELECT ins.seq, job.route, $3, $4, $5, job.gen, 'pending' FROM ins, job
)
SELECT seq, false FROM ins
UNION ALL
SELECT seq, true FROM events WHERE dedup_key = $1 AND NOT EXISTS (SELECT 1 FROM ins)`

// entityLocks are the advisory lock keys of the batch's entities, sorted
// (every transaction takes its locks in one order: no deadlock between
// batches). Two entities may share a key; they then merely take turns.
func entityLocks(in []qsync.Inbound) []int64 {
	keys := make([]int64, 0, len(in))
	for _, ib := range in {
		h := fnv.New64a()
		r := ib.Event.Ref
		fmt.Fprintf(h, "%s\x00%s\x00%d", r.Project, r.Kind, r.ID)
		keys = append(keys, int64(h.Sum64()))
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// accept writes the batch in one transaction and one round trip
// (pipelined), on a pgx connection of the pool.
//
// Each batch first takes a transaction-scoped advisory lock per entity it
// touches, not one for all ingest: the events of one entity must commit
// in seq order (a reader could otherwise fold event n+1 into a snapshot,
// LastSeq = n+1, before event n commits, and EventsAfter(n+1) would never
// return n), and a duplicate's original must be visible when it is
// looked up. Both are about one entity at a time; batches of other
// entities, from this or another replica, go on beside it.
func (s *Store) accept(ctx context.Context, in []qsync.Inbound, patches [][]byte, now time.Time) ([]qsync.AcceptResult, error) {
	b := &pgx.Batch{}
	b.Queue(`SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k`, entityLocks(in))
	for i, ib := range in {
		ev := ib.Event
		b.Queue(acceptSQL, clean(ev.DedupKey), clean(ev.Name), ev.Ref.Project, string(ev.Ref.Kind), ev.Ref.ID,
			ev.Timestamp, ev.ReceivedAt, ev.ActorID, string(patches[i]), ev.Payload, sqlstore.UniqueRoutes(ib.Routes), now, ib.QuietDuplicate)
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	res := make([]qsync.AcceptResult, len(in))
	for attempt := 1; ; attempt++ {
		err = conn.Raw(func(dc any) error {
			c, ok := dc.(*stdlib.Conn)
			if !ok {
				return errors.New("not a pgx connection")
			}
			return pgx.BeginFunc(ctx, c.Conn(), func(tx pgx.Tx) error {
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
		})
		// A deadlock with another writer of the same jobs rows (Enqueue,
		// Complete) aborted the batch: it left nothing, run it again.
		if err == nil || attempt == 3 || !retryable(err) || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}
