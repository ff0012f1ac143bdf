package sync

import (
	"strings"
	"testing"
	"time"
)

// TestDecide is the planner's table: every decision one sync can make.
func TestDecide(t *testing.T) {
	k := Key{Route: "r", EntityRef: EntityRef{Project: "QA", Kind: KindDefect, ID: 7}}
	m := MarkerFor(k)
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	spec := IssueSpec{Project: "QA", IssueFields: IssueFields{Title: "T", Body: "B", Labels: []string{"a"}, Status: "To Do"}}
	want := Desired{Route: "r", Tracker: "jira", Create: true, Spec: spec}
	noCreate := want
	noCreate.Create = false
	applied := AppliedFromSpec(spec)
	applied.Status = "To Do"
	linked := Link{Key: k, State: LinkLinked, Tracker: "jira", Marker: m, Issue: IssueRef{Project: "QA", ID: "100", Key: "QA-1"}, Applied: applied, UpdatedAt: t0}
	creating := Link{Key: k, State: LinkCreating, Tracker: "jira", Marker: m, IntentAt: t0}
	live := Issue{Ref: linked.Issue, IssueFields: IssueFields{Title: "T", Body: "B", Labels: []string{"a", "qase-sync", m.Label}, Status: "To Do"}, MarkerID: m.ID, CreatedAt: t0}
	edited := live
	edited.Title = "edited by a person"
	unmarkedLive := live
	unmarkedLive.MarkerID = ""
	movedLive := live
	movedLive.Ref = IssueRef{Project: "OPS", ID: "100", Key: "OPS-9"}
	found := Issue{Ref: IssueRef{Project: "QA", ID: "200", Key: "QA-2"}, IssueFields: IssueFields{Title: "T", Body: "B", Labels: []string{"a", "qase-sync", m.Label}, Status: "To Do"}, MarkerID: m.ID, CreatedAt: t0}
	foundUnmarked := found
	foundUnmarked.MarkerID = ""
	later := found
	later.Ref, later.CreatedAt = IssueRef{Project: "QA", ID: "300", Key: "QA-3"}, t0.Add(time.Hour)
	closing := &Desired{Route: "r", Tracker: "jira", Spec: IssueSpec{IssueFields: IssueFields{Status: "Done", Reason: "Duplicate"}}}
	stripped := linked
	stripped.Applied.Labels = []string{"a", "qase-sync", m.Label} // a baseline that once took the marker labels in
	blocked := linked
	blocked.Applied.Status = "Won't Do"
	blocked.Applied.Blocked = &Blocked{From: "Won't Do", To: "To Do"}
	thin := want
	thin.Spec.Title, thin.Spec.Body = "[QA-7] Qase defect", ""
	thin.Unknown = []string{"title", "body"}
	thin.Spec.Status = "Done"

	tests := []struct {
		name  string
		in    PlanInput
		need  Need
		ops   string // op kinds, space separated
		drift string
		wait  bool
		note  string
	}{
		{name: "skip: nothing at all", in: PlanInput{Desired: Desired{Skip: true}}, note: "condition"},
		{name: "vouched, no link: create, status unless the new issue has it", in: PlanInput{Desired: want, Vouched: true}, ops: "create set_status"},
		{name: "not vouched, no link: look first", in: PlanInput{Desired: want}, need: NeedFind},
		{name: "not vouched, searched, nothing: create", in: PlanInput{Desired: want, SearchedAt: t0}, ops: "create set_status"},
		{name: "not vouched, found marked: adopt, no second issue", in: PlanInput{Desired: want, SearchedAt: t0, Found: []Issue{found}}, ops: "adopt", drift: "unlinked"},
		{name: "found without the whole marker: adopt and mark", in: PlanInput{Desired: want, SearchedAt: t0, Found: []Issue{foundUnmarked}}, ops: "adopt mark", drift: "unlinked"},
		{name: "found two: adopt the oldest, close the other", in: PlanInput{Desired: want, SearchedAt: t0, Found: []Issue{later, found}, Closing: closing}, ops: "adopt close_duplicate", drift: "unlinked duplicate"},
		{name: "reconcile listed a marked copy: adopt it", in: PlanInput{Desired: want, Verify: true, Listed: []Issue{found}}, ops: "adopt", drift: "unlinked"},
		{name: "reconcile listed none: vouched by the listing", in: PlanInput{Desired: want, Verify: true, Listed: []Issue{}}, ops: "create set_status", drift: "missing"},
		{name: "no create wanted, vouched: nothing", in: PlanInput{Desired: noCreate, Vouched: true}, note: "no issue is wanted"},
		{name: "no create wanted, not vouched: look, an orphan may need closing", in: PlanInput{Desired: noCreate}, need: NeedFind},
		{name: "linked, in sync: nothing", in: PlanInput{Desired: want, Link: linked, Linked: true}},
		{name: "linked, new title: update", in: PlanInput{Desired: withTitle(want, "T2"), Link: linked, Linked: true}, ops: "update"},
		{name: "linked, unmarked baseline: mark", in: PlanInput{Desired: want, Link: withUnmarked(linked), Linked: true}, ops: "mark"},
		{name: "verify without live: read it", in: PlanInput{Desired: want, Link: linked, Linked: true, Verify: true}, need: NeedLive},
		{name: "verify, human edit: revert fields", in: PlanInput{Desired: want, Link: linked, Linked: true, Verify: true, Live: &edited}, ops: "update", drift: "fields"},
		{name: "verify, issue lost its marker: mark", in: PlanInput{Desired: want, Link: linked, Linked: true, Verify: true, Live: &unmarkedLive}, ops: "mark", drift: "marker"},
		{name: "verify, moved: follow", in: PlanInput{Desired: want, Link: linked, Linked: true, Verify: true, Live: &movedLive}, ops: "follow", drift: "moved"},
		{name: "verify, gone: forget and file again", in: PlanInput{Desired: want, Link: linked, Linked: true, Verify: true, Gone: true}, ops: "forget create set_status", drift: "dangling"},
		{name: "verify, duplicates listed: close the later copy", in: PlanInput{Desired: want, Link: withIssue(linked, found), Linked: true, Verify: true, Live: &found, Listed: []Issue{found, later}, Closing: closing}, ops: "close_duplicate", drift: "duplicate"},
		{name: "verify, link points at the later copy: adopt the oldest, close the copy", in: PlanInput{Desired: want, Link: withIssue(linked, later), Linked: true, Verify: true, Live: &later, Listed: []Issue{found, later}, Closing: closing}, ops: "adopt close_duplicate", drift: "duplicate"},
		{name: "duplicates but no closing status: report only", in: PlanInput{Desired: want, Link: withIssue(linked, found), Linked: true, Verify: true, Live: &found, Listed: []Issue{found, later}}, drift: "duplicate", note: "no status for deleted entities"},
		{name: "intent recorded, not searched: look", in: PlanInput{Desired: want, Link: creating, Linked: true}, need: NeedFind},
		{name: "intent, found: adopt", in: PlanInput{Desired: want, Link: creating, Linked: true, SearchedAt: t0.Add(time.Minute), Found: []Issue{found}, LateCommit: time.Minute}, ops: "adopt"},
		{name: "intent, nothing yet, commit may still land: wait", in: PlanInput{Desired: want, Link: creating, Linked: true, SearchedAt: t0.Add(10 * time.Second), Now: t0.Add(10 * time.Second), LateCommit: time.Minute}, wait: true},
		{name: "intent, nothing after the late-commit window: create", in: PlanInput{Desired: want, Link: creating, Linked: true, SearchedAt: t0.Add(2 * time.Minute), LateCommit: time.Minute}, ops: "create set_status"},
		{name: "intent, nothing, no longer wanted: forget", in: PlanInput{Desired: noCreate, Link: creating, Linked: true, SearchedAt: t0.Add(2 * time.Minute), LateCommit: time.Minute}, ops: "forget"},
		{name: "marker labels are never removed as managed labels", in: PlanInput{Desired: want, Link: stripped, Linked: true, Verify: true, Live: &live}},
		{name: "unreachable status is not tried again", in: PlanInput{Desired: want, Link: blocked, Linked: true}, note: "unreachable"},
		{name: "unreachable status is tried when the issue moved on", in: PlanInput{Desired: want, Link: withStatus(blocked, "In Progress"), Linked: true}, ops: "set_status"},
		{name: "fields from data the service lacks are not written", in: PlanInput{Desired: thin, Link: linked, Linked: true}, ops: "set_status"},
		{name: "but a create writes them (the issue needs a title)", in: PlanInput{Desired: thin, Vouched: true}, ops: "create set_status"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.Key = k
			p := Decide(tt.in)
			if p.Need != tt.need {
				t.Fatalf("need %q, want %q (plan %+v)", p.Need, tt.need, p)
			}
			if got := opKinds(p.Ops); got != tt.ops {
				t.Errorf("ops %q, want %q", got, tt.ops)
			}
			if got := strings.Join(p.Drift, " "); got != tt.drift {
				t.Errorf("drift %q, want %q", got, tt.drift)
			}
			if (p.Wait > 0) != tt.wait {
				t.Errorf("wait %s, want wait=%v", p.Wait, tt.wait)
			}
			if !strings.Contains(p.Note, tt.note) {
				t.Errorf("note %q, want it to mention %q", p.Note, tt.note)
			}
			for _, op := range p.Ops {
				if op.Kind == OpUpdate {
					for _, l := range op.Update.RemoveLabels {
						if IsMarkerLabel(l, m) {
							t.Errorf("update removes the marker label %q", l)
						}
					}
					if op.Update.Title != nil && strings.Contains(*op.Update.Title, "Qase defect") {
						t.Errorf("update writes a fallback title %q", *op.Update.Title)
					}
				}
			}
		})
	}
}

