package mapping

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
	"unicode"
)

// rawString is text that must be printed as is: the result of raw, code,
// lookup (table values are the operator's) and vars.
type rawString string

// tmpl is one compiled field template.
type tmpl struct {
	src string
	t   *template.Template
	// static is the value when the template needs no entity data (plain
	// text, or only .vars references); ok reports whether it is static.
	static   string
	isStatic bool
	// refs are the entity attributes the template reads (top level, by
	// name): a rendering from an entity that lacks one is a guess.
	refs []string
}

var tplErrPrefix = regexp.MustCompile(`^template: [^:]*:(\d+):(?:\d+:)? ?`)

// compileTemplate parses src for a field. escape selects the markup the
// printed values are escaped for (MarkupPlain for single-line fields).
// It returns the error text and the 1-based line inside src where the
// error is, when known.
func (m *Mapping) compileTemplate(src string, markup Markup, vars map[string]string) (*tmpl, int, error) {
	// The default missingkey mode yields an invalid value for an absent
	// key, which chained field access (.a.b) tolerates; _out prints it as "".
	t := template.New("t").Funcs(m.funcs(markup))
	t, err := t.Parse(src)
	if err != nil {
		msg := err.Error()
		line := 0
		if mm := tplErrPrefix.FindStringSubmatch(msg); mm != nil {
			line, _ = strconv.Atoi(mm[1])
			msg = msg[len(mm[0]):]
		}
		return nil, line, fmt.Errorf("template: %s", msg)
	}
	if len(t.Templates()) > 1 {
		return nil, 0, fmt.Errorf("template: define and block are not allowed")
	}
	if t.Tree == nil || t.Tree.Root == nil {
		return &tmpl{src: src, static: "", isStatic: true}, 0, nil
	}
	var problems []string
	line := 0
	at := func(n parse.Node) {
		if line == 0 {
			line = 1 + strings.Count(src[:min(int(n.Position()), len(src))], "\n")
		}
	}
	walkTemplate(t.Tree.Root, func(n parse.Node) {
		switch n := n.(type) {
		case *parse.TemplateNode:
			problems = append(problems, "template inclusion is not allowed")
			at(n)
		case *parse.CommandNode:
			if len(n.Args) >= 2 {
				if id, ok := n.Args[0].(*parse.IdentifierNode); ok && id.Ident == "lookup" {
					if s, ok := n.Args[1].(*parse.StringNode); ok {
						if _, ok := m.tables[s.Text]; !ok {
							problems = append(problems, fmt.Sprintf("lookup: unknown table %q", s.Text))
							at(n)
						}
					}
				}
			}
		}
	})
	if len(problems) > 0 {
		return nil, line, fmt.Errorf("template: %s", strings.Join(problems, "; "))
	}
	out := &tmpl{src: src, t: t, refs: templateRefs(t.Tree.Root)}
	out.static, out.isStatic = staticValue(t.Tree.Root, vars)
	rewriteActions(t.Tree)
	return out, 0, nil
}

func walkTemplate(n parse.Node, fn func(parse.Node)) {
	if n == nil {
		return
	}
	fn(n)
	switch n := n.(type) {
	case *parse.ListNode:
		if n != nil {
			walkEach(n.Nodes, fn)
		}
	case *parse.ActionNode:
		walkTemplate(n.Pipe, fn)
	case *parse.PipeNode:
		if n != nil {
			walkEach(n.Cmds, fn)
		}
	case *parse.CommandNode:
		walkEach(n.Args, fn)
	case *parse.IfNode:
		walkBranch(&n.BranchNode, fn)
	case *parse.RangeNode:
		walkBranch(&n.BranchNode, fn)
	case *parse.WithNode:
		walkBranch(&n.BranchNode, fn)
	case *parse.TemplateNode:
		walkTemplate(n.Pipe, fn)
	}
}

func walkEach[N parse.Node](ns []N, fn func(parse.Node)) {
	for _, n := range ns {
		walkTemplate(n, fn)
	}
}

func walkBranch(b *parse.BranchNode, fn func(parse.Node)) {
	walkTemplate(b.Pipe, fn)
	if b.List != nil {
		walkTemplate(b.List, fn)
	}
	if b.ElseList != nil {
		walkTemplate(b.ElseList, fn)
	}
}

// rewriteActions appends "| _out" to every action that prints, the way
// html/template inserts its escapers: whatever value an action produces
// (an attribute, a lookup, a printf) is escaped on output, while the
// template's literal text is left alone and values are never re-parsed.
// It also turns absent values into "" instead of "<no value>".
func rewriteActions(tree *parse.Tree) {
	walkTemplate(tree.Root, func(n parse.Node) {
		a, ok := n.(*parse.ActionNode)
		if !ok || len(a.Pipe.Decl) > 0 {
			return // {{$x := ...}} prints nothing
		}
		id := parse.NewIdentifier("_out").SetTree(tree).SetPos(a.Pos)
		a.Pipe.Cmds = append(a.Pipe.Cmds, &parse.CommandNode{NodeType: parse.NodeCommand, Pos: a.Pos, Args: []parse.Node{id}})
	})
}

