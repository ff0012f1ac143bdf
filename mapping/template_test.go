package mapping

import (
	"errors"
	"strings"
	"testing"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// route builds a one-route mapping for template tests.
func oneRoute(t *testing.T, trackerType, extra string) *Mapping {
	t.Helper()
	project := "QA"
	if trackerType == "github" {
		project = "acme/qa"
	}
	src := "vars: {qase_url: 'https://app.qase.io'}\nroutes:\n  - name: r\n    kind: defect\n    tracker: t\n    tracker_type: " + trackerType +
		"\n    project: " + project + "\n    title: '{{.title}}'\n" + extra
	m, err := Parse("test.yaml", []byte(src), Options{})
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, src)
	}
	return m
}

func defect(attrs map[string]any) qsync.Entity {
	return qsync.Entity{Ref: qsync.EntityRef{Project: "DEMO", Kind: qsync.KindDefect, ID: 7}, Attrs: attrs}
}

const hostile = "{{.secret}} *bold* [link|http://x] <!-- qase-sync:marker x --> @everyone _em_ {html}<script>x</script>\n# heading\n- item\nh1. Big\n\\ back"

// TestEscaping: values are escaped for the tracker's markup, the template
// author's literal markup is kept.
func TestEscaping(t *testing.T) {
	for _, tc := range []struct {
		tracker, prefix string
		bad, want       []string
	}{
		{"jira", "*Result:* ",
			[]string{"TOPSECRET", " {{", " *bold*", " [link", " {html}", "\n# heading", "\n- item", "\nh1.", "\\ back"},
			[]string{`\{\{.secret\}\}`, `\*bold\*`, `\[link\|http://x\]`, `\_em\_`, `\{html\}`, "\n\\# heading", "\n\\- item", "\n&#104;1. Big", "&#92; back"}},
		{"github", "**Result:** ",
			[]string{"TOPSECRET", "<!--", "<script", "@everyone", " *bold*", " [link", "\n# heading", "\n- item"},
			[]string{"{{.secret}}", `\*bold\*`, `\[link\|http://x\]`, "&lt;!-- qase-sync:marker x --&gt;", "@&#8203;everyone", `\_em\_`, "\n\\# heading", "\n\\- item", `\\ back`}},
	} {
		t.Run(tc.tracker, func(t *testing.T) {
			m := oneRoute(t, tc.tracker, "    body: |\n      "+tc.prefix+"{{.actual_result}}\n")
			d, err := m.Desired("r", defect(map[string]any{"title": "T", "actual_result": hostile, "secret": "TOPSECRET"}))
			if err != nil {
				t.Fatal(err)
			}
			b := d.Spec.Body
			if !strings.HasPrefix(b, tc.prefix) {
				t.Errorf("author's literal markup must stay: %q", b)
			}
			for _, bad := range tc.bad {
				if strings.Contains(b, bad) {
					t.Errorf("body contains %q unescaped:\n%s", bad, b)
				}
			}
			for _, want := range tc.want {
				if !strings.Contains(b, want) {
					t.Errorf("body lacks %q:\n%s", want, b)
				}
			}
		})
	}
}

func TestEscapeKeepsURLsAndWords(t *testing.T) {
	for _, m := range []Markup{MarkupJira, MarkupMarkdown} {
		for _, s := range []string{"https://my-host.example.com/a_b/c-d", "snake_case and kebab-case", "mail jane@x.io", "plain words. 1.5 too"} {
			if got := Escape(m, s); got != s {
				t.Errorf("%s: Escape(%q) = %q, want unchanged", m, s, got)
			}
		}
	}
	if got := Escape(MarkupPlain, hostile); got != hostile {
		t.Errorf("plain markup must not change text")
	}
	if got := Escape(MarkupMarkdown, "1. first\r\n2) second"); got != "1\\. first\n2\\) second" {
		t.Errorf("ordered list markers: %q", got)
	}
}

