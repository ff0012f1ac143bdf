package mapping

import (
	"reflect"
	"testing"

	qsync "github.com/qase-sync/qase-sync/sync"
)

func TestTemplateRefs(t *testing.T) {
	m := &Mapping{tables: builtinTables}
	for _, tc := range []struct {
		src  string
		want []string
	}{
		{"plain text", nil},
		{"{{.title}}", []string{"title"}},
		{`[{{.project}}-{{.id}}] {{.title | default "Qase defect"}}`, []string{"project", "id", "title"}},
		{`{{with .severity}}severity-{{.}} {{.nested}}{{end}}`, []string{"severity"}},
		{`{{range .tags}}{{.name}}{{else}}{{.fallback}}{{end}}`, []string{"tags", "fallback"}},
		{`{{range .tags}}{{$.title}}{{end}}`, []string{"tags", "title"}},
		{`{{if .a}}{{.b}}{{else}}{{.c}}{{end}}`, []string{"a", "b", "c"}},
		{`{{lookup "defect_status_to_jira" .state}}`, []string{"state"}},
		{`{{.attrs.actual_result}} {{.vars.qase_url}}`, []string{"actual_result", "vars"}},
	} {
		tp, _, err := m.compileTemplate(tc.src, MarkupPlain, nil)
		if err != nil {
			t.Fatalf("%q: %v", tc.src, err)
		}
		if !reflect.DeepEqual(tp.refs, tc.want) {
			t.Errorf("%q: refs %v, want %v", tc.src, tp.refs, tc.want)
		}
	}
}

// A defect known only from a thin event (no API read, no created event):
// the fields whose templates read what the service lacks are unknown, so
// the engine never writes them over an existing issue.
func TestDesiredUnknownFields(t *testing.T) {
	m := loadExample(t)
	thin := entity(qsync.KindDefect, 7, map[string]any{"status": "resolved"})
	d, err := m.Desired("defects-to-jira", thin)
	if err != nil {
		t.Fatal(err)
	}
	has := func(list []string, f string) bool {
		for _, x := range list {
			if x == f {
				return true
			}
		}
		return false
	}
	if !has(d.Unknown, "title") || !has(d.Unknown, "body") || has(d.Unknown, "status") {
		t.Fatalf("unknown %v: want title and body (no title, no actual_result), not status (known)", d.Unknown)
	}
	gone := entity(qsync.KindDefect, 7, nil)
	gone.Deleted = true
	d, _ = m.Desired("defects-to-jira", gone)
	if has(d.Unknown, "status") || !has(d.Unknown, "title") {
		t.Fatalf("deleted, nothing else known: unknown %v, want title but not status", d.Unknown)
	}
	full := entity(qsync.KindDefect, 7, map[string]any{"status": "open"})
	full.Complete = true // read from the API: what it lacks, Qase lacks
	if d, _ = m.Desired("defects-to-jira", full); len(d.Unknown) != 0 {
		t.Fatalf("complete entity: unknown %v, want none", d.Unknown)
	}
}
