package github

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/adapters/github/githubfake"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// TestMarkStampsWhatIsMissing seeds issues marked partly or not at all and
// checks that Mark sends one PATCH with only what is missing (none when
// nothing is), keeps people's text and labels, and that afterwards Get,
// Find and List report the marker.
func TestMarkStampsWhatIsMissing(t *testing.T) {
	m, other := marker(21), marker(22)
	stamp := "\n\n" + markerComment(m.ID)
	tests := []struct {
		name      string
		seed      githubfake.IssueState
		wantPatch bool
		wantBody  bool // the PATCH carries the body
		wantLabel bool // the PATCH carries the labels
	}{
		{"unmarked issue of a person", githubfake.IssueState{Body: "written by hand", Labels: []string{"bug"}}, true, true, true},
		{"fully marked: no write", githubfake.IssueState{Body: "text" + stamp, Labels: []string{"qase-sync", m.Label}}, false, false, false},
		{"stamp missing", githubfake.IssueState{Body: "text", Labels: []string{m.Label, "qase-sync"}}, true, true, false},
		{"marker label missing", githubfake.IssueState{Body: "text" + stamp, Labels: []string{"qase-sync", "bug"}}, true, false, true},
		{"shared label missing", githubfake.IssueState{Body: "text" + stamp, Labels: []string{m.Label}}, true, false, true},
		{"stamp of another marker", githubfake.IssueState{Body: "text\n\n" + markerComment(other.ID), Labels: []string{"qase-sync", m.Label}}, true, true, false},
		{"empty body", githubfake.IssueState{Labels: []string{"qase-sync", m.Label}}, true, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := setup(t)
			tc.seed.Title = "seeded"
			n := h.fake.AddIssue(repo, tc.seed)
			ref := qsync.IssueRef{Project: repo, ID: "1"}
			h.fake.ResetLog()
			if err := h.tr.Mark(ctx(t), ref, m); err != nil {
				t.Fatal(err)
			}
			var patches []githubfake.Request
			for _, r := range h.fake.Requests() {
				if r.Method != http.MethodGet {
					patches = append(patches, r)
				}
			}
			if (len(patches) == 1) != tc.wantPatch || len(patches) > 1 {
				t.Fatalf("writes = %+v, want a PATCH: %v", patches, tc.wantPatch)
			}
			if tc.wantPatch {
				p := patches[0]
				var body map[string]json.RawMessage
				if p.Method != http.MethodPatch || json.Unmarshal([]byte(p.Body), &body) != nil {
					t.Fatalf("write = %s %s", p.Method, p.Body)
				}
				if _, ok := body["body"]; ok != tc.wantBody {
					t.Errorf("PATCH %s: body sent %v, want %v", p.Body, ok, tc.wantBody)
				}
				if _, ok := body["labels"]; ok != tc.wantLabel {
					t.Errorf("PATCH %s: labels sent %v, want %v", p.Body, ok, tc.wantLabel)
				}
			}
			st, _ := h.fake.Issue(repo, n)
			user, _ := splitBody(tc.seed.Body)
			if got, _ := splitBody(st.Body); got != user || !strings.HasSuffix(st.Body, markerComment(m.ID)) {
				t.Errorf("body = %q, want %q plus the stamp", st.Body, user)
			}
			for _, l := range tc.seed.Labels {
				if !slices.Contains(st.Labels, l) {
					t.Errorf("label %q lost: %v", l, st.Labels)
				}
			}
			got, err := h.tr.Get(ctx(t), ref)
			if err != nil || got.MarkerID != m.ID {
				t.Fatalf("get after mark: MarkerID %q, %v", got.MarkerID, err)
			}
			found, err := h.tr.Find(ctx(t), repo, m, time.Time{})
			if err != nil || len(found) != 1 || found[0].MarkerID != m.ID {
				t.Fatalf("find after mark: %+v, %v", found, err)
			}
			list, err := h.tr.List(ctx(t), repo)
			if err != nil || len(list) != 1 || list[0].MarkerID != m.ID {
				t.Fatalf("list after mark: %+v, %v", list, err)
			}
			h.fake.ResetLog()
			if err := h.tr.Mark(ctx(t), ref, m); err != nil || h.fake.WriteCount() != 0 {
				t.Errorf("second mark: %v, %d writes", err, h.fake.WriteCount())
			}
		})
	}

	t.Run("deleted issue", func(t *testing.T) {
		h := setup(t)
		n := h.fake.AddIssue(repo, githubfake.IssueState{Title: "x"})
		h.fake.DeleteIssue(repo, n)
		err := h.tr.Mark(ctx(t), qsync.IssueRef{Project: repo, ID: "1"}, m)
		if !errors.Is(err, qsync.ErrNotFound) || !qsync.IsPermanent(err) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("transferred issue is marked where it lives", func(t *testing.T) {
		h := setup(t)
		h.fake.AddIssue(repo, githubfake.IssueState{Title: "x", Body: "moved"})
		n, _ := h.fake.TransferIssue(repo, 1, "acme/other")
		if err := h.tr.Mark(ctx(t), qsync.IssueRef{Project: repo, ID: "1"}, m); err != nil {
			t.Fatal(err)
		}
		got, err := h.tr.Get(ctx(t), qsync.IssueRef{Project: "acme/other", ID: "1"})
		if err != nil || got.MarkerID != m.ID || got.Ref.ID != "1" || n != 1 {
			t.Fatalf("get = %+v, %v", got, err)
		}
	})
	t.Run("empty marker", func(t *testing.T) {
		h := setup(t)
		if err := h.tr.Mark(ctx(t), qsync.IssueRef{Project: repo, ID: "1"}, qsync.Marker{}); !qsync.IsPermanent(err) || len(h.fake.Requests()) != 0 {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestMarkerIDOnlyWhenComplete: MarkerID is reported only when the body
// stamp, the marker label derived from it and the shared label are all on
// the issue.
func TestMarkerIDOnlyWhenComplete(t *testing.T) {
	m, other := marker(31), marker(32)
	stamp := "x\n\n" + markerComment(m.ID)
	tests := []struct {
		name   string
		body   string
		labels []string
		want   string
	}{
		{"complete", stamp, []string{"qase-sync", m.Label}, m.ID},
		{"label case differs", stamp, []string{"Qase-Sync", strings.ToUpper(m.Label)}, m.ID},
		{"stamp only", stamp, []string{"qase-sync"}, ""},
		{"labels only", "x", []string{"qase-sync", m.Label}, ""},
		{"no shared label", stamp, []string{m.Label}, ""},
		{"label of another marker", stamp, []string{"qase-sync", other.Label}, ""},
		{"stamp not a marker", "x\n\n<!-- qase-sync:marker nonsense -->", []string{"qase-sync", m.Label}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := setup(t)
			h.fake.AddIssue(repo, githubfake.IssueState{Title: "seeded", Body: tc.body, Labels: tc.labels})
			got, err := h.tr.Get(ctx(t), qsync.IssueRef{Project: repo, ID: "1"})
			if err != nil || got.MarkerID != tc.want {
				t.Errorf("get: MarkerID %q, %v; want %q", got.MarkerID, err, tc.want)
			}
			list, err := h.tr.List(ctx(t), repo)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range list {
				if l.MarkerID != tc.want {
					t.Errorf("list: MarkerID %q, want %q", l.MarkerID, tc.want)
				}
			}
		})
	}
	// Find sees an issue whose stamp a person removed, by its label, and
	// reports it incompletely marked.
	h := setup(t)
	h.fake.AddIssue(repo, githubfake.IssueState{Title: "stamp removed", Body: "edited", Labels: []string{"qase-sync", m.Label}})
	found, err := h.tr.Find(ctx(t), repo, m, time.Time{})
	if err != nil || len(found) != 1 || found[0].MarkerID != "" {
		t.Fatalf("find = %+v, %v", found, err)
	}
}
