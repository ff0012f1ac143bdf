package mapping

import (
	"os"
	"regexp"
	"strings"
	"testing"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// condData is an entity as Mapping.data shows it to conditions.
var condData = map[string]any{
	"status":    "open",
	"severity":  "critical",
	"failed":    int64(2),
	"passed":    float64(0),
	"ratio":     0.5,
	"tags":      []any{"ui", "login"},
	"public":    true,
	"nothing":   nil,
	"reviewers": map[string]any{"a@x.io": map[string]any{"name": "A", "status": "approved"}},
	"events":    map[string]any{"run.aborted": int64(1)},
	"title":     "Login fails",
	"vars":      map[string]any{"env": rawString("prod")},
	"deleted":   false,
	"id":        int64(7),
}

// condTestScope declares the names of condData the way a route declares
// attributes: of any type (nil), except the built-ins, plus one attribute
// that the entity does not have.
func condTestScope() condScope {
	s := condScope{"missing": nil}
	for k := range condData {
		s[k] = nil
	}
	s["deleted"], s["id"], s["vars"], s["events"] = false, int64(0), map[string]any{}, map[string]any{}
	return s
}

func compileTest(src string) (*Cond, error) {
	return compileCond(src, condTestScope(), exampleMapping.tables, exampleMapping.lookup)
}

// TestCondEval is the acceptance table of the condition language: every
// case of the former hand-written language, in today's syntax where it
// still parses, and in its rewritten form where the meaning changed.
func TestCondEval(t *testing.T) {
	cases := []struct {
		src  string
		want bool
	}{
		{`status == "open"`, true},
		{`status != "open"`, false},
		{`status == 'open'`, true},
		{`failed > 0`, true},
		{`failed >= 2 && failed <= 2`, true},
		{`failed < 1`, false},
		{`passed == 0`, true},
		{`ratio > 0.25`, true},
		{`severity in ["blocker", "critical"]`, true},
		{`severity not in ["blocker", "critical"]`, false},
		{`"ui" in tags`, true},
		{`"api" in tags`, false},
		{`"Login" in title`, true},
		{`"a@x.io" in reviewers`, true},
		{`public`, true},
		{`!public`, false},
		{`not public`, false},
		{`has(status)`, true},
		{`has(missing)`, false},
		{`has(nothing)`, false},
		// contains(x, y) is the operator x contains y in expr.
		{`tags contains "login"`, true},
		{`title contains "fails"`, true},
		{`missing contains "x"`, false},
		{`len(tags) == 2`, true},
		{`len(missing) == 0`, true},
		{`len(title) == 11`, true},
		{`lower(severity) == "critical" && upper(status) == "OPEN"`, true},
		{`lower(missing) == nil`, true},
		{`startswith(title, "Log")`, true},
		{`title startsWith "Log" && title endsWith "fails"`, true},
		{`missing startsWith "x"`, false},
		{`reviewers["a@x.io"].status == "approved"`, true},
		{`reviewers["b@x.io"].status == "approved"`, false},
		{`reviewers?.["b@x.io"]?.status == nil`, true},
		{`events["run.aborted"] > 0`, true},
		{`events["run.completed"] > 0`, false},
		{`(events["run.completed"] ?? 0) == 0`, true},
		{`tags[0] == "ui"`, true},
		{`tags[-1] == "login"`, true},
		{`tags[5] == nil`, true},
		{`missing.a.b[3] == nil`, true},
		{`vars.env == "prod"`, true},
		{`lookup("severity_to_jira_priority", severity) == "High"`, true},
		{`lookup("severity_to_jira_priority", missing) == "Medium"`, true},
		// A missing attribute is nil, and nil is a value like any other:
		// == and != are each other's negation. Ordering with nil is false.
		{`missing == "x"`, false},
		{`missing != "x"`, true},
		{`has(missing) && missing != "x"`, false}, // the former meaning of missing != "x"
		{`missing > 1`, false},
		{`missing < 1`, false},
		{`missing in ["x"]`, false},
		{`missing not in ["x"]`, true},
		{`has(missing) && missing not in ["x"]`, false}, // the former meaning of missing not in ["x"]
		{`missing == null`, true},
		{`missing == nil`, true},
		{`nothing == null`, true},
		{`status == null`, false},
		{`status != null`, true},
		{`!(missing == "trivial")`, true},
		{`!missing`, true},
		{`missing || public`, true},
		{`missing && public`, false},
		{`null`, false},
		// Values of different types are not equal and do not order.
		{`status > 1`, false},
		{`status < 1`, false},
		{`failed == "2"`, false},
		{`failed != "2"`, true},
		{`failed > "1"`, false},
		// Precedence: && binds tighter than ||; ! binds tightest.
		{`true || false && false`, true},
		{`(true || false) && false`, false},
		{`!false && false`, false},
		{`!(false && false)`, true},
		{`status == "open" || failed > 5 && passed > 0`, true},
		{`status == "closed" || failed > 1 && passed == 0`, true},
		{`-1 < 0`, true},
		{`1e3 == 1000`, true},
		{`[1, 2] == [1, 2]`, true},
		{`deleted`, false},
		{`id == 7 && id > 6`, true},
		// expr's built-ins work on the same data.
		{`any(tags, # == "ui") && all(tags, len(#) > 1)`, true},
		{`len(filter(tags, # startsWith "l")) == 1`, true},
		{`count(tags, # startsWith "l") == 1 && sum(map(tags, len(#))) == 7`, true},
	}
	for _, c := range cases {
		cond, err := compileTest(c.src)
		if err != nil {
			t.Errorf("%s: compile: %v", c.src, err)
			continue
		}
		got, err := cond.Eval(condData)
		if err != nil {
			t.Errorf("%s: eval: %v", c.src, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s = %v, want %v", c.src, got, c.want)
		}
	}
}

var exampleMapping = &Mapping{tables: builtinTables}

// TestCondRuntimeErrors: the only failures left at evaluation are a
// lookup with no entry and a non-boolean where a boolean is expected.
func TestCondRuntimeErrors(t *testing.T) {
	cases := []struct{ src, want string }{
		{`status`, `expected true or false, got a string "open"`},
		{`!title`, `expected true or false, got a string "Login fails"`},
		{`tags && true`, `expected true or false, got a list "ui, login"`},
		{`lookup("run_status_to_jira", 1) == ""`, ``}, // _default exists: no error
	}
	for _, c := range cases {
		cond, err := compileTest(c.src)
		if err != nil {
			t.Errorf("%s: compile: %v", c.src, err)
			continue
		}
		_, err = cond.Eval(condData)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: unexpected error %v", c.src, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: got %v, want error containing %q", c.src, err, c.want)
		}
	}
	m := &Mapping{tables: map[string]map[string]string{"t": {"a": "A"}}}
	cond, err := compileCond(`lookup("t", status) == "A"`, condTestScope(), m.tables, m.lookup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cond.Eval(condData); err == nil || !strings.Contains(err.Error(), `table "t" has no entry for "open" and no _default`) {
		t.Errorf("lookup without _default: %v", err)
	}
}

// TestCondCompileErrors: every error is positioned (col N, 1-based), and
// the syntax of the former language that expr does not have says how to
// write it now.
func TestCondCompileErrors(t *testing.T) {
	cases := []struct {
		src  string
		want string // substring, including the column
	}{
		{``, "col 1: empty condition"},
		{`status = "open"`, `col 8: unexpected "=" (use "==")`},
		{`env("HOME") == "x"`, `col 1: unknown function "env"`},
		{`now() > 0`, `col 1: unknown function "now"`},
		{`status == "open`, "col 16: literal not terminated"},
		{`status == "open" &&`, "col 19: unexpected token EOF"},
		{`(status == "open"`, `col 17: unexpected token EOF`},
		{`has(status, failed)`, "col 1: too many arguments to call has"},
		{`a & b`, `col 3: unexpected "&" (use "&&")`},
		{`status not "x"`, `col 12: unexpected token String("x")`},
		{`lookup(status, failed) == "y"`, "col 8: lookup: the table name must be a string literal"},
		{`lookup("no_such_table", status) == "y"`, `col 8: lookup: unknown table "no_such_table"`},
		{`status.`, `col 7: unexpected end of expression`},
		{`status $ 1`, `col 8: unexpected token`},
		{`status failed`, `col 8: unexpected token Identifier("failed")`},
		{`contains(tags, "login")`, `col 1: contains(x, y) is written x contains y (or y in x)`},
		{`stauts == "open"`, `col 1: unknown name "stauts" (known: deleted, events, failed, id, missing,`},
		{`stauts == "open"`, `any other attribute: attrs["stauts"]`},
		// Compile-time checking: what is known to be wrong is a load error.
		{`"x"`, `col 1: a condition must be true or false, not a string`},
		{`""`, `col 1: a condition must be true or false, not a string`},
		{`0`, `col 1: a condition must be true or false, not a number`},
		{`id > "6"`, `col 4: > compares numbers with numbers or strings with strings, not a number with a string`},
		{`deleted == "yes"`, `col 9: invalid operation: == (mismatched types bool and string)`},
		{`!id`, `col 1: invalid operation: ! (mismatched type int64)`},
		{`vars.env.x.y == 1 && vars["a"] == 2 && len(events) + "a" == 3`, `invalid operation: + (mismatched types int and string)`},
		{strings.Repeat("(", 300) + "status" + strings.Repeat(")", 300), "col 101: expression nested too deeply"},
	}
	for _, c := range cases {
		_, err := compileTest(c.src)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want error containing %q", c.src, err, c.want)
		}
	}
}

