package sqlite

import (
	"context"
	"fmt"

	"github.com/qase-sync/qase-sync/adapters/store/internal/sqlstore"
	"github.com/qase-sync/qase-sync/adapters/store/sqlite/internal/capi"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// Statements of the ingest path, prepared once on the ingest connection.
//
// OR IGNORE rather than ON CONFLICT DO NOTHING or a plain INSERT: a
// statement that may abort after writing makes SQLite keep a statement
// journal of every page it touches, in case it has to undo just that
// statement (a seventh of ingest CPU in profiles). OR IGNORE cannot abort,
// and the only constraints these rows can hit are the ones meant to be
// skipped: an event already stored, a job already pending (bumped
// instead). (Under the write lock a delivery row cannot exist already; a
// row not written is checked.)
//
// No RETURNING: SQLite buffers its rows in a temporary b-tree built and
// freed per execution (see sqlstore.Dialect.TempTrees); the connection's
// change count and last rowid say the same.
const (
	sqlInsertEvent = `INSERT OR IGNORE INTO events
		(dedup_key, name, project, kind, entity_id, ts, received_at, actor_id, patch, payload)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	sqlEventSeq = `SELECT seq FROM events WHERE entity_id = ? AND dedup_key = ?`
	sqlBumpJob  = `UPDATE jobs SET gen = gen + ? WHERE route = ? AND project = ? AND kind = ? AND entity_id = ?`
	sqlJobGen   = `SELECT gen FROM jobs WHERE route = ? AND project = ? AND kind = ? AND entity_id = ?`
	sqlNewJob   = `INSERT OR IGNORE INTO jobs
		(route, project, kind, entity_id, gen, attempts, last_error, verify, first_at, due_at)
		VALUES (?, ?, ?, ?, ?, 0, '', 0, ?, ?)`
	sqlInsertDelivery = `INSERT OR IGNORE INTO deliveries (event_seq, route, project, kind, entity_id, gen, status)
		VALUES (?, ?, ?, ?, ?, ?, 'pending')`
)

// insertBatch writes a batch inside an open transaction of c: the events
// in batch order (so seqs follow arrival), each (route, entity) job bumped
// once by its number of events, new or duplicate, and one pending delivery
// per (new event, route). A duplicate stores no row of its own, but its
// bump makes the key sync again (invariant I6): an equal body may still
// be news, and a job leased meanwhile is then released, not deleted. A
// QuietDuplicate duplicate (a tracker redelivery) bumps nothing.
func insertBatch(c *capi.Conn, in []qsync.Inbound, patches [][]byte, nowUS int64) ([]qsync.AcceptResult, error) {
	res := make([]qsync.AcceptResult, len(in))
	isNew := make([]bool, len(in))
	for i, ib := range in {
		ev := ib.Event
		if _, err := c.One(sqlInsertEvent, ev.DedupKey, ev.Name, ev.Ref.Project, string(ev.Ref.Kind), ev.Ref.ID,
			ev.Timestamp.UnixMicro(), ev.ReceivedAt.UnixMicro(), ev.ActorID, patches[i], ev.Payload); err != nil {
			return nil, err
		}
		if c.Changes() == 1 {
			res[i], isNew[i] = qsync.AcceptResult{Seq: c.LastInsertID()}, true
			continue
		}
		// Stored before, or earlier in this batch: a duplicate of that event.
		seq, err := c.One(sqlEventSeq, ev.Ref.ID, ev.DedupKey)
		if err != nil {
			return nil, err
		}
		if seq == 0 {
			return nil, fmt.Errorf("duplicate %q vanished", ev.DedupKey)
		}
		res[i] = qsync.AcceptResult{Seq: seq, Duplicate: true}
	}

	// One pending delivery per (new event, route); each key's job is bumped
	// once, by its number of events (duplicates included, unless quiet).
	type delivery struct {
		seq int64
		key qsync.Key
	}
	var dels []delivery
	bumps := map[qsync.Key]int64{}
	var keys []qsync.Key
	for i, ib := range in {
		if !isNew[i] && ib.QuietDuplicate {
			continue
		}
		for _, route := range sqlstore.UniqueRoutes(ib.Routes) {
			k := qsync.Key{Route: route, EntityRef: ib.Event.Ref}
			if bumps[k] == 0 {
				keys = append(keys, k)
			}
			bumps[k]++
			if isNew[i] {
				dels = append(dels, delivery{res[i].Seq, k})
			}
		}
	}
	gens := make(map[qsync.Key]int64, len(keys))
	for _, k := range keys {
		gen, err := bumpJob(c, k, bumps[k], nowUS)
		if err != nil {
			return nil, err
		}
		gens[k] = gen
	}
	for _, d := range dels {
		k := d.key
		if _, err := c.One(sqlInsertDelivery, d.seq, k.Route, k.Project, string(k.Kind), k.ID, gens[k]); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// bumpJob adds n to the generation of k's job, creating the job if there
// is none, and returns the new generation. The insert comes first: most
// deliveries find their key with no job pending (it was deleted at its last
// outcome), and then one statement does instead of a missed update and an
// insert.
func bumpJob(c *capi.Conn, k qsync.Key, n, nowUS int64) (int64, error) {
	if _, err := c.One(sqlNewJob, k.Route, k.Project, string(k.Kind), k.ID, n, nowUS, nowUS); err != nil {
		return 0, err
	}
	if c.Changes() == 1 {
		return n, nil
	}
	if _, err := c.One(sqlBumpJob, n, k.Route, k.Project, string(k.Kind), k.ID); err != nil {
		return 0, err
	}
	if c.Changes() != 1 {
		return 0, fmt.Errorf("job %s: neither stored nor bumped", k)
	}
	return c.One(sqlJobGen, k.Route, k.Project, string(k.Kind), k.ID)
}

// writeBatch stores a batch in one transaction on the writer connection,
// serialized with the store's other writes, driving the C API directly.
func (s *Store) writeBatch(ctx context.Context, in []qsync.Inbound, patches [][]byte, nowUS int64) (res []qsync.AcceptResult, err error) {
	err = s.RawWrite(ctx, func(dc any) error {
		c, ok := capi.Unwrap(dc)
		if !ok {
			return fmt.Errorf("writer connection is a %T", dc)
		}
		res, err = insertBatch(c, in, patches, nowUS)
		return err
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}
