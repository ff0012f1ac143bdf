package sync

import (
	"context"
	"slices"
	"strings"
	"time"
)

// Two-way routes: tracker changes flow back to Qase.
//
// Echoes are told from changes by the link's baseline, never by timing:
// Applied.Sides keeps, per two-way field, what each side held when the two
// last agreed (qase-sync wrote one from the other, or saw both). A side
// that still holds its baseline value did not change, whatever webhooks
// say; a change qase-sync made itself is in the baseline the moment it is
// made, so its echo finds nothing to do.

// Direction says which way a route's field flows.
type Direction string

// Directions.
const (
	DirOut        Direction = "out"         // Qase → tracker (the default)
	DirIn         Direction = "in"          // tracker → Qase; written to the tracker on create only
	DirBoth       Direction = "both"        // either way; the conflict rule settles changes on both sides
	DirCreateOnly Direction = "create_only" // written on create, never again either way
)

// Conflict rules for a field changed on both sides since the baseline.
const (
	ConflictNewest  = "newest"  // the side changed last wins (Qase's updated_at vs the issue's)
	ConflictQase    = "qase"    // Qase always wins
	ConflictTracker = "tracker" // the tracker always wins
)

// Two-way fields: the tracker field and the Qase defect attribute they pair.
const (
	FieldStatus   = "status"   // issue status (+ reason) ↔ defect status
	FieldTitle    = "title"    // issue title ↔ defect title
	FieldSeverity = "severity" // Jira priority ↔ defect severity
	FieldTags     = "tags"     // issue labels the route does not set otherwise ↔ defect tags
)

// TwoWayFields lists the fields a route may give a direction.
var TwoWayFields = []string{FieldStatus, FieldTitle, FieldSeverity, FieldTags}

// QaseDefectStatuses are the statuses the Qase API can set (it cannot set
// a defect back to open).
var QaseDefectStatuses = []string{"in_progress", "resolved", "invalid"}

// TwoWay is a route's reverse mapping (built by package mapping).
type TwoWay struct {
	// Fields gives each two-way field its direction; a field not named
	// flows out only.
	Fields map[string]Direction `json:"fields"`
	// Conflict is one of ConflictNewest (default), ConflictQase,
	// ConflictTracker.
	Conflict string `json:"conflict,omitempty"`
	// Status maps a tracker status to a Qase defect status. Keys are
	// lower case: "status:reason" (GitHub "closed:not_planned", Jira
	// "done:won't do"), "status", or "category:<key>" (Jira's status
	// category: new, indeterminate, done), tried in that order.
	Status map[string]string `json:"status,omitempty"`
	// Severity maps a tracker priority (lower case) to a Qase severity slug.
	Severity map[string]string `json:"severity,omitempty"`
}

// Dir is the field's direction (DirOut when not named).
func (t TwoWay) Dir(field string) Direction {
	if d, ok := t.Fields[field]; ok && d != "" {
		return d
	}
	return DirOut
}

// Inbound reports whether any field flows from the tracker to Qase.
func (t TwoWay) Inbound() bool {
	for _, d := range t.Fields {
		if d == DirIn || d == DirBoth {
			return true
		}
	}
	return false
}

// ReverseStatus maps the issue's status to a Qase defect status; ok=false
// when the table has no entry for it.
func (t TwoWay) ReverseStatus(status, reason, category string) (string, bool) {
	status, reason, category = strings.ToLower(status), strings.ToLower(reason), strings.ToLower(category)
	var keys []string
	if reason != "" {
		keys = append(keys, status+":"+reason)
	}
	keys = append(keys, status)
	if category != "" {
		keys = append(keys, "category:"+category)
	}
	for _, k := range keys {
		if v, ok := t.Status[k]; ok && v != "" {
			return v, true
		}
	}
	return "", false
}

// TwoWayMapper is implemented by mappers whose routes can be two-way.
type TwoWayMapper interface {
	// TwoWay returns the route's reverse mapping; ok=false for a one-way
	// route.
	TwoWay(route string) (TwoWay, bool)
}

// EntityWriter writes tracker-side changes back to Qase (the Qase API
// client). Failures are classified like a tracker's: Permanent(err) is
// dead-lettered, anything else retried.
type EntityWriter interface {
	// SetDefectStatus moves the defect to status (in_progress, resolved,
	// invalid; Qase cannot set open).
	SetDefectStatus(ctx context.Context, ref EntityRef, status string) error
	// UpdateDefect changes the defect's fields; nil leaves one alone.
	UpdateDefect(ctx context.Context, ref EntityRef, u DefectUpdate) error
}

