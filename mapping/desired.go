package mapping

import (
	"fmt"
	"maps"
	"math"
	"strings"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// Tracker limits applied to rendered values.
const (
	maxTitleRunes       = 255
	maxJiraLabelRunes   = 255
	maxGitHubLabelRunes = 50
)

// maxTextRunes caps bodies and comments below each tracker's limit (Jira
// rejects text fields over 32,767 characters; GitHub 65,536, and the
// adapter needs room for its marker). Capping here, not in the adapter,
// keeps the desired text equal to what the tracker stores, so verifying a
// long body never finds drift that is not there.
func maxTextRunes(trackerType string) int {
	switch trackerType {
	case "jira":
		return 32000
	case "github":
		return 65000
	}
	return 0
}

const truncatedNotice = "\n\n… (truncated by qase-sync)"

func capText(trackerType, s string) string {
	max := maxTextRunes(trackerType)
	if max == 0 || len(s) <= max || len([]rune(s)) <= max {
		return s
	}
	r := []rune(s)
	return strings.TrimSpace(string(r[:max-len([]rune(truncatedNotice))])) + truncatedNotice
}

// Desired computes the issue the route wants for the entity now. It never
// does I/O; every failure is qsync.Permanent (a mapping error cannot be
// fixed by retrying) and names the route and field.
func (m *Mapping) Desired(name string, e qsync.Entity) (qsync.Desired, error) {
	r, ok := m.byName[name]
	if !ok {
		return qsync.Desired{}, qsync.Permanentf("mapping: unknown route %q", name)
	}
	if e.Ref.Kind != r.kind {
		return qsync.Desired{}, qsync.Permanentf("mapping: route %q serves %s entities, got %s", name, r.kind, e.Ref.Kind)
	}
	d := qsync.Desired{Route: r.name, Tracker: r.tracker}
	data := m.data(e)
	fail := func(field string, err error) (qsync.Desired, error) {
		return qsync.Desired{}, qsync.Permanent(fmt.Errorf("mapping: route %q: %s: %w", r.name, field, err))
	}
	if r.when != nil {
		ok, err := r.when.Eval(data)
		if err != nil {
			return fail("when", err)
		}
		if !ok {
			d.Skip = true
			return d, nil
		}
	}
	d.Create = !e.Deleted
	if r.kind == qsync.KindFailure {
		d.Create = d.Create && failureCreatable(e)
	}
	d.LinkBack = r.writeBack.linkBack(e)
	if d.Create && r.createWhen != nil {
		ok, err := r.createWhen.Eval(data)
		if err != nil {
			return fail("create_when", err)
		}
		d.Create = ok
	}
	spec, field, err := m.render(r, e, data)
	if err != nil {
		return fail(field, err)
	}
	d.Spec = spec
	d.Unknown = unknownFields(r, e)
	return d, nil
}

// builtins are always known: the entity's identity, the service's own
// bookkeeping and configuration.
var builtins = map[string]bool{"id": true, "project": true, "kind": true, "deleted": true,
	"last_event": true, "events": true, "vars": true, "attrs": true, "comment": true}

// unknownFields names the spec fields whose templates read entity
// attributes of which the entity has none. An entity read from the Qase
// API is complete: what it lacks, Qase lacks. One known only from events
// lacks what no event carried (thin defect.updated payloads, a lost
// store): writing such a field over an existing issue would replace real
// text with a template's fallback. A field that reads several attributes
// is known once any of them is (optional attributes are often absent).
func unknownFields(r *route, e qsync.Entity) []string {
	if e.Complete {
		return nil
	}
	known := func(ref string) bool {
		switch {
		case builtins[ref]:
			return true
		case ref == "state":
			return e.Deleted || e.Attrs["status"] != nil
		}
		v, ok := e.Attrs[ref]
		return ok && v != nil
	}
	guess := func(ts ...*tmpl) bool {
		reads := false
		for _, t := range ts {
			if t == nil {
				continue
			}
			for _, ref := range t.refs {
				if builtins[ref] {
					continue
				}
				if known(ref) {
					return false
				}
				reads = true
			}
		}
		return reads
	}
	var out []string
	for _, f := range []struct {
		name string
		ts   []*tmpl
	}{
		{"title", []*tmpl{r.title}}, {"body", []*tmpl{r.body}}, {"labels", r.labels},
		{"priority", []*tmpl{r.priority}}, {"assignees", r.assignees}, {"components", r.components},
		{"status", []*tmpl{r.status, r.reason}},
	} {
		if guess(f.ts...) {
			out = append(out, f.name)
		}
	}
	for _, id := range r.fieldIDs {
		if guess(r.fields[id]) {
			out = append(out, "fields."+id)
		}
	}
	return out
}

func (m *Mapping) render(r *route, e qsync.Entity, data map[string]any) (qsync.IssueSpec, string, error) {
	var s qsync.IssueSpec
	wrap := func(field string, err error) (qsync.IssueSpec, string, error) {
		return qsync.IssueSpec{}, field, err
	}
	for _, f := range []struct {
		name string
		t    *tmpl
		dst  *string
	}{
		{"project", r.project, &s.Project}, {"issue_type", r.issueType, &s.Type}, {"title", r.title, &s.Title},
		{"priority", r.priority, &s.Priority}, {"status", r.status, &s.Status}, {"reason", r.reason, &s.Reason},
	} {
		v, err := f.t.execute(data)
		if err != nil {
			return wrap(f.name, err)
		}
		*f.dst = strings.TrimSpace(v)
	}
	if s.Project == "" {
		return wrap("project", fmt.Errorf("renders empty"))
	}
	s.Title = truncateRunes(plainLine(s.Title), maxTitleRunes)
	if s.Title == "" {
		return wrap("title", fmt.Errorf("renders empty"))
	}
	if r.body != nil {
		v, err := r.body.execute(data)
		if err != nil {
			return wrap("body", err)
		}
		s.Body = capText(r.trackerType, strings.TrimSpace(strings.ReplaceAll(v, "\r\n", "\n")))
	}
	var err error
	var field string
	if s.Labels, field, err = renderList(r.labels, "labels", data, func(l string) string { return labelFor(r.trackerType, l) }); err != nil {
		return wrap(field, err)
	}
	if s.Assignees, field, err = renderList(r.assignees, "assignees", data, strings.TrimSpace); err != nil {
		return wrap(field, err)
	}
	if s.Components, field, err = renderList(r.components, "components", data, strings.TrimSpace); err != nil {
		return wrap(field, err)
	}
	for _, id := range r.fieldIDs {
		v, err := r.fields[id].execute(data)
		if err != nil {
			return wrap("fields."+id, err)
		}
		// Empty means "unknown now" (thin payloads): leave the field alone.
		if v = strings.TrimSpace(v); v != "" {
			if s.Fields == nil {
				s.Fields = map[string]string{}
			}
			s.Fields[id] = v
		}
	}
	for i, c := range r.comments {
		cfield := fmt.Sprintf("comments[%d]", i)
		// text is the comment for data, "" when its condition leaves it
		// out or it renders empty; field names what failed.
		text := func(data map[string]any) (body, field string, err error) {
			ok, err := evalCond(c.when, data)
			if err != nil || !ok {
				return "", cfield + ".when", err
			}
			body, err = c.body.execute(data)
			return strings.TrimSpace(body), cfield + ".body", err
		}
		if !c.fromEntity {
			body, field, err := text(data)
			if err != nil {
				return wrap(field, err)
			}
			if body != "" {
				s.Comments = append(s.Comments, qsync.Comment{ID: r.name + ":" + c.id, Body: capText(r.trackerType, body)})
			}
			continue
		}
		for _, ec := range e.Comments {
			cd := maps.Clone(data)
			cd["comment"] = commentData(ec)
			body, field, err := text(cd)
			if err != nil {
				return wrap(field, err)
			}
			if body != "" {
				s.Comments = append(s.Comments, qsync.Comment{ID: ec.ID, Author: ec.Author, Body: capText(r.trackerType, body), At: ec.At})
			}
		}
	}
	if len(r.createOnly) > 0 {
		s.CreateOnly = append([]string(nil), r.createOnly...)
	}
	return s, "", nil
}

func evalCond(c *Cond, data map[string]any) (bool, error) {
	if c == nil {
		return true, nil
	}
	return c.Eval(data)
}

// renderList renders list templates; each rendering may hold several
// values, one per line (see the lines function). Empty values are dropped
// and duplicates removed, keeping the first occurrence's position.
func renderList(ts []*tmpl, field string, data map[string]any, norm func(string) string) ([]string, string, error) {
	var out []string
	seen := map[string]bool{}
	for i, t := range ts {
		v, err := t.execute(data)
		if err != nil {
			return nil, fmt.Sprintf("%s[%d]", field, i), err
		}
		for _, line := range strings.Split(v, "\n") {
			line = norm(line)
			if line == "" || seen[line] {
				continue
			}
			seen[line] = true
			out = append(out, line)
		}
	}
	return out, "", nil
}

// labelFor makes a rendered label acceptable to the tracker: Jira labels
// cannot contain spaces, GitHub label names are at most 50 characters.
func labelFor(trackerType, l string) string {
	l = plainLine(l)
	switch trackerType {
	case "jira":
		return truncateRunes(strings.ReplaceAll(l, " ", "-"), maxJiraLabelRunes)
	case "github":
		return truncateRunes(l, maxGitHubLabelRunes)
	}
	return l
}

func commentData(c qsync.Comment) map[string]any {
	at := ""
	if !c.At.IsZero() {
		at = c.At.UTC().Format(time.RFC3339)
	}
	return map[string]any{"id": c.ID, "author": c.Author, "body": c.Body, "at": at}
}

// data is what templates and conditions see: every attribute at top
// level, then the built-ins (which win over attributes of the same name;
// the attributes stay reachable under .attrs).
func (m *Mapping) data(e qsync.Entity) map[string]any {
	d := make(map[string]any, len(e.Attrs)+10)
	attrs := make(map[string]any, len(e.Attrs))
	for k, v := range e.Attrs {
		if v == nil {
			continue // absent and null are the same to a mapping
		}
		nv := normalize(v)
		d[k], attrs[k] = nv, nv
	}
	d["attrs"] = attrs
	d["id"] = e.Ref.ID
	if e.Ref.Project != "" {
		d["project"] = e.Ref.Project
	}
	d["kind"] = string(e.Ref.Kind)
	d["deleted"] = e.Deleted
	if e.Deleted {
		d["state"] = "deleted"
	} else {
		d["state"] = attrs["status"]
	}
	d["last_event"] = e.LastEvent
	events := make(map[string]any, len(e.Events))
	for k, v := range e.Events {
		events[k] = int64(v)
	}
	d["events"] = events
	d["vars"] = m.varData
	return d
}

// each returns f applied to every element of s, in order.
func each[S, T any](s []S, f func(S) T) []T {
	out := make([]T, len(s))
	for i, x := range s {
		out[i] = f(x)
	}
	return out
}

// normalize deep-copies a JSON-ish value, turning integral floats into
// int64 (so templates print 3, not 3e+00, and eq .failed 0 works) and
// string slices into []any.
func normalize(v any) any {
	switch t := v.(type) {
	case float64:
		if t == math.Trunc(t) && math.Abs(t) < 1<<53 {
			return int64(t)
		}
		return t
	case int:
		return int64(t)
	case int32:
		return int64(t)
	case []string:
		return each(t, func(s string) any { return s })
	case []any:
		return each(t, normalize)
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			if x != nil {
				out[k] = normalize(x)
			}
		}
		return out
	}
	return v
}
