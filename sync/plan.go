package sync

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// The planner: what one sync of a key does is decided here, once, by a
// pure function of what is known about the key (Decide). Engine.Sync gathers the
// inputs, asks Decide, reads what the plan says it still needs, and executes
// the operations; dry runs, `plan` and `reconcile --dry-run` print the same
// plan without executing it.

// Need is a read the planner asks for before it can decide.
type Need string

// Reads the planner may ask for. Both are side-effect free, so dry runs
// make them too.
const (
	NeedNothing Need = ""
	// NeedLive: read the linked issue (verifying against the tracker).
	NeedLive Need = "live"
	// NeedFind: look for issues carrying the key's marker (the store
	// cannot vouch that none exists, or an earlier create was ambiguous).
	NeedFind Need = "find"
)

// PlanInput is everything a sync decision depends on. The zero value of
// each optional part means "not known": the planner asks for it through
// Plan.Need when it matters.
type PlanInput struct {
	Key     Key
	Desired Desired
	// Link is the stored link, if Linked.
	Link   Link
	Linked bool
	// Vouched: without a link, the store knows that no issue exists for
	// the key (its route's issues were listed and linked since this
	// process started). A new, lost or restored store cannot vouch.
	Vouched bool
	// Verify compares with the live issue instead of the last applied
	// state (reconcile).
	Verify bool
	// Live is the linked issue as read now (Verify); Gone says the read
	// answered "not found".
	Live *Issue
	Gone bool
	// Found is what a marker search returned; SearchedAt when it ran
	// (zero: no search yet).
	Found      []Issue
	SearchedAt time.Time
	// Listed, when non-nil, is every issue a reconcile pass listed with
	// the key's marker (empty: the route was listed and none carries it);
	// ListedAt when the pass listed.
	Listed   []Issue
	ListedAt time.Time
	// Trusted is when a search or listing that finds nothing starts to
	// prove absence: before it, a create an earlier process left in flight
	// (with its intent in a store since lost) may still land.
	Trusted time.Time
	// Closing is how the route closes a deleted entity, used to close
	// duplicates; nil when the route has no such status.
	Closing *Desired
	Now     time.Time
	// LateCommit is how long after an ambiguous create the issue may still
	// appear in the tracker (a commit that outlived the client's timeout).
	LateCommit time.Duration
}

// minWait keeps a settling key from spinning when the window has just
// ended.
const minWait = 10 * time.Millisecond

// Plan is the planner's verdict.
type Plan struct {
	Need  Need     `json:"need,omitempty"`
	Ops   []Op     `json:"ops,omitempty"`
	Drift []string `json:"drift,omitempty"`
	// Wait > 0 says: do nothing now, sync again after Wait (an ambiguous
	// create may still land; creating again before the tracker has been
	// checked in a way that would see it could file a second issue).
	Wait time.Duration `json:"wait,omitempty"`
	Note string        `json:"note,omitempty"`
}

// Op kinds beyond the field operations of Diff.
const (
	OpAdopt          OpKind = "adopt"           // link an existing issue carrying the key's marker
	OpMark           OpKind = "mark"            // complete the marker on the linked issue
	OpFollow         OpKind = "follow"          // the issue moved (Jira key, GitHub transfer)
	OpForget         OpKind = "forget"          // drop the link (issue gone, or intent abandoned)
	OpCloseDuplicate OpKind = "close_duplicate" // comment on and close a second issue of the key
)

// Drift classes a verifying sync reports.
const (
	DriftMissing   = "missing"
	DriftDangling  = "dangling"
	DriftMoved     = "moved"
	DriftUnlinked  = "unlinked"
	DriftDuplicate = "duplicate"
	DriftMarker    = "marker"
	DriftFields    = "fields"
	DriftStatus    = "status"
	DriftComments  = "comments"
)

// Decide decides what one sync of in.Key does. Pure: no store, tracker or
// clock; everything it needs is in the input, and what it lacks it asks
// for with Need.
func Decide(in PlanInput) Plan {
	if in.Desired.Skip {
		return Plan{Note: "the route's condition excludes the entity"}
	}
	switch {
	case in.Linked && in.Link.State == LinkLinked:
		return planLinkBack(in, planLinked(in))
	case in.Linked && in.Link.State == LinkCreating:
		return planLinkBack(in, planCreating(in))
	default:
		return planLinkBack(in, planUnlinked(in))
	}
}

