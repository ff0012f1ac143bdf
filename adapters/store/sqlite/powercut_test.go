package sqlite

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// A power cut keeps what the last fsync of the WAL covered and nothing
// after it. The test stops the checkpointer (so the database file holds
// still), copies the WAL as each group fsync leaves it, and reopens the
// database with the copy made at a chosen fsync:
//
//   - cut after a create's intent but before anything waited on its job's
//     outcome: the acknowledged deliveries and the intent are there, the
//     outcomes (not waited for, txSoon) are lost, and their jobs and
//     deliveries are pending again: the next attempt finds the intent and
//     looks before it creates (I1, I2);
//   - cut after a later acknowledged delivery: it covers the outcomes
//     committed before it, as the WAL keeps commit order.
func TestPowerCutKeepsWhatTheLastFsyncCovered(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "q.db")
	s := open(t, path)
	if s.group == nil {
		t.Fatal("synchronous=full has no group fsync")
	}
	// Hold the database file still: stop the checkpointer without its last
	// checkpoint, leaving channels that let Close run as usual.
	close(s.ckpt.stop)
	<-s.ckpt.done
	s.ckpt.stop, s.ckpt.done = make(chan struct{}), make(chan struct{})
	close(s.ckpt.done)

	var images [][]byte // the WAL as each fsync left it
	real := s.group.fsync
	s.group.fsync = func(f *os.File) error {
		err := real(f)
		b, rerr := os.ReadFile(path + "-wal")
		if rerr != nil {
			t.Error(rerr)
		}
		images = append(images, b)
		return err
	}
	dbAtStart, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	t0 := time.Unix(1700000000, 0)
	key := func(id int64) qsync.Key {
		return qsync.Key{Route: "jira", EntityRef: qsync.EntityRef{Project: "P", Kind: qsync.KindDefect, ID: id}}
	}
	accept := func(id int64, dedup string) {
		t.Helper()
		ev := qsync.Event{DedupKey: dedup, Name: "defect.created", Ref: key(id).EntityRef, Timestamp: t0, Patch: qsync.Patch{Attrs: map[string]any{"title": dedup}}}
		if _, err := s.AcceptEvents(ctx, []qsync.Inbound{{Event: ev, Routes: []string{"jira"}}}, t0); err != nil {
			t.Fatal(err)
		}
	}
	accept(1, "a")
	accept(2, "b")
	now := t0.Add(time.Minute)
	jobs, err := s.Lease(ctx, "w", 2, now, time.Minute)
	if err != nil || len(jobs) != 2 {
		t.Fatalf("Lease = %d jobs, %v", len(jobs), err)
	}
	byID := map[int64]qsync.Job{}
	for _, j := range jobs {
		byID[j.Key.ID] = j
	}
	// Job 1 creates: its intent is durable before the tracker call.
	intent := qsync.Link{Key: key(1), Tracker: "jira", State: qsync.LinkCreating, Marker: qsync.MarkerFor(key(1)), CreatedAt: now, UpdatedAt: now}
	if err := s.SaveLinkFenced(ctx, intent, byID[1]); err != nil {
		t.Fatal(err)
	}
	afterIntent := len(images)
	linked := intent
	linked.State, linked.Issue = qsync.LinkLinked, qsync.IssueRef{ID: "10001", Key: "X-1", Project: "X"}
	if err := s.Finish(ctx, byID[1], qsync.JobOutcome{Outcome: qsync.OutcomeApplied, Link: &linked, Entry: qsync.LedgerEntry{Ops: []string{"create"}}}, now); err != nil {
		t.Fatal(err)
	}
	// Job 2 has nothing to do.
	if err := s.Finish(ctx, byID[2], qsync.JobOutcome{Outcome: qsync.OutcomeNoop}, now); err != nil {
		t.Fatal(err)
	}
	if len(images) != afterIntent {
		t.Fatalf("the outcomes waited for %d fsyncs", len(images)-afterIntent)
	}
	accept(3, "c") // acknowledged: on disk, and so is everything before it
	afterAck := len(images)

	// reopen restores the database file and the WAL of fsync n (1-based).
	reopen := func(n int) *Store {
		t.Helper()
		d := t.TempDir()
		p := filepath.Join(d, "q.db")
		if err := os.WriteFile(p, dbAtStart, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p+"-wal", images[n-1], 0o600); err != nil {
			t.Fatal(err)
		}
		return open(t, p)
	}
	deliveries := func(r *Store, id int64) []qsync.Delivery {
		t.Helper()
		ds, err := r.Deliveries(ctx, key(id), 10)
		if err != nil {
			t.Fatal(err)
		}
		return ds
	}

	t.Run("cut after the intent", func(t *testing.T) {
		r := reopen(afterIntent)
		l, ok, err := r.Link(ctx, key(1))
		if err != nil || !ok || l.State != qsync.LinkCreating || l.Marker != intent.Marker {
			t.Errorf("link of job 1 = %+v, %v, %v; want the intent (creating, its marker)", l, ok, err)
		}
		for _, id := range []int64{1, 2} {
			if ds := deliveries(r, id); len(ds) != 1 || ds[0].Status != "pending" {
				t.Errorf("deliveries of %d = %+v; want one, pending", id, ds)
			}
			if es, err := r.Ledger(ctx, key(id), 10); err != nil || len(es) != 0 {
				t.Errorf("ledger of %d = %+v, %v; want no entry (the outcome was lost)", id, es, err)
			}
		}
		// Both jobs run again once their leases run out.
		again, err := r.Lease(ctx, "w2", 5, now.Add(time.Hour), time.Minute)
		if err != nil || len(again) != 2 {
			t.Errorf("Lease after the cut = %d jobs, %v; want jobs 1 and 2 again", len(again), err)
		}
		if ds := deliveries(r, 3); len(ds) != 0 {
			t.Errorf("a delivery acknowledged after the cut survived: %+v", ds)
		}
	})
	t.Run("cut after a later acknowledged delivery", func(t *testing.T) {
		r := reopen(afterAck)
		l, ok, err := r.Link(ctx, key(1))
		if err != nil || !ok || l.State != qsync.LinkLinked || l.Issue.Key != "X-1" {
			t.Errorf("link of job 1 = %+v, %v, %v; want linked to X-1", l, ok, err)
		}
		for id, want := range map[int64]string{1: "applied", 2: "noop", 3: "pending"} {
			if ds := deliveries(r, id); len(ds) != 1 || ds[0].Status != want {
				t.Errorf("deliveries of %d = %+v; want one, %s", id, ds, want)
			}
		}
		again, err := r.Lease(ctx, "w2", 5, now.Add(time.Hour), time.Minute)
		if err != nil || len(again) != 1 || again[0].Key != key(3) {
			t.Errorf("Lease after the cut = %+v, %v; want job 3 alone", again, err)
		}
	})
}
