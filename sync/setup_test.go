package sync_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/qase-sync/qase-sync/adapters/store/sqlite"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// A service test bundle: the real engine, inbox and SQLite store, with
// stateful in-memory stand-ins for the tracker and the Qase API that can
// inject the faults that break naive sync services.

const (
	route   = "defects"
	project = "QA"
)

// fault is what a tracker call does instead of succeeding plainly.
type fault int

const (
	faultNone   fault = iota
	faultRefuse       // refused before doing anything (429): certainly not applied
	faultAfter        // done, then the answer is lost (502 after commit)
	faultLate         // the client times out; the write commits later
	faultSlow         // succeeds after a delay
)

type memIssue struct {
	qsync.Issue
	property string            // where the full marker id lives (Jira's entity property)
	comments map[string]string // stamped comments by id
	history  []string          // statuses, in order
}

// memTracker is a stateful tracker: a workflow with unreachable edges,
// a marker made of labels plus a property, and injected faults.
type memTracker struct {
	mu          gosync.Mutex
	issues      []*memIssue
	next        int
	writes      map[string]int
	reads       map[string]int
	fault       func(op string) fault // nil: none
	late        time.Duration         // how long after its lost answer a late write commits
	slow        time.Duration
	unreachable map[string]bool // "From>To" edges the workflow lacks
	noProperty  atomic.Bool     // creates fail to store the property (best effort, as Jira's PUT)
	updMarkers  []qsync.Marker  // the marker each update named
	pending     gosync.WaitGroup
}

func newMemTracker() *memTracker {
	return &memTracker{writes: map[string]int{}, reads: map[string]int{}, unreachable: map[string]bool{}, late: 60 * time.Millisecond, slow: 300 * time.Millisecond}
}

// firstCreate is a fault plan: the first create meets f, every other call
// succeeds.
func firstCreate(f fault) func(op string) fault {
	var done atomic.Bool
	return func(op string) fault {
		if op == "create" && done.CompareAndSwap(false, true) {
			return f
		}
		return faultNone
	}
}

var errTimeout = errors.New("context deadline exceeded (Client.Timeout exceeded while awaiting headers)")

// call applies the fault for op: do runs the write (nil for reads).
func (t *memTracker) call(op string, do func()) error {
	f := faultNone
	if t.fault != nil {
		f = t.fault(op)
	}
	switch f {
	case faultRefuse:
		return qsync.NotApplied(qsync.RetryAfter(fmt.Errorf("%s: 429 too many requests", op), time.Millisecond))
	case faultAfter:
		t.locked(do)
		return fmt.Errorf("%s: 502 bad gateway (after commit)", op)
	case faultLate:
		t.pending.Add(1)
		go func() {
			defer t.pending.Done()
			time.Sleep(t.late)
			t.locked(do)
		}()
		return fmt.Errorf("%s: %w", op, errTimeout)
	case faultSlow:
		time.Sleep(t.slow)
	}
	t.locked(do)
	return nil
}

func (t *memTracker) locked(do func()) {
	if do == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	do()
}

func (t *memTracker) count(m map[string]int, op string) {
	t.mu.Lock()
	m[op]++
	t.mu.Unlock()
}

// view is the issue as the tracker reports it: MarkerID only when the
// property and both labels are there.
func (is *memIssue) view() qsync.Issue {
	v := is.Issue
	v.Labels = slices.Clone(is.Labels)
	v.CommentIDs = slices.Sorted(maps.Keys(is.comments))
	v.MarkerID = ""
	if k, ok := qsync.ParseMarkerID(is.property); ok {
		m := qsync.MarkerFor(k)
		if slices.Contains(is.Labels, m.Label) && slices.Contains(is.Labels, qsync.DefaultSharedLabel) {
			v.MarkerID = m.ID
		}
	}
	return v
}

func (t *memTracker) byID(id string) *memIssue {
	for _, is := range t.issues {
		if is.Ref.ID == id {
			return is
		}
	}
	return nil
}

