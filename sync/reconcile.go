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
	// Incremental asks for an incremental pass: per Qase project and kind,
	// only the entities updated since its checkpoint (minus Overlap) are
	// read, through the source's search (ChangeSource). Kinds the source
	// cannot search, and the tracker side, are left to full sweeps. A
	// full sweep runs instead when none has started within FullEvery.
	Incremental bool
	// FullEvery is the backstop: an incremental pass becomes a full sweep
	// when the last full sweep started longer ago (0: never forced).
	FullEvery time.Duration
	// Overlap is how far before a checkpoint a search starts again: clock
	// skew between this host and Qase, and Qase writes that commit late.
	Overlap time.Duration
}

// Pass modes a report names.
const (
	ModeFull        = "full"
	ModeIncremental = "incremental"
)

// CheckpointFull names the checkpoint of the last full sweep.
const CheckpointFull = "full"

// CheckpointName names the checkpoint of a project's entities of a kind.
func CheckpointName(project string, kind Kind) string {
	return "search/" + project + "/" + string(kind)
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
	Mode     string `json:"mode"` // full | incremental
	Checked  int    `json:"checked"`
	Enqueued int    `json:"enqueued"`
	// Unchanged counts the keys the pass found in sync in memory (from
	// what it read, the stored link and the planner): no job, no write.
	Unchanged int `json:"unchanged"`
	// FullOnly lists the kinds an incremental pass could not search; only
	// full sweeps reconcile them.
	FullOnly   []Kind         `json:"full_only,omitempty"`
	Drifted    int            `json:"drifted"`
	ByClass    map[string]int `json:"by_class"`
	Duplicates int            `json:"duplicates"`
	Failed     int            `json:"failed"`
	Keys       []KeyReport    `json:"keys,omitempty"` // dry run: keys with drift
	// Started is when the pass began; KeyList the keys it enqueued (a
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
	// index of each listing: by issue id, and by marker id (or marker
	// label, for issues whose marker is incomplete), so a pass over N
	// keys costs N lookups, not N scans of the listing.
	byIssue  map[string]map[string]int
	byMarker map[string]map[string][]int
	// links read while enumerating, by key (full sweeps).
	links map[Key]Link
}

func newPass(now time.Time) *Pass {
	return &Pass{Started: now, entities: map[EntityRef]map[string]any{}, listings: map[string][]Issue{},
		routes: map[string]string{}, byIssue: map[string]map[string]int{}, byMarker: map[string]map[string][]int{},
		links: map[Key]Link{}}
}

