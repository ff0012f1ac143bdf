package sync_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// Each test here reproduces a class of broken promise ("one issue per
// entity, nothing lost") against the real engine and store.

// Thin events of one second have equal bodies: the second is a duplicate
// to the inbox, but it still means "the defect changed after your last
// sync started", so it must lead to one more sync (I6).
func TestSameSecondEditsAreNotLost(t *testing.T) {
	b := setup(t)
	ts := time.Now()
	b.openDefect(1, "v1", ts)
	b.drain()
	for i := 2; i <= 20; i++ {
		b.qase.set(1, map[string]any{"title": fmt.Sprint("v", i), "status": "open"})
		st := b.deliver("defect.updated", 1, ts, nil) // byte-identical bodies
		if i > 2 && st != qsync.StatusDuplicate {
			t.Fatalf("edit %d answered %q, want duplicate (same body)", i, st)
		}
		b.drain()
	}
	if got := b.oneIssue(1).Title; got != "[QA-1] v20" {
		t.Fatalf("title %q, want the last edit's", got)
	}
	st, err := b.store.EventStatus(context.Background())
	if err != nil || st.Pending != 0 || st.Dead != 0 {
		t.Fatalf("ledger %+v %v: every event must end applied or no-op", st, err)
	}
}

// A new or lost database cannot vouch that no issue exists: the first
// event for an already mirrored defect looks for the marker and adopts.
// Once links are rebuilt, keys whose absence is known make no search.
func TestLostStoreLooksBeforeCreating(t *testing.T) {
	b := setup(t)
	ts := time.Now()
	b.openDefect(1, "one", ts)
	b.openDefect(2, "two", ts)
	b.drain()
	b.restart(true) // the database is gone; the tracker still holds both issues
	b.qase.set(1, map[string]any{"title": "one, edited", "status": "open"})
	b.deliver("defect.updated", 1, ts.Add(time.Second), nil)
	b.drain()
	if got := b.oneIssue(1).Title; got != "[QA-1] one, edited" {
		t.Fatalf("title %q: the adopted issue must be updated", got)
	}
	if l := b.link(1); l.Issue.ID != b.oneIssue(1).Ref.ID {
		t.Fatalf("link %+v does not point at the existing issue", l.Issue)
	}
	time.Sleep(b.opts.LateCommit) // until then, no listing can vouch
	n, err := b.engine.RebuildLinks(context.Background(), nil)
	if err != nil || n != 1 || !b.cov.Covered(route) {
		t.Fatalf("rebuild restored %d links (%v), want 1 (defect 2), and covers the route", n, err)
	}
	finds := b.tracker.reads["find"]
	b.openDefect(3, "three", ts)
	b.drain()
	b.oneIssue(3)
	if b.tracker.reads["find"] != finds {
		t.Fatalf("%d searches for a new key on a covered route, want 0", b.tracker.reads["find"]-finds)
	}
}

// Two processes on one store (the service and a CLI reconcile), both
// reconciling and working the queue: one issue per key.
func TestConcurrentReconcilesFileOneIssuePerKey(t *testing.T) {
	b := setup(t)
	for id := int64(1); id <= 18; id++ {
		b.qase.set(id, map[string]any{"title": fmt.Sprint("d", id), "status": "open"})
	}
	o := b.opts
	o.Store, o.Trackers, o.Owner, o.Coverage = b.store, map[string]qsync.Tracker{"mem": b.tracker}, "cli", b.cov
	cli := qsync.NewEngine(o)
	b.tracker.fault = func(op string) fault {
		if op == "create" {
			return faultSlow
		}
		return faultNone
	}
	b.tracker.slow = 20 * time.Millisecond
	var wg gosync.WaitGroup
	for _, e := range []*qsync.Engine{b.engine, cli} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.Reconcile(context.Background(), qsync.ReconcileOptions{}); err != nil {
				t.Error(err)
			}
			if err := e.ProcessUntilIdle(context.Background(), nil); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	b.drain()
	for id := int64(1); id <= 18; id++ {
		b.oneIssue(id)
	}
}

