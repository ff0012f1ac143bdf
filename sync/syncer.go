package sync

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
)

// Entity returns the current view of an entity: stored events folded into
// its snapshot, refreshed from the Qase API when a source is configured
// (payloads are thin; the API is the truth).
func (e *Engine) Entity(ctx context.Context, ref EntityRef) (Entity, error) {
	return e.entity(ctx, ref, true)
}

func (e *Engine) entity(ctx context.Context, ref EntityRef, save bool) (Entity, error) {
	var (
		attrs  map[string]any
		found  bool
		readAt = e.o.Clock.Now()
		useAPI = e.o.Source != nil
	)
	if f, ok := e.takeFresh(ref); ok && useAPI {
		// Just listed by the reconciler: no second read.
		attrs, found, readAt, useAPI = f.attrs, true, f.at, true
	} else if useAPI {
		var err error
		attrs, found, err = e.o.Source.Fetch(ctx, ref)
		switch {
		case err == nil:
		case IsPermanent(err):
			// The API cannot serve this entity (plan lacks the feature, no
			// permission): events alone are still a usable view.
			e.log.WithError(err).WithField("entity", ref.String()).Warn("qase api read refused; using events only")
			useAPI = false
		default:
			return Entity{}, fmt.Errorf("reading %s from qase: %w", ref, err)
		}
	}
	for attempt := 0; ; attempt++ {
		snap, err := e.o.Store.Snapshot(ctx, ref)
		if err != nil {
			return Entity{}, err
		}
		prev := snap.LastSeq
		for {
			evs, err := e.o.Store.EventsAfter(ctx, ref, snap.LastSeq, 500)
			if err != nil {
				return Entity{}, err
			}
			for _, ev := range evs {
				snap.State.Fold(ev)
				snap.LastSeq = ev.Seq
			}
			if len(evs) < 500 {
				break
			}
		}
		if useAPI {
			snap.State.Observe(attrs, found, readAt)
		}
		snap.Ref = ref
		if !save {
			return snap.State.Entity(ref), nil
		}
		ok, err := e.o.Store.SaveSnapshot(ctx, snap, prev)
		if err != nil {
			return Entity{}, err
		}
		if ok || attempt >= 5 {
			return snap.State.Entity(ref), nil
		}
	}
}

// Sync brings the key's tracker issue to what the mapping wants now. With
// verify it compares against the live issue instead of the last applied
// state (drift repair).
func (e *Engine) Sync(ctx context.Context, k Key, verify bool, log *logrus.Entry) (Result, error) {
	res := Result{Key: k, Outcome: OutcomeNoop}
	ent, err := e.Entity(ctx, k.EntityRef)
	if err != nil {
		return res, err
	}
	d, err := e.o.Mapper.Desired(k.Route, ent)
	if err != nil {
		return res, Permanent(fmt.Errorf("mapping route %s: %w", k.Route, err))
	}
	link, linked, err := e.o.Store.Link(ctx, k)
	if err != nil {
		return res, err
	}
	if d.Skip {
		return res, nil
	}
	tr, ok := e.o.Trackers[d.Tracker]
	if !ok {
		return res, Permanentf("route %s: tracker %q is not configured", k.Route, d.Tracker)
	}
	if linked && link.Tracker != "" && link.Tracker != d.Tracker {
		return res, Permanentf("route %s: issue %s lives in tracker %q but the route now targets %q; move the link or rebuild links", k.Route, link.Issue, link.Tracker, d.Tracker)
	}
	s := &syncRun{e: e, k: k, tr: tr, d: d, log: log, res: &res}
	if !linked || link.State == LinkCreating {
		if err := s.ensureIssue(ctx, &link, linked); err != nil || link.State != LinkLinked {
			return res, err
		}
		if verify && len(res.Ops) > 0 {
			res.Drift = append(res.Drift, "missing")
			e.o.Metrics.Drift(k.Route, "missing")
		}
	} else if verify {
		live, err := e.liveIssue(ctx, d.Tracker, tr, link.Issue)
		if errors.Is(err, ErrNotFound) {
			// Dangling link: the issue was deleted. Forget it and file again
			// (an issue this reconcile pass listed with the key's marker is
			// adopted instead of creating one).
			res.Drift = append(res.Drift, "dangling")
			e.o.Metrics.Drift(k.Route, "dangling")
			log.WithField("issue", link.Issue.String()).Warn("linked issue is gone; re-filing")
			if err := e.o.Store.DeleteLink(ctx, k); err != nil {
				return res, err
			}
			link = Link{}
			if err := s.ensureIssue(ctx, &link, false); err != nil || link.State != LinkLinked {
				return res, err
			}
		} else if err != nil {
			return res, err
		} else {
			if moved(link.Issue, live.Ref) {
				// Moved (Jira: key changes, id stays) or transferred (GitHub:
				// repo and number change): follow it.
				log.WithFields(logrus.Fields{"from": link.Issue.String(), "to": live.Ref.String()}).Info("issue moved; following")
				link.Issue = mergeRef(link.Issue, live.Ref)
				res.Drift = append(res.Drift, "moved")
				if err := e.o.Store.SaveLink(ctx, link); err != nil {
					return res, err
				}
			}
			err := s.converge(ctx, &link, BaselineFromIssue(live, link.Applied), true)
			return res, err
		}
	}
	err = s.converge(ctx, &link, link.Applied, false)
	return res, err
}

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

