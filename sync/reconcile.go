package sync

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// ReconcileOptions select what a pass covers.
type ReconcileOptions struct {
	Routes []string // empty = every route
	// Projects to enumerate from the Qase API for routes that accept any
	// project; projects already seen in links are always included.
	Projects []string
	DryRun   bool // compute and report, change nothing
}

// KeyReport is the dry-run view of one key.
type KeyReport struct {
	Key     string   `json:"key"`
	Issue   string   `json:"issue,omitempty"`
	Drift   []string `json:"drift,omitempty"`
	Ops     []Op     `json:"ops,omitempty"`
	Problem string   `json:"problem,omitempty"`
}

// ReconcileReport summarizes a pass.
type ReconcileReport struct {
	Checked    int            `json:"checked"`
	Enqueued   int            `json:"enqueued"`
	Drifted    int            `json:"drifted"`
	ByClass    map[string]int `json:"by_class"`
	Duplicates int            `json:"duplicates"`
	Failed     int            `json:"failed"`
	Keys       []KeyReport    `json:"keys,omitempty"` // dry run: keys with drift
}

func (r *ReconcileReport) drift(class string) {
	if r.ByClass == nil {
		r.ByClass = map[string]int{}
	}
	r.ByClass[class]++
}

// Reconcile enumerates every key from both sides — the Qase API and the
// store's links, plus every marked issue in the trackers — and makes each
// one converge through the normal worker path with verification against
// the live issue. Reads are batched: one list per side per 100 entities,
// and the results are handed to the workers so a verify costs no extra read.
func (e *Engine) Reconcile(ctx context.Context, o ReconcileOptions) (ReconcileReport, error) {
	rep := ReconcileReport{ByClass: map[string]int{}}
	e.clearCaches() // what an earlier pass read is stale now
	routes := o.Routes
	if len(routes) == 0 {
		routes = e.o.Mapper.RouteNames()
	}
	var all []Key
	lists := map[string][]Issue{} // one listing per tracker project per pass
	for _, name := range routes {
		ri, ok := e.o.Mapper.RouteInfo(name)
		if !ok {
			return rep, fmt.Errorf("unknown route %q", name)
		}
		keys, err := e.enumerate(ctx, ri, o, &rep, lists)
		if err != nil {
			return rep, fmt.Errorf("route %s: %w", name, err)
		}
		all = append(all, keys...)
	}
	rep.Checked = len(all)
	if o.DryRun {
		for _, k := range all {
			kr := e.dryRun(ctx, k)
			if kr.Problem != "" {
				rep.Failed++
			}
			if len(kr.Drift) > 0 {
				rep.Drifted++
				for _, c := range kr.Drift {
					rep.drift(c)
				}
			}
			if len(kr.Drift) > 0 || kr.Problem != "" {
				rep.Keys = append(rep.Keys, kr)
			}
		}
		e.clearCaches()
		return rep, nil
	}
	if err := e.o.Store.Enqueue(ctx, all, true, e.o.Clock.Now()); err != nil {
		return rep, err
	}
	rep.Enqueued = len(all)
	e.Wake()
	return rep, nil
}