// list stores a tracker project's listing and indexes it.
func (p *Pass) list(lk string, issues []Issue) {
	p.listings[lk] = issues
	byIssue, byMarker := map[string]int{}, map[string][]int{}
	for i, is := range issues {
		if _, dup := byIssue[is.Ref.ID]; !dup {
			byIssue[is.Ref.ID] = i
		}
		if is.MarkerID != "" {
			byMarker[is.MarkerID] = append(byMarker[is.MarkerID], i)
			continue
		}
		for _, l := range is.Labels {
			byMarker[l] = append(byMarker[l], i)
		}
	}
	p.byIssue[lk], p.byMarker[lk] = byIssue, byMarker
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
	idx := slices.Concat(p.byMarker[lk][m.ID], p.byMarker[lk][m.Label])
	slices.Sort(idx) // listing order, as a scan would give
	out := make([]Issue, 0, len(idx))
	for i, n := range idx {
		if i > 0 && n == idx[i-1] {
			continue
		}
		is := p.listings[lk][n]
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
	if i, ok := p.byIssue[lk][l.Issue.ID]; ok {
		return p.listings[lk][i], true
	}
	return Issue{}, false
}

// Reconcile makes every key converge through the normal worker path.
//
// A full sweep enumerates every key from both sides — the Qase API and
// the store's links, plus every marked issue in the trackers — and
// verifies each against the live issue. Reads are batched (one list per
// side per 100 entities); the pass value carries them to the workers.
//
// An incremental pass (o.Incremental, while a full sweep ran within
// o.FullEvery) reads only the Qase entities updated since each project's
// checkpoint and syncs them against their links; it cannot see tracker
// edits, deleted entities or kinds the source cannot search, which the
// full sweeps repair.
//
// Either way a key is enqueued only when the planner, given what the pass
// read, would do something: a pass over unchanged keys writes nothing per
// key. Checkpoints advance only after the keys found were enqueued. A dry
// run plans every key with the same planner and changes nothing.
func (e *Engine) Reconcile(ctx context.Context, o ReconcileOptions) (ReconcileReport, error) {
	now := e.o.Clock.Now()
	rep := ReconcileReport{ByClass: map[string]int{}, Started: now, Mode: ModeFull}
	pass := newPass(now)
	routes := o.Routes
	if len(routes) == 0 {
		routes = e.o.Mapper.RouteNames()
	}
	cps, err := e.o.Store.Checkpoints(ctx)
	if err != nil {
		return rep, fmt.Errorf("reading reconcile checkpoints: %w", err)
	}
	// Without a source that can search (no Qase token), an incremental
	// pass would see nothing: every pass is a full sweep then.
	_, searches := e.o.Source.(ChangeSource)
	if last, ok := cps[CheckpointFull]; o.Incremental && searches && ok && (o.FullEvery <= 0 || now.Sub(last) < o.FullEvery) {
		rep.Mode = ModeIncremental
	}
	en := &enumeration{o: o, pass: pass, cps: cps, save: map[string]time.Time{}, searched: map[string][]EntityRef{}, rep: &rep}
	var all []Key
	for _, name := range routes {
		ri, ok := e.o.Mapper.RouteInfo(name)
		if !ok {
			return rep, fmt.Errorf("unknown route %q", name)
		}
		enumerate := e.enumerate
		if rep.Mode == ModeIncremental {
			enumerate = e.enumerateChanged
		}
		keys, err := enumerate(ctx, ri, en)
		if err != nil {
			return rep, fmt.Errorf("route %s: %w", name, err)
		}
		all = append(all, keys...)
	}
	verify := rep.Mode == ModeFull
	rep.Checked = len(all)
	if o.DryRun {
		for _, k := range all {
			res, err := e.Sync(ctx, k, SyncOptions{Verify: verify, Pass: pass, DryRun: true})
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
	var due []Key
	for _, k := range all {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if e.needsSync(ctx, k, pass, verify) {
			due = append(due, k)
		}
	}
	rep.Unchanged, rep.Enqueued, rep.KeyList = len(all)-len(due), len(due), due
	if verify {
		e.pass.Store(pass)
	}
	if len(due) > 0 {
		if err := e.o.Store.Enqueue(ctx, due, verify, now); err != nil {
			return rep, err
		}
		e.Wake()
	}
	// Only now, with every change found enqueued durably, may the
	// checkpoints move past it.
	if rep.Mode == ModeFull && len(o.Routes) == 0 {
		en.save[CheckpointFull] = now
	}
	if len(en.save) > 0 {
		if err := e.o.Store.SaveCheckpoints(ctx, en.save); err != nil {
			return rep, fmt.Errorf("saving reconcile checkpoints: %w", err)
		}
	}
	return rep, nil
}

// enumeration is what one pass's enumeration shares across routes.
type enumeration struct {
	o    ReconcileOptions
	pass *Pass
	cps  map[string]time.Time // checkpoints as read at the start
	save map[string]time.Time // checkpoints to save once the keys are enqueued
	// searched: entities found per checkpoint name, so routes over the
	// same project and kind share one read.
	searched map[string][]EntityRef
	rep      *ReconcileReport
}

// projects are the Qase projects a route covers: its own list, else the
// configured ones plus those its links name. When links is non-nil every
// link read is handed to it.
func (e *Engine) projects(ctx context.Context, ri RouteInfo, o ReconcileOptions, links func(Link)) ([]string, error) {
	projects := map[string]bool{}
	for _, p := range ri.Projects {
		projects[p] = true
	}
	if len(ri.Projects) == 0 {
		for _, p := range o.Projects {
			projects[p] = true
		}
	}
	if links == nil && len(ri.Projects) > 0 {
		return slices.Sorted(maps.Keys(projects)), nil
	}
	var after Key
	for {
		ls, err := e.o.Store.Links(ctx, ri.Name, after, 500)
		if err != nil {
			return nil, err
		}
		for _, l := range ls {
			if links != nil {
				links(l)
			}
			if len(ri.Projects) == 0 {
				projects[l.Key.Project] = true
			}
		}
		if len(ls) < 500 {
			break
		}
		after = ls[len(ls)-1].Key
	}
	return slices.Sorted(maps.Keys(projects)), nil
}

// keySet collects keys in first-seen order, once each.
type keySet struct {
	seen map[Key]bool
	keys []Key
}

func (s *keySet) add(k Key) {
	if s.seen == nil {
		s.seen = map[Key]bool{}
	}
	if !s.seen[k] {
		s.seen[k] = true
		s.keys = append(s.keys, k)
	}
}

// enumerate collects a route's keys for a full sweep and fills the pass
// with what it read.
func (e *Engine) enumerate(ctx context.Context, ri RouteInfo, en *enumeration) ([]Key, error) {
	var ks keySet
	pass := en.pass
	// Links first: they name keys even when the entity is gone from Qase.
	projects, err := e.projects(ctx, ri, en.o, func(l Link) {
		ks.add(l.Key)
		pass.links[l.Key] = l
	})
	if err != nil {
		return nil, err
	}
	if e.o.Source != nil {
		for _, p := range projects {
			if ri.Kind == KindFailure {
				// Failures are re-read from the project's recent runs.
				runs, err := e.recentRunKeys(ctx, ri, p)
				if err != nil {
					return nil, err
				}
				for _, k := range runs {
					ks.add(k)
				}
				continue
			}
			refs, err := e.listAll(ctx, p, ri.Kind, en)
			if err != nil {
				return nil, err
			}
			for _, ref := range refs {
				ks.add(Key{Route: ri.Name, EntityRef: ref})
			}
		}
	}
	// Tracker side: every marked issue, one listing per tracker project.
	tr, ok := e.o.Trackers[ri.Tracker]
	if !ok || ri.Project == "" {
		return ks.keys, nil
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
		pass.list(lk, issues)
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
		ks.add(k)
	}
	return ks.keys, nil
}

// listAll lists a project's entities of a kind once per pass (routes
// over the same project and kind share it); a complete listing sets the
// checkpoint for later incremental passes to the pass's start.
func (e *Engine) listAll(ctx context.Context, project string, kind Kind, en *enumeration) ([]EntityRef, error) {
	name := CheckpointName(project, kind)
	if refs, ok := en.searched[name]; ok {
		return refs, nil
	}
	var refs []EntityRef
	err := e.o.Source.List(ctx, project, kind, func(ref EntityRef, attrs map[string]any) error {
		refs = append(refs, ref)
		en.pass.entities[ref] = attrs
		return nil
	})
	switch {
	case err != nil && !IsPermanent(err):
		return nil, fmt.Errorf("listing %s %ss: %w", project, kind, err)
	case err != nil:
		e.log.WithError(err).WithFields(logrus.Fields{"project": project, "kind": kind}).Warn("qase api refused the listing; reconciling from links only")
	default:
		en.save[name] = en.pass.Started
	}
	en.searched[name] = refs
	return refs, nil
}

// enumerateChanged collects a route's keys for an incremental pass: the
// entities updated since each project's checkpoint, less the overlap. A
// project without a checkpoint (new to the pass) is listed whole once; a
// source that refuses the search is listed whole too.
func (e *Engine) enumerateChanged(ctx context.Context, ri RouteInfo, en *enumeration) ([]Key, error) {
	if ri.Kind == KindFailure && e.o.Source != nil {
		return e.recentRuns(ctx, ri, en)
	}
	cs, ok := e.o.Source.(ChangeSource)
	if !ok || !cs.Searchable(ri.Kind) {
		if !slices.Contains(en.rep.FullOnly, ri.Kind) {
			en.rep.FullOnly = append(en.rep.FullOnly, ri.Kind)
		}
		return nil, nil
	}
	projects, err := e.projects(ctx, ri, en.o, nil)
	if err != nil {
		return nil, err
	}
	var ks keySet
	for _, p := range projects {
		name := CheckpointName(p, ri.Kind)
		refs, done := en.searched[name]
		since, found := en.cps[name]
		switch {
		case done:
		case !found:
			if refs, err = e.listAll(ctx, p, ri.Kind, en); err != nil {
				return nil, err
			}
		default:
			from := since.Add(-en.o.Overlap)
			err := cs.Changed(ctx, p, ri.Kind, from, func(ref EntityRef, attrs map[string]any) error {
				refs = append(refs, ref)
				en.pass.entities[ref] = attrs
				return nil
			})
			if err != nil && !IsPermanent(err) {
				return nil, fmt.Errorf("searching %s %ss updated since %s: %w", p, ri.Kind, from.UTC().Format(time.RFC3339), err)
			}
			if err != nil {
				e.log.WithError(err).WithFields(logrus.Fields{"project": p, "kind": ri.Kind}).Warn("qase api refused the search; listing instead")
				if refs, err = e.listAll(ctx, p, ri.Kind, en); err != nil {
					return nil, err
				}
				break
			}
			en.save[name] = en.pass.Started
			en.searched[name] = refs
		}
		for _, ref := range refs {
			ks.add(Key{Route: ri.Name, EntityRef: ref})
		}
	}
	return ks.keys, nil
}

// recentRuns are a failure route's keys in an incremental pass: its
// projects' recent runs, re-ingested (one list call per project), so a
// run whose webhook was lost is filed without waiting for the full sweep.
func (e *Engine) recentRuns(ctx context.Context, ri RouteInfo, en *enumeration) ([]Key, error) {
	projects, err := e.projects(ctx, ri, en.o, nil)
	if err != nil {
		return nil, err
	}
	var ks keySet
	for _, p := range projects {
		runs, err := e.recentRunKeys(ctx, ri, p)
		if err != nil {
			return nil, err
		}
		for _, k := range runs {
			ks.add(k)
		}
	}
	return ks.keys, nil
}

// needsSync tells whether a pass must enqueue k: what the worker would
// plan for it, decided in memory from what the pass read, the stored
// snapshot and link, with the same planner (no tracker or Qase call, no
// write). It enqueues whenever the plan would do or read anything, the
// link's record would change, or it cannot tell.
func (e *Engine) needsSync(ctx context.Context, k Key, pass *Pass, verify bool) bool {
	ent, ok := e.passEntity(ctx, k.EntityRef, pass)
	if !ok {
		return true // not listed and not known to be gone: the worker reads it
	}
	d, err := e.o.Mapper.Desired(k.Route, ent)
	if err != nil {
		return true
	}
	if d.Skip {
		return false
	}
	if _, ok := e.o.Trackers[d.Tracker]; !ok {
		return true
	}
	// A full sweep read every link of its routes; an incremental pass
	// reads the few it needs.
	link, linked := pass.links[k]
	if !verify {
		if link, linked, err = e.o.Store.Link(ctx, k); err != nil {
			return true
		}
	}
	if linked && link.Tracker != "" && link.Tracker != d.Tracker {
		return true
	}
	in := PlanInput{
		Key: k, Desired: d, Link: link, Linked: linked, Verify: verify,
		Vouched: e.o.Coverage.Covered(k.Route), Trusted: e.o.Coverage.Trusted(), Now: e.o.Clock.Now(), LateCommit: e.o.LateCommit,
	}
	if verify {
		in.Listed, in.ListedAt = pass.marked(d.Tracker, k), pass.started()
		if len(in.Listed) > 1 {
			return true // duplicates to close
		}
		if linked && link.State == LinkLinked {
			is, ok := pass.issue(d.Tracker, link)
			if !ok {
				return true
			}
			in.Live = &is
		}
	}
	p := Decide(in)
	if p.Need != NeedNothing || len(p.Ops) > 0 || p.Wait > 0 || len(p.Drift) > 0 {
		return true
	}
	// The worker would also record the applied fingerprint.
	return linked && link.State == LinkLinked && (link.Fingerprint != Fingerprint(d.Spec) || link.Applied.Unverified)
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

// passEntity is the entity as the worker would see it, without a Qase
// read: listed by the pass (or from events alone, without a source), or
// known to be gone; ok=false when only a read could tell.
func (e *Engine) passEntity(ctx context.Context, ref EntityRef, pass *Pass) (Entity, bool) {
	if _, _, listed := pass.entity(ref, e.o.Clock.Now()); listed || e.o.Source == nil {
		ent, err := e.entity(ctx, ref, false, pass, nil)
		return ent, err == nil
	}
	return e.knownGone(ctx, ref)
}

// knownGone is the entity as stored when a sync already read "not found"
// from Qase and no event came after: a listing without it then agrees, and
// deciding from the snapshot costs no read. ok=false otherwise (a listing
// alone does not prove a deletion: offset pages shift under concurrent
// deletes).
func (e *Engine) knownGone(ctx context.Context, ref EntityRef) (Entity, bool) {
	snap, err := e.o.Store.Snapshot(ctx, ref)
	if err != nil || !snap.State.Deleted {
		return Entity{}, false
	}
	if evs, err := e.o.Store.EventsAfter(ctx, ref, snap.LastSeq, 1); err != nil || len(evs) > 0 {
		return Entity{}, false
	}
	return snap.State.Entity(ref), true
}