// staticValue evaluates a template made only of text and {{.vars.x}}.
func staticValue(root *parse.ListNode, vars map[string]string) (string, bool) {
	var b strings.Builder
	for _, n := range root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode:
			b.Write(n.Text)
		case *parse.ActionNode:
			if len(n.Pipe.Decl) > 0 || len(n.Pipe.Cmds) != 1 || len(n.Pipe.Cmds[0].Args) != 1 {
				return "", false
			}
			f, ok := n.Pipe.Cmds[0].Args[0].(*parse.FieldNode)
			if !ok || len(f.Ident) != 2 || f.Ident[0] != "vars" {
				return "", false
			}
			b.WriteString(vars[f.Ident[1]])
		default:
			return "", false
		}
	}
	return b.String(), true
}

// execute renders the template with data.
func (t *tmpl) execute(data map[string]any) (string, error) {
	if t == nil {
		return "", nil
	}
	if t.t == nil {
		return t.static, nil
	}
	var b bytes.Buffer
	if err := t.t.Execute(&b, data); err != nil {
		msg := err.Error()
		if mm := tplErrPrefix.FindStringSubmatch(msg); mm != nil {
			msg = "line " + mm[1] + ": " + msg[len(mm[0]):]
		}
		return "", fmt.Errorf("template: %s", msg)
	}
	return b.String(), nil
}

// funcs is the safe function set: pure string and value helpers, no I/O,
// no environment, no template inclusion, no clock.
func (m *Mapping) funcs(markup Markup) template.FuncMap {
	out := func(v any) string { return toString(v) }
	if markup != MarkupPlain {
		out = func(v any) string {
			if r, ok := v.(rawString); ok {
				return string(r)
			}
			return Escape(markup, toString(v))
		}
	}
	codeMarkup := markup
	return template.FuncMap{
		"_out":   out,
		"lookup": m.lookupRaw,
		"default": func(def, v any) any {
			if isEmpty(v) {
				return def
			}
			return v
		},
		"upper": func(v any) string { return strings.ToUpper(toString(v)) },
		"lower": func(v any) string { return strings.ToLower(toString(v)) },
		"title": func(v any) string { return titleCase(toString(v)) },
		"trim":  func(v any) string { return strings.TrimSpace(toString(v)) },
		"truncate": func(n int, v any) string {
			return truncateRunes(toString(v), n)
		},
		"join": func(sep string, v any) string {
			return strings.Join(toStrings(v), sep)
		},
		"lines": func(v any) string { return strings.Join(toStrings(v), "\n") },
		"replace": func(old, new string, v any) string {
			return strings.ReplaceAll(toString(v), old, new)
		},
		"contains": func(coll, x any) bool { return contains(condValue(coll), condValue(x)) },
		"has":      func(v any) bool { return !isEmpty(v) },
		"date":     formatDate,
		"dur":      formatDuration,
		"raw":      func(v any) rawString { return rawString(toString(v)) },
		"code":     func(v any) rawString { return rawString(codeBlock(codeMarkup, toString(v))) },
		"get":      get,
		"oneline":  func(v any) string { return plainLine(toString(v)) },
		// Fingerprint helpers for failure signatures (failure.go).
		"mask":        func(v any) string { return Mask(toString(v)) },
		"first_frame": func(v any) string { return FirstFrame(toString(v)) },
	}
}

// lookupRaw is the template lookup: table values are the operator's text.
func (m *Mapping) lookupRaw(table string, key any) (rawString, error) {
	s, err := m.lookup(table, key)
	return rawString(s), err
}

// lookup translates key through a table: missing keys take _default.
func (m *Mapping) lookup(table string, key any) (string, error) {
	t, ok := m.tables[table]
	if !ok {
		return "", fmt.Errorf("lookup: unknown table %q", table)
	}
	k := toString(key)
	if v, ok := t[k]; ok {
		return v, nil
	}
	if v, ok := t["_default"]; ok {
		return v, nil
	}
	return "", fmt.Errorf("lookup: table %q has no entry for %q and no _default", table, k)
}

func isEmpty(v any) bool {
	switch t := v.(type) {
	case nil:
		return true
	case string:
		return t == ""
	case rawString:
		return t == ""
	case []any:
		return len(t) == 0
	case map[string]any:
		return len(t) == 0
	}
	return false
}

// toString prints a JSON-ish value the way a person expects: integral
// numbers without decimals, lists comma-separated, absent as "".
func toString(v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return t
	case rawString:
		return string(t)
	case bool:
		return strconv.FormatBool(t)
	case int:
		return strconv.Itoa(t)
	case int64:
		return strconv.FormatInt(t, 10)
	case int32:
		return strconv.FormatInt(int64(t), 10)
	case uint64:
		return strconv.FormatUint(t, 10)
	case float64:
		if math.IsInf(t, 0) || math.IsNaN(t) {
			return strconv.FormatFloat(t, 'g', -1, 64)
		}
		return strconv.FormatFloat(t, 'f', -1, 64)
	case float32:
		return strconv.FormatFloat(float64(t), 'f', -1, 32)
	case []any, []string:
		return strings.Join(toStrings(t), ", ")
	case map[string]any:
		b, err := json.Marshal(t)
		if err != nil {
			return fmt.Sprint(t)
		}
		return string(b)
	}
	return fmt.Sprint(v)
}

