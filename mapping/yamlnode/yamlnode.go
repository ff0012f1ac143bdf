// Package yamlnode decodes YAML by walking yaml.v3 nodes so that every
// problem can be reported as "file:line: field: message", and all problems
// of a document are collected instead of stopping at the first.
//
// It is shared by package config and package mapping (config imports
// mapping, so the helper cannot live in config).
package yamlnode

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Problem is one configuration error with its position.
type Problem struct {
	File  string
	Line  int
	Field string // dotted path, e.g. "routes[1].priority"
	Msg   string
}

func (p Problem) Error() string {
	var b strings.Builder
	switch {
	case p.File != "" && p.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", p.File, p.Line)
	case p.File != "":
		b.WriteString(p.File + ": ")
	case p.Line > 0:
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Field != "" {
		b.WriteString(p.Field + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Problems is a list of problems; it is the error type returned by loaders.
type Problems []Problem

func (ps Problems) Error() string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.Error()
	}
	return strings.Join(s, "\n")
}

// Err returns nil when there are no problems, else the problems sorted by
// file and line (stable, so problems on one line keep their order).
func (ps Problems) Err() error {
	if len(ps) == 0 {
		return nil
	}
	out := append(Problems(nil), ps...)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].File != out[j].File {
			return out[i].File < out[j].File
		}
		return out[i].Line < out[j].Line
	})
	return out
}

// Decoder walks nodes of one file and collects problems.
type Decoder struct {
	File     string
	Problems Problems
}

// Errorf records a problem at node n (n may be nil: no line).
func (d *Decoder) Errorf(n *yaml.Node, field, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.Problems = append(d.Problems, Problem{File: d.File, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// Add records problems produced elsewhere (another file, a sub-decoder).
func (d *Decoder) Add(err error) {
	if err == nil {
		return
	}
	switch e := err.(type) {
	case Problems:
		d.Problems = append(d.Problems, e...)
	case Problem:
		d.Problems = append(d.Problems, e)
	default:
		d.Problems = append(d.Problems, Problem{File: d.File, Msg: err.Error()})
	}
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Parse parses one YAML document. An empty document yields an empty
// mapping node. Syntax errors come back as Problems with the line.
func Parse(file string, data []byte) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		var ps Problems
		for _, msg := range strings.Split(strings.TrimPrefix(err.Error(), "yaml: unmarshal errors:\n"), "\n") {
			msg = strings.TrimSpace(msg)
			if msg == "" {
				continue
			}
			p := Problem{File: file, Msg: msg}
			if m := yamlLine.FindStringSubmatch(msg); m != nil {
				p.Line, _ = strconv.Atoi(m[1])
				p.Msg = m[2]
			} else if strings.HasPrefix(msg, "line ") {
				if n, rest, ok := strings.Cut(strings.TrimPrefix(msg, "line "), ": "); ok {
					if l, err := strconv.Atoi(n); err == nil {
						p.Line, p.Msg = l, rest
					}
				}
			}
			p.Msg = strings.TrimPrefix(p.Msg, "yaml: ")
			ps = append(ps, p)
		}
		return nil, ps
	}
	n := Resolve(&doc)
	if n == nil || n.Kind == 0 {
		return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: 1}, nil
	}
	return n, nil
}

// Resolve unwraps document nodes and follows aliases.
func Resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && i < 100; i++ {
		switch n.Kind {
		case yaml.DocumentNode:
			if len(n.Content) == 0 {
				return nil
			}
			n = n.Content[0]
		case yaml.AliasNode:
			n = n.Alias
		default:
			return n
		}
	}
	return n
}

// IsNull reports whether n is absent or an explicit null.
func IsNull(n *yaml.Node) bool {
	n = Resolve(n)
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// Join builds a field path.
func Join(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// Index builds a field path for a sequence element.
func Index(parent string, i int) string { return fmt.Sprintf("%s[%d]", parent, i) }

// Pair is one key/value of a mapping node, in document order.
type Pair struct {
	Key   string
	KeyN  *yaml.Node
	Value *yaml.Node
}

// Pairs returns the pairs of a mapping node. A null node yields nothing;
// any other non-mapping node is a problem.
func (d *Decoder) Pairs(n *yaml.Node, field string) []Pair {
	n = Resolve(n)
	if IsNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		d.Errorf(n, field, "expected a mapping, got %s", describe(n))
		return nil
	}
	var out []Pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := Resolve(n.Content[i])
		if k == nil || k.Kind != yaml.ScalarNode {
			d.Errorf(n.Content[i], field, "mapping keys must be scalars")
			continue
		}
		if k.Value == "<<" && k.Tag == "!!merge" {
			d.Errorf(k, field, "merge keys (<<) are not supported")
			continue
		}
		out = append(out, Pair{Key: k.Value, KeyN: k, Value: n.Content[i+1]})
	}
	return out
}