// DefectUpdate is a change to a Qase defect's fields.
type DefectUpdate struct {
	Title    *string   `json:"title,omitempty"`
	Severity *string   `json:"severity,omitempty"` // slug (blocker … trivial)
	Tags     *[]string `json:"tags,omitempty"`     // the whole tag list
	// CustomFields by internal id (string values, as the API takes them).
	CustomFields map[string]string `json:"custom_fields,omitempty"`
}

// Side is what both sides of a two-way field held when they last agreed.
type Side struct {
	Qase    string `json:"qase"`
	Tracker string `json:"tracker"`
}

// Inbound operation kinds: writes to Qase.
const (
	OpQaseStatus OpKind = "qase_status" // PATCH /defect/{code}/status/{id}
	OpQaseUpdate OpKind = "qase_update" // PATCH /defect/{code}/{id}
)

// DriftInbound: a verifying sync found a tracker change Qase lacks (a
// tracker webhook that never arrived, or none configured).
const DriftInbound = "inbound"

// TrackerEventPrefix starts the names of tracker deliveries in the inbox
// ("tracker.github.issues"). They are hints that the key's issue changed:
// they carry no Qase attributes and are not folded into the entity.
const TrackerEventPrefix = "tracker."

// IsTrackerEvent reports whether an event name is a tracker delivery.
func IsTrackerEvent(name string) bool { return strings.HasPrefix(name, TrackerEventPrefix) }

// TrackerBodyKey marks a tracker delivery's DedupKey ("github:" +
// TrackerBodyKey + hash) derived from its body because the delivery
// carried no delivery id. Unlike a delivery id, an equal body need not be
// the same delivery (a GitHub issue closed, reopened and closed again
// within one second sends two equal "closed" bodies), so its duplicates
// still sync again, as Qase's do (invariant I6).
const TrackerBodyKey = "body-sha256:"

// quietTrackerDuplicate reports whether a duplicate of the tracker
// delivery with this DedupKey ("<tracker>:<delivery id>") is a redelivery
// of the same change: true unless the key is a body hash.
func quietTrackerDuplicate(dedupKey string) bool {
	_, id, ok := strings.Cut(dedupKey, ":")
	return ok && id != "" && !strings.HasPrefix(id, TrackerBodyKey)
}

// TwoWayInput is what the two-way decision depends on.
type TwoWayInput struct {
	Rule TwoWay
	// Attrs are the entity's current Qase attributes.
	Attrs map[string]any
	// Live is the tracker issue as read now.
	Live Issue
	// Sides is the link's baseline (nil: none yet; the first sync sets it
	// and writes nothing back).
	Sides map[string]Side
	// QaseAt and TrackerAt are when each side last changed (newest wins).
	QaseAt, TrackerAt time.Time
	// TrackerTags are the issue's labels that stand for Qase tags: those
	// neither the marker nor the route's other label templates account
	// for (TagLabels).
	TrackerTags []string
}

// TagLabels are the issue labels that stand for Qase tags: every label
// but the marker's and those the route sets for other reasons (nonTag:
// the labels the route renders for the entity without tags).
func TagLabels(labels []string, m Marker, nonTag []string) []string {
	var out []string
	for _, l := range labels {
		if !IsMarkerLabel(l, m) && !slices.ContainsFunc(nonTag, func(n string) bool { return strings.EqualFold(n, l) }) {
			out = append(out, l)
		}
	}
	return sortedSet(out)
}

// tagKey compares a tag with the label it became: trackers fold case and
// some turn spaces into dashes.
func tagKey(s string) string { return strings.ToLower(strings.Join(strings.Fields(s), "-")) }

// qaseTags reads the defect's tags attribute.
func qaseTags(attrs map[string]any) []string {
	var out []string
	switch t := attrs[FieldTags].(type) {
	case []any:
		for _, v := range t {
			if s, ok := v.(string); ok && s != "" {
				out = append(out, s)
			}
		}
	case []string:
		out = append(out, t...)
	}
	return sortedSet(out)
}