func (t *memTracker) Create(_ context.Context, spec qsync.IssueSpec, m qsync.Marker) (qsync.Issue, error) {
	t.count(t.writes, "create")
	var out qsync.Issue
	err := t.call("create", func() {
		t.next++
		id := strconv.Itoa(t.next)
		is := &memIssue{Issue: qsync.Issue{Ref: qsync.IssueRef{Project: spec.Project, ID: id, Key: spec.Project + "-" + id},
			IssueFields: qsync.IssueFields{Title: spec.Title, Body: spec.Body, Priority: spec.Priority, Status: "To Do"}, CreatedAt: time.Now()},
			comments: map[string]string{}, history: []string{"To Do"}}
		is.Labels = append(slices.Clone(spec.Labels), qsync.DefaultSharedLabel, m.Label)
		if !t.noProperty.Load() {
			is.property = m.ID
		}
		t.issues = append(t.issues, is)
		out = is.view()
	})
	t.mu.Lock() // a late commit writes out under the lock, after we answered
	defer t.mu.Unlock()
	return out, err
}

func (t *memTracker) Find(_ context.Context, _ string, m qsync.Marker, _ time.Time) ([]qsync.Issue, error) {
	return t.labelled("find", m.Label)
}

// labelled is a read (op) of the issues carrying label.
func (t *memTracker) labelled(op, label string) ([]qsync.Issue, error) {
	t.count(t.reads, op)
	if err := t.call(op, nil); err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []qsync.Issue
	for _, is := range t.issues {
		if slices.Contains(is.Labels, label) {
			out = append(out, is.view())
		}
	}
	return out, nil
}

func (t *memTracker) Get(_ context.Context, ref qsync.IssueRef) (qsync.Issue, error) {
	t.count(t.reads, "get")
	if err := t.call("get", nil); err != nil {
		return qsync.Issue{}, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	is := t.byID(ref.ID)
	if is == nil {
		return qsync.Issue{}, qsync.ErrNotFound
	}
	return is.view(), nil
}

func (t *memTracker) write(op string, ref qsync.IssueRef, fn func(is *memIssue) error) error {
	t.count(t.writes, op)
	var ferr error
	err := t.call(op, func() {
		is := t.byID(ref.ID)
		if is == nil {
			ferr = qsync.Permanent(qsync.ErrNotFound)
			return
		}
		ferr = fn(is)
	})
	t.mu.Lock() // a late commit sets ferr under the lock, after we answered
	defer t.mu.Unlock()
	if ferr != nil && err == nil {
		return ferr
	}
	return err
}

func (t *memTracker) Update(_ context.Context, ref qsync.IssueRef, u qsync.Update) error {
	return t.write("update", ref, func(is *memIssue) error {
		t.updMarkers = append(t.updMarkers, u.Marker)
		u.ApplyTo(&is.IssueFields)
		return nil
	})
}

func (t *memTracker) SetStatus(_ context.Context, ref qsync.IssueRef, status, reason string) error {
	return t.write("set_status", ref, func(is *memIssue) error {
		if strings.EqualFold(is.Status, status) {
			return nil
		}
		if t.unreachable[is.Status+">"+status] {
			return qsync.Permanent(&qsync.UnreachableError{From: is.Status, To: status, Detail: "available transitions: none"})
		}
		is.Status, is.Reason = status, reason
		is.history = append(is.history, status)
		return nil
	})
}

func (t *memTracker) AddComment(_ context.Context, ref qsync.IssueRef, c qsync.Comment) error {
	return t.write("comment", ref, func(is *memIssue) error {
		is.comments[c.ID] = c.Body
		return nil
	})
}

func (t *memTracker) HasComment(_ context.Context, ref qsync.IssueRef, id string) (bool, error) {
	t.count(t.reads, "has_comment")
	t.mu.Lock()
	defer t.mu.Unlock()
	is := t.byID(ref.ID)
	if is == nil {
		return false, qsync.ErrNotFound
	}
	_, ok := is.comments[id]
	return ok, nil
}

func (t *memTracker) List(_ context.Context, _ string) ([]qsync.Issue, error) {
	return t.labelled("list", qsync.DefaultSharedLabel)
}

func (t *memTracker) Mark(_ context.Context, ref qsync.IssueRef, m qsync.Marker) error {
	return t.write("mark", ref, func(is *memIssue) error {
		is.Labels = qsync.EditLabels(is.Labels, []string{qsync.DefaultSharedLabel, m.Label}, nil)
		is.property = m.ID
		return nil
	})
}

// snapshot copies the issues (after late writes have landed).
func (t *memTracker) snapshot() []memIssue {
	t.pending.Wait()
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]memIssue, len(t.issues))
	for i, is := range t.issues {
		out[i] = *is
		out[i].Labels = slices.Clone(is.Labels)
		out[i].comments = maps.Clone(is.comments)
	}
	return out
}

