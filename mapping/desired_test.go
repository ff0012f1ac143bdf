package mapping

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	qsync "github.com/qase-sync/qase-sync/sync"
)

var exampleTrackers = map[string]string{"jira": "jira", "github": "github"}

func loadExample(t *testing.T) *Mapping {
	t.Helper()
	m, err := Parse("example-routes.yaml", ExampleRoutes, Options{Trackers: exampleTrackers, Vars: map[string]string{"qase_url": "https://app.qase.io"}})
	if err != nil {
		t.Fatalf("example routes: %v", err)
	}
	return m
}

func entity(kind qsync.Kind, id int64, attrs map[string]any) qsync.Entity {
	return qsync.Entity{Ref: qsync.EntityRef{Project: "DEMO", Kind: kind, ID: id}, Attrs: attrs}
}

func TestBuiltinTables(t *testing.T) {
	want := map[string]map[string]string{
		"severity_to_jira_priority": {"blocker": "Highest", "critical": "High", "major": "High", "normal": "Medium", "minor": "Low", "trivial": "Lowest", "undefined": "Medium", "": "Medium", "weird": "Medium"},
		"defect_status_to_jira":     {"open": "To Do", "in_progress": "In Progress", "resolved": "Done", "invalid": "Done", "deleted": "Done", "": ""},
		"defect_status_to_github":   {"open": "open", "in_progress": "open", "resolved": "closed", "invalid": "closed", "deleted": "closed", "": ""},
		"defect_reason_to_github":   {"resolved": "completed", "invalid": "not_planned", "deleted": "not_planned", "open": ""},
		"review_status_to_github":   {"open": "open", "declined": "open", "merged": "closed", "deleted": "closed"},
		"review_reason_to_github":   {"merged": "completed", "deleted": "not_planned", "declined": ""},
		"review_status_to_jira":     {"open": "To Do", "declined": "To Do", "merged": "Done", "deleted": "Done"},
		"run_status_to_github":      {"failed": "open", "aborted": "open", "deleted": "closed", "passed": ""},
		"run_reason_to_github":      {"deleted": "not_planned", "failed": ""},
		"run_status_to_jira":        {"failed": "To Do", "deleted": "Done", "passed": ""},
		"review_approval_text":      {"approved": "Approved", "changes_requested": "Changes requested"},
		"defect_resolution_to_jira": {"resolved": "Done", "open": ""},
	}
	m := &Mapping{tables: builtinTables}
	for table, entries := range want {
		for k, v := range entries {
			got, err := m.lookup(table, k)
			if err != nil || got != v {
				t.Errorf("%s[%q] = %q, %v; want %q", table, k, got, err, v)
			}
		}
	}
	// Every built-in table has a _default, so thin payloads never fail a lookup.
	for name, tbl := range builtinTables {
		if _, ok := tbl["_default"]; !ok {
			t.Errorf("built-in table %s has no _default", name)
		}
	}
}

