package sync

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"slices"
	"strings"
)

// OpKind names a tracker operation.
type OpKind string

// Operations the engine asks trackers for.
const (
	OpCreate    OpKind = "create"
	OpUpdate    OpKind = "update"
	OpSetStatus OpKind = "set_status"
	OpComment   OpKind = "comment"
)

// Change is one field difference, for plans, dry runs and drift reports.
type Change struct {
	Field string `json:"field"`
	From  any    `json:"from"`
	To    any    `json:"to"`
}

// Op is one tracker operation the diff decided on.
type Op struct {
	Kind    OpKind     `json:"op"`
	Spec    *IssueSpec `json:"spec,omitempty"`
	Update  *Update    `json:"update,omitempty"`
	Status  string     `json:"status,omitempty"`
	Reason  string     `json:"reason,omitempty"`
	Comment *Comment   `json:"comment,omitempty"`
	Changes []Change   `json:"changes,omitempty"`
	// Issue is the issue an adopt or close_duplicate is about; Ref the
	// issue a mark, follow or forget is about.
	Issue *Issue    `json:"issue,omitempty"`
	Ref   *IssueRef `json:"ref,omitempty"`
	// Cond, when set, names a condition checked when the op runs.
	Cond string `json:"cond,omitempty"`
	// Defect is the change a qase_update writes to the Qase defect.
	Defect *DefectUpdate `json:"defect,omitempty"`
	// Quiet are comment ids a qase_status write accounts for: the change
	// they would announce came from the tracker (no echo comment).
	Quiet []string `json:"quiet,omitempty"`
}

// CondUnlessCreatedSo: a status change planned after a create runs only
// if the new issue is not already in that status (the tracker decides
// where a new issue starts).
const CondUnlessCreatedSo = "unless the new issue already has it"

// String is the short form used in the ledger ("update:title,labels").
func (o Op) String() string {
	switch o.Kind {
	case OpUpdate:
		fs := make([]string, len(o.Changes))
		for i, c := range o.Changes {
			fs[i] = c.Field
		}
		return string(o.Kind) + ":" + strings.Join(fs, ",")
	case OpSetStatus, OpQaseStatus:
		return string(o.Kind) + ":" + o.Status
	case OpQaseUpdate:
		fs := make([]string, len(o.Changes))
		for i, c := range o.Changes {
			fs[i] = strings.TrimPrefix(c.Field, "qase.")
		}
		return string(o.Kind) + ":" + strings.Join(fs, ",")
	case OpComment:
		return string(o.Kind) + ":" + o.Comment.ID
	case OpAdopt, OpCloseDuplicate:
		if o.Issue != nil {
			return string(o.Kind) + ":" + o.Issue.Ref.String()
		}
	case OpFollow:
		if o.Ref != nil {
			return string(o.Kind) + ":" + o.Ref.String()
		}
	}
	return string(o.Kind)
}

// AppliedFromSpec is the baseline right after creating an issue from spec
// (its status is set by an operation of its own).
func AppliedFromSpec(spec IssueSpec) Applied {
	f := spec.canonical()
	f.Status, f.Reason = "", ""
	return Applied{IssueFields: f}
}

// BaselineFromIssue is the baseline when comparing with the live issue
// (reconcile): live field values, with our bookkeeping kept.
func BaselineFromIssue(is Issue, applied Applied) Applied {
	return Applied{
		IssueFields: is.canonical(),
		Comments:    mergeIDs(applied.Comments, is.CommentIDs), Pending: applied.Pending, Unverified: applied.Unverified,
	}
}

// canonical is f with its lists as sorted sets and its custom fields
// copied, the form a baseline keeps.
func (f IssueFields) canonical() IssueFields {
	f.Labels, f.Assignees, f.Components = sortedSet(f.Labels), sortedSet(f.Assignees), sortedSet(f.Components)
	f.Fields = copyFields(f.Fields)
	return f
}