// enumerate collects a route's keys and primes the caches.
func (e *Engine) enumerate(ctx context.Context, ri RouteInfo, o ReconcileOptions, rep *ReconcileReport, lists map[string][]Issue) ([]Key, error) {
	seen := map[Key]bool{}
	var keys []Key
	add := func(k Key) {
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	projects := map[string]bool{}
	for _, p := range ri.Projects {
		projects[p] = true
	}
	if len(ri.Projects) == 0 {
		for _, p := range o.Projects {
			projects[p] = true
		}
	}
	// Links first: they name keys even when the entity is gone from Qase.
	var after Key
	for {
		links, err := e.o.Store.Links(ctx, ri.Name, after, 500)
		if err != nil {
			return nil, err
		}
		for _, l := range links {
			add(l.Key)
			if len(ri.Projects) == 0 {
				projects[l.Key.Project] = true
			}
		}
		if len(links) < 500 {
			break
		}
		after = links[len(links)-1].Key
	}
	now := e.o.Clock.Now()
	if e.o.Source != nil {
		for _, p := range sortedKeys(projects) {
			err := e.o.Source.List(ctx, p, ri.Kind, func(ref EntityRef, attrs map[string]any) error {
				add(Key{Route: ri.Name, EntityRef: ref})
				e.primeEntity(ref, attrs, now)
				return nil
			})
			if err != nil && !IsPermanent(err) {
				return nil, fmt.Errorf("listing %s %ss: %w", p, ri.Kind, err)
			} else if err != nil {
				e.log.WithError(err).WithFields(logrus.Fields{"project": p, "kind": ri.Kind}).Warn("qase api refused the listing; reconciling from links only")
			}
		}
	}
	// Tracker side: every marked issue, in batches.
	tr, ok := e.o.Trackers[ri.Tracker]
	if !ok || ri.Project == "" {
		return keys, nil
	}
	issues, listed := lists[ri.Tracker+"\x00"+ri.Project]
	if !listed {
		var err error
		if issues, err = tr.List(ctx, ri.Project); err != nil {
			return nil, fmt.Errorf("listing issues in %s: %w", ri.Project, err)
		}
		lists[ri.Tracker+"\x00"+ri.Project] = issues
	}
	byKey := map[Key][]Issue{}
	for _, is := range issues {
		k, ok := ParseMarkerID(is.MarkerID)
		if !ok || k.Route != ri.Name {
			continue
		}
		byKey[k] = append(byKey[k], is)
	}
	for _, k := range sortedMapKeys(byKey) {
		list := byKey[k]
		add(k)
		keep, err := e.resolveDuplicates(ctx, k, tr, ri, list, o.DryRun, rep)
		if err != nil {
			rep.Failed++
			e.log.WithError(err).WithField("key", k.String()).Error("closing duplicate issues")
		}
		e.primeIssue(ri.Tracker, keep)
		e.primeMarked(ri.Tracker, k, keep)
	}
	return keys, nil
}

// resolveDuplicates keeps one issue per key (the linked one, else the
// oldest) and closes the others as duplicates with a pointer to it.
func (e *Engine) resolveDuplicates(ctx context.Context, k Key, tr Tracker, ri RouteInfo, list []Issue, dry bool, rep *ReconcileReport) (Issue, error) {
	sort.SliceStable(list, func(i, j int) bool { return list[i].CreatedAt.Before(list[j].CreatedAt) })
	keep := list[0] // the oldest is canonical
	if len(list) == 1 {
		return keep, nil
	}
	link, linked, err := e.o.Store.Link(ctx, k)
	if err != nil {
		return keep, err
	}
	if linked && link.Issue.ID != keep.Ref.ID && !dry {
		// The link points at a later copy (e.g. filed after a lost
		// database): the oldest issue takes over; the copy is closed below.
		link.State, link.Issue, link.UpdatedAt = LinkLinked, keep.Ref, e.o.Clock.Now()
		link.Applied = BaselineFromIssue(keep, Applied{Labels: link.Applied.Labels})
		link.Applied.Unverified = true
		if err := e.o.Store.SaveLink(ctx, link); err != nil {
			return keep, err
		}
	}
	// Close extras the way the route closes a deleted entity.
	ent, err := e.entity(ctx, k.EntityRef, false)
	if err != nil {
		return keep, err
	}
	ent.Deleted = true
	closing, err := e.o.Mapper.Desired(k.Route, ent)
	if err != nil || closing.Skip || closing.Spec.Status == "" {
		return keep, fmt.Errorf("route %s has no status for deleted entities to close duplicates with", k.Route)
	}
	for _, is := range list {
		if is.Ref.ID == keep.Ref.ID || (is.Status != "" && strings.EqualFold(is.Status, closing.Spec.Status)) {
			continue
		}
		rep.Duplicates++
		rep.drift("duplicate")
		e.o.Metrics.Drift(k.Route, "duplicate")
		if dry {
			rep.Keys = append(rep.Keys, KeyReport{Key: k.String(), Issue: is.Ref.String(), Drift: []string{"duplicate"},
				Ops: []Op{{Kind: OpComment, Comment: &Comment{ID: "duplicate-of-" + keep.Ref.ID}}, {Kind: OpSetStatus, Status: closing.Spec.Status, Reason: closing.Spec.Reason}}})
			continue
		}
		c := Comment{ID: "duplicate-of-" + keep.Ref.ID, Body: fmt.Sprintf("Duplicate of %s (%s), which qase-sync keeps in sync for %s. Closing this one.", keep.Ref.String(), keep.Ref.URL, k.EntityRef)}
		if has, err := tr.HasComment(ctx, is.Ref, c.ID); err != nil {
			return keep, err
		} else if !has {
			if err := tr.AddComment(ctx, is.Ref, c); err != nil {
				return keep, err
			}
		}
		if err := tr.SetStatus(ctx, is.Ref, closing.Spec.Status, closing.Spec.Reason); err != nil {
			return keep, err
		}
		e.log.WithFields(logrus.Fields{"key": k.String(), "duplicate": is.Ref.String(), "kept": keep.Ref.String()}).Warn("closed duplicate issue")
	}
	return keep, nil
}

func sortedMapKeys(m map[Key][]Issue) []Key {
	ks := make([]Key, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i].String() < ks[j].String() })
	return ks
}

