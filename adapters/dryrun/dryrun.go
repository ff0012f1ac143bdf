// Package dryrun is a tracker that sends nothing: it logs every operation
// it would perform and keeps the resulting issues in memory, so the whole
// engine (links, diffs, comments, reconcile) runs honestly without
// credentials. It is the default tracker of the example configuration.
//
// Opened with a state file (Open), it also keeps its issues across
// restarts, as a real tracker would: the service's store remembers links
// to them, and a restarted demo must find them again.
package dryrun

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// Tracker is an in-memory qsync.Tracker.
type Tracker struct {
	name  string
	log   *logrus.Entry
	clock qsync.Clock

	mu     sync.Mutex
	next   int
	issues map[string]*issue // by id
	writes int

	// Persistence (Open): a snapshot file plus a journal of the issues
	// written since, so that a write costs one issue's encoding, not the
	// whole set's (rewriting every issue per write made a dry-run sync
	// cost O(issues) CPU under the tracker's lock). The journal is folded
	// into the snapshot when it outgrows it, at Open and at Close.
	path         string   // snapshot; "" keeps issues in memory only
	journal      *os.File // opened at the first write after a snapshot
	journalBytes int64
	snapBytes    int64
}

// stateFile is the persisted form of a tracker's issues.
type stateFile struct {
	Tracker string       `json:"tracker"`
	Next    int          `json:"next"`
	Issues  []savedIssue `json:"issues"`
}

type savedIssue struct {
	qsync.Issue
	Marker   string          `json:"marker,omitempty"`
	Comments []qsync.Comment `json:"comments,omitempty"`
}

// journalRecord is one line of the journal: an issue's whole state after
// a write, or its deletion.
type journalRecord struct {
	Next    int         `json:"next"`
	Issue   *savedIssue `json:"issue,omitempty"`
	Deleted string      `json:"deleted,omitempty"`
}

// journalPath is where the writes since the snapshot go, one JSON object
// a line (qase-sync.dryrun-jira.json → qase-sync.dryrun-jira.journal.json).
func journalPath(path string) string { return strings.TrimSuffix(path, ".json") + ".journal.json" }

// Open returns a dry-run tracker whose issues live in the JSON file at
// path (created on the first write) and its journal, loading what an
// earlier run left.
func Open(name string, log *logrus.Entry, clock qsync.Clock, path string) (*Tracker, error) {
	t := New(name, log, clock)
	t.path = path
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("dry-run tracker %s: %w", name, err)
	default:
		var st stateFile
		if err := json.Unmarshal(b, &st); err != nil {
			return nil, fmt.Errorf("dry-run tracker %s: %s: %w (delete it together with the store file to start over)", name, path, err)
		}
		t.next = st.Next
		for _, si := range st.Issues {
			t.load(si)
		}
		t.snapBytes = int64(len(b))
	}
	replayed, err := t.replay()
	if err != nil {
		return nil, fmt.Errorf("dry-run tracker %s: %w (delete it together with the store file to start over)", name, err)
	}
	if replayed > 0 {
		t.compact()
	}
	if len(t.issues) > 0 {
		t.log.WithFields(logrus.Fields{"issues": len(t.issues), "file": path}).Info("dry-run tracker: issues of earlier runs loaded")
	}
	return t, nil
}

func (t *Tracker) load(si savedIssue) {
	is := &issue{Issue: si.Issue, marker: si.Marker, comments: si.Comments}
	t.issues[is.Ref.ID] = is
	if n, err := strconv.Atoi(is.Ref.ID); err == nil && n > t.next {
		t.next = n
	}
}

// replay applies the journal's records; a torn last line (a crash in
// the middle of a write) is ignored, a bad line before it is an error.
func (t *Tracker) replay() (int, error) {
	b, err := os.ReadFile(journalPath(t.path))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	lines := bytes.Split(b, []byte("\n"))
	n := 0
	for i, line := range lines {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var rec journalRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			if i == len(lines)-1 {
				break
			}
			return n, fmt.Errorf("%s line %d: %w", journalPath(t.path), i+1, err)
		}
		t.next = max(t.next, rec.Next)
		switch {
		case rec.Issue != nil:
			t.load(*rec.Issue)
		case rec.Deleted != "":
			delete(t.issues, rec.Deleted)
		}
		n++
	}
	return n, nil
}

// persist records the state of issue id after a write (or its absence):
// one journal line, or a new snapshot when there is none yet or the
// journal has outgrown it. The caller holds mu. A failure is logged: the
// issues stay in memory for this run, as without a file.
func (t *Tracker) persist(id string) {
	if t.path == "" {
		return
	}
	if t.snapBytes == 0 || t.journalBytes > max(1<<20, 2*t.snapBytes) {
		t.compact()
		return
	}
	rec := journalRecord{Next: t.next, Deleted: id}
	if is, ok := t.issues[id]; ok {
		rec = journalRecord{Next: t.next, Issue: &savedIssue{Issue: is.Issue, Marker: is.marker, Comments: is.comments}}
	}
	b, err := json.Marshal(rec)
	if err == nil && t.journal == nil {
		t.journal, err = os.OpenFile(journalPath(t.path), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	}
	if err == nil {
		var n int
		n, err = t.journal.Write(append(b, '\n'))
		t.journalBytes += int64(n)
	}
	if err != nil {
		t.log.WithError(err).Error("dry-run tracker: could not save its issues; they will be forgotten at restart")
	}
}

// compact writes the snapshot (atomically: a temporary file renamed over
// it), then empties the journal. A crash between the two replays records
// the snapshot already holds, which is harmless.
func (t *Tracker) compact() {
	n, err := t.writeSnapshot()
	if err == nil {
		t.snapBytes = n
		if t.journal != nil {
			err = t.journal.Truncate(0)
		} else if rmErr := os.Remove(journalPath(t.path)); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			err = rmErr
		}
		t.journalBytes = 0
	}
	if err != nil {
		t.log.WithError(err).Error("dry-run tracker: could not save its issues; they will be forgotten at restart")
	}
}

