// Package dryrun is a tracker that sends nothing: it logs every operation
// it would perform and keeps the resulting issues, so the whole engine
// (links, diffs, comments, reconcile) runs honestly without credentials.
// It is the default tracker of the example configuration.
//
// Opened with a state file (Open), it keeps its issues in that file and a
// journal beside it, across restarts, as a real tracker would: the
// service's store remembers links to them, and a restarted demo must find
// them again. Memory then holds only an index (see store.go). Without a
// file (New) the issues live in memory.
package dryrun

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// Tracker is a qsync.Tracker that sends nothing.
type Tracker struct {
	name  string
	log   *logrus.Entry
	clock qsync.Clock

	mu     sync.Mutex
	next   int
	issues map[string]*entry // by id
	writes int
	// projects interns project names: every entry of a project shares one.
	projects map[string]string

	// Persistence (Open): a snapshot file plus a journal of the issues
	// written since (see store.go).
	path         string   // snapshot; "" keeps issues in memory only
	snap         *os.File // the snapshot, read by offset
	journal      *os.File // opened at the first write after a snapshot
	journalBytes int64
	snapBytes    int64
}

// Open returns a dry-run tracker whose issues live in the JSON file at
// path (created on the first write) and its journal, loading what an
// earlier run left. Only an index of the issues stays in memory (id,
// project, marker, where the issue's latest state is in the files): a
// long dry run files issues without end, and holding each one (~800
// bytes with its body) was most of the service's live heap.
func Open(name string, log *logrus.Entry, clock qsync.Clock, path string) (*Tracker, error) {
	t := New(name, log, clock)
	t.path = path
	if err := t.loadSnapshot(); err != nil {
		return nil, fmt.Errorf("dry-run tracker %s: %s: %w (delete it together with the store file to start over)", name, path, err)
	}
	replayed, err := t.replay()
	if err != nil {
		_ = t.closeFiles() // not Close: folding a journal read in part would lose the rest
		return nil, fmt.Errorf("dry-run tracker %s: %w (delete it together with the store file to start over)", name, err)
	}
	if replayed {
		t.compact()
	}
	if len(t.issues) > 0 {
		t.log.WithFields(logrus.Fields{"issues": len(t.issues), "file": path}).Info("dry-run tracker: issues of earlier runs loaded")
	}
	return t, nil
}

// issue is an issue's working form while a call reads or changes it.
type issue struct {
	qsync.Issue
	marker   string
	comments []qsync.Comment
}

// New returns an empty dry-run tracker that keeps its issues in memory.
func New(name string, log *logrus.Entry, clock qsync.Clock) *Tracker {
	if clock == nil {
		clock = qsync.SystemClock
	}
	return &Tracker{name: name, log: log.WithField("tracker", name), clock: clock, issues: map[string]*entry{}, projects: map[string]string{}}
}

// logOp records a write: logged as it would be sent, and saved.
func (t *Tracker) logOp(op string, ref qsync.IssueRef, fields logrus.Fields) {
	t.writes++
	// One WithFields: each call copies every field into a new map.
	fields["op"], fields["issue"], fields["dry_run"] = op, ref.String(), true
	t.log.WithFields(fields).Info("would send")
}

// Create implements qsync.Tracker.
func (t *Tracker) Create(_ context.Context, spec qsync.IssueSpec, m qsync.Marker) (qsync.Issue, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.next++
	id := strconv.Itoa(t.next)
	is := &issue{marker: m.ID, Issue: qsync.Issue{
		Ref:         qsync.IssueRef{Project: spec.Project, ID: id, Key: fmt.Sprintf("%s-%s", keyPrefix(spec.Project), id), URL: "dryrun://" + t.name + "/" + id},
		IssueFields: spec.IssueFields.Clone(),
		MarkerID:    m.ID, CreatedAt: t.clock.Now(),
	}}
	is.Status, is.Reason = "open", ""
	t.put(is)
	t.logOp("create", is.Ref, logrus.Fields{"project": spec.Project, "type": spec.Type, "title": spec.Title, "labels": spec.Labels, "priority": spec.Priority, "marker": m.ID})
	return is.Issue, nil
}

func keyPrefix(project string) string {
	p := strings.ToUpper(project)
	if i := strings.LastIndexAny(p, "/"); i >= 0 {
		p = p[i+1:]
	}
	if p == "" {
		return "DRY"
	}
	return p
}

// Find implements qsync.Tracker.
func (t *Tracker) Find(_ context.Context, _ string, m qsync.Marker, _ time.Time) ([]qsync.Issue, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.issuesWhere(func(e *entry) bool { return e.marker == m.ID })
}

// List implements qsync.Tracker.
func (t *Tracker) List(_ context.Context, project string) ([]qsync.Issue, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.issuesWhere(func(e *entry) bool { return e.project == project })
}

// issuesWhere reads the issues whose index entry matches, in id order.
func (t *Tracker) issuesWhere(match func(*entry) bool) ([]qsync.Issue, error) {
	var out []qsync.Issue
	for _, e := range t.sorted() {
		if !match(e) {
			continue
		}
		is, err := t.get(e)
		if err != nil {
			return nil, err
		}
		out = append(out, is.Issue)
	}
	return out, nil
}

func (t *Tracker) sorted() []*entry {
	out := make([]*entry, 0, len(t.issues))
	for _, e := range t.issues {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].num < out[j].num })
	return out
}