func (t *memTracker) totalWrites() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, v := range t.writes {
		n += v
	}
	return n
}

// issuesOf returns the issues carrying k's marker label.
func (t *memTracker) issuesOf(k qsync.Key) []memIssue {
	var out []memIssue
	for _, is := range t.snapshot() {
		if slices.Contains(is.Labels, qsync.MarkerFor(k).Label) {
			out = append(out, is)
		}
	}
	return out
}

// memQase is the Qase API: defects by id, found or gone.
type memQase struct {
	mu      gosync.Mutex
	defects map[int64]map[string]any
	reads   atomic.Int64
}

func (q *memQase) set(id int64, attrs map[string]any) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.defects == nil {
		q.defects = map[int64]map[string]any{}
	}
	if attrs == nil {
		delete(q.defects, id)
		return
	}
	q.defects[id] = maps.Clone(attrs)
}

func (q *memQase) Fetch(_ context.Context, ref qsync.EntityRef) (map[string]any, bool, error) {
	q.reads.Add(1)
	q.mu.Lock()
	defer q.mu.Unlock()
	a, ok := q.defects[ref.ID]
	return maps.Clone(a), ok, nil
}

func (q *memQase) List(_ context.Context, p string, kind qsync.Kind, fn func(qsync.EntityRef, map[string]any) error) error {
	return q.read(p, kind, nil, fn)
}

// read is one Qase read: fn is called, in id order, with a copy of each
// defect keep selects (nil: all), chosen under the lock.
func (q *memQase) read(p string, kind qsync.Kind, keep func(map[string]any) bool, fn func(qsync.EntityRef, map[string]any) error) error {
	q.reads.Add(1)
	q.mu.Lock()
	var ids []int64
	for id, a := range q.defects {
		if keep == nil || keep(a) {
			ids = append(ids, id)
		}
	}
	all := maps.Clone(q.defects)
	q.mu.Unlock()
	slices.Sort(ids)
	for _, id := range ids {
		if err := fn(qsync.EntityRef{Project: p, Kind: kind, ID: id}, maps.Clone(all[id])); err != nil {
			return err
		}
	}
	return nil
}

// memMapper is one route, defects of QA to the mem tracker:
// "[QA-id] title", To Do while open, Done when resolved or deleted, a
// comment on deletion.
type memMapper struct{}

func (memMapper) Routes(name, p string, kind qsync.Kind) []string {
	if kind == qsync.KindDefect && p == project {
		return []string{route}
	}
	return nil
}

func (memMapper) RouteInfo(name string) (qsync.RouteInfo, bool) {
	return qsync.RouteInfo{Name: route, Kind: qsync.KindDefect, Tracker: "mem", Projects: []string{project}, Project: project}, name == route
}

func (memMapper) RouteNames() []string { return []string{route} }

func (memMapper) Desired(_ string, e qsync.Entity) (qsync.Desired, error) {
	d := qsync.Desired{Route: route, Tracker: "mem"}
	title, ok := e.Attrs["title"].(string)
	if !ok {
		title = "Qase defect"
		if !e.Complete {
			d.Unknown = append(d.Unknown, "title")
		}
	}
	status, _ := e.Attrs["status"].(string)
	st := "To Do"
	switch {
	case e.Deleted || status == "resolved":
		st = "Done"
	case status == "" && !e.Complete:
		d.Unknown = append(d.Unknown, "status")
	}
	d.Create = !e.Deleted && status != "resolved"
	d.Spec = qsync.IssueSpec{Project: project, IssueFields: qsync.IssueFields{Title: fmt.Sprintf("[%s-%d] %s", project, e.Ref.ID, title), Labels: []string{"qase"}, Status: st}}
	if e.Deleted {
		d.Spec.Comments = []qsync.Comment{{ID: route + ":deleted", Body: "deleted in Qase"}}
	}
	return d, nil
}

