package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/adapters/store/sqlite/internal/capi"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// pagesWritten is how many pages the writer connection has written.
func (s *Store) pagesWritten(t *testing.T) int64 {
	t.Helper()
	var n int64
	if err := s.RawWrite(context.Background(), func(dc any) error {
		c, ok := capi.Unwrap(dc)
		if !ok {
			return fmt.Errorf("writer connection is a %T", dc)
		}
		var err error
		n, err = c.PagesWritten()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// What a create job writes to the WAL, step by step, one job at a time
// (no other write shares its pages): every page is two write calls and
// part of the group fsync, and it was the largest share of a job's store
// CPU. The bounds are today's counts; a schema or statement change that
// adds a page per job fails here (migration 0008 took a lease from 2.0 to
// 1.0 pages and an outcome from 14.3 to 11.3).
func TestJobStepsWriteFewPages(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "q.db")) // synchronous=full, the default
	t0 := time.Unix(1700000000, 0)
	const n = 200
	var ins []qsync.Inbound
	for i := range n {
		ev := qsync.Event{DedupKey: fmt.Sprint("d", i), Name: "defect.created", Ref: qsync.EntityRef{Project: "P", Kind: qsync.KindDefect, ID: int64(i + 1)},
			Timestamp: t0, Patch: qsync.Patch{Attrs: map[string]any{"title": "x", "status": "open"}}}
		ins = append(ins, qsync.Inbound{Event: ev, Routes: []string{"jira"}})
	}
	if _, err := s.AcceptEvents(ctx, ins, t0); err != nil {
		t.Fatal(err)
	}
	// The counter is read in a write transaction of its own, which writes
	// nothing (an empty transaction is rolled back).
	var lease, intent, finish int64
	step := func(total *int64, write func() error) {
		t.Helper()
		before := s.pagesWritten(t)
		if err := write(); err != nil {
			t.Fatal(err)
		}
		*total += s.pagesWritten(t) - before
	}
	now := t0.Add(time.Hour)
	for i := range n {
		var j qsync.Job
		step(&lease, func() error {
			js, err := s.Lease(ctx, "w", 1, now, time.Minute)
			if err == nil && len(js) != 1 {
				err = fmt.Errorf("leased %d jobs", len(js))
			}
			if err == nil {
				j = js[0]
			}
			return err
		})
		r, err := s.ReadKey(ctx, j.Key, 500)
		if err != nil {
			t.Fatal(err)
		}
		snap := r.Snapshot
		prev := snap.LastSeq
		snap.Ref = j.Key.EntityRef
		for _, ev := range r.Events {
			snap.State.Fold(ev)
			snap.LastSeq = ev.Seq
		}
		l := qsync.Link{Key: j.Key, Tracker: "jira", State: qsync.LinkCreating, Marker: qsync.MarkerFor(j.Key), CreatedAt: now, UpdatedAt: now}
		step(&intent, func() error { return s.SaveLinkFenced(ctx, l, j) })
		l.State, l.Issue = qsync.LinkLinked, qsync.IssueRef{ID: fmt.Sprint(10000 + i), Key: fmt.Sprint("X-", i), Project: "X"}
		step(&finish, func() error {
			return s.Finish(ctx, j, qsync.JobOutcome{Outcome: qsync.OutcomeApplied, Entry: qsync.LedgerEntry{Ops: []string{"create"}}, Link: &l, Snapshot: &snap, PrevSeq: prev}, now)
		})
	}
	for _, c := range []struct {
		what  string
		total int64
		max   float64
	}{{"lease", lease, 1}, {"intent", intent, 2.5}, {"outcome", finish, 12}} {
		per := float64(c.total) / n
		t.Logf("%s: %.2f pages per job", c.what, per)
		if per > c.max {
			t.Errorf("%s writes %.2f pages per job, want at most %.1f", c.what, per, c.max)
		}
	}
}