func planLinked(in PlanInput) Plan {
	var p Plan
	link := in.Link
	m := MarkerFor(in.Key)
	base := link.Applied
	if in.Verify {
		if in.Live == nil && !in.Gone {
			return Plan{Need: NeedLive}
		}
		if in.Gone {
			// Dangling: the issue was deleted. Forget the link and file again,
			// unless a copy carrying the marker is known.
			p.Ops = append(p.Ops, Op{Kind: OpForget, Ref: refPtr(link.Issue)})
			p.Drift = append(p.Drift, DriftDangling)
			in.Linked, in.Link, in.Gone, in.Live = false, Link{}, false, nil
			in.Vouched = true // the store knew this key's issue; no other was filed
			rest := planUnlinked(in)
			if rest.Need != NeedNothing {
				return rest
			}
			p.Ops = append(p.Ops, rest.Ops...)
			p.Drift = append(p.Drift, slices.DeleteFunc(rest.Drift, func(c string) bool { return c == DriftMissing })...)
			p.Note = rest.Note
			return p
		}
		live := *in.Live
		if moved(link.Issue, live.Ref) {
			to := mergeRef(link.Issue, live.Ref)
			p.Ops = append(p.Ops, Op{Kind: OpFollow, Ref: &to})
			p.Drift = append(p.Drift, DriftMoved)
			link.Issue = to
		}
		base = BaselineFromIssue(live, link.Applied)
		if base.Status == "" {
			base.Status = link.Applied.Status
		}
		if live.MarkerID != m.ID && !slices.ContainsFunc(p.Ops, func(o Op) bool { return o.Kind == OpMark }) {
			p.Ops = append(p.Ops, Op{Kind: OpMark, Ref: refPtr(link.Issue)})
			p.Drift = append(p.Drift, DriftMarker)
		}
	} else if link.Applied.Unmarked {
		p.Ops = append(p.Ops, Op{Kind: OpMark, Ref: refPtr(link.Issue)})
	}
	if dups := planDuplicates(in, link.Issue); dups.Need == NeedNothing {
		if dups.adopt != nil {
			// The link points at a later copy: the oldest issue is canonical
			// (every replica and pass picks the same one).
			return withAdoption(in, p, *dups.adopt, dups)
		}
		p.Ops = append(p.Ops, dups.ops...)
		p.Drift = append(p.Drift, dups.drift...)
		p.Note = joinNote(p.Note, dups.note)
	}
	ops := converge(in, base, link.Applied)
	if in.Verify {
		p.Drift = append(p.Drift, driftOf(ops)...)
	}
	p.Ops = append(p.Ops, ops...)
	p.Note = joinNote(p.Note, blockedNote(in, base, link.Applied))
	return p
}

func planCreating(in PlanInput) Plan {
	if in.SearchedAt.IsZero() {
		return Plan{Need: NeedFind, Note: "an earlier attempt may have created the issue"}
	}
	if len(in.Found) > 0 {
		return withAdoption(in, Plan{}, oldest(in.Found), planDuplicatesIn(in, in.Found))
	}
	// Nothing found yet. A create whose answer was lost may still commit
	// until the tracker gives up on it: only a search made after that
	// would have seen it.
	if settled := in.Link.IntentAt.Add(in.LateCommit); in.SearchedAt.Before(settled) {
		wait := settled.Sub(in.Now)
		wait = max(wait, minWait)
		return Plan{Wait: wait, Note: fmt.Sprintf("an earlier create may still land; looking again after %s", settled.UTC().Format(time.RFC3339))}
	}
	if !in.Desired.Create {
		return Plan{Ops: []Op{{Kind: OpForget}}, Note: "no issue was created and none is wanted now"}
	}
	return planCreate(in)
}

