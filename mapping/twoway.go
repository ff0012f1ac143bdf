package mapping

import (
	"slices"
	"strings"

	"github.com/qase-sync/qase-sync/internal/yamlpos"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// A route's two_way block: tracker changes flow back to the Qase defect
// (docs/mapping.md, "Two-way routes").
type twoWayDoc struct {
	// Fields gives status, title and severity a direction: out, in, both
	// or create_only.
	Fields map[string]string `yaml:"fields"`
	// Conflict settles a field changed on both sides: newest, qase, tracker.
	Conflict string `yaml:"conflict"`
	// Status maps tracker statuses to Qase defect statuses: "Done",
	// GitHub "closed:completed" / "closed:not_planned", Jira
	// "status:resolution".
	Status map[string]string `yaml:"status"`
	// StatusCategory maps Jira status categories (new, indeterminate,
	// done) for statuses Status does not name.
	StatusCategory map[string]string `yaml:"status_category"`
	// Severity maps Jira priorities to Qase severities.
	Severity map[string]string `yaml:"severity"`
}

// qaseSeverities are the slugs the Qase API takes.
var qaseSeverities = []string{"blocker", "critical", "major", "normal", "minor", "trivial", "undefined"}

func compileTwoWay(doc routeDoc, ix *yamlpos.Index, at func(string) string, ps *yamlpos.Problems) *qsync.TwoWay {
	d := doc.TwoWay
	if d == nil {
		return nil
	}
	errf := func(f, format string, args ...any) { *ps = append(*ps, ix.Problem(f, format, args...)) }
	base := at("two_way")
	if doc.Kind != qsync.KindDefect {
		errf(base, "two-way routes serve defects only (the Qase API writes back defect status and fields)")
		return nil
	}
	tw := &qsync.TwoWay{Fields: map[string]qsync.Direction{}, Conflict: d.Conflict, Status: map[string]string{}, Severity: map[string]string{}}
	for f, dir := range d.Fields {
		if !slices.Contains(qsync.TwoWayFields, f) {
			errf(base+".fields."+f, "unknown two-way field %q (known: %s)", f, strings.Join(qsync.TwoWayFields, ", "))
			continue
		}
		switch qsync.Direction(dir) {
		case qsync.DirOut, qsync.DirIn, qsync.DirBoth, qsync.DirCreateOnly:
		default:
			errf(base+".fields."+f, "unknown direction %q (out, in, both or create_only)", dir)
			continue
		}
		if f == qsync.FieldTags && dir != string(qsync.DirOut) && dir != string(qsync.DirBoth) {
			errf(base+".fields."+f, "tags flow out or both ways (labels also carry what the route sets itself)")
			continue
		}
		tw.Fields[f] = qsync.Direction(dir)
	}
	switch d.Conflict {
	case "":
		tw.Conflict = qsync.ConflictNewest
	case qsync.ConflictNewest, qsync.ConflictQase, qsync.ConflictTracker:
	default:
		errf(base+".conflict", "unknown conflict rule %q (newest, qase or tracker)", d.Conflict)
	}
	status := func(field, key, v string) bool {
		switch {
		case v == "open":
			errf(field, "the Qase API cannot set a defect back to open; leave %q out (the defect keeps its status in Qase)", key)
		case !slices.Contains(qsync.QaseDefectStatuses, v):
			errf(field, "unknown Qase defect status %q (the API sets %s)", v, strings.Join(qsync.QaseDefectStatuses, ", "))
		default:
			return true
		}
		return false
	}
	for k, v := range d.Status {
		if status(base+".status."+k, k, v) {
			tw.Status[strings.ToLower(k)] = v
		}
	}
	for k, v := range d.StatusCategory {
		lk := strings.ToLower(k)
		if !slices.Contains([]string{"new", "indeterminate", "done"}, lk) {
			errf(base+".status_category."+k, "unknown Jira status category %q (new, indeterminate or done)", k)
			continue
		}
		if status(base+".status_category."+k, k, v) {
			tw.Status["category:"+lk] = v
		}
	}
	for k, v := range d.Severity {
		if !slices.Contains(qaseSeverities, v) {
			errf(base+".severity."+k, "unknown Qase severity %q (known: %s)", v, strings.Join(qaseSeverities, ", "))
			continue
		}
		tw.Severity[strings.ToLower(k)] = v
	}
	flowsIn := func(f string) bool { d := tw.Dir(f); return d == qsync.DirIn || d == qsync.DirBoth }
	if flowsIn(qsync.FieldStatus) && len(d.Status)+len(d.StatusCategory) == 0 {
		errf(base+".fields.status", "status flows in but two_way has no status or status_category table")
	}
	if flowsIn(qsync.FieldSeverity) && len(d.Severity) == 0 {
		errf(base+".fields.severity", "severity flows in but two_way has no severity table")
	}
	return tw
}

// TwoWay returns the route's reverse mapping (qsync.TwoWayMapper).
func (m *Mapping) TwoWay(route string) (qsync.TwoWay, bool) {
	r, ok := m.byName[route]
	if !ok || r.twoWay == nil {
		return qsync.TwoWay{}, false
	}
	return *r.twoWay, true
}

var _ qsync.TwoWayMapper = (*Mapping)(nil)

// WriteBack says which links a route writes back to Qase once its Jira
// issue exists (the Qase API takes Jira links only).
type WriteBack struct {
	RunIssue  bool // POST /run/{code}/external-issue (run routes)
	CaseIssue bool // POST /case/{code}/external-issue/attach, for the entity's case_id
	// DefectTag adds the issue key as a defect tag; DefectField writes the
	// issue URL to the defect custom field with this internal id
	// (PATCH /defect/{code}/{id}). Any tracker.
	DefectTag   bool
	DefectField string
}

type writeBackDoc struct {
	RunIssue    bool   `yaml:"run_issue"`
	CaseIssue   bool   `yaml:"case_issue"`
	DefectTag   bool   `yaml:"defect_tag"`
	DefectField string `yaml:"defect_field"`
}

func compileWriteBack(doc routeDoc, trackerType string, ix *yamlpos.Index, at func(string) string, ps *yamlpos.Problems) WriteBack {
	d := doc.WriteBack
	if d == nil {
		return WriteBack{}
	}
	errf := func(f, format string, args ...any) { *ps = append(*ps, ix.Problem(f, format, args...)) }
	if (d.RunIssue || d.CaseIssue) && trackerType != "" && trackerType != "jira" {
		errf(at("write_back"), "the Qase API links Jira issues only (run_issue, case_issue); route tracker is %s", trackerType)
	}
	if (d.DefectTag || d.DefectField != "") && doc.Kind != qsync.KindDefect {
		errf(at("write_back"), "defect_tag and defect_field need a defect route")
	}
	if d.DefectField != "" && strings.Trim(d.DefectField, "0123456789") != "" {
		errf(at("write_back.defect_field"), "%q is not a custom field internal id (a number)", d.DefectField)
	}
	if d.RunIssue && doc.Kind != qsync.KindRun {
		errf(at("write_back.run_issue"), "run_issue needs a run route")
	}
	if d.CaseIssue && doc.Kind == qsync.KindRun {
		errf(at("write_back.case_issue"), "case_issue needs a defect or review route (they carry case_id)")
	}
	return WriteBack{RunIssue: d.RunIssue, CaseIssue: d.CaseIssue, DefectTag: d.DefectTag, DefectField: d.DefectField}
}

// WriteBackOf returns the route's link write-back settings.
func (m *Mapping) WriteBackOf(route string) WriteBack {
	if r, ok := m.byName[route]; ok {
		return r.writeBack
	}
	return WriteBack{}
}

// linkBack is what the route writes back for the entity: the run's
// external issue, or the Jira issue attached to the entity's case.
func (w WriteBack) linkBack(e qsync.Entity) *qsync.LinkBack {
	lb := &qsync.LinkBack{Run: w.RunIssue && e.Ref.Kind == qsync.KindRun, DefectField: w.DefectField}
	if id, ok := caseID(e.Attrs["case_id"]); w.CaseIssue && ok && id > 0 {
		lb.CaseID = id
	}
	if w.DefectTag && e.Ref.Kind == qsync.KindDefect {
		lb.DefectTag = true
		if tags, ok := e.Attrs["tags"].([]any); ok {
			for _, t := range tags {
				if s, ok := t.(string); ok {
					lb.Tags = append(lb.Tags, s)
				}
			}
		}
	}
	if !lb.Run && lb.CaseID == 0 && !lb.DefectTag && lb.DefectField == "" {
		return nil
	}
	return lb
}

func caseID(v any) (int64, bool) {
	switch t := v.(type) {
	case int64:
		return t, true
	case int:
		return int64(t), true
	case float64:
		return int64(t), t == float64(int64(t))
	}
	return 0, false
}
