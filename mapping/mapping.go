// Package mapping turns the current state of a Qase entity into the tracker
// issue a route wants (qsync.Desired), driven by declarative YAML: routes,
// lookup tables, Go text/templates with a small safe function set and
// expr-lang/expr conditions. It is pure: no I/O at Desired time (files are
// read at load only, through Options.ReadFile), no clock, no globals.
//
// See docs/mapping.md for the YAML format.
package mapping

import (
	_ "embed"
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/qase-sync/qase-sync/internal/yamlpos"
	qsync "github.com/qase-sync/qase-sync/sync"
)

//go:embed builtin-tables.yaml
var builtinTablesYAML []byte

// ExampleRoutes is a mapping document with the three headline routes
// (defects → Jira, declined reviews → GitHub, failed runs → GitHub). It
// expects trackers named "jira" and "github".
//
//go:embed example-routes.yaml
var ExampleRoutes []byte

// BuiltinTables is the YAML of the tables always loaded (docs/mapping.md).
func BuiltinTables() []byte { return append([]byte(nil), builtinTablesYAML...) }

// builtinTables is parsed once at init; it is never mutated afterwards.
var builtinTables = func() map[string]map[string]string {
	t, ps := decodeTables("builtin-tables.yaml", builtinTablesYAML)
	if err := ps.Err(); err != nil {
		panic(err)
	}
	return t
}()

// Options tell the loader about the world outside the mapping.
type Options struct {
	// Trackers maps tracker instance names to their type (jira, github,
	// dryrun). When set, every route's tracker must be one of them and its
	// tracker_type is filled in from here. When nil, routes must state
	// tracker_type themselves.
	Trackers map[string]string
	// ReadFile reads table_files (and the files given to Load). Paths are
	// resolved relative to the file that names them. Nil: table_files are
	// an error.
	ReadFile func(path string) ([]byte, error)
	// Vars are defaults for vars (config passes qase_url = qase.app_url);
	// the mapping's own vars override them.
	Vars map[string]string
	// FieldPrefix is prepended to field paths in errors ("mapping" when the
	// mapping sits under the mapping: key of the main config).
	FieldPrefix string
}

// Mapping is a loaded, validated set of routes. It implements qsync.Mapper
// and is safe for concurrent use.
type Mapping struct {
	vars    map[string]string
	varData map[string]any
	tables  map[string]map[string]string
	routes  []*route
	byName  map[string]*route
	notes   yamlpos.Problems
}

var _ qsync.Mapper = (*Mapping)(nil)

type route struct {
	name        string
	description string
	kind        qsync.Kind
	events      []string
	projects    []string
	tracker     string
	trackerType string
	markup      Markup

	project, issueType, title, body, priority, status, reason *tmpl
	labels, assignees, components                             []*tmpl
	fieldIDs                                                  []string
	fields                                                    map[string]*tmpl
	when, createWhen                                          *Cond
	comments                                                  []commentRule
	createOnly                                                []string
	// failure routes only (failure.go)
	signature *tmpl
	failure   qsync.FailurePolicy
	twoWay    *qsync.TwoWay
	writeBack WriteBack
}

type commentRule struct {
	id         string // "" for from: entity
	fromEntity bool
	when       *Cond
	body       *tmpl
}

// EventNames lists the Qase events of each served kind.
var EventNames = map[qsync.Kind][]string{
	qsync.KindDefect: {"defect.created", "defect.updated", "defect.resolved", "defect.deleted"},
	qsync.KindReview: {"review.created", "review.updated", "review.approval_status_changed",
		"review.reviewer_added", "review.reviewer_removed", "review.merged", "review.reopened",
		"review.commented", "review.declined", "review.deleted"},
	qsync.KindRun: {"run.started", "run.updated", "run.aborted", "run.completed", "run.deleted", "run.report_changed"},
	// Failure routes read the results of runs that ended.
	qsync.KindFailure: failureEvents,
}

