package sync_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"

	_ "modernc.org/sqlite" // database/sql driver "sqlite": the digest reads the store's file directly
)

// memQase searches like Qase's QQL: defects by their "updated_at" attr
// (a time.Time), at or after since in whole seconds.
func (q *memQase) Searchable(kind qsync.Kind) bool { return kind == qsync.KindDefect }

func (q *memQase) Changed(_ context.Context, p string, kind qsync.Kind, since time.Time, fn func(qsync.EntityRef, map[string]any) error) error {
	return q.read(p, kind, func(a map[string]any) bool {
		at, ok := a["updated_at"].(time.Time)
		return ok && !at.Before(since.Truncate(time.Second))
	}, fn)
}

// seed puts n open defects in Qase, last updated at updated, and runs a
// full pass that files their issues.
func (b *bundle) seed(n int, updated time.Time) {
	b.t.Helper()
	for id := int64(1); id <= int64(n); id++ {
		b.qase.set(id, map[string]any{"title": fmt.Sprintf("defect %d", id), "status": "open", "updated_at": updated})
	}
	b.reconcile()
	if got := len(b.tracker.snapshot()); got != n {
		b.t.Fatalf("seeding filed %d issues, want %d", got, n)
	}
}

// dbDigest sums every row of the tables a sync writes per key, read on a
// connection of its own: equal digests mean no per-key row was written.
func (b *bundle) dbDigest() string {
	b.t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(b.dir, "qase-sync.db")+"?mode=ro")
	if err != nil {
		b.t.Fatal(err)
	}
	defer db.Close()
	h := sha256.New()
	for _, table := range []string{"events", "deliveries", "jobs", "snapshots", "links", "ledger", "dead_letters"} {
		rows, err := db.Query(`SELECT * FROM ` + table)
		if err != nil {
			b.t.Fatal(err)
		}
		cols, _ := rows.Columns()
		n := 0
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				b.t.Fatal(err)
			}
			fmt.Fprintf(h, "%s%v\n", table, vals)
			n++
		}
		if err := rows.Close(); err != nil {
			b.t.Fatal(err)
		}
		fmt.Fprintf(h, "%s rows %d\n", table, n)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func (b *bundle) pass(o qsync.ReconcileOptions) qsync.ReconcileReport {
	b.t.Helper()
	rep, err := b.engine.Reconcile(context.Background(), o)
	if err != nil {
		b.t.Fatalf("reconcile: %v", err)
	}
	return rep
}

// passThenDrain runs a pass, which must be of mode and enqueue n keys,
// then drains the queue.
func (b *bundle) passThenDrain(o qsync.ReconcileOptions, mode string, n int, what string) {
	b.t.Helper()
	if rep := b.pass(o); rep.Mode != mode || rep.Enqueued != n {
		b.t.Fatalf("%s: %+v; want mode %s, %d enqueued", what, rep, mode, n)
	}
	b.drain()
}

// A full sweep over keys that are in sync enqueues nothing and writes no
// row for any of them; a key that drifted on either side is still found.
func TestFullPassOverUnchangedKeysWritesNothing(t *testing.T) {
	b := setup(t)
	const n = 300
	b.seed(n, time.Now().Add(-time.Hour))
	b.reconcile() // records what the first pass learned (fingerprints)
	before, writes := b.dbDigest(), b.tracker.totalWrites()

	rep := b.pass(qsync.ReconcileOptions{})
	if rep.Mode != qsync.ModeFull || rep.Checked != n || rep.Unchanged != n || rep.Enqueued != 0 || len(rep.KeyList) != 0 {
		t.Fatalf("pass over unchanged keys: %+v; want %d checked, all unchanged, none enqueued", rep, n)
	}
	if d, err := b.store.QueueDepth(context.Background()); err != nil || d != 0 {
		t.Fatalf("queue depth %d, %v; want 0", d, err)
	}
	if after := b.dbDigest(); after != before {
		t.Fatal("a pass over unchanged keys wrote rows")
	}
	if w := b.tracker.totalWrites(); w != writes {
		t.Fatalf("tracker writes %d, want %d", w, writes)
	}

	// Qase-side change: one key enqueued and repaired.
	b.qase.set(7, map[string]any{"title": "renamed", "status": "open", "updated_at": time.Now()})
	// Tracker-side edit: one key enqueued and reverted.
	edited := b.oneIssue(9).Ref.ID
	b.tracker.locked(func() { b.tracker.byID(edited).Title = "edited by a person" })
	rep = b.pass(qsync.ReconcileOptions{})
	if rep.Enqueued != 2 || rep.Unchanged != n-2 {
		t.Fatalf("pass after two changes: enqueued %d, unchanged %d; want 2 and %d", rep.Enqueued, rep.Unchanged, n-2)
	}
	b.drain()
	if got := b.oneIssue(7).Title; got != "[QA-7] renamed" {
		t.Errorf("issue of 7: %q, want the Qase change applied", got)
	}
	if got := b.oneIssue(9).Title; got != "[QA-9] defect 9" {
		t.Errorf("issue of 9: %q, want the person's edit reverted", got)
	}
	b.wantConverged()
}