// TestCondScope: a route sees the attributes of its kind and the
// built-ins; comment only in from: entity comment rules.
func TestCondScope(t *testing.T) {
	ok := []struct {
		kind    qsync.Kind
		comment bool
		src     string
	}{
		{qsync.KindDefect, false, `severity == "critical" && state == "open" && !deleted && kind == "defect" && project == "QA"`},
		{qsync.KindRun, false, `failed > 0 || public || last_event == "run.aborted" || events["run.aborted"] > 0`},
		{qsync.KindReview, false, `reviewers["a@x.io"].status == "approved" || has(declined_by) || attrs["custom"] == 1`},
		{qsync.KindReview, true, `!(comment.author in ["bot"]) && vars.qase_url != ""`},
	}
	for _, c := range ok {
		if _, err := compileCond(c.src, scopeFor(c.kind, c.comment), builtinTables, nil); err != nil {
			t.Errorf("%s %s: %v", c.kind, c.src, err)
		}
	}
	bad := []struct {
		kind    qsync.Kind
		comment bool
		src     string
	}{
		{qsync.KindDefect, false, `failed > 0`},         // a run attribute
		{qsync.KindRun, false, `severity == "major"`},   // a defect attribute
		{qsync.KindReview, false, `comment.body != ""`}, // comment only in from: entity
	}
	for _, c := range bad {
		if _, err := compileCond(c.src, scopeFor(c.kind, c.comment), builtinTables, nil); err == nil || !strings.Contains(err.Error(), "unknown name") {
			t.Errorf("%s %s: got %v, want unknown name", c.kind, c.src, err)
		}
	}
}

