package mapping

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/types"
	"github.com/expr-lang/expr/vm"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// Conditions (when, create_when, comment when) are expr-lang/expr
// expressions (https://expr-lang.org), compiled once at load against the
// names a route can see and evaluated against the same data the templates
// see. On top of expr, three rules keep a condition total over thin,
// partial entities (docs/mapping.md, "Conditions"):
//
//   - a missing attribute is nil; "." and "[]" never fail (a missing key,
//     an index out of range or a nil on the way yield nil);
//   - < <= > >= compare numbers with numbers and strings with strings and
//     are false otherwise (nil included); "in" also finds substrings;
//   - where a boolean is expected (!, &&, ||, the result) nil is false.
//
// They are applied by rewriting the checked tree (condPatcher), so what a
// condition means is decided at load, not at evaluation.

// Cond is a compiled condition.
type Cond struct {
	src  string
	prog *vm.Program
}

// String returns the source.
func (c *Cond) String() string { return c.src }

// condScope lists the names a condition may use, with a sample value that
// gives the type when it is known (nil: any type).
type condScope map[string]any

// Attributes are the attribute names the Qase adapter produces for each
// kind (docs/attributes.md). Conditions may name them directly; any other
// attribute is reachable as attrs["name"].
var Attributes = map[qsync.Kind][]string{
	qsync.KindDefect: {"title", "actual_result", "severity", "status", "case_id", "step", "attachments_count",
		"milestone_id", "tags", "author_id", "created_at", "updated_at", "resolved_at"},
	qsync.KindReview: {"title", "case_id", "status", "type", "author", "author_email", "author_uuid", "created_at",
		"updated_at", "updated_by", "reopened_by", "merged_by", "declined_by", "deleted_by", "approval",
		"approval_by", "reviewers"},
	qsync.KindRun: {"title", "description", "status", "completed", "plan", "plan_id", "environment", "cases",
		"cases_added", "passed", "failed", "blocked", "untested", "skipped", "invalid", "duration",
		"start_time", "end_time", "public"},
	qsync.KindFailure: {"signature", "status", "environment", "case_id", "case_ids", "case_title", "message", "stacktrace", "failed_step",
		"first_seen", "last_seen", "first_run", "occurrences", "failing_runs", "runs_failed", "clean_runs",
		"last_passing_run", "run_id", "run_title", "results", "result_hash", "attachments", "flaky", "filable",
		"total", "failed", "failed_percent", "outage_reason", "top_signatures", "top_lines", "recovered_run"},
}

// builtinNames are the names Mapping.data adds to every entity.
var builtinNames = condScope{
	"id": int64(0), "project": "", "kind": "", "deleted": false, "state": nil, "last_event": "",
	"events": map[string]any{}, "vars": map[string]any{}, "attrs": map[string]any{},
}

// scopeFor is what a route of kind sees; comment adds .comment (from:
// entity comment rules). An unknown kind sees the attributes of every kind.
func scopeFor(kind qsync.Kind, comment bool) condScope {
	s := condScope{}
	attrs := Attributes[kind]
	if attrs == nil {
		for _, k := range Attributes {
			attrs = append(attrs, k...)
		}
	}
	for _, a := range attrs {
		s[a] = nil
	}
	maps.Copy(s, builtinNames)
	if comment {
		s["comment"] = map[string]any{}
	}
	return s
}

// condFuncs are the functions added to expr's built-ins; len, lower and
// upper replace expr's own (which fail on nil).
var condFuncs = []string{"has", "contains", "len", "lower", "upper", "startswith", "lookup"}

// Built-ins of expr left out: they read the clock or the time zone database.
var condDisabled = []string{"now", "date", "timezone"}

const maxCondDepth = 100

