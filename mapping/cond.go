package mapping

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The condition language (when, create_when, comment when): a small
// expression language, parsed once at load and evaluated against the same
// data the templates see. Grammar, loosest binding first:
//
//	expr    = and { "||" and }
//	and     = cmp { "&&" cmp }
//	cmp     = unary [ ("=="|"!="|"<"|"<="|">"|">="|"in"|"not in") unary ]
//	unary   = "!" unary | "-" unary | postfix
//	postfix = primary { "." ident | "[" expr "]" }
//	primary = literal | ident | ident "(" [expr {"," expr}] ")" | "(" expr ")" | "[" [expr {"," expr}] "]"
//
// Missing attributes evaluate to "undefined": any comparison involving it
// is false (except "== null", which is true), and it is falsy.

// condError is a parse or check error at a column of the expression.
type condError struct {
	Col int
	Msg string
}

func (e *condError) Error() string { return fmt.Sprintf("col %d: %s", e.Col, e.Msg) }

// undef is the value of a missing attribute.
type undef struct{}

type cnode interface{ pos() int }

type (
	cLit struct {
		p int
		v any
	}
	cIdent struct {
		p    int
		name string
	}
	cMember struct {
		p    int
		x    cnode
		name string
	}
	cIndex struct {
		p      int
		x, key cnode
	}
	cCall struct {
		p    int
		fn   string
		args []cnode
	}
	cList struct {
		p     int
		elems []cnode
	}
	cUnary struct {
		p  int
		op string
		x  cnode
	}
	cBinary struct {
		p    int
		op   string
		l, r cnode
	}
)

func (n *cLit) pos() int    { return n.p }
func (n *cIdent) pos() int  { return n.p }
func (n *cMember) pos() int { return n.p }
func (n *cIndex) pos() int  { return n.p }
func (n *cCall) pos() int   { return n.p }
func (n *cList) pos() int   { return n.p }
func (n *cUnary) pos() int  { return n.p }
func (n *cBinary) pos() int { return n.p }

// condFuncs: name → number of arguments.
var condFuncs = map[string]int{
	"has": 1, "contains": 2, "len": 1, "lower": 1, "upper": 1, "lookup": 2, "startswith": 2,
}

// Cond is a compiled condition.
type Cond struct {
	src  string
	root cnode
}

// String returns the source.
func (c *Cond) String() string { return c.src }

// --- lexer ---

type tokKind int

const (
	tEOF tokKind = iota
	tIdent
	tString
	tNumber
	tOp
)

type token struct {
	kind tokKind
	s    string // identifier, operator, or decoded string literal
	num  float64
	col  int // 1-based rune column
}

