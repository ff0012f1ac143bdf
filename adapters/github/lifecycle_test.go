package github

import (
	"net/http"
	"strings"
	"testing"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// TestLifecycleCalls: one issue's lifecycle as the engine drives it —
// create (open: the create's answer says so, no status call), update the
// title and body (the engine names the marker, so the body keeps its
// stamp without a read), resolve — costs one write per desired state plus
// one for a closing comment: GitHub has no comment on a state change, so
// closing with a comment is a PATCH and a POST.
func TestLifecycleCalls(t *testing.T) {
	tests := []struct {
		name          string
		comment       bool
		named         bool // the update names the marker
		writes, reads int
	}{
		{"resolve with a comment", true, true, 4, 0},
		{"resolve without a comment", false, true, 3, 0},
		{"update without the marker named reads the stamp", false, false, 3, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := setup(t)
			c := ctx(t)
			m := marker(1)
			is, err := h.tr.Create(c, spec("Crash on save"), m)
			if err != nil {
				t.Fatal(err)
			}
			if is.Status != "open" || is.MarkerID != m.ID {
				t.Fatalf("created = %q, marker %q: the answer must tell both", is.Status, is.MarkerID)
			}
			title, body := "Crash on save (Safari)", "Steps:\n1. open in Safari\n2. crash"
			u := qsync.Update{Title: &title, Body: &body}
			if tc.named {
				u.Marker = m
			}
			if err := h.tr.Update(c, is.Ref, u); err != nil {
				t.Fatal(err)
			}
			if err := h.tr.SetStatus(c, is.Ref, "closed", "completed"); err != nil {
				t.Fatal(err)
			}
			if tc.comment {
				if err := h.tr.AddComment(c, is.Ref, qsync.Comment{ID: "resolved", Body: "Resolved in Qase."}); err != nil {
					t.Fatal(err)
				}
			}
			reqs := h.fake.Requests()
			reads := 0
			for _, r := range reqs {
				t.Logf("%s %s -> %d", r.Method, r.Path, r.Status)
				if r.Method == http.MethodGet {
					reads++
				}
			}
			if w := h.fake.WriteCount(); w != tc.writes || reads != tc.reads {
				t.Errorf("%d writes and %d reads, want %d and %d", w, reads, tc.writes, tc.reads)
			}
			got, err := h.tr.Get(c, is.Ref)
			if err != nil {
				t.Fatal(err)
			}
			if got.Title != title || got.Body != body || got.Status != "closed" || got.Reason != "completed" || got.MarkerID != m.ID {
				t.Errorf("issue = %+v: want the new text, closed as completed, the marker intact", got)
			}
			st, _ := h.fake.Issue(repo, 1)
			if !strings.Contains(st.Body, markerComment(m.ID)) {
				t.Errorf("body lost its stamp: %q", st.Body)
			}
		})
	}
}
