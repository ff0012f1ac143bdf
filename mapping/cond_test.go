package mapping

import (
	"strings"
	"testing"
)

func TestCondEval(t *testing.T) {
	data := map[string]any{
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
	}
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
		{`has(status)`, true},
		{`has(missing)`, false},
		{`has(nothing)`, false},
		{`contains(tags, "login")`, true},
		{`contains(title, "fails")`, true},
		{`len(tags) == 2`, true},
		{`len(missing) == 0`, true},
		{`len(title) == 11`, true},
		{`lower(severity) == "critical" && upper(status) == "OPEN"`, true},
		{`startswith(title, "Log")`, true},
		{`reviewers["a@x.io"].status == "approved"`, true},
		{`reviewers["b@x.io"].status == "approved"`, false},
		{`events["run.aborted"] > 0`, true},
		{`events["run.completed"] > 0`, false},
		{`tags[0] == "ui"`, true},
		{`tags[-1] == "login"`, true},
		{`vars.env == "prod"`, true},
		{`lookup("severity_to_jira_priority", severity) == "High"`, true},
		{`lookup("severity_to_jira_priority", missing) == "Medium"`, true},
		// Missing attributes: every comparison is false, == null is true.
		{`missing == "x"`, false},
		{`missing != "x"`, false},
		{`missing > 1`, false},
		{`missing < 1`, false},
		{`missing in ["x"]`, false},
		{`missing not in ["x"]`, false},
		{`missing == null`, true},
		{`nothing == null`, true},
		{`status == null`, false},
		{`status != null`, true},
		{`!(missing == "trivial")`, true},
		{`!missing`, true},
		// Type mismatches are false, not errors.
		{`status > 1`, false},
		{`failed == "2"`, false},
		{`failed != "2"`, true},
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
		{`null`, false},
		{`"x"`, true},
		{`""`, false},
		{`0`, false},
	}
	env := condEnv{data: data, lookup: func(table string, key any) (string, error) {
		return exampleMapping.lookup(table, key)
	}}
	for _, c := range cases {
		cond, err := ParseCond(c.src)
		if err != nil {
			t.Errorf("%s: parse: %v", c.src, err)
			continue
		}
		got, err := cond.Eval(env)
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

func TestCondParseErrors(t *testing.T) {
	cases := []struct {
		src  string
		want string // substring, including the column
	}{
		{``, "col 1: empty condition"},
		{`status = "open"`, `col 8: unexpected "="`},
		{`env("HOME") == "x"`, `col 1: unknown function "env"`},
		{`status == "open`, "col 11: unterminated string"},
		{`status == "open" &&`, "col 20: expected a value, got end of expression"},
		{`(status == "open"`, `col 18: expected ")"`},
		{`has(a, b)`, "col 1: has takes 1 argument(s), got 2"},
		{`a == b == c`, "col 8: comparisons cannot be chained"},
		{`a & b`, `col 3: unexpected "&" (use "&&")`},
		{`status not "x"`, `col 12: expected "in" after "not"`},
		{`lookup(t, x) == "y"`, "col 8: lookup: the table name must be a string literal"},
		{`a.`, `expected a field name`},
		{`status $ 1`, `col 8: unexpected character "$"`},
		{`a b`, `col 3: expected an operator or end of expression, got "b"`},
		{strings.Repeat("(", 300) + "a" + strings.Repeat(")", 300), "nested too deeply"},
	}
	for _, c := range cases {
		_, err := ParseCond(c.src)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want error containing %q", c.src, err, c.want)
		}
	}
}