func lex(src string) ([]token, error) {
	var toks []token
	rs := []rune(src)
	for i := 0; i < len(rs); {
		c := rs[i]
		col := i + 1
		switch {
		case unicode.IsSpace(c):
			i++
		case c == '_' || unicode.IsLetter(c):
			j := i
			for j < len(rs) && (rs[j] == '_' || unicode.IsLetter(rs[j]) || unicode.IsDigit(rs[j])) {
				j++
			}
			toks = append(toks, token{kind: tIdent, s: string(rs[i:j]), col: col})
			i = j
		case c >= '0' && c <= '9':
			j := i
			for j < len(rs) && (rs[j] >= '0' && rs[j] <= '9' || rs[j] == '.' || rs[j] == '_' ||
				rs[j] == 'e' || rs[j] == 'E' || ((rs[j] == '+' || rs[j] == '-') && (rs[j-1] == 'e' || rs[j-1] == 'E'))) {
				j++
			}
			f, err := strconv.ParseFloat(strings.ReplaceAll(string(rs[i:j]), "_", ""), 64)
			if err != nil {
				return nil, &condError{col, fmt.Sprintf("invalid number %q", string(rs[i:j]))}
			}
			toks = append(toks, token{kind: tNumber, num: f, s: string(rs[i:j]), col: col})
			i = j
		case c == '"' || c == '\'':
			var b strings.Builder
			j := i + 1
			closed := false
			for j < len(rs) {
				if rs[j] == c {
					closed = true
					j++
					break
				}
				if rs[j] == '\\' && j+1 < len(rs) {
					j++
					switch rs[j] {
					case 'n':
						b.WriteRune('\n')
					case 't':
						b.WriteRune('\t')
					case '\\', '"', '\'':
						b.WriteRune(rs[j])
					default:
						return nil, &condError{j, fmt.Sprintf("unknown escape \\%c", rs[j])}
					}
					j++
					continue
				}
				b.WriteRune(rs[j])
				j++
			}
			if !closed {
				return nil, &condError{col, "unterminated string"}
			}
			toks = append(toks, token{kind: tString, s: b.String(), col: col})
			i = j
		default:
			two := ""
			if i+1 < len(rs) {
				two = string(rs[i : i+2])
			}
			switch two {
			case "==", "!=", "<=", ">=", "&&", "||":
				toks = append(toks, token{kind: tOp, s: two, col: col})
				i += 2
				continue
			}
			switch c {
			case '(', ')', '[', ']', ',', '.', '<', '>', '!', '-':
				toks = append(toks, token{kind: tOp, s: string(c), col: col})
				i++
			case '=':
				return nil, &condError{col, `unexpected "=" (use "==")`}
			case '&', '|':
				return nil, &condError{col, fmt.Sprintf("unexpected %q (use %q)", string(c), string(c)+string(c))}
			default:
				return nil, &condError{col, fmt.Sprintf("unexpected character %q", string(c))}
			}
		}
	}
	toks = append(toks, token{kind: tEOF, col: utf8.RuneCountInString(src) + 1})
	return toks, nil
}

// --- parser ---

type cparser struct {
	toks  []token
	i     int
	depth int
}

func (p *cparser) peek() token { return p.toks[p.i] }
func (p *cparser) next() token {
	t := p.toks[p.i]
	if p.i < len(p.toks)-1 {
		p.i++
	}
	return t
}
func (p *cparser) isOp(s string) bool {
	t := p.peek()
	return t.kind == tOp && t.s == s
}
func (p *cparser) isKw(s string) bool {
	t := p.peek()
	return t.kind == tIdent && t.s == s
}
func (p *cparser) expect(s string) error {
	if !p.isOp(s) {
		return p.unexpected(fmt.Sprintf("%q", s))
	}
	p.next()
	return nil
}
func (p *cparser) unexpected(want string) error {
	t := p.peek()
	got := "end of expression"
	if t.kind != tEOF {
		got = fmt.Sprintf("%q", t.s)
		if t.kind == tString {
			got = strconv.Quote(t.s)
		}
	}
	return &condError{t.col, fmt.Sprintf("expected %s, got %s", want, got)}
}

// ParseCond parses and checks a condition. An empty source is an error;
// callers treat an absent condition as true.
func ParseCond(src string) (*Cond, error) {
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &cparser{toks: toks}
	if p.peek().kind == tEOF {
		return nil, &condError{1, "empty condition"}
	}
	root, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.peek().kind != tEOF {
		return nil, p.unexpected("an operator or end of expression")
	}
	return &Cond{src: src, root: root}, nil
}

func (p *cparser) enter() error {
	p.depth++
	if p.depth > 200 {
		return &condError{p.peek().col, "expression nested too deeply"}
	}
	return nil
}

func (p *cparser) or() (cnode, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	l, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.isOp("||") {
		t := p.next()
		r, err := p.and()
		if err != nil {
			return nil, err
		}
		l = &cBinary{t.col, "||", l, r}
	}
	return l, nil
}

func (p *cparser) and() (cnode, error) {
	l, err := p.cmp()
	if err != nil {
		return nil, err
	}
	for p.isOp("&&") {
		t := p.next()
		r, err := p.cmp()
		if err != nil {
			return nil, err
		}
		l = &cBinary{t.col, "&&", l, r}
	}
	return l, nil
}