// compileCond compiles src for scope. lookup resolves lookup(table, key);
// tables are the table names that exist (checked at load).
func compileCond(src string, scope condScope, tables map[string]map[string]string, lookup func(string, any) (string, error)) (*Cond, error) {
	if strings.TrimSpace(src) == "" {
		return nil, &condError{1, "empty condition"}
	}
	if col := tooDeep(src); col > 0 {
		return nil, &condError{col, "expression nested too deeply"}
	}
	p := &condPatcher{tables: tables, scope: scope, callees: map[*ast.IdentifierNode]bool{}, lets: map[string]bool{}}
	env := types.Map{}
	for k, v := range scope {
		env[k] = types.Any // an attribute: its type is known only at evaluation
		if v != nil {
			env[k] = types.TypeOf(v)
		}
	}
	opts := []expr.Option{
		expr.Env(env),
		expr.Patch(p),
		expr.Function("_get", func(a ...any) (any, error) { v, _ := index(a[0], a[1]); return condValue(v), nil },
			new(func(any, any) any)),
		expr.Function("_cmp", func(a ...any) (any, error) { return order(a[0].(string), a[1], a[2]), nil },
			new(func(string, any, any) bool)),
		expr.Function("_in", func(a ...any) (any, error) { return contains(a[1], a[0]), nil },
			new(func(any, any) bool)),
		expr.Function("_affix", func(a ...any) (any, error) {
			s, ok1 := condValue(a[1]).(string)
			x, ok2 := condValue(a[2]).(string)
			if a[0] == "startsWith" {
				return ok1 && ok2 && strings.HasPrefix(s, x), nil
			}
			return ok1 && ok2 && strings.HasSuffix(s, x), nil
		}, new(func(string, any, any) bool)),
		expr.Function("_bool", func(a ...any) (any, error) { return asBool(a[0]) },
			new(func(any) bool)),
		expr.Function("has", func(a ...any) (any, error) { return a[0] != nil, nil },
			new(func(any) bool)),
		expr.Function("contains", func(a ...any) (any, error) { return contains(condValue(a[0]), condValue(a[1])), nil },
			new(func(any, any) bool)),
		expr.Function("len", func(a ...any) (any, error) { return length(a[0]), nil },
			new(func(any) int)),
		expr.Function("lower", func(a ...any) (any, error) { return mapString(a[0], strings.ToLower), nil },
			new(func(any) any)),
		expr.Function("upper", func(a ...any) (any, error) { return mapString(a[0], strings.ToUpper), nil },
			new(func(any) any)),
		expr.Function("startswith", func(a ...any) (any, error) {
			s, ok1 := condValue(a[0]).(string)
			pre, ok2 := condValue(a[1]).(string)
			return ok1 && ok2 && strings.HasPrefix(s, pre), nil
		}, new(func(any, any) bool)),
		expr.Function("lookup", func(a ...any) (any, error) {
			if lookup == nil {
				return nil, nil
			}
			return lookup(a[0].(string), condValue(a[1]))
		}, new(func(string, any) string)),
	}
	for _, name := range condDisabled {
		opts = append(opts, expr.DisableBuiltin(name))
	}
	prog, err := expr.Compile(src, opts...)
	if e := p.unknownName(); e != nil {
		return nil, e
	}
	if p.err != nil {
		return nil, p.err
	}
	if err != nil {
		return nil, describeCompileError(src, err)
	}
	if t := prog.Node().Type(); !isAnyType(t) && t.Kind() != reflect.Bool {
		return nil, &condError{1, fmt.Sprintf("a condition must be true or false, not %s (compare it, e.g. x != \"\", or test presence with has(x))", typeName(t))}
	}
	return &Cond{src: src, prog: prog}, nil
}

// Eval evaluates the condition against data (Mapping.data). Errors come
// from lookup (a missing key in a table without _default) and from a
// value of the wrong type where a boolean is expected.
func (c *Cond) Eval(data map[string]any) (bool, error) {
	out, err := expr.Run(c.prog, data)
	if err != nil {
		var fe *file.Error
		if errors.As(err, &fe) {
			return false, errors.New(fe.Message)
		}
		return false, err
	}
	return asBool(out)
}

// condError is a compile error at a column of the expression.
type condError struct {
	Col int
	Msg string
}

func (e *condError) Error() string { return fmt.Sprintf("col %d: %s", e.Col, e.Msg) }

// condPatcher rewrites a checked expression tree so that it cannot fail on
// missing data (see the comment at the top of this file), and checks what
// expr cannot know: lookup tables and comparisons of known, different types.
type condPatcher struct {
	tables map[string]map[string]string
	scope  condScope
	err    *condError
	// Names are checked here rather than by expr's checker, which does
	// not report an unknown name inside a call the patcher made.
	idents  []*ast.IdentifierNode
	callees map[*ast.IdentifierNode]bool
	lets    map[string]bool
}

