package yamlpos

import (
	"strings"
	"testing"
	"time"
)

// TestSyntaxErrorLines: a syntax error names the line where the problem
// is, 1-based, whether yaml.v3's scanner or its parser found it (the
// parser's own messages carry a 0-based line).
func TestSyntaxErrorLines(t *testing.T) {
	cases := []struct {
		src  string
		want string
	}{
		{"a: 1\nb: [1, 2\nc: 3\n", "f.yaml:2: did not find expected ',' or ']'"},
		{"a: 1\nb: {x: 1\nc: 2\n", "f.yaml:2: did not find expected ',' or '}'"},
		{"a: 1\nb:\n  c: 1\n d: 2\n", "f.yaml:4: did not find expected key"},
		{"k: v\n- item\n", "f.yaml:2: did not find expected key"},
		{"a:\n  - x\n  y: 1\n", "f.yaml:2: did not find expected '-' indicator"},
		{"a: 1\n\tb: 2\n", "f.yaml:2: found a tab character that violates indentation"},
		{"a: 1\nb: c: d\n", "f.yaml:2: mapping values are not allowed in this context"},
		{"a: 1\nb: 'x\nc: 3\n", "f.yaml:2: found unexpected end of stream"},
		{"routes: [\n", "f.yaml:1: did not find expected node content"},
		{"\n\nrouters: [\n\n\n", "f.yaml:3: did not find expected node content"},
	}
	for _, c := range cases {
		_, err := Parse("f.yaml", []byte(c.src))
		if err == nil || err.Error() != c.want {
			t.Errorf("%q: got %v, want %q", c.src, err, c.want)
		}
	}
	n, err := Parse("f.yaml", nil)
	if err != nil || n.Kind == 0 || len(n.Content) != 0 {
		t.Errorf("empty document: %v %v", n, err)
	}
}

type inner struct {
	Name  string        `yaml:"name"`
	Count int           `yaml:"count"`
	Wait  time.Duration `yaml:"wait"`
	On    bool          `yaml:"on"`
}

type outer struct {
	Inner inner             `yaml:"inner"`
	List  []inner           `yaml:"list"`
	Map   map[string]string `yaml:"map"`
	Rate  float64           `yaml:"rate"`
}

// TestDecodeProblems: yaml.v3's strict decoding, with each problem at the
// line of the original node and with its field path, after the tree was
// changed in place (as ${VAR} expansion does) and re-encoded.
func TestDecodeProblems(t *testing.T) {
	src := `# leading comment
inner:
  name: x
  colour: red
  count: many
list:
  - {name: a, count: 1}


  - name: b
    wait: 10 parsecs
    on: maybe
    extra: [1, 2]
map: {a: b, c: [d]}
rate: {x: 1}
`
	n, err := Parse("d.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	n.Content[1].Content[1].Value = "changed" // inner.name, as expansion does
	var out outer
	ps := Decode("d.yaml", n, "top", &out)
	got := ps.Error()
	for _, want := range []string{
		"d.yaml:4: top.inner.colour: unknown field",
		`d.yaml:5: top.inner.count: expected an integer, got "many"`,
		`d.yaml:11: top.list[1].wait: expected a duration (e.g. 30s, 5m, 72h), got "10 parsecs"`,
		`d.yaml:12: top.list[1].on: expected true or false, got "maybe"`,
		"d.yaml:13: top.list[1].extra: unknown field",
		"d.yaml:14: top.map.c: expected a string, got a list",
		"d.yaml:15: top.rate: expected a number, got a mapping",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if len(ps) != 7 {
		t.Errorf("%d problems, want 7:\n%s", len(ps), got)
	}
	// Decoding goes on past problems.
	if out.Inner.Name != "changed" || len(out.List) != 2 || out.List[0].Count != 1 || out.Map["a"] != "b" {
		t.Errorf("decoded %+v", out)
	}

	merge := "base: &b {name: x}\ninner:\n  <<: *b\n"
	n, _ = Parse("m.yaml", []byte(merge))
	var o2 struct {
		Base  inner `yaml:"base"`
		Inner inner `yaml:"inner"`
	}
	if ps := Decode("m.yaml", n, "", &o2); len(ps) != 1 || ps[0].Error() != "m.yaml:3: inner: merge keys (<<) are not supported" {
		t.Errorf("merge key: %v", ps)
	}
	dup := "inner: {name: a}\nrate: 1\ninner: {name: b}\n"
	n, _ = Parse("u.yaml", []byte(dup))
	if ps := Decode("u.yaml", n, "", &out); len(ps) != 1 || ps[0].Error() != `u.yaml:3: mapping key "inner" already defined at line 1` {
		t.Errorf("duplicate key: %v", ps)
	}
}

// TestIndex: lines of fields, of their closest parent when absent, keys.
func TestIndex(t *testing.T) {
	src := "a:\n  b: 1\n  c:\n    - x\n    - {d: 2}\nlit: |\n  one\n"
	n, err := Parse("i.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	ix := NewIndex("i.yaml", n, "")
	for path, want := range map[string]int{"a": 2, "a.b": 2, "a.c[0]": 4, "a.c[1].d": 5, "a.c[1].e": 5, "a.nope.deeper": 2, "zzz": 1} {
		if got := ix.Line(path); got != want {
			t.Errorf("Line(%s) = %d, want %d", path, got, want)
		}
	}
	if ix.KeyLine("a") != 1 || !ix.Has("a.c[1].d") || ix.Has("a.c[2]") {
		t.Errorf("KeyLine(a) = %d", ix.KeyLine("a"))
	}
	if got := strings.Join(ix.Keys("a"), ","); got != "b,c" {
		t.Errorf("Keys(a) = %s", got)
	}
	if ValueLine(ix.Node("lit")) != 7 {
		t.Errorf("ValueLine of a block scalar = %d, want 7", ValueLine(ix.Node("lit")))
	}
	if p := ix.Problem("a.c[1].d", "bad %d", 2); p.Error() != "i.yaml:5: a.c[1].d: bad 2" {
		t.Errorf("Problem = %q", p.Error())
	}
	sorted := Problems{{File: "b", Line: 1, Msg: "x"}, {File: "a", Line: 9, Msg: "y"}, {File: "a", Line: 2, Msg: "z"}}.Err().Error()
	if sorted != "a:2: z\na:9: y\nb:1: x" {
		t.Errorf("sorted = %q", sorted)
	}
}
