package dryrun

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	qsync "github.com/qase-sync/qase-sync/sync"
)

func quiet() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// A restarted service finds the issues an earlier run filed, as it would
// on a real tracker: reads, comments, marker search and numbering go on.
func TestOpenKeepsIssuesAcrossRestarts(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "qase-sync.dryrun-jira.json")
	m := qsync.MarkerFor(qsync.Key{Route: "r", EntityRef: qsync.EntityRef{Project: "P", Kind: qsync.KindDefect, ID: 1}})
	first, err := Open("jira", quiet(), nil, path)
	if err != nil {
		t.Fatal(err)
	}
	is, err := first.Create(ctx, qsync.IssueSpec{Project: "QA", IssueFields: qsync.IssueFields{Title: "t", Labels: []string{"a"}}}, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.SetStatus(ctx, is.Ref, "Done", ""); err != nil {
		t.Fatal(err)
	}
	if err := first.AddComment(ctx, is.Ref, qsync.Comment{ID: "c1", Body: "hello", At: time.Unix(1, 0).UTC()}); err != nil {
		t.Fatal(err)
	}

	again, err := Open("jira", quiet(), nil, path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := again.Get(ctx, is.Ref)
	if err != nil {
		t.Fatalf("issue forgotten across a restart: %v", err)
	}
	if got.Title != "t" || got.Status != "Done" || got.MarkerID != m.ID {
		t.Errorf("reloaded issue %+v", got)
	}
	if ok, err := again.HasComment(ctx, is.Ref, "c1"); !ok || err != nil {
		t.Errorf("comment forgotten: %v %v", ok, err)
	}
	if found, _ := again.Find(ctx, "QA", m, time.Time{}); len(found) != 1 || found[0].Ref.ID != is.Ref.ID {
		t.Errorf("marker search after restart: %+v", found)
	}
	next, _ := again.Create(ctx, qsync.IssueSpec{Project: "QA", IssueFields: qsync.IssueFields{Title: "u"}}, qsync.Marker{ID: "other"})
	if next.Ref.ID == is.Ref.ID {
		t.Errorf("numbering restarted: %s", next.Ref.ID)
	}

	// Memory only without a file; a corrupt file is an error, not a reset.
	if _, err := New("x", quiet(), nil).Get(ctx, is.Ref); err == nil {
		t.Error("an in-memory tracker knows an issue it never filed")
	}
	_ = os.WriteFile(path, []byte("{"), 0o600)
	if _, err := Open("jira", quiet(), nil, path); err == nil {
		t.Error("a corrupt state file was silently replaced")
	}
}

func newTracker() *Tracker {
	l := logrus.New()
	l.Out = io.Discard
	return New("dry", logrus.NewEntry(l), nil)
}

func TestMark(t *testing.T) {
	ctx := context.Background()
	tr := newTracker()
	m := qsync.MarkerFor(qsync.Key{Route: "bugs", EntityRef: qsync.EntityRef{Project: "QA", Kind: qsync.KindDefect, ID: 1}})

	// An issue a person filed: no marker, not found by it.
	human := tr.Add(qsync.Issue{Ref: qsync.IssueRef{Project: "OPS"}, IssueFields: qsync.IssueFields{Title: "by hand"}})
	if found, _ := tr.Find(ctx, "OPS", m, human.CreatedAt); len(found) != 0 {
		t.Fatalf("unmarked issue found: %+v", found)
	}
	writes := tr.Writes()
	if err := tr.Mark(ctx, human.Ref, m); err != nil {
		t.Fatal(err)
	}
	if tr.Writes() != writes+1 {
		t.Errorf("mark counted %d writes, want 1", tr.Writes()-writes)
	}
	got, err := tr.Get(ctx, human.Ref)
	if err != nil || got.MarkerID != m.ID || got.Title != "by hand" {
		t.Fatalf("get after mark: %+v, %v", got, err)
	}
	found, _ := tr.Find(ctx, "OPS", m, got.CreatedAt)
	list, _ := tr.List(ctx, "OPS")
	if len(found) != 1 || found[0].MarkerID != m.ID || len(list) != 1 || list[0].MarkerID != m.ID {
		t.Fatalf("find %+v, list %+v", found, list)
	}
	// Idempotent: no second write.
	if err := tr.Mark(ctx, human.Ref, m); err != nil || tr.Writes() != writes+1 {
		t.Errorf("second mark: %v, writes %d", err, tr.Writes()-writes)
	}

	// A created issue whose marker a person damaged is found but reports
	// no MarkerID until Mark completes it.
	is, err := tr.Create(ctx, qsync.IssueSpec{Project: "OPS", IssueFields: qsync.IssueFields{Title: "t"}}, m)
	if err != nil || is.MarkerID != m.ID {
		t.Fatalf("create: %+v, %v", is, err)
	}
	tr.Edit(is.Ref.ID, func(i *qsync.Issue) { i.MarkerID = "" })
	found, _ = tr.Find(ctx, "OPS", m, is.CreatedAt)
	if len(found) != 2 || found[1].MarkerID != "" {
		t.Fatalf("find = %+v", found)
	}
	if err := tr.Mark(ctx, is.Ref, m); err != nil {
		t.Fatal(err)
	}
	if got, _ := tr.Get(ctx, is.Ref); got.MarkerID != m.ID {
		t.Errorf("MarkerID = %q", got.MarkerID)
	}

	err = tr.Mark(ctx, qsync.IssueRef{Project: "OPS", ID: "404"}, m)
	if !errors.Is(err, qsync.ErrNotFound) || !qsync.IsPermanent(err) {
		t.Errorf("missing issue: %v", err)
	}
	if err := tr.Mark(ctx, is.Ref, qsync.Marker{}); !qsync.IsPermanent(err) {
		t.Errorf("empty marker: %v", err)
	}
}

// A write costs one journal line, not a rewrite of every issue; the
// journal survives a crash (no Close), a torn last line is ignored, and
// Close folds the journal into the snapshot.
func TestJournal(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "qase-sync.dryrun-jira.json")
	tr, err := Open("jira", quiet(), nil, path)
	if err != nil {
		t.Fatal(err)
	}
	var refs []qsync.IssueRef
	for i := range 50 {
		is, err := tr.Create(ctx, qsync.IssueSpec{Project: "QA", IssueFields: qsync.IssueFields{Title: "t"}}, qsync.Marker{ID: "m" + strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, is.Ref)
	}
	snap, _ := os.Stat(path)
	if err := tr.SetStatus(ctx, refs[7], "Done", "fixed"); err != nil {
		t.Fatal(err)
	}
	tr.Delete(refs[3].ID)
	if after, _ := os.Stat(path); after.Size() != snap.Size() || !after.ModTime().Equal(snap.ModTime()) {
		t.Errorf("a write rewrote the snapshot (%d → %d bytes)", snap.Size(), after.Size())
	}
	j, err := os.ReadFile(journalPath(path))
	if err != nil || len(j) == 0 {
		t.Fatalf("journal: %v (%d bytes)", err, len(j))
	}
	// A crash in the middle of the next line.
	if err := os.WriteFile(journalPath(path), append(j, []byte(`{"next":51,"issue":{"id`)...), 0o600); err != nil {
		t.Fatal(err)
	}

	again, err := Open("jira", quiet(), nil, path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := again.Get(ctx, refs[7]); err != nil || got.Status != "Done" || got.Reason != "fixed" {
		t.Errorf("journaled status lost: %+v %v", got, err)
	}
	if _, err := again.Get(ctx, refs[3]); !errors.Is(err, qsync.ErrNotFound) {
		t.Errorf("journaled delete lost: %v", err)
	}
	if n := len(again.Issues()); n != 49 {
		t.Errorf("%d issues after replay, want 49", n)
	}
	if b, _ := os.ReadFile(journalPath(path)); len(b) != 0 {
		t.Errorf("journal not folded into the snapshot at Open: %d bytes", len(b))
	}
	if err := again.AddComment(ctx, refs[9], qsync.Comment{ID: "c", Body: "b"}); err != nil {
		t.Fatal(err)
	}
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(journalPath(path)); len(b) != 0 {
		t.Errorf("journal not folded at Close: %d bytes", len(b))
	}
	third, err := Open("jira", quiet(), nil, path)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := third.HasComment(ctx, refs[9], "c"); !ok {
		t.Error("comment lost across Close")
	}
	if is, _ := third.Create(ctx, qsync.IssueSpec{Project: "QA"}, qsync.Marker{ID: "new"}); is.Ref.ID != "51" {
		t.Errorf("numbering after replay: %s, want 51", is.Ref.ID)
	}
	// A bad line before the last is corruption, not a torn write.
	_ = os.WriteFile(journalPath(path), []byte("{\n{\"next\":1}\n"), 0o600)
	if _, err := Open("jira", quiet(), nil, path); err == nil {
		t.Error("a corrupt journal was silently skipped")
	}
}

// With a state file, memory holds only the index: every issue is read
// back from the snapshot or the journal, also across compactions (forced
// here by large bodies) and a restart.
func TestIssuesLiveInTheFiles(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "qase-sync.dryrun-jira.json")
	tr, err := Open("jira", quiet(), nil, path)
	if err != nil {
		t.Fatal(err)
	}
	body := func(i int) string { return strings.Repeat("b", 20_000) + strconv.Itoa(i) }
	var refs []qsync.IssueRef
	for i := range 200 { // ~4 MB: the journal is folded several times
		is, err := tr.Create(ctx, qsync.IssueSpec{Project: "QA", IssueFields: qsync.IssueFields{Title: "t" + strconv.Itoa(i), Body: body(i)}}, qsync.Marker{ID: "m" + strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, is.Ref)
		if i%3 == 0 {
			if err := tr.SetStatus(ctx, is.Ref, "Done", strconv.Itoa(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	check := func(tr *Tracker, when string) {
		t.Helper()
		tr.mu.Lock()
		for id, e := range tr.issues {
			if e.mem != nil {
				t.Errorf("%s: issue %s held in memory", when, id)
			}
		}
		tr.mu.Unlock()
		for i, ref := range refs {
			got, err := tr.Get(ctx, ref)
			if err != nil || got.Title != "t"+strconv.Itoa(i) || got.Body != body(i) {
				t.Fatalf("%s: issue %d read back as %q (%d bytes of body), %v", when, i, got.Title, len(got.Body), err)
			}
			if wantDone := i%3 == 0; (got.Status == "Done") != wantDone || (wantDone && got.Reason != strconv.Itoa(i)) {
				t.Errorf("%s: issue %d status %q %q", when, i, got.Status, got.Reason)
			}
		}
		if found, err := tr.Find(ctx, "QA", qsync.Marker{ID: "m42"}, time.Time{}); err != nil || len(found) != 1 || found[0].Ref != refs[42] {
			t.Errorf("%s: Find(m42) = %v, %v", when, found, err)
		}
		if l, err := tr.List(ctx, "QA"); err != nil || len(l) != len(refs) {
			t.Errorf("%s: List = %d issues, %v", when, len(l), err)
		}
	}
	check(tr, "running")
	again, err := Open("jira", quiet(), nil, path) // as after a crash: tr was not closed
	if err != nil {
		t.Fatal(err)
	}
	check(again, "reopened")
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}
	check(again, "after Close")
}

// A state file written whole by an earlier version (one line, no journal)
// is indexed where its issues are.
func TestOpenIndexesAWholeStateFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "qase-sync.dryrun-jira.json")
	st := stateFile{Tracker: "jira", Next: 7, Issues: []savedIssue{
		{Issue: qsync.Issue{Ref: qsync.IssueRef{Project: "QA", ID: "3", Key: "QA-3"}, IssueFields: qsync.IssueFields{Title: `a "quoted" title`, Status: "open"}}, Marker: "m3"},
		{Issue: qsync.Issue{Ref: qsync.IssueRef{Project: "QB", ID: "7", Key: "QB-7"}, IssueFields: qsync.IssueFields{Title: "second", Status: "Done"}}},
	}}
	b, _ := json.Marshal(st)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	tr, err := Open("jira", quiet(), nil, path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tr.Get(ctx, qsync.IssueRef{ID: "3"}); err != nil || got.Title != `a "quoted" title` {
		t.Errorf("issue 3 = %+v, %v", got, err)
	}
	if got, err := tr.Get(ctx, qsync.IssueRef{ID: "7"}); err != nil || got.Status != "Done" {
		t.Errorf("issue 7 = %+v, %v", got, err)
	}
	if found, _ := tr.Find(ctx, "", qsync.Marker{ID: "m3"}, time.Time{}); len(found) != 1 {
		t.Errorf("marker m3 found %d issues", len(found))
	}
	if is, _ := tr.Create(ctx, qsync.IssueSpec{Project: "QA"}, qsync.Marker{ID: "n"}); is.Ref.ID != "8" {
		t.Errorf("next id %s, want 8", is.Ref.ID)
	}
}

// A journal that fails to replay is left as it is, for a person to look
// at: the failed Open folds nothing into the snapshot.
func TestCorruptJournalIsLeftAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qase-sync.dryrun-jira.json")
	tr, err := Open("jira", quiet(), nil, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Create(context.Background(), qsync.IssueSpec{Project: "QA"}, qsync.Marker{ID: "m"}); err != nil {
		t.Fatal(err)
	}
	snap, _ := os.ReadFile(path)
	bad := []byte("{\"next\":1}\nnot json\n{\"next\":1}\n")
	if err := os.WriteFile(journalPath(path), bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open("jira", quiet(), nil, path); err == nil {
		t.Fatal("a corrupt journal was accepted")
	}
	if b, _ := os.ReadFile(journalPath(path)); !bytes.Equal(b, bad) {
		t.Errorf("journal changed by the failed Open: %q", b)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, snap) {
		t.Error("snapshot rewritten by the failed Open")
	}
}
