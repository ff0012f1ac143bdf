package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/adapters/store/sqlite/internal/capi"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// The statements of a job's life (ingest, lease, reads, the outcome's
// commit, a release after new events, a retry) compile to programs
// without a temporary b-tree: SQLite builds one, with a page cache of its
// own, on every run of a statement that has one (an ORDER BY with a
// LIMIT, a RETURNING, an UPDATE through the index it changes), and that
// was a quarter of a job's store CPU (sqlstore.Dialect.TempTrees).
func TestJobLifeBuildsNoTempTrees(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Options{Path: filepath.Join(t.TempDir(), "q.db"), Synchronous: "full"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t0 := time.Unix(1700000000, 0)
	ref := qsync.EntityRef{Project: "P", Kind: qsync.KindDefect, ID: 1}
	accept := func(dedup string) {
		t.Helper()
		ev := qsync.Event{DedupKey: dedup, Name: "defect.updated", Ref: ref, Timestamp: t0, Patch: qsync.Patch{Attrs: map[string]any{"title": dedup}}}
		if _, err := s.AcceptEvents(ctx, []qsync.Inbound{{Event: ev, Routes: []string{"jira"}}}, t0); err != nil {
			t.Fatal(err)
		}
	}
	accept("e1")
	accept("e1") // a duplicate
	jobs, err := s.Lease(ctx, "w", 1, t0, time.Minute)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("Lease = %d jobs, %v", len(jobs), err)
	}
	j := jobs[0]
	if err := s.Renew(ctx, j, t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Snapshot(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := s.EventsAfter(ctx, ref, snap.LastSeq, 500)
	if err != nil || len(evs) != 1 {
		t.Fatalf("EventsAfter = %d, %v", len(evs), err)
	}
	prev := snap.LastSeq
	snap.Ref = ref
	for _, ev := range evs {
		snap.State.Fold(ev)
		snap.LastSeq = ev.Seq
	}
	if _, _, err := s.Link(ctx, j.Key); err != nil {
		t.Fatal(err)
	}
	l := qsync.Link{Key: j.Key, Tracker: "jira", Issue: qsync.IssueRef{ID: "1", Key: "X-1", Project: "X"}, Fingerprint: "f", CreatedAt: t0, UpdatedAt: t0}
	if err := s.SaveLinkFenced(ctx, l, j); err != nil {
		t.Fatal(err)
	}
	accept("e2") // arrives while the job runs: Finish hands the key back
	if err := s.Finish(ctx, j, qsync.JobOutcome{Outcome: qsync.OutcomeApplied, Entry: qsync.LedgerEntry{Ops: []string{"create"}}, Link: &l, Snapshot: &snap, PrevSeq: prev}, t0); err != nil {
		t.Fatal(err)
	}
	if jobs, err = s.Lease(ctx, "w", 1, t0.Add(time.Second), time.Minute); err != nil || len(jobs) != 1 {
		t.Fatalf("Lease = %d jobs, %v", len(jobs), err)
	}
	if err := s.Retry(ctx, jobs[0], t0.Add(time.Minute), "boom", true, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if jobs, err = s.Lease(ctx, "w", 1, t0.Add(2*time.Minute), time.Minute); err != nil || len(jobs) != 1 {
		t.Fatalf("Lease = %d jobs, %v", len(jobs), err)
	}
	if err := s.Finish(ctx, jobs[0], qsync.JobOutcome{Outcome: qsync.OutcomeNoop, Entry: qsync.LedgerEntry{}}, t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}

	// Every statement the writer and the readers kept prepared.
	var kept []string
	collect := func(c *capi.Conn) { kept = append(kept, c.Kept()...) }
	wc, err := s.w.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := wc.Raw(func(dc any) error { c, _ := capi.Unwrap(dc); collect(c); return nil }); err != nil {
		t.Fatal(err)
	}
	wc.Close()
	// Hold every reader connection at once (the pool's size), so each is
	// a different one.
	var readers []*sql.Conn
	for range max(4, runtime.NumCPU()) {
		rc, err := s.r.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		readers = append(readers, rc)
		if err := rc.Raw(func(dc any) error { c, _ := capi.Unwrap(dc); collect(c); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(kept)
	kept = slices.Compact(kept)
	if len(kept) < 10 {
		t.Fatalf("only %d statements kept: %q", len(kept), kept)
	}
	err = readers[0].Raw(func(dc any) error {
		c, _ := capi.Unwrap(dc)
		for _, q := range kept {
			prog, err := c.Program(q)
			if err != nil {
				return err
			}
			if slices.Contains(prog, "OpenEphemeral") {
				t.Errorf("builds a temporary b-tree on every run:\n%s", strings.Join(strings.Fields(q), " "))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