func toStrings(v any) []string {
	switch t := v.(type) {
	case nil:
		return nil
	case []any:
		return each(t, toString)
	case []string:
		return append([]string(nil), t...)
	}
	return []string{toString(v)}
}

func titleCase(s string) string {
	rs := []rune(s)
	prev := ' '
	for i, r := range rs {
		if !unicode.IsLetter(prev) && !unicode.IsDigit(prev) && prev != '\'' {
			rs[i] = unicode.ToUpper(r)
		}
		prev = r
	}
	return string(rs)
}

// get walks maps and lists without failing on absent parts:
// get .reviewers "a@x.io" "status".
func get(v any, keys ...any) any {
	for _, k := range keys {
		var ok bool
		if v, ok = index(v, k); !ok {
			return nil
		}
	}
	return v
}

// condValue turns template values into condition values.
func condValue(v any) any {
	switch t := v.(type) {
	case rawString:
		return string(t)
	case int:
		return int64(t)
	}
	return v
}

var dateLayouts = []string{time.RFC3339Nano, "2006-01-02 15:04:05", "2006-01-02T15:04:05", "2006-01-02"}

// formatDate reformats a timestamp attribute (RFC 3339, Qase's
// "2006-01-02 15:04:05", or unix seconds/milliseconds) with a Go layout.
// Unparseable values are printed as they are.
func formatDate(layout string, v any) string {
	if f, ok := num(v); ok {
		sec := f
		if f > 1e12 {
			sec = f / 1000
		}
		return time.Unix(int64(sec), 0).UTC().Format(layout)
	}
	s := toString(v)
	for _, l := range dateLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.Format(layout)
		}
	}
	return s
}

// formatDuration prints a number of unit ("ms", "s", "m", "h") as a Go
// duration ("1m30s"). Absent or non-numeric values print "".
func formatDuration(unit string, v any) (string, error) {
	var u time.Duration
	switch unit {
	case "ms":
		u = time.Millisecond
	case "s":
		u = time.Second
	case "m":
		u = time.Minute
	case "h":
		u = time.Hour
	default:
		return "", fmt.Errorf("dur: unknown unit %q (ms, s, m, h)", unit)
	}
	f, ok := num(condValue(v))
	if !ok {
		if s, isStr := v.(string); isStr {
			if g, err := strconv.ParseFloat(s, 64); err == nil {
				f, ok = g, true
			}
		}
	}
	if !ok || math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f*float64(u)) > math.MaxInt64 {
		return "", nil
	}
	d := time.Duration(f * float64(u))
	if d >= time.Second {
		d = d.Round(time.Second)
	}
	return d.String(), nil
}

// templateRefs lists the attributes a template reads from the data root:
// .name and $.name (and .attrs.name), outside the bodies of with and range,
// where dot is something else.
func templateRefs(root parse.Node) []string {
	var refs []string
	add := func(idents []string) {
		if len(idents) == 0 {
			return
		}
		name := idents[0]
		if name == "attrs" && len(idents) > 1 {
			name = idents[1]
		}
		if !slices.Contains(refs, name) {
			refs = append(refs, name)
		}
	}
	var walk func(n parse.Node, atRoot bool)
	branch := func(b *parse.BranchNode, atRoot, rebinds bool) {
		walk(b.Pipe, atRoot)
		walk(b.List, atRoot && !rebinds)
		walk(b.ElseList, atRoot)
	}
	walk = func(n parse.Node, atRoot bool) {
		switch n := n.(type) {
		case *parse.ListNode:
			if n != nil {
				for _, c := range n.Nodes {
					walk(c, atRoot)
				}
			}
		case *parse.ActionNode:
			walk(n.Pipe, atRoot)
		case *parse.PipeNode:
			if n != nil {
				for _, c := range n.Cmds {
					walk(c, atRoot)
				}
			}
		case *parse.CommandNode:
			for _, a := range n.Args {
				walk(a, atRoot)
			}
		case *parse.ChainNode:
			walk(n.Node, atRoot)
		case *parse.FieldNode:
			if atRoot {
				add(n.Ident)
			}
		case *parse.VariableNode:
			if len(n.Ident) > 1 && n.Ident[0] == "$" {
				add(n.Ident[1:])
			}
		case *parse.IfNode:
			branch(&n.BranchNode, atRoot, false)
		case *parse.WithNode:
			branch(&n.BranchNode, atRoot, true)
		case *parse.RangeNode:
			branch(&n.BranchNode, atRoot, true)
		}
	}
	walk(root, true)
	return refs
}