func planUnlinked(in PlanInput) Plan {
	candidates := in.Listed
	if candidates == nil && !in.SearchedAt.IsZero() {
		candidates = in.Found
	}
	if len(candidates) > 0 {
		p := withAdoption(in, Plan{}, oldest(candidates), planDuplicatesIn(in, candidates))
		p.Drift = append([]string{DriftUnlinked}, p.Drift...)
		return p
	}
	listedNone := in.Listed != nil && !in.ListedAt.Before(in.Trusted)
	if !in.Vouched && !listedNone {
		if in.SearchedAt.IsZero() {
			return Plan{Need: NeedFind, Note: "the store cannot vouch that no issue exists for this key"}
		}
		if in.Desired.Create && in.SearchedAt.Before(in.Trusted) {
			wait := max(in.Trusted.Sub(in.Now), minWait)
			return Plan{Wait: wait, Note: "the store cannot vouch yet: a create of an earlier process may still land; looking again after " + in.Trusted.UTC().Format(time.RFC3339)}
		}
	}
	if !in.Desired.Create {
		return Plan{Note: "no issue is wanted (create_when is false or the entity is deleted)"}
	}
	p := planCreate(in)
	if in.Verify {
		p.Drift = append([]string{DriftMissing}, p.Drift...)
	}
	return p
}

// planCreate files the issue, then brings it the rest of the way: status
// (unless the new issue already has it) and comments.
func planCreate(in PlanInput) Plan {
	spec := in.Desired.Spec
	ops := []Op{{Kind: OpCreate, Spec: &spec}}
	for _, op := range Diff(spec, AppliedFromSpec(spec), nil) {
		if op.Kind == OpSetStatus {
			op.Cond = CondUnlessCreatedSo
		}
		ops = append(ops, op)
	}
	return Plan{Ops: ops}
}

// withAdoption links issue is, marks it where its marker is incomplete,
// closes the duplicates and converges it.
func withAdoption(in PlanInput, p Plan, is Issue, dups dupPlan) Plan {
	m := MarkerFor(in.Key)
	p.Ops = append(p.Ops, Op{Kind: OpAdopt, Issue: &is})
	if is.MarkerID != m.ID {
		p.Ops = append(p.Ops, Op{Kind: OpMark, Ref: refPtr(is.Ref)})
	}
	p.Ops = append(p.Ops, dups.ops...)
	p.Drift = append(p.Drift, dups.drift...)
	applied := AdoptedBaseline(is, in.Desired.Spec)
	ops := converge(in, applied, applied)
	if in.Verify {
		p.Drift = append(p.Drift, driftOf(ops)...)
	}
	p.Ops = append(p.Ops, ops...)
	p.Note = joinNote(p.Note, dups.note)
	return p
}

// AdoptedBaseline is the baseline of an issue found by its marker: what it
// carries now, with the managed labels those the spec asks for (the create
// that made it sent them) and its comments not all known.
func AdoptedBaseline(is Issue, spec IssueSpec) Applied {
	a := BaselineFromIssue(is, Applied{})
	a.Labels = intersect(sortedSet(spec.Labels), is.Labels)
	a.Unverified = true
	return a
}

// converge is the field, status and comment difference from base to the
// desired spec, leaving alone what the service does not know and a status
// the workflow cannot reach from where the issue is.
func converge(in PlanInput, base, applied Applied) []Op {
	spec := in.Desired.Spec
	if len(in.Desired.Unknown) > 0 {
		// Never write a field computed from data the service does not have
		// (a thin event, a lost store): it is create-only for this sync.
		spec.CreateOnly = append(slices.Clip(spec.CreateOnly), in.Desired.Unknown...)
	}
	ops := Diff(spec, base, managedLabels(applied.Labels, MarkerFor(in.Key)))
	if b := applied.Blocked; b != nil {
		ops = slices.DeleteFunc(ops, func(o Op) bool {
			return o.Kind == OpSetStatus && strings.EqualFold(o.Status, b.To) && strings.EqualFold(base.Status, b.From)
		})
	}
	return ops
}

func blockedNote(in PlanInput, base, applied Applied) string {
	b := applied.Blocked
	if b == nil || !strings.EqualFold(in.Desired.Spec.Status, b.To) || !strings.EqualFold(base.Status, b.From) {
		return ""
	}
	return fmt.Sprintf("status %q is unreachable from %q in the tracker's workflow; left as it is", b.To, b.From)
}