// The caches a reconcile pass fills so that verifying costs no extra read.
// Entries are consumed once, or expire with the pass.

type freshEntity struct {
	attrs map[string]any
	at    time.Time
}

func (e *Engine) primeIssue(tracker string, is Issue) {
	e.liveMu.Lock()
	e.live[tracker+"\x00"+is.Ref.ID] = is
	e.liveMu.Unlock()
}

func (e *Engine) primeMarked(tracker string, k Key, is Issue) {
	e.liveMu.Lock()
	if e.marked == nil {
		e.marked = map[string]Issue{}
	}
	e.marked[tracker+"\x00"+k.String()] = is
	e.liveMu.Unlock()
}

// takeMarked returns (once) the issue a reconcile pass listed with k's marker.
func (e *Engine) takeMarked(tracker string, k Key) (Issue, bool) {
	e.liveMu.Lock()
	defer e.liveMu.Unlock()
	is, ok := e.marked[tracker+"\x00"+k.String()]
	if ok {
		delete(e.marked, tracker+"\x00"+k.String())
	}
	return is, ok
}

func (e *Engine) primeEntity(ref EntityRef, attrs map[string]any, at time.Time) {
	e.liveMu.Lock()
	if e.fresh == nil {
		e.fresh = map[EntityRef]freshEntity{}
	}
	e.fresh[ref] = freshEntity{attrs: attrs, at: at}
	e.liveMu.Unlock()
}

func (e *Engine) takeFresh(ref EntityRef) (freshEntity, bool) {
	e.liveMu.Lock()
	defer e.liveMu.Unlock()
	f, ok := e.fresh[ref]
	if ok {
		delete(e.fresh, ref)
	}
	// A listing older than this is no longer "just read" (a paced tracker
	// may take a while to get through a large pass).
	if ok && e.o.Clock.Now().Sub(f.at) > 10*time.Minute {
		return f, false
	}
	return f, ok
}

func (e *Engine) clearCaches() {
	e.liveMu.Lock()
	e.live = map[string]Issue{}
	e.fresh = nil
	e.marked = nil
	e.liveMu.Unlock()
}

