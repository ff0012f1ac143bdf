package sync

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	gosync "sync"
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
	Note    string   `json:"note,omitempty"`
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
	// Started is when the pass began; KeyList the keys it covered (a
	// caller reports their outcomes from the ledger).
	Started time.Time `json:"started"`
	KeyList []Key     `json:"-"`
}

// Count adds one key's drift classes to the report.
func (r *ReconcileReport) Count(drift []string) {
	if len(drift) == 0 {
		return
	}
	if r.ByClass == nil {
		r.ByClass = map[string]int{}
	}
	r.Drifted++
	for _, c := range drift {
		r.ByClass[c]++
		if c == DriftDuplicate {
			r.Duplicates++
		}
	}
}

// Pass is what one reconcile pass read, handed to the workers that verify
// its keys so a verify costs no second read. It is immutable once built.
type Pass struct {
	Started time.Time
	// entities listed from Qase, by ref.
	entities map[EntityRef]map[string]any
	// issues listed per tracker project; routes maps a route to the
	// listing of its tracker project.
	listings map[string][]Issue
	routes   map[string]string
}

// passMaxAge bounds how long a listing counts as just read (a paced
// tracker may take a while to get through a large pass).
const passMaxAge = 10 * time.Minute

func (p *Pass) entity(ref EntityRef, now time.Time) (map[string]any, time.Time, bool) {
	if p == nil || now.Sub(p.Started) > passMaxAge {
		return nil, time.Time{}, false
	}
	a, ok := p.entities[ref]
	return a, p.Started, ok
}

func (p *Pass) started() time.Time {
	if p == nil {
		return time.Time{}
	}
	return p.Started
}

// marked returns the listed issues carrying k's marker (whole, or its
// label alone: an incompletely marked issue is still the key's), nil when
// the pass did not list the route's tracker project.
func (p *Pass) marked(tracker string, k Key) []Issue {
	if p == nil {
		return nil
	}
	lk, ok := p.routes[k.Route]
	if !ok || !strings.HasPrefix(lk, tracker+"\x00") {
		return nil
	}
	m := MarkerFor(k)
	out := []Issue{}
	for _, is := range p.listings[lk] {
		if is.MarkerID == m.ID || (is.MarkerID == "" && slices.Contains(is.Labels, m.Label)) {
			out = append(out, is)
		}
	}
	return out
}

// issue returns the listed state of the link's issue, if the listing is
// newer than the link's last write (otherwise the listing is stale for it).
func (p *Pass) issue(tracker string, l Link) (Issue, bool) {
	if p == nil || !l.UpdatedAt.Before(p.Started) {
		return Issue{}, false
	}
	lk := p.routes[l.Key.Route]
	if !strings.HasPrefix(lk, tracker+"\x00") {
		return Issue{}, false
	}
	for _, is := range p.listings[lk] {
		if is.Ref.ID == l.Issue.ID {
			return is, true
		}
	}
	return Issue{}, false
}