// mergeIDs is the union of two id lists, in first-seen order.
func mergeIDs(a, b []string) []string {
	if len(b) == 0 {
		return a
	}
	seen := toSet(a)
	out := append([]string(nil), a...)
	for _, id := range b {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// Diff decides the operations that take an existing issue from base (what
// it looks like: last applied, or live when verifying) to spec. managed are
// the labels qase-sync applied before: only those are ever removed, so
// labels people add by hand survive. Fields the spec marks create-only are
// never touched. Pure; order: fields, status, comments.
func Diff(spec IssueSpec, base Applied, managed []string) []Op {
	var ops []Op
	var u Update
	var changes []Change
	str := func(field, want, have string, set func(*string)) {
		if spec.Owns(field) && normText(want) != normText(have) {
			w := want
			set(&w)
			changes = append(changes, Change{Field: field, From: have, To: want})
		}
	}
	str("title", spec.Title, base.Title, func(s *string) { u.Title = s })
	str("body", spec.Body, base.Body, func(s *string) { u.Body = s })
	if spec.Priority != "" {
		str("priority", spec.Priority, base.Priority, func(s *string) { u.Priority = s })
	}
	list := func(field string, want, have []string, set func(*[]string)) {
		w, h := sortedSet(want), sortedSet(have)
		if spec.Owns(field) && !slices.Equal(w, h) {
			set(&w)
			changes = append(changes, Change{Field: field, From: h, To: w})
		}
	}
	list("assignees", spec.Assignees, base.Assignees, func(s *[]string) { u.Assignees = s })
	list("components", spec.Components, base.Components, func(s *[]string) { u.Components = s })
	for _, k := range slices.Sorted(maps.Keys(spec.Fields)) {
		f := "fields." + k
		if spec.Owns(f) && normText(spec.Fields[k]) != normText(base.Fields[k]) {
			if u.Fields == nil {
				u.Fields = map[string]string{}
			}
			u.Fields[k] = spec.Fields[k]
			changes = append(changes, Change{Field: f, From: base.Fields[k], To: spec.Fields[k]})
		}
	}
	if spec.Owns("labels") {
		want, have := toSet(spec.Labels), toSet(base.Labels)
		for _, l := range sortedSet(spec.Labels) {
			if !have[l] {
				u.AddLabels = append(u.AddLabels, l)
			}
		}
		for _, l := range sortedSet(managed) {
			if !want[l] && have[l] {
				u.RemoveLabels = append(u.RemoveLabels, l)
			}
		}
		if len(u.AddLabels)+len(u.RemoveLabels) > 0 {
			changes = append(changes, Change{Field: "labels", From: sortedSet(base.Labels), To: sortedSet(spec.Labels)})
		}
	}
	if !u.Empty() {
		ops = append(ops, Op{Kind: OpUpdate, Update: &u, Changes: changes})
	}
	if spec.Status != "" && spec.Owns("status") {
		statusDiffers := !strings.EqualFold(spec.Status, base.Status)
		reasonDiffers := spec.Reason != "" && base.Reason != "" && !strings.EqualFold(spec.Reason, base.Reason)
		if statusDiffers || reasonDiffers {
			ops = append(ops, Op{Kind: OpSetStatus, Status: spec.Status, Reason: spec.Reason,
				Changes: []Change{{Field: "status", From: joinStatus(base.Status, base.Reason), To: joinStatus(spec.Status, spec.Reason)}}})
		}
	}
	posted := toSet(base.Comments)
	for _, c := range spec.Comments {
		if !posted[c.ID] {
			c := c
			ops = append(ops, Op{Kind: OpComment, Comment: &c})
		}
	}
	return ops
}

func joinStatus(status, reason string) string {
	if reason == "" {
		return status
	}
	return status + " (" + reason + ")"
}

// Fingerprint hashes a desired spec; equal fingerprints mean nothing to do
// unless the live issue drifted.
func Fingerprint(spec IssueSpec) string {
	b, _ := json.Marshal(spec)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}

// normText compares text the way trackers round-trip it: line endings and
// trailing white space are not differences.
func normText(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t")
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

func toSet(ss []string) map[string]bool {
	m := make(map[string]bool, len(ss))
	for _, s := range ss {
		m[s] = true
	}
	return m
}

// sortedSet is ss sorted, without duplicates and empty strings (nil when
// nothing is left).
func sortedSet(ss []string) []string {
	out := slices.Compact(slices.Sorted(slices.Values(ss)))
	out = slices.DeleteFunc(out, func(s string) bool { return s == "" })
	if len(out) == 0 {
		return nil
	}
	return out
}

func copyFields(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

// ApplyTo writes u over f as a tracker applies an update: a field u sets
// replaces f's, a custom field u sets to "" is cleared and the others are
// merged by id, and labels change as EditLabels says. Lists u sets are
// copied, never shared. The baseline of the next diff (Applied), the
// dry-run tracker and the in-memory stand-ins of trackers all apply
// updates through it.
func (u Update) ApplyTo(f *IssueFields) {
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	set(&f.Title, u.Title)
	set(&f.Body, u.Body)
	set(&f.Priority, u.Priority)
	if u.Assignees != nil {
		f.Assignees = slices.Clone(*u.Assignees)
	}
	if u.Components != nil {
		f.Components = slices.Clone(*u.Components)
	}
	for k, v := range u.Fields {
		if v == "" {
			delete(f.Fields, k)
			continue
		}
		if f.Fields == nil {
			f.Fields = map[string]string{}
		}
		f.Fields[k] = v
	}
	if len(u.AddLabels)+len(u.RemoveLabels) > 0 {
		f.Labels = EditLabels(f.Labels, u.AddLabels, u.RemoveLabels)
	}
}

// EditLabels returns labels without those in remove and with those in
// add that it lacks appended, in order, as Jira's label add and remove
// operations leave an issue's labels: the labels kept keep their order, no
// label appears twice and none is empty. A label in both lists ends up
// removed. labels itself is not changed.
func EditLabels(labels, add, remove []string) []string {
	out := make([]string, 0, len(labels)+len(add))
	for _, l := range slices.Concat(labels, add) {
		if l != "" && !slices.Contains(out, l) && !slices.Contains(remove, l) {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// Clone returns a copy of f that shares no list or map with it.
func (f IssueFields) Clone() IssueFields {
	f.Labels = slices.Clone(f.Labels)
	f.Assignees = slices.Clone(f.Assignees)
	f.Components = slices.Clone(f.Components)
	f.Fields = maps.Clone(f.Fields)
	return f
}