// TestDocsConditions: every condition docs/mapping.md shows compiles (as
// a route of any kind sees it) and every expression in the table of
// former syntax that the docs call a load error is one.
func TestDocsConditions(t *testing.T) {
	b, err := os.ReadFile("../docs/mapping.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	sec := doc[strings.Index(doc, "## Conditions"):strings.Index(doc, "## Comments")]
	block := sec[strings.Index(sec, "```\n")+4:]
	block = block[:strings.Index(block, "```")]
	var srcs []string
	for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
		srcs = append(srcs, line)
	}
	// when: values in the YAML examples of the whole document.
	for _, m := range regexp.MustCompile(`when: '([^']*)'`).FindAllStringSubmatch(doc, -1) {
		srcs = append(srcs, m[1])
	}
	if len(srcs) < 6 {
		t.Fatalf("found only %d conditions in the docs", len(srcs))
	}
	scope := scopeFor("", true)
	for _, src := range srcs {
		if _, err := compileCond(src, scope, builtinTables, nil); err != nil {
			t.Errorf("docs condition %s: %v", src, err)
		}
	}
	for _, src := range []string{`contains(tags, "x")`, `title`} {
		if _, err := compileCond(src, condScope{"tags": []any{}, "title": ""}, builtinTables, nil); err == nil {
			t.Errorf("%s: the docs say this is a load error", src)
		}
	}
}

// TestCondNotes: validate points at comparisons whose meaning changed
// for a missing value, with the rewrite that keeps the former meaning,
// and stays quiet where the condition already handles a missing value.
func TestCondNotes(t *testing.T) {
	scope := scopeFor(qsync.KindDefect, false)
	noted := map[string]string{
		`severity != "trivial"`:                   `col 10: severity != "trivial" is true when severity is missing (before expr it was false); to keep the former meaning write has(severity) && severity != "trivial"`,
		`status not in ["resolved", "invalid"]`:   `status not in ["resolved", "invalid"] is true when status is missing`,
		`deleted || attrs["x"] != 1`:              `write has(attrs.x) && attrs.x != 1`,
		`"trivial" != severity && title == "x"`:   `has(severity)`,
		`has(title) && severity != "trivial"`:     `has(severity) && severity != "trivial"`,
		`status == "open" || severity != "minor"`: `severity != "minor" is true when severity is missing`,
	}
	for src, want := range noted {
		notes := condNotes(src, scope)
		if len(notes) != 1 || !strings.Contains(notes[0].Error(), want) {
			t.Errorf("%s: got %v, want a note containing %q", src, notes, want)
		}
	}
	for _, src := range []string{
		`!(severity == "trivial")`,
		`!(status in ["resolved", "invalid"])`,
		`has(severity) && severity != "trivial"`,
		`severity != nil && severity != "trivial"`,
		`(severity ?? "none") != "trivial"`,
		`severity ?? "x" != "trivial"`,
		`kind != "defect"`, // a built-in is never missing
		`id != 3`,
		`status == "open"`,
	} {
		if notes := condNotes(src, scope); len(notes) != 0 {
			t.Errorf("%s: unexpected notes %v", src, notes)
		}
	}
}
