package sync

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/sirupsen/logrus"
)

// The effects of two-way routes: what a sync reads for them (the issue,
// every time) and the Qase writes it runs. The decisions are in twoway.go.

// twoWayRun is what a two-way sync read and decided, for the executor.
type twoWayRun struct {
	rule   TwoWay
	attrs  map[string]any
	live   *Issue // nil when the issue was not read (no link yet)
	plan   TwoWayPlan
	marker Marker
	nonTag []string // labels the route sets for reasons other than tags
}

// tags are the tag labels among labels.
func (r *twoWayRun) tags(labels []string) []string { return TagLabels(labels, r.marker, r.nonTag) }

// twoWay reads the linked issue of a two-way route and decides what flows
// back; the outbound spec leaves alone what the tracker keeps. nil for a
// one-way route.
func (e *Engine) twoWay(ctx context.Context, in *PlanInput, ent Entity, tr Tracker) (*twoWayRun, error) {
	m, ok := e.o.Mapper.(TwoWayMapper)
	if !ok || in.Key.Kind != KindDefect {
		return nil, nil
	}
	rule, ok := m.TwoWay(in.Key.Route)
	if !ok {
		return nil, nil
	}
	run := &twoWayRun{rule: rule, attrs: ent.Attrs, marker: MarkerFor(in.Key)}
	if rule.Dir(FieldTags) != DirOut {
		// The labels the route renders without tags are not tags.
		bare := ent
		bare.Attrs = maps.Clone(ent.Attrs)
		bare.Attrs[FieldTags] = []any{}
		if d, err := e.o.Mapper.Desired(in.Key.Route, bare); err == nil {
			run.nonTag = d.Spec.Labels
		}
	}
	if !in.Linked || in.Link.State != LinkLinked {
		return run, nil // the create sets the baseline
	}
	if in.Live == nil && !in.Gone {
		// Tracker webhooks are hints: read the issue itself, every time.
		is, err := tr.Get(ctx, in.Link.Issue)
		switch {
		case errors.Is(err, ErrNotFound):
			in.Gone = true
			return run, nil
		case err != nil:
			return nil, fmt.Errorf("read %s: %w", in.Link.Issue, err)
		}
		in.Live = &is
	}
	if in.Live == nil {
		return run, nil
	}
	run.live = in.Live
	qaseAt, _ := ent.Attrs["updated_at"].(string)
	qt, _ := time.Parse(time.RFC3339, qaseAt)
	run.plan = DecideTwoWay(TwoWayInput{Rule: rule, Attrs: ent.Attrs, Live: *in.Live, Sides: in.Link.Applied.Sides,
		QaseAt: qt, TrackerAt: in.Live.UpdatedAt, TrackerTags: run.tags(in.Live.Labels)})
	if len(run.plan.Hold) > 0 {
		in.Desired.Spec.CreateOnly = append(slices.Clip(in.Desired.Spec.CreateOnly), holdFields(run.plan.Hold)...)
	}
	// A status written back would make the mapping announce, on the echo
	// of that write, a change the tracker's people made themselves: the
	// comments it adds are accounted for, not posted.
	for i, op := range run.plan.Ops {
		if op.Kind != OpQaseStatus {
			continue
		}
		after := ent
		after.Attrs = maps.Clone(ent.Attrs)
		after.Attrs["status"] = op.Status
		d, err := e.o.Mapper.Desired(in.Key.Route, after)
		if err != nil {
			continue
		}
		for _, c := range d.Spec.Comments {
			if !slices.ContainsFunc(in.Desired.Spec.Comments, func(x Comment) bool { return x.ID == c.ID }) &&
				!slices.Contains(in.Link.Applied.Comments, c.ID) {
				run.plan.Ops[i].Quiet = append(run.plan.Ops[i].Quiet, c.ID)
			}
		}
	}
	return run, nil
}