// syncRun carries one key's sync through its steps.
type syncRun struct {
	e   *Engine
	k   Key
	tr  Tracker
	d   Desired
	log *logrus.Entry
	res *Result
}

// ensureIssue makes sure a tracker issue exists for the key, following the
// crash-safe create protocol: intent first, marker in the issue, look
// before creating again.
func (s *syncRun) ensureIssue(ctx context.Context, link *Link, hadLink bool) error {
	e, k, spec := s.e, s.k, s.d.Spec
	marker := MarkerFor(k)
	now := e.o.Clock.Now()
	if is, ok := e.takeMarked(s.d.Tracker, k); ok && !hadLink {
		// The reconciler saw an issue carrying this key's marker, but the
		// store has no link (lost database, restored backup): adopt it.
		s.adopt(link, is, marker, now)
		if err := e.o.Store.SaveLink(ctx, *link); err != nil {
			return err
		}
		s.log.WithField("issue", link.Issue.String()).Info("adopted marked issue that had no link")
		return nil
	}
	if hadLink && link.State == LinkCreating {
		// A previous attempt may have created the issue and lost the answer.
		found, err := s.find(ctx, spec.Project, marker, link.IntentAt)
		if err != nil {
			return err
		}
		if len(found) > 0 {
			s.adopt(link, found[0], marker, now)
			if err := e.o.Store.SaveLink(ctx, *link); err != nil {
				return err
			}
			s.log.WithField("issue", link.Issue.String()).Info("adopted issue created by an interrupted attempt")
			return nil
		}
	}
	if !s.d.Create {
		if hadLink {
			return e.o.Store.DeleteLink(ctx, k) // nothing was created and nothing is wanted
		}
		return nil
	}
	*link = Link{Key: k, State: LinkCreating, Tracker: s.d.Tracker, Marker: marker, IntentAt: now, CreatedAt: now, UpdatedAt: now}
	if err := e.o.Store.SaveLink(ctx, *link); err != nil {
		return err
	}
	is, err := s.tr.Create(ctx, spec, marker)
	if err != nil {
		return fmt.Errorf("create issue: %w", err)
	}
	e.o.Metrics.TrackerOps(s.d.Tracker, OpCreate)
	sp := spec
	s.res.Ops = append(s.res.Ops, Op{Kind: OpCreate, Spec: &sp})
	s.res.Outcome = OutcomeApplied
	link.State, link.Issue, link.UpdatedAt = LinkLinked, is.Ref, e.o.Clock.Now()
	link.Applied = AppliedFromSpec(spec)
	link.Applied.Status, link.Applied.Reason = is.Status, is.Reason
	if err := e.o.Store.SaveLink(ctx, *link); err != nil {
		return err
	}
	s.res.Issue = link.Issue
	return nil
}

// find looks up issues by marker, waiting once for trackers whose search
// lags behind writes.
func (s *syncRun) find(ctx context.Context, project string, m Marker, since time.Time) ([]Issue, error) {
	found, err := s.tr.Find(ctx, project, m, since)
	if err != nil || len(found) > 0 {
		return found, err
	}
	if st, ok := s.tr.(FindSettler); ok && st.FindSettle() > 0 {
		if err := s.e.o.Sleep(ctx, st.FindSettle()); err != nil {
			return nil, err
		}
		return s.tr.Find(ctx, project, m, since)
	}
	return nil, nil
}

func (s *syncRun) adopt(link *Link, is Issue, m Marker, now time.Time) {
	*link = Link{Key: s.k, State: LinkLinked, Tracker: s.d.Tracker, Marker: m, Issue: is.Ref,
		IntentAt: link.IntentAt, CreatedAt: link.CreatedAt, UpdatedAt: now}
	if link.CreatedAt.IsZero() {
		link.CreatedAt = now
	}
	// What the issue carries now is the baseline; the managed labels are the
	// ones the spec asked for, since the create that made it sent them.
	link.Applied = BaselineFromIssue(is, Applied{})
	link.Applied.Labels = intersect(sortedSet(s.d.Spec.Labels), is.Labels)
	link.Applied.Unverified = true // its comments are not all known
	s.res.Issue = is.Ref
	// The create happened, in the attempt that lost its answer.
	s.res.Outcome = OutcomeApplied
}

