package sync

import (
	"slices"
	"testing"
	"time"
)

func TestDecideTwoWay(t *testing.T) {
	rule := TwoWay{
		Fields: map[string]Direction{FieldStatus: DirBoth, FieldTitle: DirIn, FieldSeverity: DirCreateOnly},
		Status: map[string]string{"done": "resolved", "closed:not_planned": "invalid", "closed": "resolved",
			"in review": "in_progress", "to do": "open", "category:indeterminate": "in_progress"},
	}
	issue := func(status, reason, title string) Issue {
		return Issue{IssueFields: IssueFields{Status: status, Reason: reason, Title: title}}
	}
	sides := func(q, tr string) map[string]Side {
		return map[string]Side{FieldStatus: {Qase: q, Tracker: tr}, FieldTitle: {Qase: "t", Tracker: "t"}}
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name      string
		rule      TwoWay
		attrs     map[string]any
		live      Issue
		sides     map[string]Side
		qAt, tAt  time.Time
		wantOps   []string
		wantHold  []string
		conflicts int
	}{
		{name: "a person closes the issue: resolved", attrs: map[string]any{"status": "open", "title": "t"},
			live: issue("Done", "", "t"), sides: sides("open", "to do"),
			wantOps: []string{"qase_status:resolved"}, wantHold: []string{"status", "title", "severity"}},
		{name: "our own transition echoes back: nothing", attrs: map[string]any{"status": "resolved", "title": "t"},
			live: issue("Done", "", "t"), sides: sides("resolved", "done"),
			wantHold: []string{"status", "title", "severity"}},
		{name: "qase changed: outbound, nothing back", attrs: map[string]any{"status": "in_progress", "title": "t"},
			live: issue("To Do", "", "t"), sides: sides("open", "to do"),
			wantHold: []string{"title", "severity"}},
		{name: "github not planned: invalid", attrs: map[string]any{"status": "open", "title": "t"},
			live: issue("closed", "not_planned", "t"), sides: sides("open", "open"),
			wantOps: []string{"qase_status:invalid"}, wantHold: []string{"status", "title", "severity"}},
		{name: "reopened maps to open, which Qase cannot set: held, no write", attrs: map[string]any{"status": "resolved", "title": "t"},
			live: issue("To Do", "", "t"), sides: sides("resolved", "done"),
			wantHold: []string{"status", "title", "severity"}},
		{name: "unmapped status: held", attrs: map[string]any{"status": "open", "title": "t"},
			live: issue("Blocked", "", "t"), sides: sides("open", "to do"),
			wantHold: []string{"status", "title", "severity"}},
		{name: "category fallback", attrs: map[string]any{"status": "open", "title": "t"},
			live: Issue{IssueFields: IssueFields{Status: "Coding", Title: "t"}, StatusCategory: "indeterminate"}, sides: sides("open", "to do"),
			wantOps: []string{"qase_status:in_progress"}, wantHold: []string{"status", "title", "severity"}},
		{name: "title flows in", attrs: map[string]any{"status": "open", "title": "t"},
			live: issue("To Do", "", "new title"), sides: sides("open", "to do"),
			wantOps: []string{"qase_update:title"}, wantHold: []string{"status", "title", "severity"}},
		{name: "no baseline: nothing flows", attrs: map[string]any{"status": "open", "title": "t"},
			live: issue("Done", "", "x"), sides: nil,
			wantHold: []string{"status", "title", "severity"}},
		{name: "both changed, tracker newer", attrs: map[string]any{"status": "in_progress", "title": "t"},
			live: issue("Done", "", "t"), sides: sides("open", "to do"), qAt: t0, tAt: t0.Add(time.Minute),
			wantOps: []string{"qase_status:resolved"}, wantHold: []string{"status", "title", "severity"}, conflicts: 1},
		{name: "both changed, qase newer", attrs: map[string]any{"status": "in_progress", "title": "t"},
			live: issue("Done", "", "t"), sides: sides("open", "to do"), qAt: t0.Add(time.Minute), tAt: t0,
			wantHold: []string{"title", "severity"}, conflicts: 1},
		{name: "both changed, qase always wins", rule: withConflict(rule, ConflictQase), attrs: map[string]any{"status": "in_progress", "title": "t"},
			live: issue("Done", "", "t"), sides: sides("open", "to do"), qAt: t0, tAt: t0.Add(time.Minute),
			wantHold: []string{"title", "severity"}, conflicts: 1},
		{name: "both changed, tracker always wins", rule: withConflict(rule, ConflictTracker), attrs: map[string]any{"status": "in_progress", "title": "t"},
			live: issue("Done", "", "t"), sides: sides("open", "to do"), qAt: t0.Add(time.Minute), tAt: t0,
			wantOps: []string{"qase_status:resolved"}, wantHold: []string{"status", "title", "severity"}, conflicts: 1},
		{name: "one-way route: nothing", rule: TwoWay{}, attrs: map[string]any{"status": "open"},
			live: issue("Done", "", "t"), sides: sides("open", "to do")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := c.rule
			if r.Fields == nil && r.Status == nil && c.name != "one-way route: nothing" {
				r = rule
			}
			p := DecideTwoWay(TwoWayInput{Rule: r, Attrs: c.attrs, Live: c.live, Sides: c.sides, QaseAt: c.qAt, TrackerAt: c.tAt})
			var ops []string
			for _, op := range p.Ops {
				ops = append(ops, op.String())
			}
			if !slices.Equal(ops, c.wantOps) {
				t.Errorf("ops = %v, want %v", ops, c.wantOps)
			}
			slices.Sort(p.Hold)
			want := slices.Sorted(slices.Values(c.wantHold))
			if !slices.Equal(p.Hold, want) {
				t.Errorf("hold = %v, want %v", p.Hold, want)
			}
			if len(p.Conflicts) != c.conflicts {
				t.Errorf("conflicts = %v, want %d", p.Conflicts, c.conflicts)
			}
		})
	}
}