// Reconcile enumerates every key from both sides — the Qase API and the
// store's links, plus every marked issue in the trackers — and makes each
// one converge through the normal worker path with verification against
// the live issue. Reads are batched (one list per side per 100 entities);
// the pass value carries them to the workers. A dry run plans every key
// with the same planner and changes nothing.
func (e *Engine) Reconcile(ctx context.Context, o ReconcileOptions) (ReconcileReport, error) {
	now := e.o.Clock.Now()
	rep := ReconcileReport{ByClass: map[string]int{}, Started: now}
	pass := &Pass{Started: now, entities: map[EntityRef]map[string]any{}, listings: map[string][]Issue{}, routes: map[string]string{}}
	routes := o.Routes
	if len(routes) == 0 {
		routes = e.o.Mapper.RouteNames()
	}
	var all []Key
	for _, name := range routes {
		ri, ok := e.o.Mapper.RouteInfo(name)
		if !ok {
			return rep, fmt.Errorf("unknown route %q", name)
		}
		keys, err := e.enumerate(ctx, ri, o, pass)
		if err != nil {
			return rep, fmt.Errorf("route %s: %w", name, err)
		}
		all = append(all, keys...)
	}
	rep.Checked, rep.KeyList = len(all), all
	if o.DryRun {
		for _, k := range all {
			res, err := e.Sync(ctx, k, SyncOptions{Verify: true, Pass: pass, DryRun: true})
			kr := KeyReport{Key: k.String(), Drift: res.Plan.Drift, Ops: res.Plan.Ops, Note: res.Plan.Note}
			if res.Issue != (IssueRef{}) {
				kr.Issue = res.Issue.String()
			}
			if err != nil {
				kr.Problem = err.Error()
				rep.Failed++
			}
			rep.Count(kr.Drift)
			if len(kr.Drift) > 0 || kr.Problem != "" {
				rep.Keys = append(rep.Keys, kr)
			}
		}
		return rep, nil
	}
	e.pass.Store(pass)
	if err := e.o.Store.Enqueue(ctx, all, true, now); err != nil {
		return rep, err
	}
	rep.Enqueued = len(all)
	e.Wake()
	return rep, nil
}