// bundle is one service under test.
type bundle struct {
	t       testing.TB
	dir     string
	store   *sqlite.Store
	tracker *memTracker
	qase    *memQase
	cov     *qsync.Coverage
	engine  *qsync.Engine
	inbox   *qsync.Inbox
	opts    qsync.EngineOptions
	stop    context.CancelFunc
	log     *logrus.Entry
	// as, when set, is how the engine sees the tracker (an optional
	// capability added).
	as func(*memTracker) qsync.Tracker
	// wrap, when set, is how the engine and inbox see the store.
	wrap func(qsync.Store) qsync.Store
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	if os.Getenv("QASE_SYNC_TEST_LOG") != "" {
		l.SetOutput(os.Stderr)
		l.SetLevel(logrus.DebugLevel)
	}
	return logrus.NewEntry(l)
}

// setup opens a bundle over a fresh SQLite file; edit adjusts the
// engine's options (defaults: fast backoff, short leases, a 150ms
// late-commit window).
func setup(t testing.TB, edit ...func(*qsync.EngineOptions)) *bundle {
	t.Helper()
	b := &bundle{t: t, dir: t.TempDir(), tracker: newMemTracker(), qase: &memQase{}, log: quietLog()}
	b.opts = qsync.EngineOptions{
		Mapper: memMapper{}, Source: b.qase, Logger: b.log, Concurrency: 4,
		Lease: 300 * time.Millisecond, LateCommit: 150 * time.Millisecond, MaxAttempts: 50,
		BackoffBase: time.Millisecond, BackoffMax: 20 * time.Millisecond, Poll: 5 * time.Millisecond,
		Sleep: func(ctx context.Context, d time.Duration) error { return nil },
	}
	for _, f := range edit {
		f(&b.opts)
	}
	b.open(false)
	t.Cleanup(func() { b.close() })
	return b
}

// warm makes the process one that has run for a while on its store:
// past the late-commit window, with its route listed and linked.
func (b *bundle) warm() {
	b.t.Helper()
	b.cov = qsync.NewCoverage(time.Now().Add(-b.opts.LateCommit), b.opts.LateCommit)
	b.build()
	if _, err := b.engine.RebuildLinks(context.Background(), nil); err != nil {
		b.t.Fatal(err)
	}
	if !b.cov.Covered(route) {
		b.t.Fatal("warm: route not covered")
	}
}

// open opens the store (lost: a new, empty database in its place) and
// builds a new engine and inbox on it, as a restarted process would.
func (b *bundle) open(lost bool) {
	b.t.Helper()
	path := filepath.Join(b.dir, "qase-sync.db")
	if lost {
		for _, suffix := range []string{"", "-wal", "-shm"} {
			_ = os.Remove(path + suffix)
		}
	}
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: path, Synchronous: "normal"})
	if err != nil {
		b.t.Fatal(err)
	}
	b.store = st
	// A process that just started: it cannot vouch for its store before
	// the late-commit window has passed and its routes were listed.
	b.cov = qsync.NewCoverage(time.Now(), b.opts.LateCommit)
	b.build()
	if !lost {
		b.warm()
	}
}