// Fields returns the values of a mapping node by key and reports keys not
// in known (strict decoding). A null node yields an empty map.
func (d *Decoder) Fields(n *yaml.Node, field string, known ...string) map[string]*yaml.Node {
	out := map[string]*yaml.Node{}
	for _, p := range d.Pairs(n, field) {
		ok := false
		for _, k := range known {
			if k == p.Key {
				ok = true
				break
			}
		}
		if !ok {
			d.Errorf(p.KeyN, Join(field, p.Key), "unknown field (known: %s)", strings.Join(known, ", "))
			continue
		}
		out[p.Key] = p.Value
	}
	return out
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

// String decodes a scalar as a string; null is "". ok is false (with a
// problem recorded) for a non-scalar.
func (d *Decoder) String(n *yaml.Node, field string) (string, bool) {
	n = Resolve(n)
	if IsNull(n) {
		return "", true
	}
	if n.Kind != yaml.ScalarNode {
		d.Errorf(n, field, "expected a string, got %s", describe(n))
		return "", false
	}
	return n.Value, true
}

// Strings decodes a list of scalars; null is nil.
func (d *Decoder) Strings(n *yaml.Node, field string) []string {
	n = Resolve(n)
	if IsNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.Errorf(n, field, "expected a list, got %s", describe(n))
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for i, c := range n.Content {
		if s, ok := d.String(c, Index(field, i)); ok {
			out = append(out, s)
		}
	}
	return out
}

// Items returns the elements of a sequence node; null is nil.
func (d *Decoder) Items(n *yaml.Node, field string) []*yaml.Node {
	n = Resolve(n)
	if IsNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.Errorf(n, field, "expected a list, got %s", describe(n))
		return nil
	}
	return n.Content
}

// Bool decodes a boolean scalar; null keeps def.
func (d *Decoder) Bool(n *yaml.Node, field string, def bool) bool {
	s, ok := d.String(n, field)
	if !ok || IsNull(n) {
		return def
	}
	switch strings.ToLower(s) {
	case "true", "yes", "on":
		return true
	case "false", "no", "off":
		return false
	}
	d.Errorf(n, field, "expected true or false, got %q", s)
	return def
}

// Int decodes an integer scalar; null keeps def.
func (d *Decoder) Int(n *yaml.Node, field string, def int64) int64 {
	s, ok := d.String(n, field)
	if !ok || IsNull(n) {
		return def
	}
	v, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, 64)
	if err != nil {
		d.Errorf(n, field, "expected an integer, got %q", s)
		return def
	}
	return v
}

// Float decodes a number scalar; null keeps def.
func (d *Decoder) Float(n *yaml.Node, field string, def float64) float64 {
	s, ok := d.String(n, field)
	if !ok || IsNull(n) {
		return def
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		d.Errorf(n, field, "expected a number, got %q", s)
		return def
	}
	return v
}

// Duration decodes a Go duration ("5s", "2m", "72h"); null keeps def.
// A bare 0 is accepted.
func (d *Decoder) Duration(n *yaml.Node, field string, def time.Duration) time.Duration {
	s, ok := d.String(n, field)
	if !ok || IsNull(n) {
		return def
	}
	if s == "0" {
		return 0
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		d.Errorf(n, field, "invalid duration %q (use e.g. 30s, 5m, 72h)", s)
		return def
	}
	return v
}

// ValueLine returns the first line of a scalar's content: block scalars
// (| and >) start on the line after their indicator.
func ValueLine(n *yaml.Node) int {
	n = Resolve(n)
	if n == nil {
		return 0
	}
	if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		return n.Line + 1
	}
	return n.Line
}