func TestTablesOverrideAndFiles(t *testing.T) {
	files := map[string]string{
		"conf/main.yaml": `table_files: [extra.yaml]
tables:
  severity_to_jira_priority: {critical: P1}
routes:
  - name: r
    kind: defect
    tracker: j
    project: QA
    title: x
    priority: '{{lookup "severity_to_jira_priority" .severity}}'
    components: ['{{lookup "team" .severity}}']
`,
		"conf/extra.yaml": "tables:\n  team: {critical: Core, _default: Other}\n",
	}
	read := func(p string) ([]byte, error) {
		if s, ok := files[p]; ok {
			return []byte(s), nil
		}
		return nil, fmt.Errorf("no such file")
	}
	m, err := Load(Options{Trackers: map[string]string{"j": "jira"}, ReadFile: read}, "conf/main.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d, err := m.Desired("r", entity(qsync.KindDefect, 1, map[string]any{"severity": "critical"}))
	if err != nil {
		t.Fatal(err)
	}
	if d.Spec.Priority != "P1" || strings.Join(d.Spec.Components, ",") != "Core" {
		t.Errorf("override/table file not applied: %+v", d.Spec)
	}
	// The override replaces the whole table: no _default any more.
	if _, err := m.Desired("r", entity(qsync.KindDefect, 1, map[string]any{"severity": "minor"})); err == nil || !qsync.IsPermanent(err) {
		t.Errorf("want permanent lookup error, got %v", err)
	}
	// A missing table file is a load error naming the line.
	files["conf/main.yaml"] = strings.Replace(files["conf/main.yaml"], "extra.yaml", "gone.yaml", 1)
	_, err = Load(Options{Trackers: map[string]string{"j": "jira"}, ReadFile: read}, "conf/main.yaml")
	if err == nil || !strings.Contains(err.Error(), "conf/main.yaml:1: table_files[0]: cannot read table file") {
		t.Errorf("got %v", err)
	}
}

func TestExampleDefectToJira(t *testing.T) {
	m := loadExample(t)
	d, err := m.Desired("defects-to-jira", entity(qsync.KindDefect, 7, map[string]any{
		"title": "Login fails", "actual_result": "HTTP 500", "severity": "critical", "status": "open", "tags": []any{"ui"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	s := d.Spec
	if d.Skip || !d.Create || d.Tracker != "jira" || s.Project != "QA" || s.Type != "Bug" {
		t.Errorf("desired = %+v", d)
	}
	if s.Title != "[DEMO-7] Login fails" || s.Priority != "High" || s.Status != "To Do" {
		t.Errorf("spec = %+v", s)
	}
	if !reflect.DeepEqual(s.Labels, []string{"qase", "qase-demo", "severity-critical", "ui"}) {
		t.Errorf("labels = %v", s.Labels)
	}
	if !strings.Contains(s.Body, "[DEMO-7|https://app.qase.io/defect/DEMO/7]") || !strings.HasPrefix(s.Body, "HTTP 500") {
		t.Errorf("body = %q", s.Body)
	}
	if s.Owns("priority") || !s.Owns("status") || len(s.Comments) != 0 {
		t.Errorf("ownership/comments wrong: %+v", s)
	}

	// Thin payload (defect.updated with only an id): still maps, no failure.
	d, err = m.Desired("defects-to-jira", qsync.Entity{Ref: qsync.EntityRef{Project: "DEMO", Kind: qsync.KindDefect, ID: 8}, Attrs: map[string]any{"id": float64(8)}, LastEvent: "defect.updated"})
	if err != nil || d.Skip || !d.Create || d.Spec.Title != "[DEMO-8] Qase defect" || d.Spec.Status != "" || d.Spec.Priority != "Medium" {
		t.Errorf("thin: %+v, %v", d, err)
	}

	// Trivial defects are skipped altogether.
	d, _ = m.Desired("defects-to-jira", entity(qsync.KindDefect, 9, map[string]any{"severity": "trivial"}))
	if !d.Skip {
		t.Errorf("trivial defect not skipped: %+v", d)
	}

	// Resolved: updated (Done + one comment) but never created.
	d, err = m.Desired("defects-to-jira", entity(qsync.KindDefect, 7, map[string]any{"title": "x", "status": "resolved", "severity": "major"}))
	if err != nil || d.Create || d.Spec.Status != "Done" || len(d.Spec.Comments) != 1 || d.Spec.Comments[0].ID != "defects-to-jira:resolved" {
		t.Errorf("resolved: %+v, %v", d, err)
	}

	// Deleted: Create false, status Done, the deleted comment.
	e := entity(qsync.KindDefect, 7, map[string]any{"title": "x", "status": "open"})
	e.Deleted = true
	d, err = m.Desired("defects-to-jira", e)
	if err != nil || d.Create || d.Spec.Status != "Done" || len(d.Spec.Comments) != 1 || d.Spec.Comments[0].ID != "defects-to-jira:deleted" {
		t.Errorf("deleted: %+v, %v", d, err)
	}
}

func TestExampleReviews(t *testing.T) {
	m := loadExample(t)
	const route = "declined-reviews-to-github"
	review := func(status string, extra map[string]any, events map[string]int) qsync.Entity {
		a := map[string]any{"title": "Checkout case", "status": status, "author": "Ann", "case_id": float64(12)}
		for k, v := range extra {
			a[k] = v
		}
		e := entity(qsync.KindReview, 3, a)
		e.Events = events
		return e
	}
	// Open, never declined: not this route's business.
	d, err := m.Desired(route, review("open", nil, map[string]int{"review.created": 1}))
	if err != nil || !d.Skip {
		t.Errorf("open review: %+v, %v", d, err)
	}
	// Declined: an open GitHub issue.
	d, err = m.Desired(route, review("declined", map[string]any{"declined_by": "Bob"}, map[string]int{"review.declined": 1}))
	if err != nil || d.Skip || !d.Create || d.Spec.Status != "open" || d.Spec.Reason != "" || d.Spec.Project != "acme/qa" {
		t.Fatalf("declined: %+v, %v", d, err)
	}
	if !strings.Contains(d.Spec.Body, "declined by Bob") || !strings.Contains(d.Spec.Body, "Case: DEMO-12") {
		t.Errorf("declined body = %q", d.Spec.Body)
	}
	// Reopened after the decline (status open again): issue stays open, not created anew.
	d, _ = m.Desired(route, review("open", nil, map[string]int{"review.declined": 1, "review.reopened": 1}))
	if d.Skip || d.Create || d.Spec.Status != "open" {
		t.Errorf("reopened: %+v", d)
	}
	// Merged: closed as completed, with a once-only comment.
	d, _ = m.Desired(route, review("merged", map[string]any{"merged_by": "Cy"}, map[string]int{"review.declined": 1, "review.merged": 1}))
	if d.Skip || d.Create || d.Spec.Status != "closed" || d.Spec.Reason != "completed" || len(d.Spec.Comments) != 1 || d.Spec.Comments[0].ID != route+":merged" {
		t.Errorf("merged: %+v", d)
	}
	// Deleted: closed as not planned.
	e := review("declined", nil, map[string]int{"review.declined": 1, "review.deleted": 1})
	e.Deleted = true
	d, _ = m.Desired(route, e)
	if d.Create || d.Spec.Status != "closed" || d.Spec.Reason != "not_planned" {
		t.Errorf("deleted: %+v", d)
	}
	// Event-sourced comments keep their ids and authors; their text is escaped.
	e = review("declined", nil, map[string]int{"review.declined": 1})
	e.Comments = []qsync.Comment{{ID: "qc-1", Author: "Dee", Body: "ping @everyone <!-- qase-sync:marker x -->"}, {ID: "qc-2", Author: "Eve", Body: "ok"}}
	d, _ = m.Desired(route, e)
	if len(d.Spec.Comments) != 2 || d.Spec.Comments[0].ID != "qc-1" || d.Spec.Comments[0].Author != "Dee" || d.Spec.Comments[1].ID != "qc-2" {
		t.Fatalf("comments: %+v", d.Spec.Comments)
	}
	if c := d.Spec.Comments[0].Body; !strings.HasPrefix(c, "**Dee** commented in Qase:") || strings.Contains(c, "@everyone") || strings.Contains(c, "<!--") {
		t.Errorf("comment body = %q", c)
	}
}

func TestExampleRuns(t *testing.T) {
	m := loadExample(t)
	const route = "failed-runs-to-github"
	run := func(status string, failed float64, last string) qsync.Entity {
		e := entity(qsync.KindRun, 5, map[string]any{"title": "Nightly", "status": status, "passed": float64(8), "failed": failed,
			"blocked": float64(1), "cases": float64(10), "duration": float64(125000), "environment": "staging"})
		e.LastEvent = last
		return e
	}
	d, err := m.Desired(route, run("failed", 2, "run.completed"))
	if err != nil || d.Skip || !d.Create || d.Spec.Status != "open" || d.Spec.Title != "Test run failed: Nightly" {
		t.Fatalf("failed run: %+v, %v", d, err)
	}
	for _, want := range []string{"| 8 | 2 | 1 | 0 | 0 | 10 |", "Duration: 2m5s", "Environment: staging", "(https://app.qase.io/run/DEMO/dashboard/5)"} {
		if !strings.Contains(d.Spec.Body, want) {
			t.Errorf("run body lacks %q:\n%s", want, d.Spec.Body)
		}
	}
	d, _ = m.Desired(route, run("aborted", 1, "run.aborted"))
	if d.Skip || !strings.Contains(d.Spec.Body, "(aborted)") {
		t.Errorf("aborted run: %+v", d)
	}
	d, _ = m.Desired(route, run("passed", 0, "run.completed"))
	if !d.Skip {
		t.Errorf("passed run must be skipped: %+v", d)
	}
	// The route listens only to the events it needs.
	if got := m.Routes("run.started", "DEMO", qsync.KindRun); len(got) != 0 {
		t.Errorf("run.started routed to %v", got)
	}
	if got := m.Routes("run.completed", "DEMO", qsync.KindRun); !reflect.DeepEqual(got, []string{route}) {
		t.Errorf("run.completed routed to %v", got)
	}
}

func TestRoutesAndInfo(t *testing.T) {
	m := loadExample(t)
	if got := m.RouteNames(); !reflect.DeepEqual(got, []string{"declined-reviews-to-github", "defects-to-jira", "failed-runs-to-github"}) {
		t.Errorf("RouteNames = %v", got)
	}
	if got := m.Routes("defect.resolved", "ANY", qsync.KindDefect); !reflect.DeepEqual(got, []string{"defects-to-jira"}) {
		t.Errorf("Routes(defect.resolved) = %v", got)
	}
	if got := m.Routes("review.commented", "DEMO", qsync.KindReview); !reflect.DeepEqual(got, []string{"declined-reviews-to-github"}) {
		t.Errorf("Routes(review.commented) = %v", got)
	}
	if got := m.Routes("defect.created", "DEMO", qsync.KindRun); len(got) != 0 {
		t.Errorf("kind mismatch routed: %v", got)
	}
	info, ok := m.RouteInfo("declined-reviews-to-github")
	if !ok || info.Kind != qsync.KindReview || info.Tracker != "github" || info.Project != "acme/qa" {
		t.Errorf("RouteInfo = %+v", info)
	}
	if _, ok := m.RouteInfo("nope"); ok {
		t.Error("RouteInfo of unknown route")
	}

	p, err := Parse("p.yaml", []byte(`routes:
  - {name: a, kind: defect, projects: [DEMO], tracker: t, tracker_type: dryrun, project: '{{.project}}', title: x}
`), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Routes("defect.created", "demo", qsync.KindDefect); len(got) != 1 {
		t.Errorf("project match should ignore case: %v", got)
	}
	if got := p.Routes("defect.created", "OTHER", qsync.KindDefect); len(got) != 0 {
		t.Errorf("other project routed: %v", got)
	}
	if info, _ := p.RouteInfo("a"); info.Project != "" || !reflect.DeepEqual(info.Projects, []string{"DEMO"}) {
		t.Errorf("entity-dependent project must be empty in RouteInfo: %+v", info)
	}
}

func TestDesiredIsPure(t *testing.T) {
	m := loadExample(t)
	attrs := map[string]any{"title": "x", "severity": "major", "tags": []string{"a"}, "nested": map[string]any{"k": float64(1)}}
	e := entity(qsync.KindDefect, 1, attrs)
	d1, err1 := m.Desired("defects-to-jira", e)
	d2, err2 := m.Desired("defects-to-jira", e)
	if err1 != nil || err2 != nil || !reflect.DeepEqual(d1, d2) {
		t.Errorf("not deterministic: %v %v", err1, err2)
	}
	if _, ok := attrs["nested"].(map[string]any)["k"].(float64); !ok {
		t.Error("Desired mutated the entity's attrs")
	}
}

func TestDesiredConcurrent(t *testing.T) {
	m := loadExample(t)
	e := entity(qsync.KindRun, 5, map[string]any{"title": "Nightly", "status": "failed", "failed": float64(1)})
	want, err := m.Desired("failed-runs-to-github", e)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan bool)
	for i := 0; i < 8; i++ {
		go func() {
			d, err := m.Desired("failed-runs-to-github", e)
			done <- err == nil && reflect.DeepEqual(d, want)
		}()
	}
	for i := 0; i < 8; i++ {
		if !<-done {
			t.Error("concurrent Desired differed")
		}
	}
}

// Bodies and comments are capped below each tracker's limit here, so the
// desired text equals what the tracker stores (no phantom drift) and Jira
// never rejects an over-long description.
func TestDesiredCapsLongText(t *testing.T) {
	for _, tc := range []struct {
		tracker string
		max     int
	}{{"jira", 32000}, {"github", 65000}} {
		routes := `
routes:
  - name: r
    kind: defect
    tracker: t
    tracker_type: ` + tc.tracker + `
    project: ` + map[string]string{"jira": "QA", "github": "o/r"}[tc.tracker] + `
    title: '{{.title}}'
    body: '{{.actual_result}}'
    comments:
      - {id: c, when: 'true', body: '{{.actual_result}}'}
`
		m, err := Parse("caps.yaml", []byte(routes), Options{})
		if err != nil {
			t.Fatal(err)
		}
		long := strings.Repeat("é", 100000)
		d, err := m.Desired("r", qsync.Entity{Ref: qsync.EntityRef{Project: "P", Kind: qsync.KindDefect, ID: 1},
			Attrs: map[string]any{"title": "x", "actual_result": long}})
		if err != nil {
			t.Fatal(err)
		}
		for what, text := range map[string]string{"body": d.Spec.Body, "comment": d.Spec.Comments[0].Body} {
			if n := utf8.RuneCountInString(text); n > tc.max || n < tc.max-100 {
				t.Errorf("%s %s: %d runes, want just under %d", tc.tracker, what, n, tc.max)
			}
			if !strings.HasSuffix(text, "(truncated by qase-sync)") {
				t.Errorf("%s %s: no visible truncation notice", tc.tracker, what)
			}
		}
	}
}