// An incremental pass reads only what changed since its checkpoint (one
// search for an unchanged project), repairs what changed, sees a late
// write inside the overlap, and leaves tracker-side edits to full sweeps.
func TestIncrementalPassReadsChangesOnly(t *testing.T) {
	b := setup(t)
	const n = 200
	b.seed(n, time.Now().Add(-time.Hour))
	cps, err := b.store.Checkpoints(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	full, ok := cps[qsync.CheckpointFull]
	if !ok || cps[qsync.CheckpointName(project, qsync.KindDefect)].IsZero() {
		t.Fatalf("a full sweep left checkpoints %v; want the sweep and QA/defect", cps)
	}
	incr := qsync.ReconcileOptions{Incremental: true, FullEvery: time.Hour, Overlap: time.Minute}

	reads := b.qase.reads.Load()
	before := b.dbDigest()
	rep := b.pass(incr)
	if rep.Mode != qsync.ModeIncremental || rep.Checked != 0 || rep.Enqueued != 0 {
		t.Fatalf("incremental pass over unchanged defects: %+v", rep)
	}
	if r := b.qase.reads.Load() - reads; r != 1 {
		t.Fatalf("incremental pass made %d Qase reads, want 1 search", r)
	}
	if b.dbDigest() != before {
		t.Fatal("an incremental pass over unchanged defects wrote rows")
	}

	// A change, and a write Qase committed late: stamped 30s before the
	// checkpoint, inside the one-minute overlap.
	cp := b.checkpoint(qsync.CheckpointName(project, qsync.KindDefect))
	b.qase.set(5, map[string]any{"title": "changed", "status": "open", "updated_at": time.Now()})
	b.qase.set(6, map[string]any{"title": "late", "status": "resolved", "updated_at": cp.Add(-30 * time.Second)})
	edited := b.oneIssue(9).Ref.ID
	b.tracker.locked(func() { b.tracker.byID(edited).Title = "edited by a person" })
	b.passThenDrain(incr, qsync.ModeIncremental, 2, "incremental pass after two changes")
	if got := b.oneIssue(5).Title; got != "[QA-5] changed" {
		t.Errorf("issue of 5: %q", got)
	}
	if got := b.oneIssue(6); got.Status != "Done" || got.Title != "[QA-6] late" {
		t.Errorf("issue of 6: %q %q; want the late write applied", got.Title, got.Status)
	}
	if got := b.oneIssue(9).Title; got != "edited by a person" {
		t.Errorf("issue of 9: %q; an incremental pass cannot see tracker edits", got)
	}
	if !b.checkpoint(qsync.CheckpointName(project, qsync.KindDefect)).After(cp) {
		t.Error("the checkpoint did not advance")
	}

	// The same changes seen again inside the overlap are harmless: found,
	// in sync, not enqueued.
	rep = b.pass(incr)
	if rep.Enqueued != 0 || rep.Checked == 0 {
		t.Fatalf("repeat incremental pass: %+v; want changes seen again, none enqueued", rep)
	}

	// The backstop: once the last full sweep is older than FullEvery, the
	// pass is a full sweep, and it reverts the tracker-side edit.
	incr.FullEvery = time.Since(full) / 2
	b.passThenDrain(incr, qsync.ModeFull, 1, "backstop pass (a full sweep enqueueing the edited key)")
	if got := b.oneIssue(9).Title; got != "[QA-9] defect 9" {
		t.Errorf("issue of 9 after the full sweep: %q", got)
	}
}

func (b *bundle) checkpoint(name string) time.Time {
	b.t.Helper()
	cps, err := b.store.Checkpoints(context.Background())
	if err != nil {
		b.t.Fatal(err)
	}
	return cps[name]
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReconcileUnchanged is a full sweep over 10,000 keys in sync:
// the whole pass (links, Qase listing, tracker listing, the in-memory
// decision per key, checkpoints), reported as process CPU per key.
func BenchmarkReconcileUnchanged(b *testing.B) {
	const n = 10000
	bu := setup(b)
	for id := int64(1); id <= n; id++ {
		bu.qase.set(id, map[string]any{"title": fmt.Sprintf("defect %d", id), "status": "open"})
	}
	for range 2 { // files the issues, then records their fingerprints
		if _, err := bu.engine.Reconcile(context.Background(), qsync.ReconcileOptions{}); err != nil {
			b.Fatal(err)
		}
		if err := bu.engine.ProcessUntilIdle(context.Background(), nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	cpu := cpuTime()
	for range b.N {
		rep, err := bu.engine.Reconcile(context.Background(), qsync.ReconcileOptions{})
		if err != nil || rep.Enqueued != 0 || rep.Checked != n {
			b.Fatalf("pass: %+v, %v", rep, err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(b.N*n), "cpu-µs/key")
}

// A defect deleted in Qase is synced once (its issue closed, with the
// comment); later full sweeps know it is gone from the stored read and
// enqueue it no more.
func TestDeletedDefectIsSyncedOnce(t *testing.T) {
	b := setup(t)
	b.seed(20, time.Now().Add(-time.Hour))
	b.reconcile()
	b.qase.set(4, nil)
	if rep := b.pass(qsync.ReconcileOptions{}); rep.Enqueued != 1 || rep.KeyList[0] != key(4) {
		t.Fatalf("pass after the deletion: %+v; want defect 4 enqueued", rep)
	}
	b.drain()
	b.wantDeletedComment(4, "Done")
	before := b.dbDigest()
	if rep := b.pass(qsync.ReconcileOptions{}); rep.Enqueued != 0 || rep.Checked != 20 {
		t.Fatalf("pass after the deletion was synced: %+v; want 20 checked, none enqueued", rep)
	}
	if b.dbDigest() != before {
		t.Fatal("a pass over a known deletion wrote rows")
	}
}

// failingEnqueue is the store with Enqueue failing (a lost database
// connection mid-pass).
type failingEnqueue struct{ qsync.Store }

func (failingEnqueue) Enqueue(context.Context, []qsync.Key, bool, time.Time) error {
	return fmt.Errorf("database is locked")
}

// A checkpoint moves only once the changes found were enqueued: a pass
// whose enqueue fails leaves it, and the next pass finds them again.
func TestCheckpointWaitsForTheEnqueue(t *testing.T) {
	b := setup(t)
	b.seed(10, time.Now().Add(-time.Hour))
	name := qsync.CheckpointName(project, qsync.KindDefect)
	cp := b.checkpoint(name)
	b.qase.set(3, map[string]any{"title": "changed", "status": "open", "updated_at": time.Now()})
	incr := qsync.ReconcileOptions{Incremental: true, FullEvery: time.Hour}

	o := b.opts
	o.Store, o.Coverage, o.Trackers = failingEnqueue{b.store}, b.cov, map[string]qsync.Tracker{"mem": b.tracker}
	if _, err := qsync.NewEngine(o).Reconcile(context.Background(), incr); err == nil {
		t.Fatal("a pass whose enqueue failed reported success")
	}
	if got := b.checkpoint(name); !got.Equal(cp) {
		t.Fatalf("checkpoint moved from %v to %v though the change was never enqueued", cp, got)
	}
	if rep := b.pass(incr); rep.Enqueued != 1 || rep.KeyList[0] != key(3) {
		t.Fatalf("next pass: %+v; want the change found again", rep)
	}
	if got := b.checkpoint(name); !got.After(cp) {
		t.Fatal("the checkpoint did not move after a successful pass")
	}
}

// Without a source that can search (no Qase token: events alone), every
// pass is a full sweep: an incremental one would see nothing.
func TestIncrementalWithoutSearchIsFull(t *testing.T) {
	b := setup(t, func(o *qsync.EngineOptions) { o.Source = nil })
	b.openDefect(1, "from the webhook", time.Now())
	b.drain()
	b.reconcile()
	rep := b.pass(qsync.ReconcileOptions{Incremental: true, FullEvery: time.Hour})
	if rep.Mode != qsync.ModeFull || rep.Checked != 1 || rep.Enqueued != 0 {
		t.Fatalf("incremental pass without a searchable source: %+v; want a full sweep finding the key in sync", rep)
	}
}
