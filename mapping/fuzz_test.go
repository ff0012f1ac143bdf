package mapping

import (
	"strings"
	"testing"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// FuzzCond: no input panics the compiler or the evaluator, and a
// condition that compiles evaluates without a runtime failure other than
// a reported error.
func FuzzCond(f *testing.F) {
	for _, s := range []string{`status == "open"`, `!(a in [1, "x", null]) || len(b) > 2 && has(c.d["e"])`, `((`, `lookup("t", x)`,
		`-a[0].b`, `'\q'`, `b[-1] > "w" || c?.d.e.f == nil`, `all(b, # != "") and a not in [2]`, `lookup("severity_to_jira_priority", c.d) == "x"`} {
		f.Add(s)
	}
	data := map[string]any{"a": int64(1), "b": []any{"x"}, "c": map[string]any{"d": map[string]any{"e": "f"}}, "vars": map[string]any{"v": rawString("w")}}
	scope := condScope{"a": nil, "b": nil, "c": nil, "x": nil, "vars": map[string]any{}}
	f.Fuzz(func(t *testing.T, src string) {
		c, err := compileCond(src, scope, exampleMapping.tables, exampleMapping.lookup)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		_, _ = c.Eval(data)
		_, _ = c.Eval(map[string]any{})
	})
}

// FuzzParse: no mapping document panics the loader; a failed load says
// why.
func FuzzParse(f *testing.F) {
	f.Add(ExampleRoutes)
	f.Add(BuiltinTables())
	for _, s := range []string{"", "routes: [\n", "a: &a [*a]\n", "vars: {x: [1]}\ntables: {t: ~, 'b a': {}}\n",
		"routes:\n  - {name: r, kind: run, tracker: t, tracker_type: dryrun, project: p, title: '{{', when: '(((a', colour: 1}\n",
		"routes:\n  - name: r\n    kind: review\n    tracker: t\n    tracker_type: github\n    project: a/b\n    title: x\n    comments: [{from: entity, body: '{{.comment.body}}', when: 'comment.author in [\"a\"]'}, {id: x}]\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse("fuzz.yaml", data, Options{})
		if err == nil && m == nil {
			t.Fatal("nil mapping without error")
		}
		if err != nil && err.Error() == "" {
			t.Fatal("empty error message")
		}
	})
}

// FuzzEscape: escaped text never contains an HTML comment opener, a raw
// mention or an unescaped Jira macro brace.
func FuzzEscape(f *testing.F) {
	f.Add(hostile)
	f.Add("<!-- x --> @a {code}")
	f.Fuzz(func(t *testing.T, s string) {
		md := Escape(MarkupMarkdown, s)
		if strings.Contains(md, "<") || containsMention(md) {
			t.Fatalf("markdown escape leaked: %q -> %q", s, md)
		}
		j := Escape(MarkupJira, s)
		for i := 0; i < len(j); i++ {
			if (j[i] == '{' || j[i] == '[') && (i == 0 || j[i-1] != '\\') {
				t.Fatalf("jira escape leaked %q at %d: %q -> %q", j[i], i, s, j)
			}
		}
		_ = qsync.KindDefect
	})
}

func containsMention(s string) bool {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '@' && (i == 0 || (!isWordRune(rune(s[i-1])) && s[i-1] != '.' && s[i-1] < 0x80)) && !strings.HasPrefix(s[i+1:], "&#8203;") {
			return true
		}
	}
	return false
}
