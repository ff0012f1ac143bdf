package sync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// Entity returns the current view of an entity: stored events folded into
// its snapshot, refreshed from the Qase API when a source is configured
// (payloads are thin; the API is the truth).
func (e *Engine) Entity(ctx context.Context, ref EntityRef) (Entity, error) {
	return e.entity(ctx, ref, true, nil, nil)
}

// entity folds the entity's new events into its snapshot and saves it
// (save), or leaves the save to the job's Finish (later set).
func (e *Engine) entity(ctx context.Context, ref EntityRef, save bool, pass *Pass, later *deferred) (Entity, error) {
	var (
		attrs  map[string]any
		found  bool
		readAt = e.o.Clock.Now()
		useAPI = e.o.Source != nil
	)
	if a, at, ok := pass.entity(ref, readAt); ok && useAPI {
		// Just listed by the reconcile pass: no second read.
		attrs, found, readAt = a, true, at
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
		var (
			snap Snapshot
			evs  []Event // read along with snap
			read bool
			err  error
		)
		if later != nil && later.key.EntityRef == ref {
			var r KeyRead
			if r, err = ReadKey(ctx, e.o.Store, later.key, eventPage); err != nil {
				return Entity{}, err
			}
			snap, evs, read = r.Snapshot, r.Events, true
			// Only the link outlives the fold: a page of events and their
			// payloads need not stay in memory through the tracker calls.
			later.read = &KeyRead{Link: r.Link, Linked: r.Linked}
		} else if snap, err = e.o.Store.Snapshot(ctx, ref); err != nil {
			return Entity{}, err
		}
		prev := snap.LastSeq
		for {
			if !read {
				if evs, err = e.o.Store.EventsAfter(ctx, ref, snap.LastSeq, eventPage); err != nil {
					return Entity{}, err
				}
			}
			read = false
			for _, ev := range evs {
				snap.State.Fold(ev)
				snap.LastSeq = ev.Seq
			}
			if len(evs) < eventPage {
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
		if later != nil {
			later.snap, later.prev = &snap, prev
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

// SyncOptions say how one key is synced.
type SyncOptions struct {
	// Verify compares with the live issue instead of the last applied
	// state (drift repair).
	Verify bool
	// Pass is what the current reconcile pass read (listings of entities
	// and marked issues), so verifying costs no extra read; nil: none.
	Pass *Pass
	// Job is the leased job the sync runs for: every link write is fenced
	// by its lease. Nil for syncs outside the queue (tests, tools).
	Job *Job
	// DryRun plans (making only reads) and executes nothing.
	DryRun bool
	Log    *logrus.Entry
	// later, when set, collects the writes that may wait for the job's
	// one Finish commit (Engine.process sets it).
	later *deferred
}

// deferred is what a queued sync leaves for its job's Finish: the folded
// snapshot and the link as the last write left it. Only what must be
// durable before a tracker call is saved at once: a create's intent (so
// a crash looks for the issue before creating again) and a comment
// marked pending (so it is looked up before posting again). Whatever
// else a crash loses before Finish, the next attempt redoes from the
// last saved link: idempotent field and status writes, never a second
// issue or comment.
type deferred struct {
	snap *Snapshot
	prev int64
	link *Link // nil: unchanged
	// key is the job's: entity reads its link along with its snapshot
	// (ReadKey) and leaves the link it read in read, for Sync. The job's
	// lease keeps anyone else from changing it meanwhile.
	key  Key
	read *KeyRead
}

// eventPage is how many events of an entity are read at a time.
const eventPage = 500

// Result is what one sync of a key planned and did.
type Result struct {
	Key     Key
	Outcome Outcome
	Plan    Plan     // what the planner decided
	Ops     []Op     // what was executed (none in a dry run)
	Issue   IssueRef // the key's issue, when known
	Drift   []string // drift classes found when verifying
	Detail  string   // what the ledger should say beyond the ops
}

// errSettling asks for a later sync that does not count as a failed
// attempt: an ambiguous create may still land.
var errSettling = errors.New("waiting for an earlier create to settle")

// Sync brings the key's tracker issue to what the mapping wants now: it
// gathers what is known, asks Plan, makes the reads the plan needs, and
// executes the plan in the crash-safe order, saving the link after each
// write.
func (e *Engine) Sync(ctx context.Context, k Key, o SyncOptions) (Result, error) {
	res := Result{Key: k, Outcome: OutcomeNoop}
	log := o.Log
	if log == nil {
		log = e.log.WithField("key", k.String())
	}
	if e.ingests(k) {
		return e.ingestRun(ctx, k, o)
	}
	ent, err := e.keyEntity(ctx, k, o)
	if err != nil {
		return res, err
	}
	if note := unknownFailure(k, ent); note != "" {
		res.Plan, res.Detail = Plan{Note: note}, note
		return res, nil
	}
	d, err := e.o.Mapper.Desired(k.Route, ent)
	if err != nil {
		return res, Permanent(fmt.Errorf("mapping route %s: %w", k.Route, err))
	}
	if d.Skip {
		res.Plan = Decide(PlanInput{Key: k, Desired: d})
		return res, nil
	}
	tr, ok := e.o.Trackers[d.Tracker]
	if !ok {
		return res, Permanentf("route %s: tracker %q is not configured", k.Route, d.Tracker)
	}
	var link Link
	var linked bool
	if o.later != nil && o.later.read != nil {
		link, linked = o.later.read.Link, o.later.read.Linked
	} else if link, linked, err = e.o.Store.Link(ctx, k); err != nil {
		return res, err
	}
	if linked && link.Tracker != "" && link.Tracker != d.Tracker {
		return res, Permanentf("route %s: issue %s lives in tracker %q but the route now targets %q; move the link or rebuild links", k.Route, link.Issue, link.Tracker, d.Tracker)
	}
	in := PlanInput{
		Key: k, Desired: d, Link: link, Linked: linked, Verify: o.Verify,
		Vouched: e.o.Coverage.Covered(k.Route), Trusted: e.o.Coverage.Trusted(), Now: e.o.Clock.Now(), LateCommit: e.o.LateCommit,
	}
	if o.Verify {
		in.Listed, in.ListedAt = o.Pass.marked(d.Tracker, k), o.Pass.started()
		if linked && link.State == LinkLinked {
			if is, ok := o.Pass.issue(d.Tracker, link); ok {
				in.Live = &is
			}
		}
	}
	tw, err := e.twoWay(ctx, &in, ent, tr)
	if err != nil {
		return res, err
	}
	p, err := e.plan(ctx, &in, ent, tr)
	if err == nil && tw != nil {
		p.Ops = append(slices.Clip(tw.plan.Ops), p.Ops...)
		if o.Verify && len(tw.plan.Ops) > 0 {
			p.Drift = append(p.Drift, DriftInbound)
		}
		if len(tw.plan.Conflicts) > 0 {
			p.Note = joinNote(p.Note, "changed on both sides: "+strings.Join(tw.plan.Conflicts, ", "))
		}
	}
	res.Plan, res.Drift = p, p.Drift
	if linked {
		res.Issue = link.Issue
	}
	if err != nil || o.DryRun {
		return res, err
	}
	if p.Wait > 0 {
		log.WithField("wait", p.Wait.Round(time.Second).String()).Info(p.Note)
		return res, RetryAfter(errSettling, p.Wait)
	}
	x := &executor{e: e, k: k, tr: tr, d: in.Desired, o: o, log: log, res: &res, link: link, linked: linked, marker: MarkerFor(k), tw: tw}
	err = x.run(ctx, p)
	if x.linked {
		res.Issue = x.link.Issue
	}
	for _, c := range res.Drift {
		e.o.Metrics.Drift(k.Route, c)
	}
	return res, err
}

// plan asks the planner until it needs nothing more, making the reads it
// asks for (at most one of each kind).
func (e *Engine) plan(ctx context.Context, in *PlanInput, ent Entity, tr Tracker) (Plan, error) {
	for range 3 {
		if in.Closing == nil && (len(in.Found) > 1 || len(in.Listed) > 1) {
			c, err := e.closing(in.Key, ent)
			if err != nil {
				return Plan{}, err
			}
			in.Closing = c
		}
		p := Decide(*in)
		switch p.Need {
		case NeedNothing:
			return p, nil
		case NeedLive:
			is, err := tr.Get(ctx, in.Link.Issue)
			if errors.Is(err, ErrNotFound) {
				in.Gone = true
			} else if err != nil {
				return p, fmt.Errorf("read %s: %w", in.Link.Issue, err)
			} else {
				in.Live = &is
			}
		case NeedFind:
			found, at, err := e.find(ctx, tr, *in)
			if err != nil {
				return p, fmt.Errorf("look for issues marked %s: %w", MarkerFor(in.Key).Label, err)
			}
			in.Found, in.SearchedAt = found, at
		}
	}
	return Decide(*in), nil
}

// find looks for issues carrying the key's marker. After an intent it
// waits once for trackers whose search lags writes, and bounds the search
// by the intent's time.
func (e *Engine) find(ctx context.Context, tr Tracker, in PlanInput) ([]Issue, time.Time, error) {
	m := MarkerFor(in.Key)
	project := in.Desired.Spec.Project
	var since time.Time
	if in.Linked && in.Link.State == LinkCreating {
		since = in.Link.IntentAt
	}
	found, err := tr.Find(ctx, project, m, since)
	at := e.o.Clock.Now()
	if err != nil || len(found) > 0 || since.IsZero() {
		return found, at, err
	}
	if st, ok := tr.(FindSettler); ok && st.FindSettle() > 0 {
		if err := e.o.Sleep(ctx, st.FindSettle()); err != nil {
			return nil, at, err
		}
		found, err = tr.Find(ctx, project, m, since)
		at = e.o.Clock.Now()
	}
	return found, at, err
}

// closing is how the route closes the key's entity once deleted: the
// status duplicates are closed with.
func (e *Engine) closing(k Key, ent Entity) (*Desired, error) {
	ent.Deleted = true
	d, err := e.o.Mapper.Desired(k.Route, ent)
	if err != nil {
		return nil, Permanent(fmt.Errorf("mapping route %s: %w", k.Route, err))
	}
	if d.Skip || d.Spec.Status == "" {
		return nil, nil
	}
	return &d, nil
}

// executor runs one plan's operations against the tracker and the store.
type executor struct {
	e      *Engine
	k      Key
	tr     Tracker
	d      Desired
	o      SyncOptions
	log    *logrus.Entry
	res    *Result
	link   Link
	linked bool
	marker Marker
	tw     *twoWayRun // nil: a one-way route
}

// forget deletes the link at once, fenced by the job's lease when there
// is one.
func (x *executor) forget(ctx context.Context) error {
	if x.o.later != nil {
		x.o.later.link = nil
	}
	if x.o.Job != nil {
		return x.e.o.Store.DeleteLinkFenced(ctx, x.k, *x.o.Job)
	}
	return x.e.o.Store.DeleteLink(ctx, x.k)
}

// save records the link after a write: at once, or with the job's Finish
// (see deferred).
func (x *executor) save(ctx context.Context) error {
	if x.o.later == nil {
		return x.persist(ctx)
	}
	x.link.UpdatedAt = x.e.o.Clock.Now()
	l := x.link
	// A copy as the store would keep it: later ops change x.link in place.
	b, err := json.Marshal(x.link.Applied)
	if err == nil {
		l.Applied = Applied{}
		err = json.Unmarshal(b, &l.Applied)
	}
	if err != nil {
		return fmt.Errorf("link of %s: %w", x.k, err)
	}
	x.o.later.link = &l
	return nil
}

// persist writes the link at once, fenced by the job's lease when there
// is one: for state a tracker call about to be made depends on.
func (x *executor) persist(ctx context.Context) error {
	if x.o.later != nil {
		x.o.later.link = nil
	}
	x.link.UpdatedAt = x.e.o.Clock.Now()
	if x.o.Job != nil {
		return x.e.o.Store.SaveLinkFenced(ctx, x.link, *x.o.Job)
	}
	return x.e.o.Store.SaveLink(ctx, x.link)
}

func (x *executor) run(ctx context.Context, p Plan) error {
	ran := func(op Op) {
		x.res.Ops = append(x.res.Ops, op)
		if op.Kind != OpForget && op.Kind != OpFollow {
			x.res.Outcome = OutcomeApplied
		}
		if op.Kind == OpQaseStatus || op.Kind == OpQaseUpdate || op.Kind == OpQaseLink {
			x.e.o.Metrics.TrackerOps("qase", op.Kind)
		} else if tracked(op.Kind) {
			x.e.o.Metrics.TrackerOps(x.d.Tracker, op.Kind)
		}
	}
	for i := 0; i < len(p.Ops); i++ {
		op := p.Ops[i]
		if op.Kind == OpSetStatus && i+1 < len(p.Ops) && p.Ops[i+1].Kind == OpComment {
			// A status change followed by its comment: one request where
			// the tracker can carry both.
			if sc, ok := x.tr.(StatusCommenter); ok {
				statusRan, both, err := x.statusWithComment(ctx, sc, op, *p.Ops[i+1].Comment)
				if err != nil {
					return err
				}
				if both {
					ran(op)
					ran(p.Ops[i+1])
					i++
					continue
				}
				if statusRan {
					ran(op)
				}
				continue // the comment op runs on its own
			}
		}
		did, err := x.do(ctx, op)
		if err != nil {
			return err
		}
		if did {
			ran(op)
		}
	}
	x.res.Detail = joinNote(x.res.Detail, p.Note)
	if !x.linked || x.link.State != LinkLinked {
		return nil
	}
	if x.tw != nil {
		// The two-way baseline: both sides as this sync leaves them.
		after := x.trackerAfter()
		sides := SidesAfter(x.tw.rule, x.tw.attrs, after, x.tw.tags(after.Labels), x.res.Ops)
		if !maps.Equal(sides, x.link.Applied.Sides) {
			x.link.Applied.Sides = sides
			if err := x.save(ctx); err != nil {
				return err
			}
		}
	}
	// Every op ran: the desired state is applied and every desired comment
	// accounted for.
	// A failure's comments grow with runs ingested later (after a lost
	// store the reconciler reads recent runs again, a job per run), so an
	// adopted failure issue keeps looking before each comment it posts.
	verified := x.link.Applied.Unverified && x.k.Kind != KindFailure
	if fp := Fingerprint(x.d.Spec); x.link.Fingerprint != fp || verified {
		x.link.Fingerprint = fp
		if verified {
			x.link.Applied.Unverified = false
		}
		return x.save(ctx)
	}
	return nil
}

func tracked(k OpKind) bool {
	return k != OpAdopt && k != OpForget && k != OpFollow
}

// do runs one op; ran=false when a condition made it unnecessary.
func (x *executor) do(ctx context.Context, op Op) (ran bool, err error) {
	e := x.e
	switch op.Kind {
	case OpAdopt:
		prev := x.link
		x.link = Link{Key: x.k, State: LinkLinked, Tracker: x.d.Tracker, Marker: x.marker, Issue: op.Issue.Ref,
			IntentAt: prev.IntentAt, CreatedAt: prev.CreatedAt}
		if x.link.CreatedAt.IsZero() {
			x.link.CreatedAt = e.o.Clock.Now()
		}
		x.link.Applied = AdoptedBaseline(*op.Issue, x.d.Spec)
		x.link.Applied.Unmarked = op.Issue.MarkerID != x.marker.ID
		x.linked = true
		x.log.WithField("issue", op.Issue.Ref.String()).Info("adopting the issue that carries this key's marker")
		return true, x.save(ctx)
	case OpMark:
		if err := x.tr.Mark(ctx, x.link.Issue, x.marker); err != nil {
			return false, fmt.Errorf("mark %s: %w", x.link.Issue, err)
		}
		x.link.Applied.Unmarked = false
		return true, x.save(ctx)
	case OpFollow:
		x.log.WithFields(logrus.Fields{"from": x.link.Issue.String(), "to": op.Ref.String()}).Info("issue moved; following")
		x.link.Issue = *op.Ref
		return true, x.save(ctx)
	case OpForget:
		if x.linked && x.link.State == LinkLinked {
			x.log.WithField("issue", x.link.Issue.String()).Warn("linked issue is gone; re-filing")
		}
		if err := x.forget(ctx); err != nil {
			return false, err
		}
		x.link, x.linked = Link{}, false
		return true, nil
	case OpCreate:
		return true, x.create(ctx, *op.Spec)
	case OpUpdate:
		if x.o.Verify {
			// Against the live issue every change repairs drift: a person's
			// edit, a missed event or a changed mapping.
			x.log.WithFields(logrus.Fields{"issue": x.link.Issue.String(), "changes": op.Changes}).Info("reverting tracker-side edits of synced fields")
		}
		u := *op.Update
		u.Marker = x.marker
		if err := x.tr.Update(ctx, x.link.Issue, u); err != nil {
			return false, fmt.Errorf("update %s: %w", x.link.Issue, err)
		}
		op.Update.ApplyTo(&x.link.Applied.IssueFields)
		if x.d.Spec.Owns("labels") && !slices.Contains(x.d.Unknown, "labels") {
			// The labels managed now are exactly the desired ones.
			x.link.Applied.Labels = sortedSet(x.d.Spec.Labels)
		}
		return true, x.save(ctx)
	case OpSetStatus:
		if op.Cond == CondUnlessCreatedSo && strings.EqualFold(x.link.Applied.Status, op.Status) {
			return false, nil
		}
		err := x.tr.SetStatus(ctx, x.link.Issue, op.Status, op.Reason)
		var ue *UnreachableError
		if errors.As(err, &ue) {
			return false, x.blocked(ctx, op, ue)
		}
		if err != nil {
			return false, fmt.Errorf("set status of %s to %q: %w", x.link.Issue, op.Status, err)
		}
		x.link.Applied.Status, x.link.Applied.Reason, x.link.Applied.Blocked = op.Status, op.Reason, nil
		return true, x.save(ctx)
	case OpComment:
		return true, x.comment(ctx, *op.Comment)
	case OpCloseDuplicate:
		return true, x.closeDuplicate(ctx, op)
	case OpQaseStatus, OpQaseUpdate:
		return true, x.writeBack(ctx, op)
	case OpQaseLink:
		return x.linkBack(ctx)
	}
	return false, fmt.Errorf("unknown op %q", op.Kind)
}

// blocked records that op's status is unreachable from where the issue
// is. Reported once: the link remembers, and later syncs leave the status
// alone until the wanted or the actual status changes.
func (x *executor) blocked(ctx context.Context, op Op, ue *UnreachableError) error {
	from := ue.From
	if from == "" {
		from = x.link.Applied.Status
	}
	x.link.Applied.Blocked = &Blocked{From: from, To: op.Status}
	x.link.Applied.Status = from
	x.res.Detail = joinNote(x.res.Detail, ue.Error())
	x.log.WithError(ue).WithField("issue", x.link.Issue.String()).Error("status unreachable; no transition made")
	return x.save(ctx)
}

// statusWithComment runs a set_status op and the comment op that follows
// it in one tracker call, keeping the comment's exactly-once protocol: the
// id is recorded as pending before the call. both=false leaves the
// comment to its own op: a retry whose comment may have been posted
// already (it is looked up there), a status the condition skips, or an
// unreachable status (then nothing was written).
func (x *executor) statusWithComment(ctx context.Context, sc StatusCommenter, op Op, c Comment) (statusRan, both bool, err error) {
	a := &x.link.Applied
	if op.Cond == CondUnlessCreatedSo && strings.EqualFold(a.Status, op.Status) {
		return false, false, nil
	}
	if slices.Contains(a.Pending, c.ID) || a.Unverified {
		ran, err := x.do(ctx, op)
		return ran, false, err
	}
	a.Pending = append(a.Pending, c.ID)
	if err := x.persist(ctx); err != nil {
		return false, false, err
	}
	err = sc.SetStatusWithComment(ctx, x.link.Issue, op.Status, op.Reason, c)
	var ue *UnreachableError
	if errors.As(err, &ue) {
		a.Pending = slices.DeleteFunc(a.Pending, func(s string) bool { return s == c.ID })
		return false, false, x.blocked(ctx, op, ue)
	}
	if err != nil {
		return false, false, fmt.Errorf("set status of %s to %q with comment %s: %w", x.link.Issue, op.Status, c.ID, err)
	}
	a.Status, a.Reason, a.Blocked = op.Status, op.Reason, nil
	a.Pending = slices.DeleteFunc(a.Pending, func(s string) bool { return s == c.ID })
	a.Comments = append(a.Comments, c.ID)
	return true, true, x.save(ctx)
}

// create follows the crash-safe protocol: intent first (fenced: a worker
// that lost its lease cannot create), the marker in the issue, the link
// right after.
func (x *executor) create(ctx context.Context, spec IssueSpec) error {
	e := x.e
	now := e.o.Clock.Now()
	created := x.link.CreatedAt
	if created.IsZero() {
		created = now
	}
	x.link = Link{Key: x.k, State: LinkCreating, Tracker: x.d.Tracker, Marker: x.marker, IntentAt: now, CreatedAt: created}
	x.linked = true
	if err := x.persist(ctx); err != nil {
		return err
	}
	is, err := x.tr.Create(ctx, spec, x.marker)
	if err != nil {
		if IsNotApplied(err) {
			// Certainly not created: the intent is void, and the next
			// attempt may create at once.
			if derr := x.forget(ctx); derr != nil {
				x.log.WithError(derr).Warn("could not drop the void create intent; the next attempt looks first")
			} else {
				x.link, x.linked = Link{}, false
			}
		}
		return fmt.Errorf("create issue: %w", err)
	}
	x.link.State, x.link.Issue = LinkLinked, is.Ref
	x.link.Applied = AppliedFromSpec(spec)
	x.link.Applied.Status, x.link.Applied.Reason = is.Status, is.Reason
	// The tracker may take the issue but not every part of its marker (a
	// Jira property write failed): complete it now, or the issue would
	// drop out of listings and rebuilds.
	x.link.Applied.Unmarked = is.MarkerID != x.marker.ID
	if err := x.save(ctx); err != nil {
		return err
	}
	if x.link.Applied.Unmarked {
		mark := Op{Kind: OpMark, Ref: refPtr(is.Ref)}
		if _, err := x.do(ctx, mark); err != nil {
			return err
		}
		x.res.Ops = append(x.res.Ops, mark)
	}
	return nil
}

// comment posts c exactly once: the id is recorded as pending before the
// call, and a pending id (or any id on an unverified baseline) is looked
// up on the issue before posting.
func (x *executor) comment(ctx context.Context, c Comment) error {
	a := &x.link.Applied
	if slices.Contains(a.Pending, c.ID) || a.Unverified {
		has, err := x.tr.HasComment(ctx, x.link.Issue, c.ID)
		if err != nil {
			return fmt.Errorf("look for comment %s on %s: %w", c.ID, x.link.Issue, err)
		}
		if has {
			a.Pending = slices.DeleteFunc(a.Pending, func(s string) bool { return s == c.ID })
			a.Comments = append(a.Comments, c.ID)
			return x.save(ctx)
		}
	}
	if !slices.Contains(a.Pending, c.ID) {
		a.Pending = append(a.Pending, c.ID)
		if err := x.persist(ctx); err != nil {
			return err
		}
	}
	if err := x.tr.AddComment(ctx, x.link.Issue, c); err != nil {
		return fmt.Errorf("comment on %s: %w", x.link.Issue, err)
	}
	a.Pending = slices.DeleteFunc(a.Pending, func(s string) bool { return s == c.ID })
	a.Comments = append(a.Comments, c.ID)
	return x.save(ctx)
}

// closeDuplicate comments on a second issue of the key (once) and closes
// it the way the route closes a deleted entity.
func (x *executor) closeDuplicate(ctx context.Context, op Op) error {
	ref := op.Issue.Ref
	has, err := x.tr.HasComment(ctx, ref, op.Comment.ID)
	if err != nil {
		return fmt.Errorf("look for comment on duplicate %s: %w", ref, err)
	}
	if !has {
		if err := x.tr.AddComment(ctx, ref, *op.Comment); err != nil {
			return fmt.Errorf("comment on duplicate %s: %w", ref, err)
		}
	}
	err = x.tr.SetStatus(ctx, ref, op.Status, op.Reason)
	var ue *UnreachableError
	if errors.As(err, &ue) {
		x.res.Detail = joinNote(x.res.Detail, fmt.Sprintf("duplicate %s not closed: %v", ref, ue))
		return nil
	}
	if err != nil {
		return fmt.Errorf("close duplicate %s: %w", ref, err)
	}
	x.log.WithFields(logrus.Fields{"duplicate": ref.String(), "kept": x.link.Issue.String()}).Warn("closed duplicate issue")
	return nil
}