// writeBack runs an inbound op against the Qase API.
func (x *executor) writeBack(ctx context.Context, op Op) error {
	w := x.e.o.Writer
	if w == nil {
		return Permanentf("route %s flows tracker changes into Qase, but no Qase API token is configured", x.k.Route)
	}
	var err error
	if op.Kind == OpQaseStatus {
		err = w.SetDefectStatus(ctx, x.k.EntityRef, op.Status)
	} else {
		err = w.UpdateDefect(ctx, x.k.EntityRef, *op.Defect)
	}
	if err != nil {
		return fmt.Errorf("write %s back to qase: %w", x.k.EntityRef, err)
	}
	a := &x.link.Applied
	a.Comments = append(a.Comments, op.Quiet...)
	if op.Defect != nil && op.Defect.Tags != nil && x.tw != nil && x.tw.live != nil {
		// The tag labels are now the tracker's: managed from here on, so
		// the echo finds the labels it wants already applied.
		tags := x.tw.tags(x.tw.live.Labels)
		keep := slices.DeleteFunc(slices.Clone(a.Labels), func(l string) bool {
			return !slices.Contains(x.tw.live.Labels, l) && !slices.Contains(x.tw.nonTag, l)
		})
		a.Labels = sortedSet(append(keep, tags...))
	}
	// Record the write in the baseline at once: a retry after a later
	// failure must see it as ours, not as a change in Qase.
	if x.tw != nil && x.tw.live != nil {
		if a.Sides == nil {
			a.Sides = map[string]Side{}
		}
		done := SidesAfter(x.tw.rule, x.tw.attrs, x.tw.live.IssueFields, x.tw.tags(x.tw.live.Labels), []Op{op})
		for f, s := range done {
			if old, ok := a.Sides[f]; !ok || old.Qase != s.Qase {
				a.Sides[f] = s
			}
		}
	}
	x.log.WithFields(logrus.Fields{"op": op.String(), "issue": x.link.Issue.String()}).Info("tracker change written back to qase")
	return x.save(ctx)
}

// trackerAfter is the tracker side as the executed ops left it: the issue
// as read, with qase-sync's own writes applied.
func (x *executor) trackerAfter() IssueFields {
	var f IssueFields
	if x.tw.live != nil {
		f = x.tw.live.IssueFields.Clone()
	} else {
		f = x.link.Applied.IssueFields.Clone()
	}
	for _, op := range x.res.Ops {
		switch op.Kind {
		case OpUpdate:
			op.Update.ApplyTo(&f)
		case OpSetStatus, OpCreate:
			f.Status, f.Reason = x.link.Applied.Status, x.link.Applied.Reason
			if op.Kind == OpCreate {
				f = x.link.Applied.IssueFields.Clone()
			}
		}
	}
	return f
}

// linkBack runs an OpQaseLink for the key's issue.
func (x *executor) linkBack(ctx context.Context) (bool, error) {
	lb := x.d.LinkBack
	if lb == nil || !x.linked || x.link.State != LinkLinked || x.link.Issue.Key == "" {
		return false, nil
	}
	noToken := Permanentf("route %s writes links back to Qase, but no Qase API token is configured", x.k.Route)
	key := x.link.Issue.Key
	if lb.Run || lb.CaseID > 0 {
		w, ok := x.e.o.Writer.(LinkWriter)
		if !ok {
			return false, noToken
		}
		typ := x.e.o.LinkTypes[x.d.Tracker]
		if typ == "" {
			return false, Permanentf("route %s: tracker %s cannot be linked from Qase (Jira only)", x.k.Route, x.d.Tracker)
		}
		var err error
		if lb.Run {
			err = w.LinkRunIssue(ctx, x.k.EntityRef, typ, key)
		} else {
			err = w.AttachCaseIssue(ctx, x.k.Project, lb.CaseID, typ, key)
		}
		if err != nil {
			return false, fmt.Errorf("write the link of %s back to qase: %w", key, err)
		}
	}
	if lb.DefectTag || lb.DefectField != "" {
		if x.e.o.Writer == nil {
			return false, noToken
		}
		var u DefectUpdate
		if lb.DefectTag {
			tags := slices.DeleteFunc(slices.Clone(lb.Tags), func(t string) bool { return t == x.link.Applied.LinkedBack })
			if !slices.Contains(tags, key) {
				tags = append(tags, key)
			}
			u.Tags = &tags
		}
		if lb.DefectField != "" {
			u.CustomFields = map[string]string{lb.DefectField: x.link.Issue.URL}
		}
		if err := x.e.o.Writer.UpdateDefect(ctx, x.k.EntityRef, u); err != nil {
			return false, fmt.Errorf("write the link of %s back to qase: %w", key, err)
		}
	}
	x.link.Applied.LinkedBack = key
	return true, x.save(ctx)
}