func (p *cparser) cmp() (cnode, error) {
	l, err := p.unary()
	if err != nil {
		return nil, err
	}
	t := p.peek()
	op := ""
	switch {
	case t.kind == tOp && (t.s == "==" || t.s == "!=" || t.s == "<" || t.s == "<=" || t.s == ">" || t.s == ">="):
		op = t.s
		p.next()
	case p.isKw("in"):
		op = "in"
		p.next()
	case p.isKw("not"):
		p.next()
		if !p.isKw("in") {
			return nil, p.unexpected(`"in" after "not"`)
		}
		p.next()
		op = "not in"
	default:
		return l, nil
	}
	r, err := p.unary()
	if err != nil {
		return nil, err
	}
	n := &cBinary{t.col, op, l, r}
	// Comparisons do not chain: a == b == c is almost certainly a mistake.
	if t2 := p.peek(); (t2.kind == tOp && strings.ContainsAny(t2.s, "=<>") && t2.s != "&&") || p.isKw("in") || p.isKw("not") {
		return nil, &condError{t2.col, "comparisons cannot be chained; use && or parentheses"}
	}
	return n, nil
}

func (p *cparser) unary() (cnode, error) {
	if p.isOp("!") || p.isOp("-") {
		t := p.next()
		if err := p.enter(); err != nil {
			return nil, err
		}
		defer func() { p.depth-- }()
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		return &cUnary{t.col, t.s, x}, nil
	}
	return p.postfix()
}

func (p *cparser) postfix() (cnode, error) {
	x, err := p.primary()
	if err != nil {
		return nil, err
	}
	for {
		switch {
		case p.isOp("."):
			t := p.next()
			id := p.next()
			if id.kind != tIdent {
				p.i--
				return nil, p.unexpected("a field name after \".\"")
			}
			x = &cMember{t.col, x, id.s}
		case p.isOp("["):
			t := p.next()
			k, err := p.or()
			if err != nil {
				return nil, err
			}
			if err := p.expect("]"); err != nil {
				return nil, err
			}
			x = &cIndex{t.col, x, k}
		default:
			return x, nil
		}
	}
}

func (p *cparser) primary() (cnode, error) {
	t := p.peek()
	switch t.kind {
	case tString:
		p.next()
		return &cLit{t.col, t.s}, nil
	case tNumber:
		p.next()
		return &cLit{t.col, t.num}, nil
	case tIdent:
		p.next()
		switch t.s {
		case "true":
			return &cLit{t.col, true}, nil
		case "false":
			return &cLit{t.col, false}, nil
		case "null", "nil":
			return &cLit{t.col, nil}, nil
		case "in", "not":
			return nil, &condError{t.col, fmt.Sprintf("unexpected keyword %q", t.s)}
		}
		if !p.isOp("(") {
			return &cIdent{t.col, t.s}, nil
		}
		p.next()
		want, ok := condFuncs[t.s]
		if !ok {
			return nil, &condError{t.col, fmt.Sprintf("unknown function %q (known: has, contains, len, lower, upper, lookup, startswith)", t.s)}
		}
		var args []cnode
		if !p.isOp(")") {
			for {
				a, err := p.or()
				if err != nil {
					return nil, err
				}
				args = append(args, a)
				if !p.isOp(",") {
					break
				}
				p.next()
			}
		}
		if err := p.expect(")"); err != nil {
			return nil, err
		}
		if len(args) != want {
			return nil, &condError{t.col, fmt.Sprintf("%s takes %d argument(s), got %d", t.s, want, len(args))}
		}
		if t.s == "lookup" {
			if l, ok := args[0].(*cLit); !ok || reflect.TypeOf(l.v) != reflect.TypeOf("") {
				return nil, &condError{args[0].pos(), "lookup: the table name must be a string literal"}
			}
		}
		return &cCall{t.col, t.s, args}, nil
	case tOp:
		switch t.s {
		case "(":
			p.next()
			x, err := p.or()
			if err != nil {
				return nil, err
			}
			if err := p.expect(")"); err != nil {
				return nil, err
			}
			return x, nil
		case "[":
			p.next()
			l := &cList{p: t.col}
			if !p.isOp("]") {
				for {
					e, err := p.or()
					if err != nil {
						return nil, err
					}
					l.elems = append(l.elems, e)
					if !p.isOp(",") {
						break
					}
					p.next()
				}
			}
			if err := p.expect("]"); err != nil {
				return nil, err
			}
			return l, nil
		}
	}
	return nil, p.unexpected("a value")
}