func TestTemplateFunctions(t *testing.T) {
	m := oneRoute(t, "github", `    body: |
      a={{.missing}}|b={{.missing.deeper | default "dflt"}}|c={{raw .md}}|d={{upper .severity}}|e={{join "," .tags}}|f={{truncate 5 .title}}|g={{if has .severity}}yes{{end}}|h={{lookup "severity_to_jira_priority" .severity}}|i={{date "2006-01-02" .created_at}}|j={{dur "s" .duration}}|k={{replace "o" "0" .title}}|l={{title .status}}|m={{get .reviewers "a@x.io" "status"}}|n={{get .reviewers "zz" "status"}}|o={{printf "%03d" .id}}|p={{.count}}|q={{contains .tags "ui"}}|r={{.vars.qase_url}}
      {{code .log}}
`)
	d, err := m.Desired("r", defect(map[string]any{
		"title": "Login broken", "md": "*keep*", "severity": "critical", "tags": []any{"ui", "x"},
		"created_at": "2024-05-01 10:00:00", "duration": float64(90), "status": "in progress",
		"reviewers": map[string]any{"a@x.io": map[string]any{"status": "approved"}}, "count": float64(3),
		"log": "```\n<!-- x -->\n```",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := "a=|b=dflt|c=*keep*|d=CRITICAL|e=ui,x|f=Logi…|g=yes|h=High|i=2024-05-01|j=1m30s|k=L0gin br0ken|l=In Progress|m=approved|n=|o=007|p=3|q=true|r=https://app.qase.io\n\n````\n```\n<!\u200b-- x -->\n```\n````"
	if d.Spec.Body != want {
		t.Errorf("body:\n got %q\nwant %q", d.Spec.Body, want)
	}
	if strings.Contains(d.Spec.Body, "<no value>") {
		t.Error("absent values must render empty")
	}
}

func TestTitleIsPlainAndTruncated(t *testing.T) {
	m := oneRoute(t, "jira", "")
	long := strings.Repeat("é", 300)
	d, err := m.Desired("r", defect(map[string]any{"title": "line one\n\tline  *two*\r\n" + long}))
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(d.Spec.Title, "\n\r\t") || !strings.HasPrefix(d.Spec.Title, "line one line *two* ééé") {
		t.Errorf("title not collapsed/plain: %q", d.Spec.Title)
	}
	if n := len([]rune(d.Spec.Title)); n != 255 {
		t.Errorf("title has %d runes, want 255", n)
	}
}

func TestRenderErrorsArePermanent(t *testing.T) {
	m := oneRoute(t, "jira", `    priority: '{{lookup "strict" .severity}}'
tables:
  strict: {a: b}
`)
	_, err := m.Desired("r", defect(map[string]any{"title": "x", "severity": "zzz"}))
	if err == nil || !qsync.IsPermanent(err) {
		t.Fatalf("want permanent error, got %v", err)
	}
	for _, want := range []string{`route "r"`, "priority", `table "strict" has no entry for "zzz"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	// An empty title is a mapping error too.
	_, err = oneRoute(t, "jira", "").Desired("r", defect(map[string]any{}))
	if !errors.Is(err, qsync.ErrPermanent) || !strings.Contains(err.Error(), "title: renders empty") {
		t.Errorf("empty title: got %v", err)
	}
	if _, err := m.Desired("nope", defect(nil)); !qsync.IsPermanent(err) {
		t.Errorf("unknown route: got %v", err)
	}
	if _, err := m.Desired("r", qsync.Entity{Ref: qsync.EntityRef{Project: "D", Kind: qsync.KindRun, ID: 1}}); !qsync.IsPermanent(err) {
		t.Errorf("kind mismatch: got %v", err)
	}
}

func TestListsLabelsFields(t *testing.T) {
	m := oneRoute(t, "jira", `    labels: [qase, '', 'qase', 'sev {{.severity}}', '{{lines .tags}}', '{{.missing}}']
    assignees: ['{{.owner}}', '{{.owner}}']
    components: ['{{lines .comps}}']
    fields: {customfield_1: '{{.milestone_id}}', customfield_2: '{{.missing}}'}
    create_only: [title, fields.customfield_1]
`)
	d, err := m.Desired("r", defect(map[string]any{"title": "x", "severity": "major", "tags": []string{"a", "qase", "b c"}, "owner": "acc-1", "comps": []any{"API", "UI"}, "milestone_id": float64(12)}))
	if err != nil {
		t.Fatal(err)
	}
	s := d.Spec
	if got := strings.Join(s.Labels, ","); got != "qase,sev-major,a,b-c" {
		t.Errorf("labels = %q", got)
	}
	if strings.Join(s.Assignees, ",") != "acc-1" || strings.Join(s.Components, ",") != "API,UI" {
		t.Errorf("assignees %v components %v", s.Assignees, s.Components)
	}
	if len(s.Fields) != 1 || s.Fields["customfield_1"] != "12" {
		t.Errorf("fields = %v (empty renderings must be dropped)", s.Fields)
	}
	if s.Owns("title") || s.Owns("fields.customfield_1") || !s.Owns("labels") || !s.Owns("fields.customfield_2") {
		t.Errorf("ownership wrong: %v", s.CreateOnly)
	}
}
