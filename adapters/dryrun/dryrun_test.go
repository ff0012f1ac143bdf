package dryrun

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
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