// TrackerTypes are the tracker types a route can target.
var TrackerTypes = []string{"jira", "github", "dryrun"}

// CreateOnlyFields are the names create_only accepts (plus fields.<id>).
var CreateOnlyFields = []string{"title", "body", "labels", "priority", "assignees", "components", "status", "reason", "type", "fields"}

var (
	routeNameRE  = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)
	commentIDRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)
	tableNameRE  = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	varNameRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	githubRepoRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$`)
	jiraKeyRE    = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)
)

// The YAML shape of a mapping document, decoded by yaml.v3 (strictly:
// unknown keys are errors). Checks that need more than a type live in
// build and compileRoute, which find lines through a yamlpos.Index.
type (
	mappingDoc struct {
		Vars       map[string]string            `yaml:"vars"`
		Tables     map[string]map[string]string `yaml:"tables"`
		TableFiles []string                     `yaml:"table_files"`
		Routes     []routeDoc                   `yaml:"routes"`
	}
	tablesDoc struct {
		Tables map[string]map[string]string `yaml:"tables"`
	}
	routeDoc struct {
		Name        string            `yaml:"name"`
		Description string            `yaml:"description"`
		Kind        qsync.Kind        `yaml:"kind"`
		Events      []string          `yaml:"events"`
		Projects    []string          `yaml:"projects"`
		Tracker     string            `yaml:"tracker"`
		TrackerType string            `yaml:"tracker_type"`
		Project     string            `yaml:"project"`
		IssueType   string            `yaml:"issue_type"`
		When        string            `yaml:"when"`
		CreateWhen  string            `yaml:"create_when"`
		Title       string            `yaml:"title"`
		Body        string            `yaml:"body"`
		Labels      []string          `yaml:"labels"`
		Priority    string            `yaml:"priority"`
		Status      string            `yaml:"status"`
		Reason      string            `yaml:"reason"`
		Assignees   []string          `yaml:"assignees"`
		Components  []string          `yaml:"components"`
		Fields      map[string]string `yaml:"fields"`
		Comments    []commentDoc      `yaml:"comments"`
		CreateOnly  []string          `yaml:"create_only"`
		Signature   string            `yaml:"signature"`
		Failure     *failureDoc       `yaml:"failure"`
		TwoWay      *twoWayDoc        `yaml:"two_way"`
		WriteBack   *writeBackDoc     `yaml:"write_back"`
	}
	commentDoc struct {
		ID   string `yaml:"id"`
		From string `yaml:"from"`
		When string `yaml:"when"`
		Body string `yaml:"body"`
	}
)

type source struct {
	file string
	node *yaml.Node
}

// Parse loads a mapping from one YAML document (vars, tables,
// table_files, routes). name is used in error messages and to resolve
// table_files.
func Parse(name string, data []byte, opts Options) (*Mapping, error) {
	n, err := yamlpos.Parse(name, data)
	if err != nil {
		return nil, err
	}
	return build(opts, []source{{name, n}})
}

// ParseNode loads a mapping from a node of a larger document (the
// mapping: key of the main config); file names that document. A nil
// node is an empty mapping.
func ParseNode(file string, n *yaml.Node, opts Options) (*Mapping, error) {
	if n == nil {
		n = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	return build(opts, []source{{file, n}})
}

// Load reads and merges mapping files in order: vars and tables of later
// files override earlier ones, routes are concatenated (names must stay
// unique). Files are read through opts.ReadFile.
func Load(opts Options, files ...string) (*Mapping, error) {
	if opts.ReadFile == nil {
		return nil, fmt.Errorf("mapping: Load needs Options.ReadFile")
	}
	var srcs []source
	var ps yamlpos.Problems
	for _, f := range files {
		data, err := opts.ReadFile(f)
		if err != nil {
			ps = append(ps, yamlpos.Problem{File: f, Msg: "cannot read: " + err.Error()})
			continue
		}
		n, err := yamlpos.Parse(f, data)
		if err != nil {
			ps.Add(f, err)
			continue
		}
		srcs = append(srcs, source{f, n})
	}
	if len(ps) > 0 {
		return nil, ps.Err()
	}
	return build(opts, srcs)
}

// decodedRoute is a route as written, with where it was written.
type decodedRoute struct {
	doc   routeDoc
	ix    *yamlpos.Index
	field string
}

func build(opts Options, srcs []source) (*Mapping, error) {
	m := &Mapping{vars: map[string]string{}, tables: map[string]map[string]string{}, byName: map[string]*route{}}
	maps.Copy(m.tables, builtinTables)
	maps.Copy(m.vars, opts.Vars)
	var ps yamlpos.Problems
	var routes []decodedRoute
	for _, src := range srcs {
		var doc mappingDoc
		ps = append(ps, yamlpos.Decode(src.file, src.node, opts.FieldPrefix, &doc)...)
		ix := yamlpos.NewIndex(src.file, src.node, opts.FieldPrefix)
		at := func(k string) string { return yamlpos.Join(opts.FieldPrefix, k) }
		for _, k := range slices.Sorted(maps.Keys(doc.Vars)) {
			if !varNameRE.MatchString(k) {
				ps = append(ps, yamlpos.Problem{File: src.file, Line: ix.KeyLine(at("vars." + k)), Field: at("vars." + k), Msg: "invalid variable name (letters, digits, _)"})
				continue
			}
			m.vars[k] = doc.Vars[k]
		}
		for i, path := range doc.TableFiles {
			field := yamlpos.Elem(at("table_files"), i)
			if opts.ReadFile == nil {
				ps = append(ps, ix.Problem(field, "table files cannot be read here (no file access)"))
				continue
			}
			if !filepath.IsAbs(path) {
				path = filepath.Join(filepath.Dir(src.file), path)
			}
			data, err := opts.ReadFile(path)
			if err != nil {
				ps = append(ps, ix.Problem(field, "cannot read table file: %v", err))
				continue
			}
			tables, tps := decodeTables(path, data)
			ps = append(ps, tps...)
			maps.Copy(m.tables, tables)
		}
		maps.Copy(m.tables, checkTables(doc.Tables, ix, at("tables"), &ps))
		for i, r := range doc.Routes {
			routes = append(routes, decodedRoute{r, ix, yamlpos.Elem(at("routes"), i)})
		}
	}
	m.varData = make(map[string]any, len(m.vars))
	for k, v := range m.vars {
		m.varData[k] = rawString(v)
	}
	// Routes are compiled after every table and var is known.
	names := map[string]bool{}
	for _, dr := range routes {
		r, rps := m.compileRoute(dr, opts)
		ps = append(ps, rps...)
		if r.name != "" {
			if names[r.name] {
				ps = append(ps, yamlpos.Problem{File: dr.ix.File, Line: dr.ix.Line(dr.field), Field: dr.field + ".name", Msg: fmt.Sprintf("duplicate route name %q", r.name)})
				continue
			}
			names[r.name] = true
		}
		if len(rps) == 0 {
			m.byName[r.name] = r
			m.routes = append(m.routes, r)
		}
	}
	if err := ps.Err(); err != nil {
		return nil, err
	}
	return m, nil
}

// decodeTables reads a file of {tables: {name: {key: value}}}.
func decodeTables(file string, data []byte) (map[string]map[string]string, yamlpos.Problems) {
	n, err := yamlpos.Parse(file, data)
	if err != nil {
		var ps yamlpos.Problems
		ps.Add(file, err)
		return nil, ps
	}
	var doc tablesDoc
	ps := yamlpos.Decode(file, n, "", &doc)
	return checkTables(doc.Tables, yamlpos.NewIndex(file, n, ""), "tables", &ps), ps
}

// checkTables keeps the well-named, non-empty tables; null values are "".
func checkTables(in map[string]map[string]string, ix *yamlpos.Index, field string, ps *yamlpos.Problems) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(in)) {
		tf := yamlpos.Join(field, name)
		switch {
		case !tableNameRE.MatchString(name):
			*ps = append(*ps, yamlpos.Problem{File: ix.File, Line: ix.KeyLine(tf), Field: tf, Msg: "invalid table name (letters, digits, _ . -)"})
		case in[name] == nil:
			*ps = append(*ps, yamlpos.Problem{File: ix.File, Line: ix.KeyLine(tf), Field: tf, Msg: "empty table"})
		default:
			out[name] = in[name]
		}
	}
	return out
}

// compileRoute checks and compiles one route; it is usable when there are
// no problems.
func (m *Mapping) compileRoute(dr decodedRoute, opts Options) (*route, yamlpos.Problems) {
	doc, ix, field := dr.doc, dr.ix, dr.field
	var ps yamlpos.Problems
	at := func(k string) string { return field + "." + k }
	errf := func(f, format string, args ...any) { ps = append(ps, ix.Problem(f, format, args...)) }
	// missing reports a required key that is absent or null; its problem
	// is placed at the route.
	missing := func(k string) bool { return yamlpos.IsNull(ix.Node(at(k))) }
	required := func(k, format string, args ...any) {
		ps = append(ps, yamlpos.Problem{File: ix.File, Line: ix.Line(field), Field: at(k), Msg: fmt.Sprintf(format, args...)})
	}

	r := &route{name: doc.Name, description: doc.Description, kind: doc.Kind, events: doc.Events, projects: doc.Projects,
		tracker: doc.Tracker, trackerType: doc.TrackerType, fields: map[string]*tmpl{}}
	switch {
	case missing("name"):
		required("name", "required")
	case !routeNameRE.MatchString(r.name):
		errf(at("name"), "invalid route name %q (lowercase letters, digits and single dashes)", r.name)
	}
	switch {
	case missing("kind"):
		required("kind", "required (defect, review, run or failure)")
	case !r.kind.Valid():
		errf(at("kind"), "unknown kind %q (defect, review, run or failure)", r.kind)
	default:
		for i, ev := range r.events {
			if !slices.Contains(EventNames[r.kind], ev) {
				errf(yamlpos.Elem(at("events"), i), "unknown %s event %q (known: %s)", r.kind, ev, strings.Join(EventNames[r.kind], ", "))
			}
		}
	}

	switch {
	case r.tracker == "":
		required("tracker", "required")
	case opts.Trackers != nil:
		typ, ok := opts.Trackers[r.tracker]
		if !ok {
			errf(at("tracker"), "tracker %q is not defined in trackers (defined: %s)", r.tracker, strings.Join(slices.Sorted(maps.Keys(opts.Trackers)), ", "))
		} else if r.trackerType != "" && r.trackerType != typ {
			errf(at("tracker_type"), "%q does not match the type of tracker %q (%s)", r.trackerType, r.tracker, typ)
		} else {
			r.trackerType = typ
		}
	case r.trackerType == "":
		required("tracker_type", "required when no trackers are configured (jira, github or dryrun)")
	}
	if r.trackerType != "" && !slices.Contains(TrackerTypes, r.trackerType) {
		errf(at("tracker_type"), "unknown tracker type %q (jira, github or dryrun)", r.trackerType)
	}
	r.markup = markupFor(r.trackerType)

	tpl := func(src string, markup Markup, fld string) *tmpl {
		if yamlpos.IsNull(ix.Node(fld)) {
			return nil
		}
		t, line, err := m.compileTemplate(src, markup, m.vars)
		if err != nil {
			p := ix.Problem(fld, "%v", err)
			if line > 0 {
				p.Line = yamlpos.ValueLine(ix.Node(fld)) + line - 1
			}
			ps = append(ps, p)
			return nil
		}
		return t
	}
	single := func(k, src string) *tmpl { return tpl(src, MarkupPlain, at(k)) }
	list := func(k string, srcs []string) []*tmpl {
		var out []*tmpl
		for i, src := range srcs {
			if t := tpl(src, MarkupPlain, yamlpos.Elem(at(k), i)); t != nil {
				out = append(out, t)
			}
		}
		return out
	}
	r.project = single("project", doc.Project)
	if missing("project") {
		required("project", "required (Jira project key or GitHub owner/repo)")
	} else if r.project != nil && r.project.isStatic {
		p := r.project.static
		switch {
		case r.trackerType == "github" && !githubRepoRE.MatchString(p):
			errf(at("project"), "%q is not a GitHub owner/repo", p)
		case r.trackerType == "jira" && !jiraKeyRE.MatchString(p):
			errf(at("project"), "%q is not a Jira project key (uppercase letters and digits)", p)
		case p == "":
			errf(at("project"), "renders empty")
		}
	}
	r.issueType = single("issue_type", doc.IssueType)
	if r.issueType == nil && r.trackerType == "jira" {
		r.issueType = &tmpl{src: "Bug", static: "Bug", isStatic: true}
	}
	r.title = single("title", doc.Title)
	if missing("title") {
		required("title", "required")
	}
	r.body = tpl(doc.Body, r.markup, at("body"))
	r.priority = single("priority", doc.Priority)
	r.status = single("status", doc.Status)
	r.reason = single("reason", doc.Reason)
	r.labels = list("labels", doc.Labels)
	r.assignees = list("assignees", doc.Assignees)
	r.components = list("components", doc.Components)
	r.fieldIDs = slices.Sorted(maps.Keys(doc.Fields))
	for _, id := range r.fieldIDs {
		if t := tpl(doc.Fields[id], MarkupPlain, at("fields")+"."+id); t != nil {
			r.fields[id] = t
		}
	}

	cond := func(src, fld string, comment bool) *Cond {
		if yamlpos.IsNull(ix.Node(fld)) {
			return nil
		}
		scope := scopeFor(r.kind, comment)
		c, err := compileCond(src, scope, m.tables, m.lookup)
		if err != nil {
			errf(fld, "condition: %v", err)
			return nil
		}
		for _, n := range condNotes(src, scope) {
			m.notes = append(m.notes, ix.Problem(fld, "condition: %v", &n))
		}
		return c
	}
	r.when = cond(doc.When, at("when"), false)
	r.createWhen = cond(doc.CreateWhen, at("create_when"), false)

	seen := map[string]bool{}
	fromEntity := false
	for i, c := range doc.Comments {
		cf := yamlpos.Elem(at("comments"), i)
		var rule commentRule
		switch {
		case c.ID != "" && c.From != "":
			errf(cf, "set either id or from, not both")
		case c.From != "":
			if c.From != "entity" {
				errf(cf+".from", "unknown source %q (only entity)", c.From)
			} else if fromEntity {
				errf(cf+".from", "only one from: entity entry per route")
			}
			fromEntity, rule.fromEntity = true, true
		case c.ID != "":
			if !commentIDRE.MatchString(c.ID) {
				errf(cf+".id", "invalid comment id %q (lowercase letters, digits, _ . -)", c.ID)
			} else if seen[c.ID] {
				errf(cf+".id", "duplicate comment id %q", c.ID)
			}
			seen[c.ID] = true
			rule.id = c.ID
		default:
			errf(cf, "needs id (a comment posted once) or from: entity")
		}
		rule.when = cond(c.When, cf+".when", rule.fromEntity)
		if yamlpos.IsNull(ix.Node(cf + ".body")) {
			ps = append(ps, yamlpos.Problem{File: ix.File, Line: ix.Line(cf), Field: cf + ".body", Msg: "required"})
		}
		rule.body = tpl(c.Body, r.markup, cf+".body")
		r.comments = append(r.comments, rule)
	}

	for i, co := range doc.CreateOnly {
		if !slices.Contains(CreateOnlyFields, co) && !(strings.HasPrefix(co, "fields.") && len(co) > len("fields.")) {
			errf(yamlpos.Elem(at("create_only"), i), "unknown field %q (known: %s, fields.<id>)", co, strings.Join(CreateOnlyFields, ", "))
			continue
		}
		r.createOnly = append(r.createOnly, co)
	}
	ps = append(ps, m.compileFailure(r, doc, ix, field)...)
	r.twoWay = compileTwoWay(doc, ix, at, &ps)
	r.writeBack = compileWriteBack(doc, r.trackerType, ix, at, &ps)
	return r, ps
}

// Routes returns the routes (in declaration order) that take an event,
// judged by event name, project and kind only. An empty eventName matches
// every event of the kind (reconcile).
func (m *Mapping) Routes(eventName, project string, kind qsync.Kind) []string {
	var out []string
	for _, r := range m.routes {
		if r.kind == qsync.KindFailure && kind == qsync.KindRun && takesRunEvent(r, eventName) && takesProject(r, project) {
			out = append(out, r.name) // a run's results to read
			continue
		}
		if r.kind != kind {
			continue
		}
		if eventName != "" && len(r.events) > 0 && !slices.Contains(r.events, eventName) {
			continue
		}
		if eventName != "" && !strings.HasPrefix(eventName, string(kind)+".") {
			continue
		}
		if len(r.projects) > 0 && !slices.ContainsFunc(r.projects, func(p string) bool { return strings.EqualFold(p, project) }) {
			continue
		}
		out = append(out, r.name)
	}
	return out
}

// RouteInfo describes a route. Project is the tracker project when it does
// not depend on the entity (plain text or only .vars), else "".
func (m *Mapping) RouteInfo(name string) (qsync.RouteInfo, bool) {
	r, ok := m.byName[name]
	if !ok {
		return qsync.RouteInfo{}, false
	}
	info := qsync.RouteInfo{Name: r.name, Kind: r.kind, Tracker: r.tracker, Projects: append([]string(nil), r.projects...)}
	if r.project != nil && r.project.isStatic {
		info.Project = r.project.static
	}
	return info, true
}

// RouteNames lists every route, sorted.
func (m *Mapping) RouteNames() []string {
	return slices.Sorted(maps.Keys(m.byName))
}

// TrackerType returns the tracker type of a route ("" if unknown).
func (m *Mapping) TrackerType(name string) string {
	if r, ok := m.byName[name]; ok {
		return r.trackerType
	}
	return ""
}

// Description returns a route's description ("" if none).
func (m *Mapping) Description(name string) string {
	if r, ok := m.byName[name]; ok {
		return r.description
	}
	return ""
}

// Tables returns a copy of every table (built-in, files, inline).
func (m *Mapping) Tables() map[string]map[string]string {
	out := make(map[string]map[string]string, len(m.tables))
	for k, t := range m.tables {
		out[k] = maps.Clone(t)
	}
	return out
}

// Notes are advice about conditions that load fine but may not mean
// what they meant before conditions moved to expr (docs/mapping.md,
// "Conditions written before expr"), as "file:line: field: note".
func (m *Mapping) Notes() []string {
	if len(m.notes) == 0 {
		return nil
	}
	out := make([]string, 0, len(m.notes))
	for _, p := range m.notes.Err().(yamlpos.Problems) {
		out = append(out, p.Error())
	}
	return out
}

// Vars returns a copy of the vars.
func (m *Mapping) Vars() map[string]string {
	return maps.Clone(m.vars)
}

// takesRunEvent: a failure route takes the run events it lists (default
// run.completed and run.aborted) and result.* hints; "" is reconcile.
func takesRunEvent(r *route, eventName string) bool {
	switch {
	case eventName == "":
		return false // reconcile enumerates failure routes by their own kind
	case strings.HasPrefix(eventName, "result."):
		return true
	case len(r.events) > 0:
		return slices.Contains(r.events, eventName)
	}
	return slices.Contains(failureEvents, eventName)
}

func takesProject(r *route, project string) bool {
	return len(r.projects) == 0 || slices.ContainsFunc(r.projects, func(p string) bool { return strings.EqualFold(p, project) })
}