// managedLabels are the labels the service may remove: those it applied,
// never its own marker labels (they are how the issue is found again).
func managedLabels(applied []string, m Marker) []string {
	return slices.DeleteFunc(slices.Clone(applied), func(l string) bool { return IsMarkerLabel(l, m) })
}

// IsMarkerLabel reports whether l is part of the product's marker: the
// key's hashed label or the shared default label.
func IsMarkerLabel(l string, m Marker) bool {
	return l == m.Label || l == DefaultSharedLabel
}

// DefaultSharedLabel is the label every managed issue carries.
const DefaultSharedLabel = "qase-sync"

type dupPlan struct {
	Need  Need
	adopt *Issue // the canonical issue, when the link points elsewhere
	ops   []Op
	drift []string
	note  string
}

// planDuplicates closes the extra issues a reconcile pass listed for a
// linked key.
func planDuplicates(in PlanInput, linked IssueRef) dupPlan {
	if len(in.Listed) < 2 || !slices.ContainsFunc(in.Listed, func(is Issue) bool { return is.Ref.ID == linked.ID }) {
		return dupPlan{}
	}
	d := planDuplicatesIn(in, in.Listed)
	keep := oldest(in.Listed)
	if keep.Ref.ID != linked.ID {
		d.adopt = &keep
	}
	return d
}

// planDuplicatesIn closes every issue of list but the oldest, the way the
// route closes a deleted entity, with a comment pointing at the one kept.
func planDuplicatesIn(in PlanInput, list []Issue) dupPlan {
	if len(list) < 2 {
		return dupPlan{}
	}
	keep := oldest(list)
	var d dupPlan
	for _, is := range list {
		if is.Ref.ID == keep.Ref.ID {
			continue
		}
		if in.Closing == nil || in.Closing.Spec.Status == "" {
			d.drift = append(d.drift, DriftDuplicate)
			d.note = fmt.Sprintf("route %s has no status for deleted entities to close duplicate %s with", in.Key.Route, is.Ref)
			continue
		}
		if strings.EqualFold(is.Status, in.Closing.Spec.Status) {
			continue // closed already
		}
		dup, keepRef := is, keep.Ref
		d.ops = append(d.ops, Op{Kind: OpCloseDuplicate, Issue: &dup, Status: in.Closing.Spec.Status, Reason: in.Closing.Spec.Reason,
			Comment: &Comment{ID: "duplicate-of-" + keepRef.ID, Body: fmt.Sprintf("Duplicate of %s (%s), which qase-sync keeps in sync for %s. Closing this one.", keepRef.String(), keepRef.URL, in.Key.EntityRef)}})
		d.drift = append(d.drift, DriftDuplicate)
	}
	return d
}

// oldest is the canonical issue among copies: the first created, ties by id.
func oldest(list []Issue) Issue {
	l := slices.Clone(list)
	sort.SliceStable(l, func(i, j int) bool {
		if !l[i].CreatedAt.Equal(l[j].CreatedAt) {
			return l[i].CreatedAt.Before(l[j].CreatedAt)
		}
		return l[i].Ref.ID < l[j].Ref.ID
	})
	return l[0]
}

func driftOf(ops []Op) []string {
	var out []string
	for _, op := range ops {
		switch op.Kind {
		case OpUpdate:
			out = append(out, DriftFields)
		case OpSetStatus:
			out = append(out, DriftStatus)
		case OpComment:
			out = append(out, DriftComments)
		}
	}
	return out
}

func joinNote(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

func refPtr(r IssueRef) *IssueRef { return &r }

func moved(old, now IssueRef) bool {
	return (now.Key != "" && now.Key != old.Key) || (now.ID != "" && now.ID != old.ID) || (now.Project != "" && now.Project != old.Project)
}

func mergeRef(old, now IssueRef) IssueRef {
	if now.URL == "" {
		now.URL = old.URL
	}
	if now.ID == "" {
		now.ID = old.ID
	}
	return now
}

func intersect(want, have []string) []string {
	var out []string
	for _, w := range want {
		if slices.Contains(have, w) {
			out = append(out, w)
		}
	}
	return out
}