func withConflict(r TwoWay, c string) TwoWay { r.Conflict = c; return r }

// TestSidesAfterRecordsOwnWrites: the baseline after a sync holds what
// qase-sync wrote on each side, so the echoes of those writes are no news.
func TestSidesAfterRecordsOwnWrites(t *testing.T) {
	rule := TwoWay{Fields: map[string]Direction{FieldStatus: DirBoth}}
	got := SidesAfter(rule, map[string]any{"status": "open"}, IssueFields{Status: "Done"}, nil, []Op{{Kind: OpQaseStatus, Status: "resolved"}})
	if got[FieldStatus] != (Side{Qase: "resolved", Tracker: "done"}) || len(got) != 1 {
		t.Fatalf("sides = %+v", got)
	}
	echo := DecideTwoWay(TwoWayInput{Rule: rule, Attrs: map[string]any{"status": "resolved"}, Live: Issue{IssueFields: IssueFields{Status: "Done"}}, Sides: got})
	if len(echo.Ops) != 0 {
		t.Fatalf("echo planned %v", echo.Ops)
	}
}

// TestPlanLinkBack: the link is written back after a create or adoption
// and again only when the issue's key changed.
func TestPlanLinkBack(t *testing.T) {
	k := Key{Route: "r", EntityRef: EntityRef{Project: "P", Kind: KindRun, ID: 1}}
	d := Desired{Route: "r", Tracker: "jira", Create: true, Spec: IssueSpec{Project: "QA", IssueFields: IssueFields{Title: "t"}}, LinkBack: &LinkBack{Run: true}}
	linked := func(key, back string) Link {
		return Link{Key: k, State: LinkLinked, Issue: IssueRef{ID: "1", Key: key}, Applied: Applied{IssueFields: IssueFields{Title: "t"}, LinkedBack: back},
			Fingerprint: Fingerprint(d.Spec)}
	}
	last := func(p Plan) OpKind {
		if len(p.Ops) == 0 {
			return ""
		}
		return p.Ops[len(p.Ops)-1].Kind
	}
	if p := Decide(PlanInput{Key: k, Desired: d, Vouched: true}); p.Ops[0].Kind != OpCreate || last(p) != OpQaseLink {
		t.Fatalf("create plan = %v", p.Ops)
	}
	if p := Decide(PlanInput{Key: k, Desired: d, Linked: true, Link: linked("QA-1", "QA-1")}); len(p.Ops) != 0 {
		t.Fatalf("written back already: %v", p.Ops)
	}
	if p := Decide(PlanInput{Key: k, Desired: d, Linked: true, Link: linked("OPS-9", "QA-1")}); last(p) != OpQaseLink {
		t.Fatalf("moved issue: %v", p.Ops)
	}
	nd := d
	nd.LinkBack = nil
	if p := Decide(PlanInput{Key: k, Desired: nd, Vouched: true}); last(p) == OpQaseLink {
		t.Fatalf("no write-back wanted: %v", p.Ops)
	}
}

// TestDecideTwoWayTags: labels people add or remove become Qase tags; the
// route's own labels and the marker are not tags.
func TestDecideTwoWayTags(t *testing.T) {
	rule := TwoWay{Fields: map[string]Direction{FieldTags: DirBoth}}
	m := MarkerFor(Key{Route: "r", EntityRef: EntityRef{Project: "P", Kind: KindDefect, ID: 1}})
	nonTag := []string{"qase", "severity-major"}
	tags := func(labels ...string) []string {
		return TagLabels(append(labels, "qase", "severity-major", m.Label, DefaultSharedLabel), m, nonTag)
	}
	attrs := map[string]any{"tags": []any{"smoke test", "ui"}}
	base := map[string]Side{FieldTags: {Qase: "smoke test\nui", Tracker: "smoke-test\nui"}}
	cases := []struct {
		name    string
		tracker []string
		want    []string // nil: no write
		hold    bool
	}{
		{"nothing changed: labels not held", tags("smoke-test", "ui"), nil, false},
		{"label added", tags("smoke-test", "ui", "regression"), []string{"regression", "smoke test", "ui"}, true},
		{"label removed (dashed form of a spaced tag)", tags("ui"), []string{"ui"}, true},
	}
	for _, c := range cases {
		p := DecideTwoWay(TwoWayInput{Rule: rule, Attrs: attrs, Sides: base, TrackerTags: c.tracker})
		var got []string
		if len(p.Ops) == 1 {
			got = *p.Ops[0].Defect.Tags
		}
		if !slices.Equal(got, c.want) || (len(p.Hold) > 0) != c.hold {
			t.Errorf("%s: tags %v hold %v, want %v hold %v", c.name, got, p.Hold, c.want, c.hold)
		}
	}
}
