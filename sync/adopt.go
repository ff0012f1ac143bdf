package sync

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
)

// IssueQuerier is implemented by trackers that can find issues by a
// tracker query (Jira: JQL; GitHub: a label): the bulk form of adoption.
type IssueQuerier interface {
	Query(ctx context.Context, project, query string) ([]Issue, error)
}

// AdoptResult is what adopting one issue did.
type AdoptResult struct {
	Key   Key      `json:"key"`
	Issue IssueRef `json:"issue"`
	// Already: the key was linked to this issue before.
	Already bool `json:"already,omitempty"`
	// Skipped: a query found the issue but its title names no entity.
	Skipped bool   `json:"skipped,omitempty"`
	Problem string `json:"problem,omitempty"`
}

// Adopt makes an existing tracker issue the key's issue: it stamps the
// key's marker on it (Tracker.Mark, exactly as a create does), links it
// with the baseline of an adopted issue, and queues a verifying sync that
// brings it to what the route wants. A key linked to another issue, or an
// issue carrying another key's marker, is refused.
func (e *Engine) Adopt(ctx context.Context, k Key, ref IssueRef) (AdoptResult, error) {
	res := AdoptResult{Key: k, Issue: ref}
	ri, ok := e.o.Mapper.RouteInfo(k.Route)
	if !ok {
		return res, fmt.Errorf("unknown route %q", k.Route)
	}
	if ri.Kind != k.Kind {
		return res, fmt.Errorf("route %s serves %ss, not %ss", k.Route, ri.Kind, k.Kind)
	}
	tr, ok := e.o.Trackers[ri.Tracker]
	if !ok {
		return res, fmt.Errorf("route %s: tracker %q is not configured", k.Route, ri.Tracker)
	}
	is, err := tr.Get(ctx, ref)
	if err != nil {
		return res, fmt.Errorf("read %s: %w", ref, err)
	}
	res.Issue = is.Ref
	m := MarkerFor(k)
	if is.MarkerID != "" && is.MarkerID != m.ID {
		return res, fmt.Errorf("%s already belongs to %s", is.Ref, is.MarkerID)
	}
	link, linked, err := e.o.Store.Link(ctx, k)
	if err != nil {
		return res, err
	}
	if linked && link.State == LinkLinked && link.Issue.ID != is.Ref.ID {
		return res, fmt.Errorf("%s is already linked to %s", k, link.Issue)
	}
	res.Already = linked && link.State == LinkLinked
	ent, err := e.Entity(ctx, k.EntityRef)
	if err != nil {
		return res, err
	}
	d, err := e.o.Mapper.Desired(k.Route, ent)
	if err != nil {
		return res, fmt.Errorf("mapping route %s: %w", k.Route, err)
	}
	if err := tr.Mark(ctx, is.Ref, m); err != nil {
		return res, fmt.Errorf("mark %s: %w", is.Ref, err)
	}
	if !res.Already {
		now := e.o.Clock.Now()
		link = Link{Key: k, State: LinkLinked, Tracker: ri.Tracker, Marker: m, Issue: is.Ref,
			Applied: AdoptedBaseline(is, d.Spec), CreatedAt: now, UpdatedAt: now}
		if err := e.o.Store.SaveLink(ctx, link); err != nil {
			return res, err
		}
	}
	if err := e.o.Store.Enqueue(ctx, []Key{k}, true, e.o.Clock.Now()); err != nil {
		return res, err
	}
	e.Wake()
	return res, nil
}

// DefaultAdoptMatch finds the entity in an issue's title: "[PROJ-12] …",
// the title the example routes give.
var DefaultAdoptMatch = regexp.MustCompile(`\[(?P<project>[A-Z][A-Z0-9]*)-(?P<id>\d+)\]`)

// AdoptQuery adopts every issue a tracker query finds for the route. The
// entity of each issue is read from its title with match (named groups
// project and id; project may be left out when the route serves one
// project). Issues the pattern does not match are reported, not adopted.
func (e *Engine) AdoptQuery(ctx context.Context, route, query string, match *regexp.Regexp) ([]AdoptResult, error) {
	ri, ok := e.o.Mapper.RouteInfo(route)
	if !ok {
		return nil, fmt.Errorf("unknown route %q", route)
	}
	tr, ok := e.o.Trackers[ri.Tracker]
	if !ok {
		return nil, fmt.Errorf("route %s: tracker %q is not configured", route, ri.Tracker)
	}
	q, ok := unwrapTracker(tr).(IssueQuerier)
	if !ok {
		return nil, fmt.Errorf("tracker %q cannot search by query", ri.Tracker)
	}
	if ri.Project == "" {
		return nil, fmt.Errorf("route %s: its tracker project is a template; adopt issues one by one", route)
	}
	if match == nil {
		match = DefaultAdoptMatch
	}
	issues, err := q.Query(ctx, ri.Project, query)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", ri.Project, err)
	}
	var out []AdoptResult
	for _, is := range issues {
		k, ok := keyFromTitle(match, route, ri, is.Title)
		if !ok {
			out = append(out, AdoptResult{Issue: is.Ref, Skipped: true, Problem: "title does not name an entity: " + strconv.Quote(is.Title)})
			continue
		}
		r, err := e.Adopt(ctx, k, is.Ref)
		if err != nil {
			r.Problem = err.Error()
		}
		out = append(out, r)
	}
	return out, nil
}

func keyFromTitle(re *regexp.Regexp, route string, ri RouteInfo, title string) (Key, bool) {
	m := re.FindStringSubmatch(title)
	if m == nil {
		return Key{}, false
	}
	var project string
	var id int64
	for i, name := range re.SubexpNames() {
		switch name {
		case "project":
			project = m[i]
		case "id":
			id, _ = strconv.ParseInt(m[i], 10, 64)
		}
	}
	if project == "" && len(ri.Projects) == 1 {
		project = ri.Projects[0]
	}
	if project == "" || id <= 0 {
		return Key{}, false
	}
	return Key{Route: route, EntityRef: EntityRef{Project: project, Kind: ri.Kind, ID: id}}, true
}

// unwrapTracker reaches the adapter under a pacing wrapper, for the
// optional interfaces the wrapper does not forward.
func unwrapTracker(t Tracker) Tracker {
	for {
		u, ok := t.(interface{ Unwrap() Tracker })
		if !ok {
			return t
		}
		t = u.Unwrap()
	}
}

// Unwrap returns the paced tracker (for optional interfaces such as
// IssueQuerier that pacing does not need to see).
func (p *paced) Unwrap() Tracker { return p.t }
