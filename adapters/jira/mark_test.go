package jira

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/adapters/jira/jirafake"
	qsync "github.com/qase-sync/qase-sync/sync"
)

func markerProp(m qsync.Marker) map[string]json.RawMessage {
	return map[string]json.RawMessage{PropertyKey: json.RawMessage(fmt.Sprintf(`{"marker":%q}`, m.ID))}
}

// TestMarkStampsWhatIsMissing seeds issues marked partly or not at all and
// checks that Mark writes only what is missing, and that afterwards Get,
// Find and List report the marker.
func TestMarkStampsWhatIsMissing(t *testing.T) {
	ctx := context.Background()
	m := marker("defects", 21)
	other := marker("defects", 22)
	tests := []struct {
		name       string
		seed       jirafake.IssueState
		wantLabels int  // label PUTs
		wantProp   bool // property PUT
		addLabels  []string
	}{
		{"unmarked issue of a person", jirafake.IssueState{Summary: "by hand", Labels: []string{"human"}},
			1, true, []string{"qase-sync", m.Label}},
		{"fully marked: no write", jirafake.IssueState{Labels: []string{"qase-sync", m.Label}, Properties: markerProp(m)},
			0, false, nil},
		{"property missing", jirafake.IssueState{Labels: []string{m.Label, "qase-sync"}},
			0, true, nil},
		{"marker label missing", jirafake.IssueState{Labels: []string{"qase-sync"}, Properties: markerProp(m)},
			1, false, []string{m.Label}},
		{"shared label missing", jirafake.IssueState{Labels: []string{m.Label}, Properties: markerProp(m)},
			1, false, []string{"qase-sync"}},
		{"property names another marker", jirafake.IssueState{Labels: []string{"qase-sync", m.Label, other.Label}, Properties: markerProp(other)},
			0, true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, f := setup(t, nil)
			tc.seed.Project = "OPS"
			if tc.seed.Summary == "" {
				tc.seed.Summary = "seeded"
			}
			seeded := f.AddIssue(tc.seed)
			ref := qsync.IssueRef{Project: "OPS", ID: seeded.ID, Key: seeded.Key}
			f.ResetRequests()
			if err := tr.Mark(ctx, ref, m); err != nil {
				t.Fatal(err)
			}
			labelPuts := f.Count("PUT", "/rest/api/2/issue/"+seeded.ID) - f.Count("PUT", "/rest/api/2/issue/"+seeded.ID+"/")
			propPuts := f.Count("PUT", "/rest/api/2/issue/"+seeded.ID+"/properties/"+PropertyKey)
			if labelPuts != tc.wantLabels || (propPuts == 1) != tc.wantProp || f.WriteCount() != labelPuts+propPuts {
				t.Errorf("writes: %d label PUTs, %d property PUTs, %d in all; want %d, %v", labelPuts, propPuts, f.WriteCount(), tc.wantLabels, tc.wantProp)
			}
			if n := f.Count("GET", "/rest/api/2/issue/"); n != 1 {
				t.Errorf("%d reads, want 1", n)
			}
			for _, r := range f.Requests() {
				if r.Method == "PUT" && r.Path == "/rest/api/2/issue/"+seeded.ID {
					var body struct {
						Fields map[string]any
						Update struct{ Labels []map[string]string }
					}
					if err := json.Unmarshal([]byte(r.Body), &body); err != nil || len(body.Fields) != 0 {
						t.Fatalf("label update %s: want update operations only", r.Body)
					}
					var added []string
					for _, op := range body.Update.Labels {
						added = append(added, op["add"])
					}
					if !slices.Equal(added, tc.addLabels) {
						t.Errorf("added %v, want %v", added, tc.addLabels)
					}
				}
			}
			st, _ := f.Issue(seeded.ID)
			for _, l := range tc.seed.Labels {
				if !slices.Contains(st.Labels, l) {
					t.Errorf("label %q lost: %v", l, st.Labels)
				}
			}
			got, err := tr.Get(ctx, ref)
			if err != nil || got.MarkerID != m.ID {
				t.Fatalf("get after mark: MarkerID %q, %v", got.MarkerID, err)
			}
			found, err := tr.Find(ctx, "OPS", m, time.Time{})
			if err != nil || len(found) != 1 || found[0].MarkerID != m.ID {
				t.Fatalf("find after mark: %+v, %v", found, err)
			}
			list, err := tr.List(ctx, "OPS")
			if err != nil || len(list) != 1 || list[0].MarkerID != m.ID {
				t.Fatalf("list after mark: %+v, %v", list, err)
			}
			// Idempotent: a second Mark only reads.
			f.ResetRequests()
			if err := tr.Mark(ctx, ref, m); err != nil || f.WriteCount() != 0 {
				t.Errorf("second mark: %v, %d writes", err, f.WriteCount())
			}
		})
	}

	t.Run("deleted issue", func(t *testing.T) {
		tr, _ := setup(t, nil)
		err := tr.Mark(ctx, qsync.IssueRef{Project: "OPS", ID: "99999"}, m)
		if !errors.Is(err, qsync.ErrNotFound) || !qsync.IsPermanent(err) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("empty marker", func(t *testing.T) {
		tr, f := setup(t, nil)
		is := f.AddIssue(jirafake.IssueState{Project: "OPS", Summary: "x"})
		if err := tr.Mark(ctx, qsync.IssueRef{ID: is.ID}, qsync.Marker{}); !qsync.IsPermanent(err) || len(f.Requests()) != 0 {
			t.Fatalf("err = %v, %d requests", err, len(f.Requests()))
		}
	})
}

// TestMarkerIDOnlyWhenComplete: MarkerID is reported only when the
// property, the marker label derived from it and the shared label are all
// on the issue.
func TestMarkerIDOnlyWhenComplete(t *testing.T) {
	ctx, m, other := context.Background(), marker("defects", 31), marker("defects", 32)
	tests := []struct {
		name string
		seed jirafake.IssueState
		want string
	}{
		{"complete", jirafake.IssueState{Labels: []string{"qase-sync", m.Label}, Properties: markerProp(m)}, m.ID},
		{"labels only", jirafake.IssueState{Labels: []string{"qase-sync", m.Label}}, ""},
		{"no shared label", jirafake.IssueState{Labels: []string{m.Label}, Properties: markerProp(m)}, ""},
		{"no marker label", jirafake.IssueState{Labels: []string{"qase-sync"}, Properties: markerProp(m)}, ""},
		{"label of another marker", jirafake.IssueState{Labels: []string{"qase-sync", other.Label}, Properties: markerProp(m)}, ""},
		{"property not a marker", jirafake.IssueState{Labels: []string{"qase-sync", m.Label},
			Properties: map[string]json.RawMessage{PropertyKey: json.RawMessage(`{"marker":"something else"}`)}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, f := setup(t, nil)
			tc.seed.Project, tc.seed.Summary = "OPS", "seeded"
			is := f.AddIssue(tc.seed)
			got, err := tr.Get(ctx, qsync.IssueRef{ID: is.ID})
			if err != nil || got.MarkerID != tc.want {
				t.Errorf("get: MarkerID %q, %v; want %q", got.MarkerID, err, tc.want)
			}
			list, err := tr.List(ctx, "OPS")
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range list {
				if l.MarkerID != tc.want {
					t.Errorf("list: MarkerID %q, want %q", l.MarkerID, tc.want)
				}
			}
			if hits, err := tr.Find(ctx, "OPS", m, time.Time{}); err != nil || (len(hits) == 1 && hits[0].MarkerID != tc.want) {
				t.Errorf("find: %+v, %v", hits, err)
			}
		})
	}
}

// TestMarkSendsAddOperations: the label update Mark sends only adds, so
// labels set meanwhile by people stay.
func TestMarkSendsAddOperations(t *testing.T) {
	tr, f := setup(t, nil)
	is := f.AddIssue(jirafake.IssueState{Project: "OPS", Summary: "x", Labels: []string{"a"}})
	m := marker("defects", 41)
	if err := tr.Mark(context.Background(), qsync.IssueRef{ID: is.ID}, m); err != nil {
		t.Fatal(err)
	}
	body := lastRequest(f, "/rest/api/2/issue/"+is.ID).Body
	want := fmt.Sprintf(`{"update":{"labels":[{"add":"qase-sync"},{"add":%q}]}}`, m.Label)
	if strings.TrimSpace(body) != want {
		t.Errorf("body = %s, want %s", body, want)
	}
}