// writeSnapshot writes the stateFile form one issue at a time through a
// buffer: encoding the whole set at once held every issue's JSON in
// memory twice, a peak the size of the snapshot at every compaction.
func (t *Tracker) writeSnapshot() (int64, error) {
	tmp := t.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	cw := &countingWriter{w: f}
	w := bufio.NewWriter(cw)
	head, err := json.Marshal(stateFile{Tracker: t.name, Next: t.next})
	if err == nil {
		// {"tracker":…,"next":…,"issues":null} opened up for the list.
		w.Write(bytes.TrimSuffix(head, []byte("null}")))
		w.WriteString("[")
		for i, is := range t.sorted() {
			var b []byte
			if b, err = json.Marshal(savedIssue{Issue: is.Issue, Marker: is.marker, Comments: is.comments}); err != nil {
				break
			}
			if i > 0 {
				w.WriteString(",")
			}
			w.WriteString("\n")
			w.Write(b)
		}
		w.WriteString("\n]}\n")
	}
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, t.path)
	}
	return cw.n, err
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Close folds the journal into the snapshot and closes it. The tracker
// stays usable (a later write reopens the journal).
func (t *Tracker) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.path == "" {
		return nil
	}
	if t.journalBytes > 0 {
		t.compact()
	}
	if t.journal == nil {
		return nil
	}
	err := t.journal.Close()
	t.journal = nil
	return err
}

type issue struct {
	qsync.Issue
	marker   string
	comments []qsync.Comment
}

// New returns an empty dry-run tracker.
func New(name string, log *logrus.Entry, clock qsync.Clock) *Tracker {
	if clock == nil {
		clock = qsync.SystemClock
	}
	return &Tracker{name: name, log: log.WithField("tracker", name), clock: clock, issues: map[string]*issue{}}
}

// logOp records a write: logged as it would be sent, and saved.
func (t *Tracker) logOp(op string, ref qsync.IssueRef, fields logrus.Fields) {
	t.persist(ref.ID)
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
	t.issues[id] = is
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
	var out []qsync.Issue
	for _, is := range t.sorted() {
		if is.marker == m.ID {
			out = append(out, is.Issue)
		}
	}
	return out, nil
}

// List implements qsync.Tracker.
func (t *Tracker) List(_ context.Context, project string) ([]qsync.Issue, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []qsync.Issue
	for _, is := range t.sorted() {
		if is.Ref.Project == project {
			out = append(out, is.Issue)
		}
	}
	return out, nil
}

func (t *Tracker) sorted() []*issue {
	out := make([]*issue, 0, len(t.issues))
	for _, is := range t.issues {
		out = append(out, is)
	}
	sort.Slice(out, func(i, j int) bool {
		a, _ := strconv.Atoi(out[i].Ref.ID)
		b, _ := strconv.Atoi(out[j].Ref.ID)
		return a < b
	})
	return out
}

// Get implements qsync.Tracker.
func (t *Tracker) Get(_ context.Context, ref qsync.IssueRef) (qsync.Issue, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	is, ok := t.issues[ref.ID]
	if !ok {
		return qsync.Issue{}, qsync.ErrNotFound
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

// write runs do on the issue a write is for and logs op with fields when
// do reports a change.
func (t *Tracker) write(ref qsync.IssueRef, op string, fields logrus.Fields, do func(is *issue) (bool, error)) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	is, ok := t.issues[ref.ID]
	if !ok {
		return qsync.Permanent(fmt.Errorf("issue %s: %w", ref, qsync.ErrNotFound))
	}
	changed, err := do(is)
	if changed && err == nil {
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
	is, ok := t.issues[ref.ID]
	if !ok {
		return false, qsync.ErrNotFound
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
	t.issues[id] = &issue{Issue: is}
	return is
}

// Issues returns a copy of every issue (tests, the admin API).
func (t *Tracker) Issues() []qsync.Issue {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []qsync.Issue
	for _, is := range t.sorted() {
		out = append(out, is.Issue)
	}
	return out
}

// Comments returns the comments on an issue.
func (t *Tracker) Comments(id string) []qsync.Comment {
	t.mu.Lock()
	defer t.mu.Unlock()
	if is, ok := t.issues[id]; ok {
		return append([]qsync.Comment(nil), is.comments...)
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
	delete(t.issues, id)
	t.persist(id)
}

// Edit changes an issue the way a person would, bypassing the log.
// Clearing MarkerID leaves the issue findable by its marker but
// incompletely marked, as a person removing part of it would.
func (t *Tracker) Edit(id string, f func(*qsync.Issue)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if is, ok := t.issues[id]; ok {
		f(&is.Issue)
		t.persist(id)
	}
}

var _ qsync.Tracker = (*Tracker)(nil)