func TestDecideAmbiguousCreateWaitsUntilWindowEnds(t *testing.T) {
	k := Key{Route: "r", EntityRef: EntityRef{Project: "QA", Kind: KindDefect, ID: 1}}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in := PlanInput{Key: k, Desired: Desired{Create: true, Spec: IssueSpec{IssueFields: IssueFields{Title: "x"}}}, Linked: true,
		Link: Link{Key: k, State: LinkCreating, IntentAt: t0}, SearchedAt: t0.Add(31 * time.Second), Now: t0.Add(31 * time.Second), LateCommit: time.Minute}
	p := Decide(in)
	if p.Wait != 29*time.Second || len(p.Ops) != 0 {
		t.Fatalf("plan %+v: want a 29s wait and no ops", p)
	}
}

func opKinds(ops []Op) string {
	var ks []string
	for _, op := range ops {
		ks = append(ks, string(op.Kind))
	}
	return strings.Join(ks, " ")
}

func withTitle(d Desired, title string) Desired { d.Spec.Title = title; return d }
func withUnmarked(l Link) Link                  { l.Applied.Unmarked = true; return l }
func withStatus(l Link, s string) Link          { l.Applied.Status = s; return l }
func withIssue(l Link, is Issue) Link           { l.Issue = is.Ref; return l }
