// Package mapping turns the current state of a Qase entity into the tracker
// issue a route wants (sync.Desired), driven by declarative YAML: routes,
// lookup tables, Go text/templates with a small safe function set and
// expr-lang/expr conditions. It is pure: no I/O at Desired time (files are
// read at load only, through Options.ReadFile), no clock, no globals.
//
// See docs/mapping.md for the YAML format.
package mapping

import (
	_ "embed"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/qase-sync/qase-sync/mapping/yamlnode"
	"github.com/qase-sync/qase-sync/sync"
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
	n, err := yamlnode.Parse("builtin-tables.yaml", builtinTablesYAML)
	if err != nil {
		panic(err)
	}
	d := &yamlnode.Decoder{File: "builtin-tables.yaml"}
	t := decodeTables(d, d.Fields(n, "", "tables")["tables"], "tables")
	if err := d.Problems.Err(); err != nil {
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

// Mapping is a loaded, validated set of routes. It implements sync.Mapper
// and is safe for concurrent use.
type Mapping struct {
	vars    map[string]string
	varData map[string]any
	tables  map[string]map[string]string
	routes  []*route
	byName  map[string]*route
}

var _ sync.Mapper = (*Mapping)(nil)

type route struct {
	name        string
	description string
	kind        sync.Kind
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
}

type commentRule struct {
	id         string // "" for from: entity
	fromEntity bool
	when       *Cond
	body       *tmpl
}

// EventNames lists the Qase events of each served kind.
var EventNames = map[sync.Kind][]string{
	sync.KindDefect: {"defect.created", "defect.updated", "defect.resolved", "defect.deleted"},
	sync.KindReview: {"review.created", "review.updated", "review.approval_status_changed",
		"review.reviewer_added", "review.reviewer_removed", "review.merged", "review.reopened",
		"review.commented", "review.declined", "review.deleted"},
	sync.KindRun: {"run.started", "run.updated", "run.aborted", "run.completed", "run.deleted", "run.report_changed"},
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

type source struct {
	file string
	node *yaml.Node
}

// Parse loads a mapping from one YAML document (vars, tables,
// table_files, routes). name is used in error messages and to resolve
// table_files.
func Parse(name string, data []byte, opts Options) (*Mapping, error) {
	n, err := yamlnode.Parse(name, data)
	if err != nil {
		return nil, err
	}
	return build(opts, []source{{name, n}})
}

// ParseNode loads a mapping from a node of a larger document (the
// mapping: key of the main config); file names that document.
func ParseNode(file string, n *yaml.Node, opts Options) (*Mapping, error) {
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
	var ps yamlnode.Problems
	for _, f := range files {
		data, err := opts.ReadFile(f)
		if err != nil {
			ps = append(ps, yamlnode.Problem{File: f, Msg: "cannot read: " + err.Error()})
			continue
		}
		n, err := yamlnode.Parse(f, data)
		if err != nil {
			ps = append(ps, err.(yamlnode.Problems)...)
			continue
		}
		srcs = append(srcs, source{f, n})
	}
	if len(ps) > 0 {
		return nil, ps.Err()
	}
	return build(opts, srcs)
}

type routeSrc struct {
	d     *yamlnode.Decoder
	field string
	node  *yaml.Node
}

func build(opts Options, srcs []source) (*Mapping, error) {
	m := &Mapping{vars: map[string]string{}, tables: map[string]map[string]string{}, byName: map[string]*route{}}
	for k, v := range builtinTables {
		m.tables[k] = v
	}
	for k, v := range opts.Vars {
		m.vars[k] = v
	}
	var all yamlnode.Problems
	var routeNodes []routeSrc
	var decoders []*yamlnode.Decoder
	for _, src := range srcs {
		d := &yamlnode.Decoder{File: src.file}
		decoders = append(decoders, d)
		f := d.Fields(src.node, opts.FieldPrefix, "vars", "tables", "table_files", "routes")
		for _, p := range d.Pairs(f["vars"], yamlnode.Join(opts.FieldPrefix, "vars")) {
			field := yamlnode.Join(yamlnode.Join(opts.FieldPrefix, "vars"), p.Key)
			if !varNameRE.MatchString(p.Key) {
				d.Errorf(p.KeyN, field, "invalid variable name (letters, digits, _)")
				continue
			}
			if s, ok := d.String(p.Value, field); ok {
				m.vars[p.Key] = s
			}
		}
		tfField := yamlnode.Join(opts.FieldPrefix, "table_files")
		for i, tf := range d.Items(f["table_files"], tfField) {
			field := yamlnode.Index(tfField, i)
			path, ok := d.String(tf, field)
			if !ok {
				continue
			}
			if opts.ReadFile == nil {
				d.Errorf(tf, field, "table files cannot be read here (no file access)")
				continue
			}
			if !filepath.IsAbs(path) {
				path = filepath.Join(filepath.Dir(src.file), path)
			}
			data, err := opts.ReadFile(path)
			if err != nil {
				d.Errorf(tf, field, "cannot read table file: %v", err)
				continue
			}
			tn, err := yamlnode.Parse(path, data)
			if err != nil {
				d.Add(err)
				continue
			}
			td := &yamlnode.Decoder{File: path}
			for k, v := range decodeTables(td, td.Fields(tn, "", "tables")["tables"], "tables") {
				m.tables[k] = v
			}
			all = append(all, td.Problems...)
		}
		for k, v := range decodeTables(d, f["tables"], yamlnode.Join(opts.FieldPrefix, "tables")) {
			m.tables[k] = v
		}
		rField := yamlnode.Join(opts.FieldPrefix, "routes")
		for _, rn := range d.Items(f["routes"], rField) {
			routeNodes = append(routeNodes, routeSrc{d, rField, rn})
		}
	}
	m.varData = make(map[string]any, len(m.vars))
	for k, v := range m.vars {
		m.varData[k] = rawString(v)
	}
	// Routes are compiled after every table and var is known.
	names := map[string]bool{}
	for i, rs := range routeNodes {
		field := yamlnode.Index(rs.field, i)
		r, ok := m.decodeRoute(rs.d, rs.node, field, opts)
		if r.name != "" {
			if names[r.name] {
				rs.d.Errorf(rs.node, field+".name", "duplicate route name %q", r.name)
				continue
			}
			names[r.name] = true
		}
		if ok {
			m.byName[r.name] = r
			m.routes = append(m.routes, r)
		}
	}
	for _, d := range decoders {
		all = append(all, d.Problems...)
	}
	if err := all.Err(); err != nil {
		return nil, err
	}
	return m, nil
}

// decodeTables reads {name: {key: value}}; null values are "".
func decodeTables(d *yamlnode.Decoder, n *yaml.Node, field string) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, p := range d.Pairs(n, field) {
		tf := yamlnode.Join(field, p.Key)
		if !tableNameRE.MatchString(p.Key) {
			d.Errorf(p.KeyN, tf, "invalid table name (letters, digits, _ . -)")
			continue
		}
		t := map[string]string{}
		for _, e := range d.Pairs(p.Value, tf) {
			if v, ok := d.String(e.Value, yamlnode.Join(tf, e.Key)); ok {
				t[e.Key] = v
			}
		}
		if yamlnode.IsNull(p.Value) {
			d.Errorf(p.KeyN, tf, "empty table")
			continue
		}
		out[p.Key] = t
	}
	return out
}

var routeKeys = []string{"name", "description", "kind", "events", "projects", "tracker", "tracker_type",
	"project", "issue_type", "when", "create_when", "title", "body", "labels", "priority", "status",
	"reason", "assignees", "components", "fields", "comments", "create_only"}

// decodeRoute compiles one route; ok is false when it had problems.
func (m *Mapping) decodeRoute(d *yamlnode.Decoder, n *yaml.Node, field string, opts Options) (*route, bool) {
	before := len(d.Problems)
	f := d.Fields(n, field, routeKeys...)
	at := func(k string) string { return field + "." + k }
	str := func(k string) string {
		s, _ := d.String(f[k], at(k))
		return s
	}
	r := &route{fields: map[string]*tmpl{}}
	r.name = str("name")
	r.description = str("description")
	switch {
	case yamlnode.IsNull(f["name"]):
		d.Errorf(n, at("name"), "required")
	case !routeNameRE.MatchString(r.name):
		d.Errorf(f["name"], at("name"), "invalid route name %q (lowercase letters, digits and single dashes)", r.name)
	}
	r.kind = sync.Kind(str("kind"))
	if yamlnode.IsNull(f["kind"]) {
		d.Errorf(n, at("kind"), "required (defect, review or run)")
	} else if !r.kind.Valid() {
		d.Errorf(f["kind"], at("kind"), "unknown kind %q (defect, review or run)", r.kind)
	}
	r.events = d.Strings(f["events"], at("events"))
	if r.kind.Valid() {
		for i, ev := range r.events {
			if !contains(toAny(EventNames[r.kind]), ev) {
				d.Errorf(yamlnode.Resolve(f["events"]).Content[i], yamlnode.Index(at("events"), i),
					"unknown %s event %q (known: %s)", r.kind, ev, strings.Join(EventNames[r.kind], ", "))
			}
		}
	}
	r.projects = d.Strings(f["projects"], at("projects"))

	r.tracker = str("tracker")
	r.trackerType = str("tracker_type")
	switch {
	case r.tracker == "":
		d.Errorf(n, at("tracker"), "required")
	case opts.Trackers != nil:
		typ, ok := opts.Trackers[r.tracker]
		if !ok {
			d.Errorf(f["tracker"], at("tracker"), "tracker %q is not defined in trackers (defined: %s)", r.tracker, strings.Join(sortedNames(opts.Trackers), ", "))
		} else if r.trackerType != "" && r.trackerType != typ {
			d.Errorf(f["tracker_type"], at("tracker_type"), "%q does not match the type of tracker %q (%s)", r.trackerType, r.tracker, typ)
		} else {
			r.trackerType = typ
		}
	case r.trackerType == "":
		d.Errorf(n, at("tracker_type"), "required when no trackers are configured (jira, github or dryrun)")
	}
	if r.trackerType != "" && !contains(toAny(TrackerTypes), r.trackerType) {
		d.Errorf(f["tracker_type"], at("tracker_type"), "unknown tracker type %q (jira, github or dryrun)", r.trackerType)
	}
	r.markup = markupFor(r.trackerType)

	tpl := func(k string, markup Markup, node *yaml.Node, fld string) *tmpl {
		src, ok := d.String(node, fld)
		if !ok || yamlnode.IsNull(node) {
			return nil
		}
		t, line, err := m.compileTemplate(src, markup, m.vars)
		if err != nil {
			pn := *yamlnode.Resolve(node)
			if line > 0 {
				pn.Line = yamlnode.ValueLine(node) + line - 1
			}
			d.Errorf(&pn, fld, "%v", err)
			return nil
		}
		return t
	}
	single := func(k string) *tmpl { return tpl(k, MarkupPlain, f[k], at(k)) }
	list := func(k string) []*tmpl {
		var out []*tmpl
		for i, it := range d.Items(f[k], at(k)) {
			if t := tpl(k, MarkupPlain, it, yamlnode.Index(at(k), i)); t != nil {
				out = append(out, t)
			}
		}
		return out
	}
	r.project = single("project")
	if yamlnode.IsNull(f["project"]) {
		d.Errorf(n, at("project"), "required (Jira project key or GitHub owner/repo)")
	} else if r.project != nil && r.project.isStatic {
		p := r.project.static
		switch {
		case r.trackerType == "github" && !githubRepoRE.MatchString(p):
			d.Errorf(f["project"], at("project"), "%q is not a GitHub owner/repo", p)
		case r.trackerType == "jira" && !jiraKeyRE.MatchString(p):
			d.Errorf(f["project"], at("project"), "%q is not a Jira project key (uppercase letters and digits)", p)
		case p == "":
			d.Errorf(f["project"], at("project"), "renders empty")
		}
	}
	r.issueType = single("issue_type")
	if r.issueType == nil && r.trackerType == "jira" {
		r.issueType = &tmpl{src: "Bug", static: "Bug", isStatic: true}
	}
	r.title = single("title")
	if yamlnode.IsNull(f["title"]) {
		d.Errorf(n, at("title"), "required")
	}
	r.body = tpl("body", r.markup, f["body"], at("body"))
	r.priority = single("priority")
	r.status = single("status")
	r.reason = single("reason")
	r.labels = list("labels")
	r.assignees = list("assignees")
	r.components = list("components")
	for _, p := range d.Pairs(f["fields"], at("fields")) {
		if t := tpl(p.Key, MarkupPlain, p.Value, at("fields")+"."+p.Key); t != nil {
			r.fieldIDs = append(r.fieldIDs, p.Key)
			r.fields[p.Key] = t
		}
	}
	sort.Strings(r.fieldIDs)

	cond := func(node *yaml.Node, fld string, comment bool) *Cond {
		src, ok := d.String(node, fld)
		if !ok || yamlnode.IsNull(node) {
			return nil
		}
		c, err := compileCond(src, scopeFor(r.kind, comment), m.tables, m.lookup)
		if err != nil {
			d.Errorf(node, fld, "condition: %v", err)
			return nil
		}
		return c
	}
	r.when = cond(f["when"], at("when"), false)
	r.createWhen = cond(f["create_when"], at("create_when"), false)

	seen := map[string]bool{}
	fromEntity := false
	for i, cn := range d.Items(f["comments"], at("comments")) {
		cf := yamlnode.Index(at("comments"), i)
		c := d.Fields(cn, cf, "id", "from", "when", "body")
		var rule commentRule
		id, _ := d.String(c["id"], cf+".id")
		from, _ := d.String(c["from"], cf+".from")
		switch {
		case id != "" && from != "":
			d.Errorf(cn, cf, "set either id or from, not both")
		case from != "":
			if from != "entity" {
				d.Errorf(c["from"], cf+".from", "unknown source %q (only entity)", from)
			} else if fromEntity {
				d.Errorf(c["from"], cf+".from", "only one from: entity entry per route")
			}
			fromEntity, rule.fromEntity = true, true
		case id != "":
			if !commentIDRE.MatchString(id) {
				d.Errorf(c["id"], cf+".id", "invalid comment id %q (lowercase letters, digits, _ . -)", id)
			} else if seen[id] {
				d.Errorf(c["id"], cf+".id", "duplicate comment id %q", id)
			}
			seen[id] = true
			rule.id = id
		default:
			d.Errorf(cn, cf, "needs id (a comment posted once) or from: entity")
		}
		rule.when = cond(c["when"], cf+".when", rule.fromEntity)
		if yamlnode.IsNull(c["body"]) {
			d.Errorf(cn, cf+".body", "required")
		}
		rule.body = tpl("body", r.markup, c["body"], cf+".body")
		r.comments = append(r.comments, rule)
	}

	for i, co := range d.Strings(f["create_only"], at("create_only")) {
		ok := contains(toAny(CreateOnlyFields), co) || (strings.HasPrefix(co, "fields.") && len(co) > len("fields."))
		if !ok {
			d.Errorf(yamlnode.Resolve(f["create_only"]).Content[i], yamlnode.Index(at("create_only"), i),
				"unknown field %q (known: %s, fields.<id>)", co, strings.Join(CreateOnlyFields, ", "))
			continue
		}
		r.createOnly = append(r.createOnly, co)
	}
	return r, len(d.Problems) == before
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func sortedNames(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Routes returns the routes (in declaration order) that take an event,
// judged by event name, project and kind only. An empty eventName matches
// every event of the kind (reconcile).
func (m *Mapping) Routes(eventName, project string, kind sync.Kind) []string {
	var out []string
	for _, r := range m.routes {
		if r.kind != kind {
			continue
		}
		if eventName != "" && len(r.events) > 0 && !contains(toAny(r.events), eventName) {
			continue
		}
		if eventName != "" && !strings.HasPrefix(eventName, string(kind)+".") {
			continue
		}
		if len(r.projects) > 0 {
			found := false
			for _, p := range r.projects {
				if strings.EqualFold(p, project) {
					found = true
					break
				}
			}
			if !found {
				continue
			}
		}
		out = append(out, r.name)
	}
	return out
}

// RouteInfo describes a route. Project is the tracker project when it does
// not depend on the entity (plain text or only .vars), else "".
func (m *Mapping) RouteInfo(name string) (sync.RouteInfo, bool) {
	r, ok := m.byName[name]
	if !ok {
		return sync.RouteInfo{}, false
	}
	info := sync.RouteInfo{Name: r.name, Kind: r.kind, Tracker: r.tracker, Projects: append([]string(nil), r.projects...)}
	if r.project != nil && r.project.isStatic {
		info.Project = r.project.static
	}
	return info, true
}

// RouteNames lists every route, sorted.
func (m *Mapping) RouteNames() []string {
	out := make([]string, 0, len(m.routes))
	for _, r := range m.routes {
		out = append(out, r.name)
	}
	sort.Strings(out)
	return out
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
		c := make(map[string]string, len(t))
		for kk, v := range t {
			c[kk] = v
		}
		out[k] = c
	}
	return out
}

// Vars returns a copy of the vars.
func (m *Mapping) Vars() map[string]string {
	out := make(map[string]string, len(m.vars))
	for k, v := range m.vars {
		out[k] = v
	}
	return out
}