// tagDelta is the tag list after a tracker-side label change from base to
// cur: Qase's tags, less those whose label was removed, plus the labels
// added.
func tagDelta(qase, base, cur []string) []string {
	removed := map[string]bool{}
	for _, l := range base {
		if !slices.Contains(cur, l) {
			removed[tagKey(l)] = true
		}
	}
	var out []string
	have := map[string]bool{}
	for _, t := range qase {
		if !removed[tagKey(t)] {
			out = append(out, t)
			have[tagKey(t)] = true
		}
	}
	for _, l := range cur {
		if !slices.Contains(base, l) && !have[tagKey(l)] {
			out = append(out, l)
			have[tagKey(l)] = true
		}
	}
	return sortedSet(out)
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// TwoWayPlan is the two-way decision: what to write to Qase and which
// fields the outbound diff must leave alone this sync.
type TwoWayPlan struct {
	Ops []Op
	// Hold are fields the tracker keeps this sync: outbound writes of them
	// are dropped (the tracker side changed, or the field does not flow
	// out after create).
	Hold []string
	// Conflicts names fields changed on both sides, with the winner.
	Conflicts []string
}

// TrackerValue is the tracker side of a two-way field as compared with
// the baseline.
func TrackerValue(field string, f IssueFields) string {
	switch field {
	case FieldStatus:
		if f.Reason == "" {
			return strings.ToLower(f.Status)
		}
		return strings.ToLower(f.Status + ":" + f.Reason)
	case FieldTitle:
		return normText(f.Title)
	case FieldSeverity:
		return strings.ToLower(f.Priority)
	}
	return ""
}

// QaseValue is the Qase side of a two-way field.
func QaseValue(field string, attrs map[string]any) string {
	if field == FieldTags {
		return strings.Join(qaseTags(attrs), "\n")
	}
	s, _ := attrs[field].(string)
	if field == FieldTitle {
		return normText(s)
	}
	return strings.ToLower(s)
}

// reverse maps the tracker side of field to the Qase value it stands for.
func (t TwoWay) reverse(field string, live Issue) (string, bool) {
	switch field {
	case FieldStatus:
		v, ok := t.ReverseStatus(live.Status, live.Reason, live.StatusCategory)
		if !ok || !slices.Contains(QaseDefectStatuses, v) {
			return "", false // Qase cannot set open; validate says so
		}
		return v, true
	case FieldTitle:
		v := normText(live.Title)
		return v, v != ""
	case FieldSeverity:
		v, ok := t.Severity[strings.ToLower(live.Priority)]
		return v, ok && v != ""
	}
	return "", false
}

// DecideTwoWay decides, per two-way field, which side's change wins. Pure.
//
//   - neither side moved from the baseline: nothing flows (an echo of
//     qase-sync's own write, or nothing new), and the tracker is held;
//   - only Qase moved: the outbound diff writes the tracker as always;
//   - only the tracker moved: Qase is written from the reverse mapping and
//     the tracker is held;
//   - both moved: the conflict rule picks the side.
func DecideTwoWay(in TwoWayInput) TwoWayPlan {
	var p TwoWayPlan
	var u DefectUpdate
	for _, f := range TwoWayFields {
		dir := in.Rule.Dir(f)
		switch dir {
		case DirOut:
			continue
		case DirCreateOnly:
			p.Hold = append(p.Hold, f)
			continue
		}
		q, t := QaseValue(f, in.Attrs), TrackerValue(f, in.Live.IssueFields)
		if f == FieldTags {
			t = strings.Join(in.TrackerTags, "\n")
		}
		base, known := in.Sides[f]
		// Tags hold the whole label list: only a tracker-side change may.
		hold := func() {
			if f != FieldTags {
				p.Hold = append(p.Hold, f)
			}
		}
		if !known {
			// No baseline yet: nobody can tell which side changed. Leave
			// both; the sync records one.
			hold()
			continue
		}
		qMoved, tMoved := q != base.Qase, t != base.Tracker
		inbound := false
		switch {
		case dir == DirIn:
			inbound = tMoved
		case tMoved && qMoved:
			inbound = in.trackerWins()
			winner := "qase"
			if inbound {
				winner = "tracker"
			}
			p.Conflicts = append(p.Conflicts, f+": "+winner+" wins")
		case tMoved:
			inbound = true
		case !qMoved:
			hold() // nothing new on either side
		}
		if dir == DirIn && !inbound {
			hold() // never written out after create
		}
		if !inbound {
			continue
		}
		p.Hold = append(p.Hold, f)
		if f == FieldTags {
			if tags := tagDelta(qaseTags(in.Attrs), splitLines(base.Tracker), in.TrackerTags); !slices.Equal(tags, qaseTags(in.Attrs)) {
				u.Tags = &tags
			}
			continue
		}
		want, ok := in.Rule.reverse(f, in.Live)
		if !ok || want == q {
			continue
		}
		switch f {
		case FieldStatus:
			p.Ops = append(p.Ops, Op{Kind: OpQaseStatus, Status: want,
				Changes: []Change{{Field: "qase.status", From: q, To: want}}})
		case FieldTitle:
			u.Title = &want
		case FieldSeverity:
			u.Severity = &want
		}
	}
	if u.Title != nil || u.Severity != nil || u.Tags != nil {
		var ch []Change
		if u.Title != nil {
			ch = append(ch, Change{Field: "qase.title", From: QaseValue(FieldTitle, in.Attrs), To: *u.Title})
		}
		if u.Severity != nil {
			ch = append(ch, Change{Field: "qase.severity", From: QaseValue(FieldSeverity, in.Attrs), To: *u.Severity})
		}
		if u.Tags != nil {
			ch = append(ch, Change{Field: "qase.tags", From: qaseTags(in.Attrs), To: *u.Tags})
		}
		p.Ops = append([]Op{{Kind: OpQaseUpdate, Defect: &u, Changes: ch}}, p.Ops...)
	}
	return p
}

func (in TwoWayInput) trackerWins() bool {
	switch in.Rule.Conflict {
	case ConflictQase:
		return false
	case ConflictTracker:
		return true
	}
	// Newest: ties go to Qase, the source the route mirrors.
	return in.TrackerAt.After(in.QaseAt)
}

// SidesAfter is the baseline once a sync ran: each field's Qase value (as
// written back, or as read) and tracker value (as written, or as read).
// trackerTags are the issue's tag labels (FieldTags).
func SidesAfter(rule TwoWay, attrs map[string]any, tracker IssueFields, trackerTags []string, ops []Op) map[string]Side {
	out := map[string]Side{}
	for _, f := range TwoWayFields {
		if rule.Dir(f) == DirOut {
			continue
		}
		s := Side{Qase: QaseValue(f, attrs), Tracker: TrackerValue(f, tracker)}
		if f == FieldTags {
			s.Tracker = strings.Join(trackerTags, "\n")
		}
		for _, op := range ops {
			switch {
			case op.Kind == OpQaseStatus && f == FieldStatus:
				s.Qase = op.Status
			case op.Kind == OpQaseUpdate && f == FieldTitle && op.Defect.Title != nil:
				s.Qase = normText(*op.Defect.Title)
			case op.Kind == OpQaseUpdate && f == FieldSeverity && op.Defect.Severity != nil:
				s.Qase = strings.ToLower(*op.Defect.Severity)
			case op.Kind == OpQaseUpdate && f == FieldTags && op.Defect.Tags != nil:
				s.Qase = strings.Join(sortedSet(*op.Defect.Tags), "\n")
			}
		}
		out[f] = s
	}
	return out
}

// holdFields maps two-way fields to the spec fields the outbound diff must
// leave alone.
func holdFields(hold []string) []string {
	var out []string
	for _, f := range hold {
		switch f {
		case FieldStatus:
			out = append(out, "status", "reason")
		case FieldTitle:
			out = append(out, "title")
		case FieldSeverity:
			out = append(out, "priority")
		case FieldTags:
			out = append(out, "labels")
		}
	}
	return out
}

// LinkBack is a link written back to Qase.
type LinkBack struct {
	Run    bool  `json:"run,omitempty"`     // POST /run/{code}/external-issue (Jira)
	CaseID int64 `json:"case_id,omitempty"` // POST /case/{code}/external-issue/attach (Jira)
	// DefectTag adds the issue key to the defect's tags (Tags: its tags
	// now); DefectField writes the issue URL to that defect custom field.
	DefectTag   bool     `json:"defect_tag,omitempty"`
	Tags        []string `json:"tags,omitempty"`
	DefectField string   `json:"defect_field,omitempty"`
}

// LinkWriter writes issue links back to Qase (the Qase API client).
type LinkWriter interface {
	// LinkRunIssue sets the run's external issue (Qase keeps one per run).
	LinkRunIssue(ctx context.Context, ref EntityRef, linkType, issueKey string) error
	// AttachCaseIssue attaches the issue to a test case.
	AttachCaseIssue(ctx context.Context, project string, caseID int64, linkType, issueKey string) error
}

// OpQaseLink writes the issue's link back to Qase.
const OpQaseLink OpKind = "qase_link"

// planLinkBack adds the link write-back to a plan: after a create or an
// adoption, or when the issue's key changed since the last write-back.
func planLinkBack(in PlanInput, p Plan) Plan {
	lb := in.Desired.LinkBack
	if lb == nil || p.Need != NeedNothing || p.Wait > 0 {
		return p
	}
	fresh := slices.ContainsFunc(p.Ops, func(o Op) bool { return o.Kind == OpCreate || o.Kind == OpAdopt })
	stale := in.Linked && in.Link.State == LinkLinked && in.Link.Issue.Key != "" && in.Link.Applied.LinkedBack != in.Link.Issue.Key
	if fresh || stale {
		p.Ops = append(p.Ops, Op{Kind: OpQaseLink})
	}
	return p
}
