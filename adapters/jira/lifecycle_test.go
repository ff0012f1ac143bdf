package jira

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/qase-sync/qase-sync/adapters/jira/jirafake"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// calls splits the fake's request log into writes and reads (a search is
// a POST but reads).
func calls(f *jirafake.Server) (writes, reads int) {
	for _, r := range f.Requests() {
		if r.Method == http.MethodGet || strings.HasPrefix(r.Path, "/rest/api/2/search") {
			reads++
		} else {
			writes++
		}
	}
	return writes, reads
}

// TestLifecycleCalls: one issue's lifecycle as the engine drives it —
// create (status To Do wanted: the new issue's status is unknown, so
// SetStatus looks), update the title, resolve with a comment — costs one
// write per desired state: 3 writes and 2 reads. Where the resolving
// transition has no screen the comment is a separate write.
func TestLifecycleCalls(t *testing.T) {
	ctx := context.Background()
	m := marker("defects", 1)
	resolved := qsync.Comment{ID: "resolved", Body: "The defect was resolved in Qase."}
	tests := []struct {
		name                string
		workflow            []jirafake.Transition
		wantWrites          int
		wantReads           int
		wantCommentOnTransn bool
	}{
		{"comment rides on the transition", jirafake.DefaultWorkflow(), 3, 2, true},
		{"transition without a screen: separate comment", []jirafake.Transition{
			{ID: "21", Name: "Done", To: "Done"}, // no screen: neither resolution nor comment
		}, 4, 2, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, f := setup(t, nil)
			f.SetWorkflow("To Do", tc.workflow)
			spec := baseSpec()
			spec.Status = "To Do"

			is := mustCreate(t, tr, spec, m)
			if err := tr.SetStatus(ctx, is.Ref, "To Do", ""); err != nil { // already there: no write
				t.Fatal(err)
			}
			title := "Login fails on Safari 17"
			if err := tr.Update(ctx, is.Ref, qsync.Update{Title: &title}); err != nil {
				t.Fatal(err)
			}
			if err := tr.SetStatusWithComment(ctx, is.Ref, "Done", "Fixed", resolved); err != nil {
				t.Fatal(err)
			}

			for _, r := range f.Requests() {
				t.Logf("%s %s?%s -> %d", r.Method, r.Path, r.Query, r.Status)
			}
			if w, r := calls(f); w != tc.wantWrites || r != tc.wantReads {
				t.Errorf("%d writes and %d reads, want %d and %d", w, r, tc.wantWrites, tc.wantReads)
			}
			var onTransition bool
			for _, r := range f.Requests() {
				if r.Method == http.MethodPost && strings.HasSuffix(r.Path, "/transitions") && strings.Contains(r.Body, `"comment":[{"add"`) {
					onTransition = true
				}
			}
			if onTransition != tc.wantCommentOnTransn {
				t.Errorf("comment on the transition request: %v, want %v", onTransition, tc.wantCommentOnTransn)
			}
			st, _ := f.Issue(is.Ref.ID)
			if st.Status != "Done" || st.Summary != title || len(st.Comments) != 1 {
				t.Fatalf("issue = %q / %q with %d comments", st.Status, st.Summary, len(st.Comments))
			}
			if id, ok := commentStamp(st.Comments[0].Body); !ok || id != resolved.ID {
				t.Errorf("comment %q is not stamped %q", st.Comments[0].Body, resolved.ID)
			}
			if has, err := tr.HasComment(ctx, is.Ref, resolved.ID); err != nil || !has {
				t.Errorf("HasComment = %v, %v", has, err)
			}
		})
	}
}

// TestSetStatusWithCommentEdges: already in the status, the comment is
// posted alone; an unreachable status writes nothing at all.
func TestSetStatusWithCommentEdges(t *testing.T) {
	ctx := context.Background()
	c := qsync.Comment{ID: "c1", Body: "hi"}
	t.Run("already there", func(t *testing.T) {
		tr, f := setup(t, nil)
		is := mustCreate(t, tr, baseSpec(), marker("defects", 1))
		f.ResetRequests()
		if err := tr.SetStatusWithComment(ctx, is.Ref, "to do", "", c); err != nil {
			t.Fatal(err)
		}
		if n := f.Count("POST", "/rest/api/2/issue/"+is.Ref.ID+"/comment"); n != 1 || f.WriteCount() != 1 {
			t.Errorf("%d comment POSTs, %d writes; want the comment alone", n, f.WriteCount())
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		tr, f := setup(t, nil)
		f.SetWorkflow("To Do", []jirafake.Transition{{ID: "11", Name: "Start", From: []string{"To Do"}, To: "In Progress"}})
		is := mustCreate(t, tr, baseSpec(), marker("defects", 1))
		f.ResetRequests()
		err := tr.SetStatusWithComment(ctx, is.Ref, "Done", "", c)
		var ue *qsync.UnreachableError
		if !qsync.IsPermanent(err) || !errors.As(err, &ue) {
			t.Fatalf("err = %v, want a permanent UnreachableError", err)
		}
		if f.WriteCount() != 0 {
			t.Errorf("%d writes, want none", f.WriteCount())
		}
	})
}
