package mapping

import (
	"strings"
	"testing"

	qsync "github.com/qase-sync/qase-sync/sync"
)

const twoWayRoute = `routes:
  - name: defects
    kind: defect
    tracker: jira
    project: QA
    title: '{{.title}}'
    status: '{{lookup "defect_status_to_jira" .state}}'
    two_way:
      fields: {status: both, title: in}
      status:
        Done: resolved
        "Done:Won't Do": invalid
      status_category:
        indeterminate: in_progress
`

func TestTwoWayRoute(t *testing.T) {
	m, err := Parse("m.yaml", []byte(twoWayRoute), Options{Trackers: map[string]string{"jira": "jira"}})
	if err != nil {
		t.Fatal(err)
	}
	tw, ok := m.TwoWay("defects")
	if !ok || tw.Dir("status") != qsync.DirBoth || tw.Dir("title") != qsync.DirIn || tw.Dir("severity") != qsync.DirOut || tw.Conflict != "newest" {
		t.Fatalf("two-way = %+v", tw)
	}
	for _, c := range []struct{ status, reason, cat, want string }{
		{"Done", "", "done", "resolved"}, {"DONE", "won't do", "done", "invalid"}, {"Coding", "", "indeterminate", "in_progress"},
	} {
		if got, _ := tw.ReverseStatus(c.status, c.reason, c.cat); got != c.want {
			t.Errorf("reverse(%s/%s/%s) = %q, want %q", c.status, c.reason, c.cat, got, c.want)
		}
	}
	if _, ok := tw.ReverseStatus("To Do", "", "new"); ok {
		t.Error("an unmapped status mapped")
	}
}

func TestTwoWayValidation(t *testing.T) {
	for _, c := range []struct{ edit, want string }{
		{"        Done: resolved\n        To Do: open\n", "m.yaml:12: routes[0].two_way.status.To Do: the Qase API cannot set a defect back to open"},
		{"        Done: closed\n", "unknown Qase defect status \"closed\""},
	} {
		src := strings.Replace(twoWayRoute, "        Done: resolved\n", c.edit, 1)
		_, err := Parse("m.yaml", []byte(src), Options{Trackers: map[string]string{"jira": "jira"}})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err = %v, want %q", c.edit, err, c.want)
		}
	}
	bad := strings.Replace(twoWayRoute, "status: both", "status: sideways", 1)
	if _, err := Parse("m.yaml", []byte(bad), Options{Trackers: map[string]string{"jira": "jira"}}); err == nil || !strings.Contains(err.Error(), "unknown direction") {
		t.Errorf("bad direction: %v", err)
	}
	run := strings.Replace(twoWayRoute, "kind: defect", "kind: run", 1)
	if _, err := Parse("m.yaml", []byte(run), Options{Trackers: map[string]string{"jira": "jira"}}); err == nil || !strings.Contains(err.Error(), "defects only") {
		t.Errorf("run route: %v", err)
	}
}

func TestWriteBackValidation(t *testing.T) {
	src := strings.Replace(twoWayRoute, "    two_way:\n", "    write_back: {case_issue: true, defect_tag: true, defect_field: \"5\"}\n    two_way:\n", 1)
	m, err := Parse("m.yaml", []byte(src), Options{Trackers: map[string]string{"jira": "jira"}})
	if err != nil {
		t.Fatal(err)
	}
	if wb := m.WriteBackOf("defects"); !wb.CaseIssue || !wb.DefectTag || wb.DefectField != "5" {
		t.Fatalf("write_back = %+v", wb)
	}
	d, err := m.Desired("defects", qsync.Entity{Ref: qsync.EntityRef{Project: "QA", Kind: qsync.KindDefect, ID: 1},
		Attrs: map[string]any{"title": "t", "case_id": int64(44), "tags": []any{"ui"}}})
	if err != nil || d.LinkBack == nil || d.LinkBack.CaseID != 44 || !d.LinkBack.DefectTag || d.LinkBack.Tags[0] != "ui" {
		t.Fatalf("link back = %+v, %v", d.LinkBack, err)
	}
	gh := strings.Replace(src, "tracker: jira", "tracker: gh", 1)
	gh = strings.Replace(gh, "project: QA", "project: acme/qa", 1)
	if _, err := Parse("m.yaml", []byte(gh), Options{Trackers: map[string]string{"gh": "github"}}); err == nil || !strings.Contains(err.Error(), "links Jira issues only") {
		t.Fatalf("case_issue on github: %v", err)
	}
	bad := strings.Replace(src, `defect_field: "5"`, `defect_field: "x"`, 1)
	if _, err := Parse("m.yaml", []byte(bad), Options{Trackers: map[string]string{"jira": "jira"}}); err == nil || !strings.Contains(err.Error(), "internal id") {
		t.Fatalf("bad field id: %v", err)
	}
}