// build makes the engine and inbox over the open store.
func (b *bundle) build() {
	if b.stop != nil {
		b.stop()
	}
	var st qsync.Store = b.store
	if b.wrap != nil {
		st = b.wrap(st)
	}
	o := b.opts
	o.Store, o.Coverage = st, b.cov
	o.Trackers = map[string]qsync.Tracker{"mem": b.tracker}
	if b.as != nil {
		o.Trackers["mem"] = b.as(b.tracker)
	}
	b.engine = qsync.NewEngine(o)
	b.inbox = qsync.NewInbox(qsync.InboxOptions{Store: st, Mapper: memMapper{}, Logger: b.log, Notify: b.engine.Wake, Busy: func() bool { return false }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.inbox.Run(ctx); close(done) }()
	b.stop = func() { cancel(); <-done }
}

func (b *bundle) close() {
	if b.stop != nil {
		b.stop()
		b.stop = nil
	}
	if b.store != nil {
		_ = b.store.Close()
		b.store = nil
	}
}

// restart closes the process and opens it again; lost drops the database.
func (b *bundle) restart(lost bool) {
	b.close()
	b.open(lost)
}

// deliver sends a webhook as Qase would: thin for updated/resolved/deleted
// (only the id), full for created; ts has second precision.
func (b *bundle) deliver(name string, id int64, ts time.Time, attrs map[string]any) qsync.AcceptStatus {
	b.t.Helper()
	ts = ts.Truncate(time.Second)
	body, _ := json.Marshal(map[string]any{"event_name": name, "id": id, "ts": ts.Unix(), "attrs": attrs})
	sum := sha256.Sum256(body)
	ev := qsync.Event{DedupKey: fmt.Sprintf("%s/%d/%x", name, id, sum[:8]), Name: name, Timestamp: ts,
		Ref: qsync.EntityRef{Project: project, Kind: qsync.KindDefect, ID: id}, Patch: qsync.Patch{Attrs: attrs}, Payload: body}
	if name == "defect.deleted" {
		ev.Patch.Deleted = true
	}
	st, err := b.inbox.Accept(context.Background(), ev)
	if err != nil {
		b.t.Fatalf("accept %s %d: %v", name, id, err)
	}
	return st
}

// drain processes jobs until the queue is empty.
func (b *bundle) drain() {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		if err := b.engine.ProcessUntilIdle(ctx, nil); err != nil {
			b.t.Fatalf("processing: %v", err)
		}
		n, err := b.store.QueueDepth(ctx)
		if err != nil {
			b.t.Fatal(err)
		}
		if n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			b.t.Fatalf("queue did not drain: %d jobs left", n)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// reconcile runs a pass and drains it.
func (b *bundle) reconcile() qsync.ReconcileReport {
	b.t.Helper()
	rep, err := b.engine.Reconcile(context.Background(), qsync.ReconcileOptions{})
	if err != nil {
		b.t.Fatalf("reconcile: %v", err)
	}
	b.drain()
	return rep
}

// reconcileWrites runs a pass and returns how many tracker writes it made.
func (b *bundle) reconcileWrites() int {
	b.t.Helper()
	w := b.tracker.totalWrites()
	b.reconcile()
	return b.tracker.totalWrites() - w
}

// wantConverged fails if another reconcile pass writes to the tracker.
func (b *bundle) wantConverged() {
	b.t.Helper()
	if n := b.reconcileWrites(); n != 0 {
		b.t.Fatalf("a pass after convergence wrote %d times", n)
	}
}

func key(id int64) qsync.Key {
	return qsync.Key{Route: route, EntityRef: qsync.EntityRef{Project: project, Kind: qsync.KindDefect, ID: id}}
}

func (b *bundle) link(id int64) qsync.Link {
	b.t.Helper()
	l, ok, err := b.store.Link(context.Background(), key(id))
	if err != nil || !ok {
		b.t.Fatalf("link of %d: found=%v err=%v", id, ok, err)
	}
	return l
}

// openDefect puts an open defect in Qase and delivers its created event.
func (b *bundle) openDefect(id int64, title string, ts time.Time) {
	attrs := map[string]any{"title": title, "status": "open"}
	b.qase.set(id, attrs)
	b.deliver("defect.created", id, ts, attrs)
}

// oneIssue asserts exactly one issue carries k's marker and returns it.
// wantDeletedComment fails unless defect id's one issue has the status and
// carries the comment posted on deletion.
func (b *bundle) wantDeletedComment(id int64, status string) {
	b.t.Helper()
	is := b.oneIssue(id)
	if is.Status != status || is.comments[route+":deleted"] == "" {
		b.t.Fatalf("status %q comments %v", is.Status, is.comments)
	}
}

func (b *bundle) oneIssue(id int64) memIssue {
	b.t.Helper()
	got := b.tracker.issuesOf(key(id))
	if len(got) != 1 {
		b.t.Fatalf("defect %d has %d issues, want exactly 1: %+v", id, len(got), got)
	}
	return got[0]
}
