package sync

import (
	"reflect"
	"testing"
	"time"
)

func strp(s string) *string { return &s }

func TestDiff(t *testing.T) {
	base := Applied{Title: "T", Body: "B", Labels: []string{"a", "b"}, Priority: "High", Status: "To Do"}
	tests := []struct {
		name    string
		spec    IssueSpec
		base    Applied
		managed []string
		want    []Op
	}{
		{
			name: "nothing to do",
			spec: IssueSpec{Title: "T", Body: "B\r\n", Labels: []string{"b", "a"}, Priority: "High", Status: "to do"},
			base: base, managed: []string{"a", "b"},
		},
		{
			name: "title and body",
			spec: IssueSpec{Title: "T2", Body: "B2", Labels: []string{"a", "b"}, Priority: "High", Status: "To Do"},
			base: base, managed: []string{"a", "b"},
			want: []Op{{Kind: OpUpdate, Update: &Update{Title: strp("T2"), Body: strp("B2")},
				Changes: []Change{{"title", "T", "T2"}, {"body", "B", "B2"}}}},
		},
		{
			name: "labels: add wanted, remove only managed ones, keep human labels",
			spec: IssueSpec{Title: "T", Body: "B", Labels: []string{"a", "c"}, Priority: "High", Status: "To Do"},
			base: Applied{Title: "T", Body: "B", Labels: []string{"a", "b", "human"}, Priority: "High", Status: "To Do"}, managed: []string{"a", "b"},
			want: []Op{{Kind: OpUpdate, Update: &Update{AddLabels: []string{"c"}, RemoveLabels: []string{"b"}},
				Changes: []Change{{"labels", []string{"a", "b", "human"}, []string{"a", "c"}}}}},
		},
		{
			name: "create-only fields are never overwritten",
			spec: IssueSpec{Title: "new", Body: "B", Labels: []string{"x"}, Priority: "Low", Status: "To Do", CreateOnly: []string{"title", "labels", "priority"}},
			base: base, managed: []string{"a", "b"},
		},
		{
			name: "status then comments, posted comments skipped",
			spec: IssueSpec{Title: "T", Body: "B", Labels: []string{"a", "b"}, Priority: "High", Status: "Done",
				Comments: []Comment{{ID: "c1", Body: "one"}, {ID: "c2", Body: "two"}}},
			base:    Applied{Title: "T", Body: "B", Labels: []string{"a", "b"}, Priority: "High", Status: "To Do", Comments: []string{"c1"}},
			managed: []string{"a", "b"},
			want: []Op{
				{Kind: OpSetStatus, Status: "Done", Changes: []Change{{"status", "To Do", "Done"}}},
				{Kind: OpComment, Comment: &Comment{ID: "c2", Body: "two"}},
			},
		},
		{
			name: "closed with another reason is re-closed",
			spec: IssueSpec{Title: "T", Status: "closed", Reason: "not_planned"},
			base: Applied{Title: "T", Status: "closed", Reason: "completed"},
			want: []Op{{Kind: OpSetStatus, Status: "closed", Reason: "not_planned", Changes: []Change{{"status", "closed (completed)", "closed (not_planned)"}}}},
		},
		{
			name: "custom fields and assignees as sets",
			spec: IssueSpec{Title: "T", Assignees: []string{"u2", "u1"}, Fields: map[string]string{"customfield_1": "v2", "customfield_2": "same"}},
			base: Applied{Title: "T", Assignees: []string{"u1", "u2"}, Fields: map[string]string{"customfield_1": "v1", "customfield_2": "same"}},
			want: []Op{{Kind: OpUpdate, Update: &Update{Fields: map[string]string{"customfield_1": "v2"}},
				Changes: []Change{{"fields.customfield_1", "v1", "v2"}}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Diff(tt.spec, tt.base, tt.managed)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Diff =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestDiffAfterApplyIsEmpty(t *testing.T) {
	spec := IssueSpec{Title: "T2", Body: "B2", Labels: []string{"x", "y"}, Priority: "Low", Fields: map[string]string{"f": "1"}}
	a := Applied{Title: "T", Labels: []string{"x", "z"}}
	for _, op := range Diff(spec, a, []string{"x", "z"}) {
		if op.Kind == OpUpdate {
			a.applyUpdate(*op.Update)
		}
	}
	if ops := Diff(spec, a, spec.Labels); len(ops) != 0 {
		t.Fatalf("second diff not empty: %+v", ops)
	}
}

func TestStateFoldIsOrderIndependentAndIdempotent(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	evs := []Event{
		{Seq: 1, DedupKey: "a", Name: "defect.created", Timestamp: t0, Patch: Patch{Attrs: map[string]any{"title": "x", "status": "open"}}},
		{Seq: 2, DedupKey: "b", Name: "defect.resolved", Timestamp: t0.Add(time.Minute), Patch: Patch{Attrs: map[string]any{"status": "resolved"}}},
		{Seq: 3, DedupKey: "c", Name: "review.commented", Timestamp: t0.Add(2 * time.Minute), Patch: Patch{Comment: &Comment{ID: "c1", Body: "hi"}}},
		{Seq: 4, DedupKey: "d", Name: "review.reviewer_added", Timestamp: t0, Patch: Patch{Attrs: map[string]any{"reviewers/a@x.io": map[string]any{"status": "unapproved"}}}},
	}
	var inOrder, reversed State
	for _, ev := range evs {
		inOrder.Fold(ev)
	}
	for i := len(evs) - 1; i >= 0; i-- {
		reversed.Fold(evs[i])
		reversed.Fold(evs[i]) // duplicate delivery
	}
	ref := EntityRef{Project: "P", Kind: KindDefect, ID: 1}
	a, b := inOrder.Entity(ref), reversed.Entity(ref)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("fold depends on order:\n%+v\n%+v", a, b)
	}
	if a.Attrs["status"] != "resolved" || a.LastEvent != "review.commented" || len(a.Comments) != 1 {
		t.Fatalf("unexpected entity %+v", a)
	}
	if r, _ := a.Attrs["reviewers"].(map[string]any); r["a@x.io"] == nil {
		t.Fatalf("reviewer group not nested: %+v", a.Attrs)
	}
	// An API read newer than the events wins; a late old event does not undo it.
	inOrder.Observe(map[string]any{"status": "in_progress"}, true, t0.Add(time.Hour))
	inOrder.Fold(Event{Seq: 9, DedupKey: "late", Timestamp: t0.Add(30 * time.Minute), Patch: Patch{Attrs: map[string]any{"status": "open"}}})
	if got := inOrder.Entity(ref).Attrs["status"]; got != "in_progress" {
		t.Fatalf("status = %v, want in_progress", got)
	}
}

func TestMarkerRoundTrip(t *testing.T) {
	k := Key{Route: "defects-to-jira", EntityRef: EntityRef{Project: "DEMO", Kind: KindDefect, ID: 42}}
	m := MarkerFor(k)
	if m != MarkerFor(k) || len(m.Label) != 19 {
		t.Fatalf("marker not deterministic or wrong label: %+v", m)
	}
	back, ok := ParseMarkerID(m.ID)
	if !ok || back != k {
		t.Fatalf("ParseMarkerID(%q) = %v %v", m.ID, back, ok)
	}
	if _, ok := ParseMarkerID("qase-sync:bad"); ok {
		t.Fatal("bad marker parsed")
	}
}