// A job's lease is renewed while it waits on a slow tracker, so no other
// worker takes the key; and a worker that lost its lease writes nothing.
func TestLeaseRenewedWhileTrackerIsSlow(t *testing.T) {
	// The call outlasts the lease three times over; the late-commit window
	// covers it, as worker.late_commit covers the client's timeout.
	b := setup(t, func(o *qsync.EngineOptions) { o.Lease = 300 * time.Millisecond; o.LateCommit = 3 * time.Second })
	b.tracker.slow = time.Second
	b.tracker.fault = func(op string) fault {
		if op == "create" {
			return faultSlow
		}
		return faultNone
	}
	b.openDefect(1, "slow", time.Now())
	o := b.opts
	o.Store, o.Trackers, o.Owner, o.Coverage = b.store, map[string]qsync.Tracker{"mem": b.tracker}, "other", b.cov
	other := qsync.NewEngine(o)
	ctx, cancel := context.WithCancel(context.Background())
	var wg gosync.WaitGroup
	for _, e := range []*qsync.Engine{b.engine, other} {
		wg.Add(1)
		go func() { defer wg.Done(); e.Run(ctx) }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n, _ := b.store.QueueDepth(context.Background()); n == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	b.oneIssue(1)
	if c, f := b.tracker.writes["create"], b.tracker.reads["find"]; c != 1 || f != 0 {
		t.Fatalf("%d create calls and %d marker searches, want 1 and 0: the key was taken over while its lease should have been renewed", c, f)
	}
	led, err := b.store.Ledger(context.Background(), key(1), 10)
	if err != nil || len(led) != 1 || led[0].Outcome != qsync.OutcomeApplied {
		t.Fatalf("ledger %+v %v: want one applied entry", led, err)
	}
}

// starvedTracker's creates wait for a rate token that never comes: the
// request limiter tells the paced call so (NoteRateWaitCut) and the SDK
// answers with the bare context error, as go-github does.
type starvedTracker struct{ qsync.Tracker }

func (s starvedTracker) Create(ctx context.Context, _ qsync.IssueSpec, _ qsync.Marker) (qsync.Issue, error) {
	<-ctx.Done()
	qsync.NoteRateWaitCut(ctx)
	return qsync.Issue{}, ctx.Err()
}

// Waiting for rate tokens is not a failed attempt.
func TestRateLimitWaitIsNotChargedAsAttempt(t *testing.T) {
	// The job's time runs out while its create waits for a rate token,
	// well after the reads before the create.
	b := setup(t, func(o *qsync.EngineOptions) { o.JobTimeout = 300 * time.Millisecond; o.MaxAttempts = 2 })
	o := b.opts
	o.Store, o.Coverage, o.Trackers = b.store, b.cov, map[string]qsync.Tracker{"mem": qsync.Paced(starvedTracker{b.tracker}, qsync.PaceOptions{})}
	e := qsync.NewEngine(o)
	b.openDefect(1, "x", time.Now())
	for range 4 {
		jobs, err := b.store.Lease(context.Background(), "w", 1, time.Now().Add(time.Hour), time.Minute)
		if err != nil || len(jobs) != 1 {
			t.Fatalf("lease: %v %v", jobs, err)
		}
		e.Process(context.Background(), jobs[0])
	}
	jobs, _ := b.store.Lease(context.Background(), "w", 1, time.Now().Add(time.Hour), time.Minute)
	if len(jobs) != 1 || jobs[0].Attempts != 0 {
		t.Fatalf("job %+v: four rate-limit waits must not count as attempts (nor dead-letter)", jobs)
	}
	if dl, _ := b.store.DeadLetters(context.Background(), 10); len(dl) != 0 {
		t.Fatalf("dead letters %+v", dl)
	}
}

// A create whose answer is lost and whose commit lands after the client
// gave up: nothing is created again before a search that would see it.
func TestLateCommitGivesNoSecondIssue(t *testing.T) {
	for _, f := range []fault{faultLate, faultAfter} {
		t.Run(fmt.Sprint("fault", f), func(t *testing.T) {
			b := setup(t)
			b.tracker.late = 100 * time.Millisecond // inside the 150ms window
			b.tracker.fault = firstCreate(f)
			b.openDefect(1, "late", time.Now())
			b.drain()
			is := b.oneIssue(1)
			if l := b.link(1); l.State != qsync.LinkLinked || l.Issue.ID != is.Ref.ID {
				t.Fatalf("link %+v, want linked to %s", l, is.Ref.ID)
			}
		})
	}
}

// A refused create (429) certainly did not happen: the retry creates at
// once, without waiting out the late-commit window.
func TestRefusedCreateRetriesAtOnce(t *testing.T) {
	b := setup(t, func(o *qsync.EngineOptions) { o.LateCommit = time.Hour })
	b.tracker.fault = firstCreate(faultRefuse)
	b.openDefect(1, "x", time.Now())
	b.drain()
	b.oneIssue(1)
}

// An issue adopted after an ambiguous create gets the whole marker, as a
// create would give it, so a rebuild after a lost database finds it.
func TestAdoptedIssueIsMarked(t *testing.T) {
	b := setup(t)
	b.tracker.noProperty.Store(true) // the create stores labels but not the property
	b.tracker.fault = firstCreate(faultAfter)
	for id := int64(1); id <= 3; id++ {
		b.openDefect(id, "x", time.Now())
	}
	b.drain()
	b.tracker.noProperty.Store(false)
	b.restart(true)
	n, err := b.engine.RebuildLinks(context.Background(), nil)
	if err != nil || n != 3 {
		t.Fatalf("rebuild restored %d of 3 links (%v)", n, err)
	}
	b.reconcile()
	for id := int64(1); id <= 3; id++ {
		b.oneIssue(id)
	}
}

// Closing a duplicate keeps the marker labels on the issue kept.
func TestDuplicateCleanupKeepsMarkerLabels(t *testing.T) {
	b := setup(t)
	b.openDefect(1, "dup", time.Now())
	b.drain()
	// A second copy, filed by an older version after a lost database; the
	// link points at it.
	b.restart(true)
	b.cov = qsync.NewCoverage(time.Now().Add(-time.Hour), 0) // wrongly trusting the empty store
	b.build()
	b.cov.Cover(route, time.Now())
	b.deliver("defect.updated", 1, time.Now(), nil)
	b.drain()
	if got := len(b.tracker.issuesOf(key(1))); got != 2 {
		t.Fatalf("setup: %d issues, want 2", got)
	}
	b.reconcile()
	m := qsync.MarkerFor(key(1))
	var open []memIssue
	for _, is := range b.tracker.issuesOf(key(1)) {
		if is.Status != "Done" {
			open = append(open, is)
		}
	}
	if len(open) != 1 {
		t.Fatalf("%d open issues after cleanup, want 1", len(open))
	}
	kept := open[0]
	if kept.Ref.ID != "1" || !slices.Contains(kept.Labels, m.Label) || !slices.Contains(kept.Labels, qsync.DefaultSharedLabel) {
		t.Fatalf("kept issue %s labels %v: the oldest must stay, with its marker labels", kept.Ref.ID, kept.Labels)
	}
	if b.link(1).Issue.ID != "1" {
		t.Fatalf("link points at %s, want the kept issue", b.link(1).Issue.ID)
	}
	b.wantConverged()
}

// A status the workflow cannot reach moves nothing, is reported once and
// is not tried again on every pass.
func TestUnreachableStatusReportedOnce(t *testing.T) {
	b := setup(t)
	b.openDefect(1, "x", time.Now())
	b.drain()
	is := b.oneIssue(1)
	b.tracker.mu.Lock()
	b.tracker.byID(is.Ref.ID).Status = "Won't Do" // a person closed it
	b.tracker.unreachable["Won't Do>To Do"] = true
	b.tracker.mu.Unlock()
	b.reconcile()
	led, _ := b.store.Ledger(context.Background(), key(1), 1)
	if len(led) != 1 || !strings.Contains(led[0].Detail, "unreachable") || led[0].Outcome == qsync.OutcomeDead {
		t.Fatalf("ledger %+v: want one non-dead entry that reports the unreachable status", led)
	}
	w := b.tracker.writes["set_status"]
	b.reconcile()
	b.reconcile()
	if b.tracker.writes["set_status"] != w {
		t.Fatalf("%d more transition attempts, want 0", b.tracker.writes["set_status"]-w)
	}
	if got := b.oneIssue(1); got.Status != "Won't Do" || len(got.history) != 1 {
		t.Fatalf("status %q history %v: nothing may move", got.Status, got.history)
	}
	if dl, _ := b.store.DeadLetters(context.Background(), 10); len(dl) != 0 {
		t.Fatalf("dead letters %+v", dl)
	}
}

// After a lost database, a defect deleted in Qase is known only as gone:
// its issue is closed, but its title and text stay as they are.
func TestLostStoreNeverWritesPlaceholders(t *testing.T) {
	b := setup(t)
	b.openDefect(7, "Defect 7 renamed", time.Now())
	b.drain()
	b.restart(true)
	b.qase.set(7, nil) // deleted in Qase; the webhook was lost
	b.reconcile()
	is := b.oneIssue(7)
	if is.Title != "[QA-7] Defect 7 renamed" {
		t.Fatalf("title %q: a field computed from data the service lacks was written", is.Title)
	}
	if is.Status != "Done" || is.comments[route+":deleted"] == "" {
		t.Fatalf("status %q comments %v: the deletion itself is known and must be applied", is.Status, is.comments)
	}
}

// The dry run (plan, reconcile --dry-run) plans exactly what a sync then
// executes, for each kind of decision.
func TestDryRunPlansWhatSyncExecutes(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	cases := []struct {
		name    string
		prepare func()
		id      int64
		verify  bool
	}{
		{"create", func() { b.openDefect(1, "new", time.Now()) }, 1, false},
		{"update", func() {
			b.qase.set(1, map[string]any{"title": "renamed", "status": "open"})
		}, 1, false},
		{"resolve", func() { b.qase.set(1, map[string]any{"title": "renamed", "status": "resolved"}) }, 1, false},
		{"drift and a lost marker", func() {
			b.tracker.mu.Lock()
			is := b.tracker.byID(b.link(1).Issue.ID)
			is.Title, is.property = "a person's title", ""
			b.tracker.mu.Unlock()
		}, 1, true},
		{"deleted issue", func() {
			b.tracker.mu.Lock()
			b.tracker.issues = nil
			b.tracker.mu.Unlock()
			b.qase.set(1, map[string]any{"title": "renamed", "status": "open"})
		}, 1, true},
		{"lost store, adopt", func() { b.restart(true) }, 1, false},
	}
	for _, c := range cases {
		c.prepare()
		plan, err := b.engine.Sync(ctx, key(c.id), qsync.SyncOptions{Verify: c.verify, DryRun: true})
		if err != nil {
			t.Fatalf("%s: dry run: %v", c.name, err)
		}
		done, err := b.engine.Sync(ctx, key(c.id), qsync.SyncOptions{Verify: c.verify})
		if err != nil {
			t.Fatalf("%s: sync: %v", c.name, err)
		}
		if len(plan.Plan.Ops) == 0 {
			t.Fatalf("%s: nothing planned; the case tests nothing", c.name)
		}
		if p, d := opStrings(plan.Plan.Ops), opStrings(done.Ops); p != d {
			t.Errorf("%s: planned %q, executed %q", c.name, p, d)
		}
	}
}

func opStrings(ops []qsync.Op) string {
	var s []string
	for _, op := range ops {
		if op.Cond != "" {
			continue // decided by the tracker's answer at run time
		}
		s = append(s, op.String())
	}
	return strings.Join(s, " ")
}

var _ = errors.New

// giveWayMetrics records what the dispatcher held back.
type giveWayMetrics struct {
	qsync.NopMetrics
	mu    gosync.Mutex
	holds []time.Duration
}

func (m *giveWayMetrics) GaveWay(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.holds = append(m.holds, d)
}

// While acknowledgements are behind, every job is held back, for a bounded
// time: however long it lasts, the queue still drains.
func TestWorkersGiveWayWhileAcknowledgementsAreBehind(t *testing.T) {
	var asked atomic.Int64
	m := &giveWayMetrics{}
	b := setup(t, func(o *qsync.EngineOptions) {
		o.Behind = func() bool { asked.Add(1); return true } // never catches up
		o.Sleep = func(ctx context.Context, d time.Duration) error { time.Sleep(d); return ctx.Err() }
		o.Metrics = m
	})
	const n = 6
	for id := int64(1); id <= n; id++ {
		b.openDefect(id, fmt.Sprint("d", id), time.Now())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.engine.Run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if q, _ := b.store.QueueDepth(context.Background()); q == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the queue did not drain while acknowledgements stayed behind: workers starved")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	for id := int64(1); id <= n; id++ {
		b.oneIssue(id)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.holds) < n {
		t.Fatalf("%d jobs held back, want every one of %d (asked %d times)", len(m.holds), n, asked.Load())
	}
	for _, d := range m.holds {
		// 25 ticks of 2 ms: at least 50 ms, and bounded (timers run late on
		// a loaded machine, hence the margin).
		if d < 50*time.Millisecond || d > 5*time.Second {
			t.Fatalf("a job held back %v, want 50ms (bounded)", d)
		}
	}
}