// tables returns the table names used by lookup calls (for load checks).
func (c *Cond) tables() []cLit {
	var out []cLit
	var walk func(n cnode)
	walk = func(n cnode) {
		switch n := n.(type) {
		case *cCall:
			if n.fn == "lookup" {
				out = append(out, *n.args[0].(*cLit))
			}
			for _, a := range n.args {
				walk(a)
			}
		case *cMember:
			walk(n.x)
		case *cIndex:
			walk(n.x)
			walk(n.key)
		case *cList:
			for _, e := range n.elems {
				walk(e)
			}
		case *cUnary:
			walk(n.x)
		case *cBinary:
			walk(n.l)
			walk(n.r)
		}
	}
	walk(c.root)
	return out
}

// --- evaluator ---

// condEnv resolves identifiers and table lookups.
type condEnv struct {
	data   map[string]any
	lookup func(table string, key any) (string, error)
}

// Eval evaluates the condition to a boolean. Errors only come from lookup
// (a missing key in a table without _default).
func (c *Cond) Eval(env condEnv) (bool, error) {
	v, err := eval(c.root, env)
	if err != nil {
		return false, err
	}
	return truthy(v), nil
}

func eval(n cnode, env condEnv) (any, error) {
	switch n := n.(type) {
	case *cLit:
		return n.v, nil
	case *cIdent:
		v, ok := env.data[n.name]
		if !ok {
			return undef{}, nil
		}
		return condValue(v), nil
	case *cMember:
		x, err := eval(n.x, env)
		if err != nil {
			return nil, err
		}
		return condValue(member(x, n.name)), nil
	case *cIndex:
		x, err := eval(n.x, env)
		if err != nil {
			return nil, err
		}
		k, err := eval(n.key, env)
		if err != nil {
			return nil, err
		}
		return condValue(index(x, k)), nil
	case *cList:
		out := make([]any, 0, len(n.elems))
		for _, e := range n.elems {
			v, err := eval(e, env)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case *cUnary:
		x, err := eval(n.x, env)
		if err != nil {
			return nil, err
		}
		if n.op == "!" {
			return !truthy(x), nil
		}
		if f, ok := num(x); ok {
			return -f, nil
		}
		return undef{}, nil
	case *cBinary:
		switch n.op {
		case "&&", "||":
			l, err := eval(n.l, env)
			if err != nil {
				return nil, err
			}
			if lt := truthy(l); (n.op == "&&") != lt {
				return lt, nil // short-circuit
			}
			r, err := eval(n.r, env)
			if err != nil {
				return nil, err
			}
			return truthy(r), nil
		}
		l, err := eval(n.l, env)
		if err != nil {
			return nil, err
		}
		r, err := eval(n.r, env)
		if err != nil {
			return nil, err
		}
		return compare(n.op, l, r), nil
	case *cCall:
		args := make([]any, len(n.args))
		for i, a := range n.args {
			v, err := eval(a, env)
			if err != nil {
				return nil, err
			}
			args[i] = v
		}
		return call(n.fn, args, env)
	}
	return undef{}, nil
}

func isUndef(v any) bool { _, ok := v.(undef); return ok }

func member(x any, name string) any {
	if m, ok := x.(map[string]any); ok {
		if v, ok := m[name]; ok {
			return v
		}
	}
	return undef{}
}

func index(x, k any) any {
	switch t := x.(type) {
	case map[string]any:
		if s, ok := k.(string); ok {
			if v, ok := t[s]; ok {
				return v
			}
		}
	case []any:
		if f, ok := num(k); ok && f == math.Trunc(f) {
			i := int(f)
			if i < 0 {
				i += len(t)
			}
			if i >= 0 && i < len(t) {
				return t[i]
			}
		}
	case string:
		if f, ok := num(k); ok && f == math.Trunc(f) {
			rs := []rune(t)
			if i := int(f); i >= 0 && i < len(rs) {
				return string(rs[i])
			}
		}
	}
	return undef{}
}

func truthy(v any) bool {
	switch t := v.(type) {
	case nil, undef:
		return false
	case bool:
		return t
	case string:
		return t != ""
	case []any:
		return len(t) > 0
	case map[string]any:
		return len(t) > 0
	}
	if f, ok := num(v); ok {
		return f != 0
	}
	return true
}

func num(v any) (float64, bool) {
	switch t := v.(type) {
	case float64:
		return t, true
	case float32:
		return float64(t), true
	case int:
		return float64(t), true
	case int64:
		return float64(t), true
	case int32:
		return float64(t), true
	case uint64:
		return float64(t), true
	case uint:
		return float64(t), true
	}
	return 0, false
}

func equal(a, b any) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if fa, ok := num(a); ok {
		fb, ok := num(b)
		return ok && fa == fb
	}
	switch ta := a.(type) {
	case string:
		tb, ok := b.(string)
		return ok && ta == tb
	case bool:
		tb, ok := b.(bool)
		return ok && ta == tb
	case []any:
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

func compare(op string, l, r any) bool {
	if isUndef(l) || isUndef(r) {
		// Missing attributes compare false, except that a missing value
		// equals null.
		if op == "==" {
			return (isUndef(l) || l == nil) && (isUndef(r) || r == nil)
		}
		return false
	}
	switch op {
	case "==":
		return equal(l, r)
	case "!=":
		return !equal(l, r)
	case "in":
		return contains(r, l)
	case "not in":
		if r == nil {
			return false
		}
		return !contains(r, l)
	}
	if fl, ok := num(l); ok {
		fr, ok := num(r)
		if !ok {
			return false
		}
		switch op {
		case "<":
			return fl < fr
		case "<=":
			return fl <= fr
		case ">":
			return fl > fr
		case ">=":
			return fl >= fr
		}
	}
	sl, ok1 := l.(string)
	sr, ok2 := r.(string)
	if !ok1 || !ok2 {
		return false
	}
	switch op {
	case "<":
		return sl < sr
	case "<=":
		return sl <= sr
	case ">":
		return sl > sr
	case ">=":
		return sl >= sr
	}
	return false
}

// contains: element of a list, substring of a string, key of a map.
func contains(coll, x any) bool {
	if isUndef(x) {
		return false
	}
	switch t := coll.(type) {
	case []any:
		for _, e := range t {
			if equal(e, x) {
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

func call(fn string, args []any, env condEnv) (any, error) {
	switch fn {
	case "has":
		return !isUndef(args[0]) && args[0] != nil, nil
	case "contains":
		return contains(args[0], args[1]), nil
	case "len":
		switch t := args[0].(type) {
		case string:
			return float64(utf8.RuneCountInString(t)), nil
		case []any:
			return float64(len(t)), nil
		case map[string]any:
			return float64(len(t)), nil
		}
		return float64(0), nil
	case "lower", "upper":
		s, ok := args[0].(string)
		if !ok {
			return args[0], nil
		}
		if fn == "lower" {
			return strings.ToLower(s), nil
		}
		return strings.ToUpper(s), nil
	case "startswith":
		s, ok1 := args[0].(string)
		p, ok2 := args[1].(string)
		return ok1 && ok2 && strings.HasPrefix(s, p), nil
	case "lookup":
		if env.lookup == nil {
			return undef{}, nil
		}
		key := args[1]
		if isUndef(key) {
			key = nil
		}
		return env.lookup(args[0].(string), key)
	}
	return undef{}, nil
}