// unknownName is the first identifier that names nothing, as an error.
func (p *condPatcher) unknownName() *condError {
	var first *ast.IdentifierNode
	for _, id := range p.idents {
		_, inScope := p.scope[id.Value]
		if inScope || p.lets[id.Value] || (p.callees[id] && (slices.Contains(condFuncs, id.Value) || strings.HasPrefix(id.Value, "_"))) {
			continue
		}
		if first == nil || id.Location().From < first.Location().From {
			first = id
		}
	}
	if first == nil {
		return nil
	}
	col := first.Location().From + 1
	if p.callees[first] {
		return &condError{col, fmt.Sprintf("unknown function %q (functions: %s and expr's built-ins but %s)",
			first.Value, strings.Join(condFuncs, ", "), strings.Join(condDisabled, ", "))}
	}
	return &condError{col, fmt.Sprintf("unknown name %q (known: %s; any other attribute: attrs[%q])",
		first.Value, strings.Join(p.scope.names(), ", "), first.Value)}
}

func (p *condPatcher) fail(n ast.Node, format string, args ...any) {
	if p.err == nil {
		p.err = &condError{n.Location().From + 1, fmt.Sprintf(format, args...)}
	}
}

func call(fn string, args ...ast.Node) *ast.CallNode {
	return &ast.CallNode{Callee: &ast.IdentifierNode{Value: fn}, Arguments: args}
}

// boolArg wraps n in _bool unless it is known to be a boolean.
func boolArg(n *ast.Node) {
	if t := (*n).Type(); isAnyType(t) {
		ast.Patch(n, call("_bool", *n))
	}
}

func (p *condPatcher) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		_, known := p.scope[n.Value]
		switch {
		case n.Value == "null" && !known:
			ast.Patch(node, &ast.NilNode{}) // the former spelling of nil
		case n.Value != "$env":
			p.idents = append(p.idents, n)
		}
	case *ast.VariableDeclaratorNode:
		p.lets[n.Name] = true
	case *ast.MemberNode:
		if !n.Method {
			ast.Patch(node, call("_get", n.Node, n.Property))
		}
	case *ast.BinaryNode:
		switch n.Operator {
		case "<", "<=", ">", ">=":
			lt, rt := n.Left.Type(), n.Right.Type()
			if !isAnyType(lt) && !isAnyType(rt) && !(isNumber(lt) && isNumber(rt)) && !(lt.Kind() == reflect.String && rt.Kind() == reflect.String) {
				p.fail(n, "%s compares numbers with numbers or strings with strings, not %s with %s", n.Operator, typeName(lt), typeName(rt))
				return
			}
			ast.Patch(node, call("_cmp", &ast.StringNode{Value: n.Operator}, n.Left, n.Right))
		case "in":
			ast.Patch(node, call("_in", n.Left, n.Right))
		case "contains":
			ast.Patch(node, call("_in", n.Right, n.Left))
		case "startsWith", "endsWith":
			ast.Patch(node, call("_affix", &ast.StringNode{Value: n.Operator}, n.Left, n.Right))
		case "&&", "||", "and", "or":
			boolArg(&n.Left)
			boolArg(&n.Right)
		}
	case *ast.UnaryNode:
		if n.Operator == "!" || n.Operator == "not" {
			boolArg(&n.Node)
		}
	case *ast.CallNode:
		id, ok := n.Callee.(*ast.IdentifierNode)
		if ok {
			p.callees[id] = true
		}
		if !ok || id.Value != "lookup" || len(n.Arguments) == 0 {
			return
		}
		s, ok := n.Arguments[0].(*ast.StringNode)
		if !ok {
			p.fail(n.Arguments[0], "lookup: the table name must be a string literal")
			return
		}
		if _, ok := p.tables[s.Value]; !ok && p.tables != nil {
			p.fail(n.Arguments[0], "lookup: unknown table %q", s.Value)
		}
	}
}

func isAnyType(t reflect.Type) bool { return t == nil || t.Kind() == reflect.Interface }