// lookup reads issue id; ErrNotFound if there is none.
func (t *Tracker) lookup(id string) (*issue, error) {
	e, ok := t.issues[id]
	if !ok {
		return nil, qsync.ErrNotFound
	}
	return t.get(e)
}

// Get implements qsync.Tracker.
func (t *Tracker) Get(_ context.Context, ref qsync.IssueRef) (qsync.Issue, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	is, err := t.lookup(ref.ID)
	if err != nil {
		return qsync.Issue{}, err
	}
	return is.Issue, nil
}

// Update implements qsync.Tracker.
func (t *Tracker) Update(_ context.Context, ref qsync.IssueRef, u qsync.Update) error {
	return t.write(ref, "update", logrus.Fields{"update": u}, func(is *issue) (bool, error) {
		u.ApplyTo(&is.IssueFields)
		return true, nil
	})
}

// write runs do on the issue a write is for and, when do reports a
// change, saves the issue and logs op with fields.
func (t *Tracker) write(ref qsync.IssueRef, op string, fields logrus.Fields, do func(is *issue) (bool, error)) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	is, err := t.lookup(ref.ID)
	if errors.Is(err, qsync.ErrNotFound) {
		return qsync.Permanent(fmt.Errorf("issue %s: %w", ref, qsync.ErrNotFound))
	}
	if err != nil {
		return err
	}
	changed, err := do(is)
	if changed && err == nil {
		t.put(is)
		t.logOp(op, ref, fields)
	}
	return err
}

// SetStatus implements qsync.Tracker.
func (t *Tracker) SetStatus(_ context.Context, ref qsync.IssueRef, status, reason string) error {
	return t.write(ref, "set_status", logrus.Fields{"status": status, "reason": reason}, func(is *issue) (bool, error) {
		if is.Status == status && is.Reason == reason {
			return false, nil
		}
		is.Status, is.Reason = status, reason
		return true, nil
	})
}

// AddComment implements qsync.Tracker.
func (t *Tracker) AddComment(_ context.Context, ref qsync.IssueRef, c qsync.Comment) error {
	return t.write(ref, "comment", logrus.Fields{"comment_id": c.ID, "body": c.Body}, func(is *issue) (bool, error) {
		is.comments = append(is.comments, c)
		is.CommentIDs = append(is.CommentIDs, c.ID)
		return true, nil
	})
}

// HasComment implements qsync.Tracker.
func (t *Tracker) HasComment(_ context.Context, ref qsync.IssueRef, id string) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	is, err := t.lookup(ref.ID)
	if err != nil {
		return false, err
	}
	for _, c := range is.comments {
		if c.ID == id {
			return true, nil
		}
	}
	return false, nil
}

// Mark implements qsync.Tracker: it stamps m on the issue as Create does
// (the issue is then found by m and reports MarkerID). Marking an issue
// that already carries m completely is no write.
func (t *Tracker) Mark(_ context.Context, ref qsync.IssueRef, m qsync.Marker) error {
	return t.write(ref, "mark", logrus.Fields{"marker": m.ID}, func(is *issue) (bool, error) {
		if m.ID == "" {
			return false, qsync.Permanentf("dry-run mark %s: empty marker", ref)
		}
		if is.marker == m.ID && is.MarkerID == m.ID {
			return false, nil
		}
		is.marker, is.MarkerID = m.ID, m.ID
		return true, nil
	})
}

// Add stores an issue as a person would file it, without a marker (tests
// of adoption); it returns the issue with its ref filled in.
func (t *Tracker) Add(is qsync.Issue) qsync.Issue {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.next++
	id := strconv.Itoa(t.next)
	is.Ref = qsync.IssueRef{Project: is.Ref.Project, ID: id, Key: fmt.Sprintf("%s-%s", keyPrefix(is.Ref.Project), id), URL: "dryrun://" + t.name + "/" + id}
	is.MarkerID = ""
	if is.Status == "" {
		is.Status = "open"
	}
	if is.CreatedAt.IsZero() {
		is.CreatedAt = t.clock.Now()
	}
	t.put(&issue{Issue: is})
	return is
}

// Issues returns a copy of every issue (tests, the admin API).
func (t *Tracker) Issues() []qsync.Issue {
	t.mu.Lock()
	defer t.mu.Unlock()
	out, err := t.issuesWhere(func(*entry) bool { return true })
	if err != nil {
		t.log.WithError(err).Error("dry-run tracker: reading its issues")
	}
	return out
}

// Comments returns the comments on an issue.
func (t *Tracker) Comments(id string) []qsync.Comment {
	t.mu.Lock()
	defer t.mu.Unlock()
	if is, err := t.lookup(id); err == nil {
		return is.comments
	}
	return nil
}

// Writes counts write operations performed.
func (t *Tracker) Writes() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.writes
}

// Delete removes an issue, as a person might (tests of dangling links).
func (t *Tracker) Delete(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.del(id)
}

// Edit changes an issue the way a person would, bypassing the log.
// Clearing MarkerID leaves the issue findable by its marker but
// incompletely marked, as a person removing part of it would.
func (t *Tracker) Edit(id string, f func(*qsync.Issue)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if is, err := t.lookup(id); err == nil {
		f(&is.Issue)
		t.put(is)
	}
}

var _ qsync.Tracker = (*Tracker)(nil)
