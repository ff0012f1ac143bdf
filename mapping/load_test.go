package mapping

import (
	"strings"
	"testing"
)

func TestLoadErrorsCollected(t *testing.T) {
	src := `vars: {qase_url: x}
routes:
  - name: Bad_Name
    kind: defect
    events: [defect.created, defect.exploded]
    tracker: nowhere
    project: QA
    title: '{{env "HOME"}}'
    when: 'status = "open"'
    priority: '{{lookup "no_such_table" .severity}}'
    body: |
      line one
      {{template "x"}}
    comments:
      - body: no id
      - {id: a, body: x}
      - {id: a, body: y}
      - {from: somewhere, body: z}
    create_only: [title, colour]
    colour: red
  - name: ok-route
    kind: widget
    tracker: jira
    project: lowercase
    title: x
  - name: gh
    kind: review
    tracker: github
    project: not-a-repo
    title: x
    create_when: 'frob(x)'
  - name: gh
    kind: run
    tracker: jira
    project: QA
    title: x
`
	_, err := Parse("m.yaml", []byte(src), Options{Trackers: map[string]string{"jira": "jira", "github": "github"}})
	if err == nil {
		t.Fatal("want errors")
	}
	msg := err.Error()
	for _, want := range []string{
		`m.yaml:3: routes[0].name: invalid route name "Bad_Name"`,
		`m.yaml:5: routes[0].events[1]: unknown defect event "defect.exploded"`,
		`m.yaml:6: routes[0].tracker: tracker "nowhere" is not defined in trackers (defined: github, jira)`,
		`m.yaml:8: routes[0].title: template: function "env" not defined`,
		`m.yaml:9: routes[0].when: condition: col 8: unexpected "=" (use "==")`,
		`m.yaml:10: routes[0].priority: template: lookup: unknown table "no_such_table"`,
		`m.yaml:13: routes[0].body: template: template inclusion is not allowed`,
		`m.yaml:15: routes[0].comments[0]: needs id`,
		`m.yaml:17: routes[0].comments[2].id: duplicate comment id "a"`,
		`m.yaml:18: routes[0].comments[3].from: unknown source "somewhere"`,
		`m.yaml:19: routes[0].create_only[1]: unknown field "colour"`,
		`m.yaml:20: routes[0].colour: unknown field`,
		`m.yaml:22: routes[1].kind: unknown kind "widget"`,
		`m.yaml:24: routes[1].project: "lowercase" is not a Jira project key`,
		`m.yaml:29: routes[2].project: "not-a-repo" is not a GitHub owner/repo`,
		`m.yaml:31: routes[2].create_when: condition: col 1: unknown function "frob"`,
		`m.yaml:32: routes[3].name: duplicate route name "gh"`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
}

func TestLoadErrorsMisc(t *testing.T) {
	cases := []struct {
		name, src, want string
		opts            Options
	}{
		{"syntax", "routes: [\n", "s.yaml:1: did not find expected node content", Options{}},
		{"no tracker type", "routes:\n  - {name: a, kind: run, tracker: t, project: x, title: y}\n", "s.yaml:2: routes[0].tracker_type: required when no trackers are configured", Options{}},
		{"type mismatch", "routes:\n  - {name: a, kind: run, tracker: t, tracker_type: github, project: a/b, title: y}\n", `routes[0].tracker_type: "github" does not match the type of tracker "t" (jira)`, Options{Trackers: map[string]string{"t": "jira"}}},
		{"unknown top key", "rutes: []\n", "s.yaml:1: rutes: unknown field", Options{}},
		{"prefix", "routes:\n  - {kind: run}\n", "s.yaml:2: mapping.routes[0].name: required", Options{FieldPrefix: "mapping"}},
		{"table files without reader", "table_files: [x.yaml]\n", "s.yaml:1: table_files[0]: table files cannot be read here", Options{}},
		{"bad table", "tables:\n  t: [a, b]\n", "s.yaml:2: tables.t: expected a mapping", Options{}},
		{"template line in block", "routes:\n  - name: a\n    kind: run\n    tracker: t\n    tracker_type: dryrun\n    project: p\n    title: y\n    body: |\n      ok\n      ok\n      {{.x | nosuch}}\n", `s.yaml:11: routes[0].body: template: function "nosuch" not defined`, Options{}},
		{"define", "routes:\n  - {name: a, kind: run, tracker: t, tracker_type: dryrun, project: p, title: '{{define \"x\"}}y{{end}}z'}\n", "define and block are not allowed", Options{}},
	}
	for _, c := range cases {
		_, err := Parse("s.yaml", []byte(c.src), c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
	}
}

func TestEmptyMappingIsValid(t *testing.T) {
	m, err := Parse("e.yaml", nil, Options{})
	if err != nil || len(m.RouteNames()) != 0 {
		t.Fatalf("empty mapping: %v", err)
	}
	if len(m.Tables()) < 10 {
		t.Error("built-in tables missing from an empty mapping")
	}
}
