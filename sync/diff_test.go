package sync

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"
)

func strp(s string) *string { return &s }

func TestDiff(t *testing.T) {
	base := Applied{IssueFields: IssueFields{Title: "T", Body: "B", Labels: []string{"a", "b"}, Priority: "High", Status: "To Do"}}
	tests := []struct {
		name    string
		spec    IssueSpec
		base    Applied
		managed []string
		want    []Op
	}{
		{
			name: "nothing to do",
			spec: IssueSpec{IssueFields: IssueFields{Title: "T", Body: "B\r\n", Labels: []string{"b", "a"}, Priority: "High", Status: "to do"}},
			base: base, managed: []string{"a", "b"},
		},
		{
			name: "title and body",
			spec: IssueSpec{IssueFields: IssueFields{Title: "T2", Body: "B2", Labels: []string{"a", "b"}, Priority: "High", Status: "To Do"}},
			base: base, managed: []string{"a", "b"},
			want: []Op{{Kind: OpUpdate, Update: &Update{Title: strp("T2"), Body: strp("B2")},
				Changes: []Change{{"title", "T", "T2"}, {"body", "B", "B2"}}}},
		},
		{
			name: "labels: add wanted, remove only managed ones, keep human labels",
			spec: IssueSpec{IssueFields: IssueFields{Title: "T", Body: "B", Labels: []string{"a", "c"}, Priority: "High", Status: "To Do"}},
			base: Applied{IssueFields: IssueFields{Title: "T", Body: "B", Labels: []string{"a", "b", "human"}, Priority: "High", Status: "To Do"}}, managed: []string{"a", "b"},
			want: []Op{{Kind: OpUpdate, Update: &Update{AddLabels: []string{"c"}, RemoveLabels: []string{"b"}},
				Changes: []Change{{"labels", []string{"a", "b", "human"}, []string{"a", "c"}}}}},
		},
		{
			name: "create-only fields are never overwritten",
			spec: IssueSpec{IssueFields: IssueFields{Title: "new", Body: "B", Labels: []string{"x"}, Priority: "Low", Status: "To Do"}, CreateOnly: []string{"title", "labels", "priority"}},
			base: base, managed: []string{"a", "b"},
		},
		{
			name: "status then comments, posted comments skipped",
			spec: IssueSpec{IssueFields: IssueFields{Title: "T", Body: "B", Labels: []string{"a", "b"}, Priority: "High", Status: "Done"},
				Comments: []Comment{{ID: "c1", Body: "one"}, {ID: "c2", Body: "two"}}},
			base:    Applied{IssueFields: IssueFields{Title: "T", Body: "B", Labels: []string{"a", "b"}, Priority: "High", Status: "To Do"}, Comments: []string{"c1"}},
			managed: []string{"a", "b"},
			want: []Op{
				{Kind: OpSetStatus, Status: "Done", Changes: []Change{{"status", "To Do", "Done"}}},
				{Kind: OpComment, Comment: &Comment{ID: "c2", Body: "two"}},
			},
		},
		{
			name: "closed with another reason is re-closed",
			spec: IssueSpec{IssueFields: IssueFields{Title: "T", Status: "closed", Reason: "not_planned"}},
			base: Applied{IssueFields: IssueFields{Title: "T", Status: "closed", Reason: "completed"}},
			want: []Op{{Kind: OpSetStatus, Status: "closed", Reason: "not_planned", Changes: []Change{{"status", "closed (completed)", "closed (not_planned)"}}}},
		},
		{
			name: "custom fields and assignees as sets",
			spec: IssueSpec{IssueFields: IssueFields{Title: "T", Assignees: []string{"u2", "u1"}, Fields: map[string]string{"customfield_1": "v2", "customfield_2": "same"}}},
			base: Applied{IssueFields: IssueFields{Title: "T", Assignees: []string{"u1", "u2"}, Fields: map[string]string{"customfield_1": "v1", "customfield_2": "same"}}},
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
	spec := IssueSpec{IssueFields: IssueFields{Title: "T2", Body: "B2", Labels: []string{"x", "y"}, Priority: "Low", Fields: map[string]string{"f": "1"}}}
	a := Applied{IssueFields: IssueFields{Title: "T", Labels: []string{"x", "z"}}}
	for _, op := range Diff(spec, a, []string{"x", "z"}) {
		if op.Kind == OpUpdate {
			op.Update.ApplyTo(&a.IssueFields)
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

func TestUpdateApplyTo(t *testing.T) {
	s := func(v string) *string { return &v }
	l := func(v ...string) *[]string { return &v }
	base := func() IssueFields {
		return IssueFields{Title: "T", Body: "B", Labels: []string{"b", "a", "human"}, Priority: "High",
			Assignees: []string{"u1"}, Components: []string{"api"}, Fields: map[string]string{"f1": "1", "f2": "2"},
			Status: "To Do", Reason: "r"}
	}
	cases := []struct {
		name string
		u    Update
		want func(f *IssueFields)
	}{
		{"empty update changes nothing", Update{}, func(*IssueFields) {}},
		{"set text fields", Update{Title: s("T2"), Body: s(""), Priority: s("Low")},
			func(f *IssueFields) { f.Title, f.Body, f.Priority = "T2", "", "Low" }},
		{"lists are replaced, empty clears", Update{Assignees: l(), Components: l("db", "api")},
			func(f *IssueFields) { f.Assignees, f.Components = nil, []string{"db", "api"} }},
		{"custom fields merge, empty clears", Update{Fields: map[string]string{"f2": "", "f3": "3", "f1": "one"}},
			func(f *IssueFields) { f.Fields = map[string]string{"f1": "one", "f3": "3"} }},
		{"labels: kept in order, added appended once, removed dropped",
			Update{AddLabels: []string{"c", "a", "c", ""}, RemoveLabels: []string{"b", "absent"}},
			func(f *IssueFields) { f.Labels = []string{"a", "human", "c"} }},
		{"a label added and removed ends up removed", Update{AddLabels: []string{"x"}, RemoveLabels: []string{"x", "human"}},
			func(f *IssueFields) { f.Labels = []string{"b", "a"} }},
		{"setting a field to its value changes nothing", Update{Title: s("T"), Priority: s("High")}, func(*IssueFields) {}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, want := base(), base()
			tc.u.ApplyTo(&got)
			tc.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got  %+v\nwant %+v", got, want)
			}
		})
	}
	t.Run("shares nothing with the update", func(t *testing.T) {
		as := []string{"u2"}
		var f IssueFields
		Update{Assignees: &as}.ApplyTo(&f)
		as[0] = "changed"
		if f.Assignees[0] != "u2" {
			t.Fatalf("assignees alias the update: %v", f.Assignees)
		}
	})
	t.Run("onto zero fields", func(t *testing.T) {
		var f IssueFields
		Update{AddLabels: []string{"a"}, Fields: map[string]string{"f": "v"}}.ApplyTo(&f)
		if !reflect.DeepEqual(f, IssueFields{Labels: []string{"a"}, Fields: map[string]string{"f": "v"}}) {
			t.Fatalf("got %+v", f)
		}
	})
}

func TestEditLabels(t *testing.T) {
	have := []string{"b", "a"}
	for _, tc := range []struct {
		add, remove, want []string
	}{
		{nil, nil, []string{"b", "a"}},
		{[]string{"a", "c"}, nil, []string{"b", "a", "c"}},
		{nil, []string{"b", "b"}, []string{"a"}},
		{nil, []string{"a", "b"}, nil},
		{[]string{"", "d", "d"}, []string{"a"}, []string{"b", "d"}},
	} {
		if got := EditLabels(have, tc.add, tc.remove); !slices.Equal(got, tc.want) {
			t.Errorf("EditLabels(%v, +%v, -%v) = %v, want %v", have, tc.add, tc.remove, got, tc.want)
		}
	}
	if !slices.Equal(have, []string{"b", "a"}) {
		t.Errorf("EditLabels changed its input: %v", have)
	}
}

// TestIssueFieldsJSON: the embedded IssueFields flatten, so links stored
// before they existed still decode, and specs (plan output, fingerprints)
// encode as they did.
func TestIssueFieldsJSON(t *testing.T) {
	stored := `{"title":"t","body":"b","labels":["x"],"priority":"High","assignees":["a"],"components":["c"],` +
		`"fields":{"f":"v"},"status":"Done","reason":"Fixed","comments":["c1"],"pending":["c2"],"unverified":true,` +
		`"unmarked":true,"blocked":{"from":"a","to":"b"}}`
	var a Applied
	if err := json.Unmarshal([]byte(stored), &a); err != nil {
		t.Fatal(err)
	}
	want := Applied{IssueFields: IssueFields{Title: "t", Body: "b", Labels: []string{"x"}, Priority: "High",
		Assignees: []string{"a"}, Components: []string{"c"}, Fields: map[string]string{"f": "v"}, Status: "Done", Reason: "Fixed"},
		Comments: []string{"c1"}, Pending: []string{"c2"}, Unverified: true, Unmarked: true, Blocked: &Blocked{From: "a", To: "b"}}
	if !reflect.DeepEqual(a, want) {
		t.Fatalf("decoded %+v\nwant    %+v", a, want)
	}
	if b, _ := json.Marshal(a); string(b) != stored {
		t.Fatalf("re-encoded %s\nwant       %s", b, stored)
	}
	spec := IssueSpec{Project: "QA", Type: "Bug", IssueFields: want.IssueFields,
		Comments: []Comment{{ID: "c1", Body: "hi"}}, CreateOnly: []string{"title"}}
	b, _ := json.Marshal(spec)
	const specJSON = `{"project":"QA","type":"Bug","title":"t","body":"b","labels":["x"],"priority":"High","assignees":["a"],` +
		`"components":["c"],"fields":{"f":"v"},"status":"Done","reason":"Fixed",` +
		`"comments":[{"id":"c1","body":"hi","at":"0001-01-01T00:00:00Z"}],"create_only":["title"]}`
	if string(b) != specJSON {
		t.Fatalf("spec JSON %s\nwant      %s", b, specJSON)
	}
	// The fingerprint of this spec before IssueFields existed: stored
	// fingerprints stay valid, so no link resyncs for nothing.
	if got := Fingerprint(spec); got != "7907d8eda62ec6f1487b4bb4" {
		t.Fatalf("fingerprint %s changed", got)
	}
	is := Issue{Ref: IssueRef{Project: "QA", ID: "1", Key: "QA-1"}, IssueFields: IssueFields{Title: "t", Labels: []string{"x"}, Status: "Done"}, MarkerID: "m"}
	if b, _ := json.Marshal(is); string(b) != `{"ref":{"project":"QA","id":"1","key":"QA-1"},"title":"t","labels":["x"],"status":"Done","marker_id":"m","created_at":"0001-01-01T00:00:00Z"}` {
		t.Fatalf("issue JSON %s", b)
	}
}
