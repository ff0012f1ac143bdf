package dryrun

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/sirupsen/logrus"

	qsync "github.com/qase-sync/qase-sync/sync"
)

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
