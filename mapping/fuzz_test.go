package mapping

import (
	"strings"
	"testing"

	"github.com/qase-sync/qase-sync/sync"
)

// FuzzParseCond: no input panics the parser or the evaluator.
func FuzzParseCond(f *testing.F) {
	for _, s := range []string{`status == "open"`, `!(a in [1, "x", null]) || len(b) > 2 && has(c.d["e"])`, `((`, `lookup("t", x)`, `-a[0].b`, `'\q'`} {
		f.Add(s)
	}
	env := condEnv{data: map[string]any{"a": int64(1), "b": []any{"x"}, "c": map[string]any{"d": map[string]any{"e": "f"}}}, lookup: exampleMapping.lookup}
	f.Fuzz(func(t *testing.T, src string) {
		c, err := ParseCond(src)
		if err != nil {
			return
		}
		_, _ = c.Eval(env)
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
		_ = sync.KindDefect
	})
}

func containsMention(s string) bool {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '@' && (i == 0 || (!isWordRune(rune(s[i-1])) && s[i-1] != '.' && s[i-1] < 0x80)) && !hasPrefixAt(s, i+1, "&#8203;") {
			return true
		}
	}
	return false
}

func hasPrefixAt(s string, i int, p string) bool { return len(s)-i >= len(p) && s[i:i+len(p)] == p }