// enumerate collects a route's keys and fills the pass with what it read.
func (e *Engine) enumerate(ctx context.Context, ri RouteInfo, o ReconcileOptions, pass *Pass) ([]Key, error) {
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
	if e.o.Source != nil {
		for _, p := range slices.Sorted(maps.Keys(projects)) {
			if ri.Kind == KindFailure {
				// Failures are re-read from the project's recent runs.
				runs, err := e.recentRunKeys(ctx, ri, p)
				if err != nil {
					return nil, err
				}
				for _, k := range runs {
					add(k)
				}
				continue
			}
			err := e.o.Source.List(ctx, p, ri.Kind, func(ref EntityRef, attrs map[string]any) error {
				add(Key{Route: ri.Name, EntityRef: ref})
				pass.entities[ref] = attrs
				return nil
			})
			if err != nil && !IsPermanent(err) {
				return nil, fmt.Errorf("listing %s %ss: %w", p, ri.Kind, err)
			} else if err != nil {
				e.log.WithError(err).WithFields(logrus.Fields{"project": p, "kind": ri.Kind}).Warn("qase api refused the listing; reconciling from links only")
			}
		}
	}
	// Tracker side: every marked issue, one listing per tracker project.
	tr, ok := e.o.Trackers[ri.Tracker]
	if !ok || ri.Project == "" {
		return keys, nil
	}
	lk := ri.Tracker + "\x00" + ri.Project
	if _, listed := pass.listings[lk]; !listed {
		issues, err := tr.List(ctx, ri.Project)
		if err != nil {
			return nil, fmt.Errorf("listing issues in %s: %w", ri.Project, err)
		}
		if issues == nil {
			issues = []Issue{}
		}
		pass.listings[lk] = issues
	}
	pass.routes[ri.Name] = lk
	var marked []Key
	for _, is := range pass.listings[lk] {
		if k, ok := ParseMarkerID(is.MarkerID); ok && k.Route == ri.Name {
			marked = append(marked, k)
		}
	}
	slices.SortFunc(marked, func(a, b Key) int { return compareStrings(a.String(), b.String()) })
	for _, k := range marked {
		add(k)
	}
	return keys, nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// RebuildLinks reconstructs the correlation store from the markers inside
// the trackers' issues: a lost database is not a disaster. Existing links
// are kept; it returns how many were restored. Each route whose tracker
// project was listed completely is then covered: the store can vouch for
// its keys again.
func (e *Engine) RebuildLinks(ctx context.Context, routes []string) (int, error) {
	if len(routes) == 0 {
		routes = e.o.Mapper.RouteNames()
	}
	n := 0
	lists := map[string][]Issue{}
	for _, name := range routes {
		ri, ok := e.o.Mapper.RouteInfo(name)
		if !ok {
			return n, fmt.Errorf("unknown route %q", name)
		}
		tr, ok := e.o.Trackers[ri.Tracker]
		if !ok || ri.Project == "" {
			continue
		}
		listedAt := e.o.Clock.Now()
		lk := ri.Tracker + "\x00" + ri.Project
		issues, listed := lists[lk]
		if !listed {
			var err error
			if issues, err = tr.List(ctx, ri.Project); err != nil {
				return n, fmt.Errorf("route %s: listing %s: %w", name, ri.Project, err)
			}
			lists[lk] = issues
		}
		for _, is := range byAge(issues) {
			k, ok := ParseMarkerID(is.MarkerID)
			if !ok || k.Route != name {
				continue
			}
			if _, found, err := e.o.Store.Link(ctx, k); err != nil {
				return n, err
			} else if found {
				continue // the oldest issue wins; duplicates are the reconciler's job
			}
			now := e.o.Clock.Now()
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
		e.o.Coverage.Cover(name, listedAt)
	}
	return n, nil
}

func byAge(list []Issue) []Issue {
	l := slices.Clone(list)
	slices.SortStableFunc(l, func(a, b Issue) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return l
}

// Coverage knows the routes for which the store can vouch that a key
// without a link has no issue: those whose tracker project was listed and
// its marked issues linked since this process started. A new, lost or
// restored database cannot vouch until then, so creates on uncovered routes
// look for the key's marker first (invariant I7).
//
// A new database may have replaced one that was lost while creates were in
// flight; their intents are gone with it, and they can still commit until
// the late-commit window after the new database was created has passed.
// Until then neither a listing nor a search proves absence (Trusted).
type Coverage struct {
	mu     gosync.Mutex
	since  time.Time
	grace  time.Duration
	routes map[string]time.Time
}

// NewCoverage starts a process's coverage: since is when its store was
// created (Store.CreatedAt), grace the trackers' late-commit window.
func NewCoverage(since time.Time, grace time.Duration) *Coverage {
	return &Coverage{since: since, grace: grace}
}

// start sets when this process's knowledge begins, once.
func (c *Coverage) start(now time.Time, grace time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.since.IsZero() {
		c.since, c.grace = now, grace
	}
}

// Trusted is the time from which a search or listing that finds nothing
// proves that no issue exists.
func (c *Coverage) Trusted() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.since.Add(c.grace)
}

// Covered reports whether route's unlinked keys are known to have no issue.
func (c *Coverage) Covered(route string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.routes[route]
	return ok && !at.Before(c.since.Add(c.grace))
}

// Cover records that route was listed and linked completely at at; it
// counts once at is past Trusted.
func (c *Coverage) Cover(route string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.routes == nil {
		c.routes = map[string]time.Time{}
	}
	if at.After(c.routes[route]) {
		c.routes[route] = at
	}
}

// Routes lists the covered routes with the time of their listing.
func (c *Coverage) Routes() map[string]time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]time.Time{}
	for r, at := range c.routes {
		if !at.Before(c.since.Add(c.grace)) {
			out[r] = at
		}
	}
	return out
}

// ProcessUntilIdle processes due jobs until none is left (one-shot CLI
// runs), telling onResult about each. Jobs waiting on a retry later than
// now are left for the service.
func (e *Engine) ProcessUntilIdle(ctx context.Context, onResult func(Job, Result, error)) error {
	for ctx.Err() == nil {
		jobs, err := e.o.Store.Lease(ctx, e.o.Owner, e.o.Concurrency, e.o.Clock.Now(), e.o.Lease)
		if err != nil {
			return err
		}
		if len(jobs) == 0 {
			return nil
		}
		var wg gosync.WaitGroup
		for _, j := range jobs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				e.process(ctx, j, onResult)
			}()
		}
		wg.Wait()
	}
	return ctx.Err()
}