// dryRun computes what verifying k would do, writing nothing.
func (e *Engine) dryRun(ctx context.Context, k Key) KeyReport {
	kr := KeyReport{Key: k.String()}
	ent, err := e.entity(ctx, k.EntityRef, false)
	if err != nil {
		kr.Problem = err.Error()
		return kr
	}
	d, err := e.o.Mapper.Desired(k.Route, ent)
	if err != nil {
		kr.Problem = err.Error()
		return kr
	}
	link, linked, err := e.o.Store.Link(ctx, k)
	if err != nil {
		kr.Problem = err.Error()
		return kr
	}
	if d.Skip {
		return kr
	}
	tr := e.o.Trackers[d.Tracker]
	if is, ok := e.takeMarked(d.Tracker, k); ok && !linked {
		kr.Issue, kr.Drift = is.Ref.String(), []string{"unlinked"} // would be adopted
		return kr
	}
	if !linked || link.State != LinkLinked {
		if d.Create && tr != nil {
			kr.Drift = []string{"missing"}
			sp := d.Spec
			kr.Ops = append([]Op{{Kind: OpCreate, Spec: &sp}}, Diff(d.Spec, AppliedFromSpec(d.Spec), nil)...)
		}
		return kr
	}
	kr.Issue = link.Issue.String()
	if tr == nil {
		kr.Problem = fmt.Sprintf("tracker %q is not configured", d.Tracker)
		return kr
	}
	live, err := e.liveIssue(ctx, d.Tracker, tr, link.Issue)
	if errors.Is(err, ErrNotFound) {
		kr.Drift = []string{"dangling"}
		if d.Create {
			sp := d.Spec
			kr.Ops = []Op{{Kind: OpCreate, Spec: &sp}}
		}
		return kr
	} else if err != nil {
		kr.Problem = err.Error()
		return kr
	}
	kr.Ops = Diff(d.Spec, BaselineFromIssue(live, link.Applied), link.Applied.Labels)
	for _, op := range kr.Ops {
		kr.Drift = append(kr.Drift, map[OpKind]string{OpUpdate: "fields", OpSetStatus: "status", OpComment: "comments", OpCreate: "missing"}[op.Kind])
	}
	if live.Ref.Key != "" && live.Ref.Key != link.Issue.Key {
		kr.Drift = append(kr.Drift, "moved")
	}
	return kr
}

// RebuildLinks reconstructs the correlation store from the markers inside
// the trackers' issues: a lost database is not a disaster. Existing links
// are kept; it returns how many were restored.
func (e *Engine) RebuildLinks(ctx context.Context, routes []string) (int, error) {
	if len(routes) == 0 {
		routes = e.o.Mapper.RouteNames()
	}
	n := 0
	now := e.o.Clock.Now()
	for _, name := range routes {
		ri, ok := e.o.Mapper.RouteInfo(name)
		if !ok {
			return n, fmt.Errorf("unknown route %q", name)
		}
		tr, ok := e.o.Trackers[ri.Tracker]
		if !ok || ri.Project == "" {
			continue
		}
		issues, err := tr.List(ctx, ri.Project)
		if err != nil {
			return n, fmt.Errorf("route %s: listing %s: %w", name, ri.Project, err)
		}
		sort.SliceStable(issues, func(i, j int) bool { return issues[i].CreatedAt.Before(issues[j].CreatedAt) })
		for _, is := range issues {
			k, ok := ParseMarkerID(is.MarkerID)
			if !ok || k.Route != name {
				continue
			}
			if _, found, err := e.o.Store.Link(ctx, k); err != nil {
				return n, err
			} else if found {
				continue // the oldest issue wins; duplicates are the reconciler's job
			}
			l := Link{Key: k, State: LinkLinked, Tracker: ri.Tracker, Marker: MarkerFor(k), Issue: is.Ref,
				CreatedAt: now, UpdatedAt: now, Applied: BaselineFromIssue(is, Applied{})}
			// Managed labels are unknown after a loss: none are treated as
			// managed, so no label is removed. Posted comments are known only
			// where the tracker reports them: look before posting.
			l.Applied.Labels = nil
			l.Applied.Unverified = true
			if err := e.o.Store.SaveLink(ctx, l); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// RunUntilIdle processes due jobs until none is left (one-shot CLI runs).
// Jobs waiting on a retry later than maxWait are left for the service.
func (e *Engine) RunUntilIdle(ctx context.Context, onResult func(Job, Result, error)) error {
	e.onResult = onResult
	defer func() { e.onResult = nil }()
	// A failing job backs off past "now", so the loop ends; its retry is
	// left to the service.
	for ctx.Err() == nil {
		jobs, err := e.o.Store.Lease(ctx, e.o.Owner, e.o.Concurrency, e.o.Clock.Now(), e.o.Lease)
		if err != nil {
			return err
		}
		if len(jobs) == 0 {
			return nil
		}
		for _, j := range jobs {
			e.Process(ctx, j)
		}
	}
	return ctx.Err()
}
