package dryrun

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/qase-sync/qase-sync/sync"
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
	m := sync.MarkerFor(sync.Key{Route: "r", EntityRef: sync.EntityRef{Project: "P", Kind: sync.KindDefect, ID: 1}})
	first, err := Open("jira", quiet(), nil, path)
	if err != nil {
		t.Fatal(err)
	}
	is, err := first.Create(ctx, sync.IssueSpec{Project: "QA", Title: "t", Labels: []string{"a"}}, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.SetStatus(ctx, is.Ref, "Done", ""); err != nil {
		t.Fatal(err)
	}
	if err := first.AddComment(ctx, is.Ref, sync.Comment{ID: "c1", Body: "hello", At: time.Unix(1, 0).UTC()}); err != nil {
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
	next, _ := again.Create(ctx, sync.IssueSpec{Project: "QA", Title: "u"}, sync.Marker{ID: "other"})
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