func intersect(want, have []string) []string {
	h := toSet(have)
	var out []string
	for _, w := range want {
		if h[w] {
			out = append(out, w)
		}
	}
	return out
}

// converge applies the diff from base to the desired spec, saving the
// link after every tracker write so a crash never repeats one.
func (s *syncRun) converge(ctx context.Context, link *Link, base Applied, verifying bool) error {
	e, spec := s.e, s.d.Spec
	s.res.Issue = link.Issue
	fp := Fingerprint(spec)
	if base.Status == "" {
		base.Status = link.Applied.Status
	}
	ops := Diff(spec, base, link.Applied.Labels)
	if len(ops) == 0 && len(link.Applied.Pending) == 0 {
		if link.Fingerprint != fp || link.Applied.Unverified {
			link.Fingerprint, link.Applied.Unverified = fp, false
			return e.o.Store.SaveLink(ctx, *link)
		}
		return nil
	}
	if verifying {
		// Against the live issue, every op repairs drift: a human edit, a
		// missed event or a changed mapping.
		for _, op := range ops {
			class := map[OpKind]string{OpUpdate: "fields", OpSetStatus: "status", OpComment: "comments"}[op.Kind]
			s.res.Drift = append(s.res.Drift, class)
			e.o.Metrics.Drift(s.k.Route, class)
			if op.Kind == OpUpdate {
				s.log.WithField("changes", op.Changes).Info("reverting tracker-side edits of synced fields")
			}
		}
	}
	save := func() error {
		link.UpdatedAt = e.o.Clock.Now()
		return e.o.Store.SaveLink(ctx, *link)
	}
	for _, op := range ops {
		switch op.Kind {
		case OpUpdate:
			if err := s.tr.Update(ctx, link.Issue, *op.Update); err != nil {
				return fmt.Errorf("update %s: %w", link.Issue, err)
			}
			link.Applied.applyUpdate(*op.Update)
			// Labels we now manage are exactly the desired ones.
			if spec.Owns("labels") {
				link.Applied.Labels = sortedSet(spec.Labels)
			}
		case OpSetStatus:
			if err := s.tr.SetStatus(ctx, link.Issue, op.Status, op.Reason); err != nil {
				return fmt.Errorf("set status of %s to %q: %w", link.Issue, op.Status, err)
			}
			link.Applied.Status, link.Applied.Reason = op.Status, op.Reason
		case OpComment:
			if err := s.comment(ctx, link, *op.Comment, save); err != nil {
				return err
			}
		}
		e.o.Metrics.TrackerOps(s.d.Tracker, op.Kind)
		s.res.Ops = append(s.res.Ops, op)
		s.res.Outcome = OutcomeApplied
		if err := save(); err != nil {
			return err
		}
	}
	link.Fingerprint = fp
	link.Applied.Unverified = false // every desired comment is now accounted for
	return save()
}

// comment posts c exactly once: the id is recorded as pending before the
// call, and a pending id is looked up on the issue before posting again.
func (s *syncRun) comment(ctx context.Context, link *Link, c Comment, save func() error) error {
	if contains(link.Applied.Pending, c.ID) || link.Applied.Unverified {
		has, err := s.tr.HasComment(ctx, link.Issue, c.ID)
		if err != nil {
			return fmt.Errorf("look for comment %s on %s: %w", c.ID, link.Issue, err)
		}
		if has {
			link.Applied.Pending = remove(link.Applied.Pending, c.ID)
			link.Applied.Comments = append(link.Applied.Comments, c.ID)
			return nil
		}
		if !contains(link.Applied.Pending, c.ID) {
			link.Applied.Pending = append(link.Applied.Pending, c.ID)
			if err := save(); err != nil {
				return err
			}
		}
	} else {
		link.Applied.Pending = append(link.Applied.Pending, c.ID)
		if err := save(); err != nil {
			return err
		}
	}
	if err := s.tr.AddComment(ctx, link.Issue, c); err != nil {
		return fmt.Errorf("comment on %s: %w", link.Issue, err)
	}
	link.Applied.Pending = remove(link.Applied.Pending, c.ID)
	link.Applied.Comments = append(link.Applied.Comments, c.ID)
	return nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func remove(ss []string, s string) []string {
	out := ss[:0:0]
	for _, x := range ss {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

// liveIssue returns the issue prefetched by the current reconcile pass, or
// reads it.
func (e *Engine) liveIssue(ctx context.Context, tracker string, tr Tracker, ref IssueRef) (Issue, error) {
	e.liveMu.Lock()
	is, ok := e.live[tracker+"\x00"+ref.ID]
	if ok {
		delete(e.live, tracker+"\x00"+ref.ID)
	}
	e.liveMu.Unlock()
	if ok {
		return is, nil
	}
	return tr.Get(ctx, ref)
}