func isNumber(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

func typeName(t reflect.Type) string {
	switch {
	case isAnyType(t):
		return "any value"
	case isNumber(t):
		return "a number"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map:
		return "a map"
	}
	return t.String()
}

// tooDeep returns the 1-based column where brackets nest deeper than
// maxCondDepth (0: not too deep). Quoted text is skipped.
func tooDeep(src string) int {
	depth, col := 0, 0
	var quote rune
	escaped := false
	for _, r := range src {
		col++
		switch {
		case quote != 0:
			switch {
			case escaped:
				escaped = false
			case r == '\\':
				escaped = true
			case r == quote:
				quote = 0
			}
		case r == '"' || r == '\'' || r == '`':
			quote = r
		case r == '(' || r == '[' || r == '{':
			if depth++; depth > maxCondDepth {
				return col
			}
		case r == ')' || r == ']' || r == '}':
			depth--
		}
	}
	return 0
}

// describeCompileError turns an expr error into "col N: message", with a
// hint where the old condition syntax differs from expr's.
func describeCompileError(src string, err error) error {
	var fe *file.Error
	if !errors.As(err, &fe) {
		return &condError{1, err.Error()}
	}
	col := fe.From + 1
	rs := []rune(src)
	at := func(i int) rune {
		if i >= 0 && i < len(rs) {
			return rs[i]
		}
		return 0
	}
	msg := fe.Message
	switch {
	case at(fe.From) == '=' && at(fe.From+1) != '=' && !strings.ContainsRune("=!<>", at(fe.From-1)):
		msg = `unexpected "=" (use "==")`
	case at(fe.From) == '&' && at(fe.From+1) != '&' && at(fe.From-1) != '&':
		msg = `unexpected "&" (use "&&")`
	case msg == `unexpected token Operator("contains")` && strings.HasPrefix(strings.TrimLeft(string(rs[min(len(rs), fe.From+len("contains")):]), " "), "("):
		// contains is an operator in expr: contains(a, b) does not parse.
		msg = `contains(x, y) is written x contains y (or y in x)`
	}
	return &condError{col, msg}
}

func (s condScope) names() []string { return slices.Sorted(maps.Keys(s)) }

// --- values (shared with the template functions) ---

// asBool is the value of a condition: a boolean, or nil (false).
func asBool(v any) (bool, error) {
	switch t := v.(type) {
	case nil:
		return false, nil
	case bool:
		return t, nil
	}
	return false, fmt.Errorf("expected true or false, got %s %q (compare it, e.g. x != \"\", or test presence with has(x))",
		typeName(reflect.TypeOf(v)), toString(v))
}

// index fetches a map key, a list item (negative counts from the end) or
// a character of a string; ok is false when there is none.
func index(x, k any) (any, bool) {
	x, k = condValue(x), condValue(k)
	switch t := x.(type) {
	case map[string]any:
		if s, ok := k.(string); ok {
			v, ok := t[s]
			return v, ok
		}
	case []any:
		if f, ok := num(k); ok && f == math.Trunc(f) {
			i := int(f)
			if i < 0 {
				i += len(t)
			}
			if i >= 0 && i < len(t) {
				return t[i], true
			}
		}
	case string:
		if f, ok := num(k); ok && f == math.Trunc(f) {
			rs := []rune(t)
			if i := int(f); i >= 0 && i < len(rs) {
				return string(rs[i]), true
			}
		}
	}
	return nil, false
}

// num is v as a float64 if v is a number.
func num(v any) (float64, bool) {
	switch v.(type) {
	case float64, float32, int, int64, int32, uint64, uint:
		return reflect.ValueOf(v).Convert(float64Type).Float(), true
	}
	return 0, false
}

var float64Type = reflect.TypeFor[float64]()

func equal(a, b any) bool {
	a, b = condValue(a), condValue(b)
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if fa, ok := num(a); ok {
		fb, ok := num(b)
		return ok && fa == fb
	}
	if ta, ok := a.([]any); ok {
		tb, ok := b.([]any)
		if !ok || len(ta) != len(tb) {
			return false
		}
		for i := range ta {
			if !equal(ta[i], tb[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

// order is < <= > >=: numbers with numbers, strings with strings, false
// for anything else (nil included).
func order(op string, l, r any) bool {
	l, r = condValue(l), condValue(r)
	var c int
	if fl, ok := num(l); ok {
		fr, ok := num(r)
		if !ok {
			return false
		}
		switch {
		case fl < fr:
			c = -1
		case fl > fr:
			c = 1
		case fl != fr:
			return false // NaN
		}
	} else {
		sl, ok1 := l.(string)
		sr, ok2 := r.(string)
		if !ok1 || !ok2 {
			return false
		}
		c = strings.Compare(sl, sr)
	}
	switch op {
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	case ">=":
		return c >= 0
	}
	return false
}

// contains: element of a list, substring of a string, key of a map.
func contains(coll, x any) bool {
	coll, x = condValue(coll), condValue(x)
	switch t := coll.(type) {
	case []any:
		for _, e := range t {
			if equal(e, x) {
				return true
			}
		}
	case []string:
		s, ok := x.(string)
		if !ok {
			return false
		}
		for _, e := range t {
			if e == s {
				return true
			}
		}
	case string:
		s, ok := x.(string)
		return ok && strings.Contains(t, s)
	case map[string]any:
		s, ok := x.(string)
		if !ok {
			return false
		}
		_, found := t[s]
		return found
	}
	return false
}

func length(v any) int {
	switch t := condValue(v).(type) {
	case string:
		return utf8.RuneCountInString(t)
	case []any:
		return len(t)
	case []string:
		return len(t)
	case map[string]any:
		return len(t)
	}
	return 0
}

func mapString(v any, f func(string) string) any {
	v = condValue(v)
	if s, ok := v.(string); ok {
		return f(s)
	}
	return v
}

// condNotes points at comparisons whose meaning changed with the move to
// expr when the compared value may be missing: x != v and x not in [...]
// used to be false for a missing x, and are now true. A note is left out
// when the condition already says what a missing x means (has(x),
// x == nil, x != nil, x ?? default). Notes are advice for validate; the
// condition is valid either way.
func condNotes(src string, scope condScope) []condError {
	tree, err := parser.Parse(src)
	if err != nil {
		return nil
	}
	type cmp struct {
		subject, expr string
		col           int
	}
	var cmps []cmp
	guarded := map[string]bool{}
	mayBeMissing := func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.IdentifierNode:
			v, ok := scope[n.Value]
			return ok && v == nil
		case *ast.MemberNode:
			return !n.Method
		}
		return false
	}
	isNil := func(n ast.Node) bool {
		if _, ok := n.(*ast.NilNode); ok {
			return true
		}
		id, ok := n.(*ast.IdentifierNode)
		return ok && id.Value == "null"
	}
	ast.Walk(&tree.Node, visitFunc(func(node *ast.Node) {
		switch n := (*node).(type) {
		case *ast.CallNode:
			if id, ok := n.Callee.(*ast.IdentifierNode); ok && id.Value == "has" && len(n.Arguments) == 1 {
				guarded[n.Arguments[0].String()] = true
			}
		case *ast.BinaryNode:
			switch {
			case n.Operator == "??":
				guarded[n.Left.String()] = true
			case (n.Operator == "==" || n.Operator == "!=") && isNil(n.Right):
				guarded[n.Left.String()] = true
			case (n.Operator == "==" || n.Operator == "!=") && isNil(n.Left):
				guarded[n.Right.String()] = true
			}
			if n.Operator == "!=" && !isNil(n.Left) && !isNil(n.Right) {
				for _, side := range []ast.Node{n.Left, n.Right} {
					if mayBeMissing(side) {
						cmps = append(cmps, cmp{side.String(), n.String(), n.Location().From + 1})
						break
					}
				}
			}
		case *ast.UnaryNode:
			if in, ok := n.Node.(*ast.BinaryNode); ok && n.Operator == "not" && in.Operator == "in" && mayBeMissing(in.Left) && strings.Contains(src, " not in ") {
				cmps = append(cmps, cmp{in.Left.String(), in.Left.String() + " not in " + in.Right.String(), in.Location().From + 1})
			}
		}
	}))
	var out []condError
	for _, c := range cmps {
		if guarded[c.subject] {
			continue
		}
		out = append(out, condError{c.col, fmt.Sprintf("%s is true when %s is missing (before expr it was false); "+
			"to keep the former meaning write has(%s) && %s", c.expr, c.subject, c.subject, c.expr)})
	}
	return out
}

type visitFunc func(node *ast.Node)

func (f visitFunc) Visit(node *ast.Node) { f(node) }
