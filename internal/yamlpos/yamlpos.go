// Package yamlpos decodes YAML into tagged structs with yaml.v3 and keeps
// every problem's position, so loaders can report "file:line: field:
// message" for each problem of a document at once.
//
// Decoding is yaml.v3's own, with KnownFields(true): a node tree (after
// the caller's changes, such as ${VAR} expansion) is encoded and decoded
// again strictly, and every decoder error is mapped back to the line of
// the original node and to its field path. The Index answers "at which
// line is field X" for semantic errors found after decoding.
//
// Package config and package mapping both use it; neither imports the
// other.
package yamlpos

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

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

// Problems is a list of problems; it is the error type loaders return.
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

// Add appends err: its problems when it is Problems or a Problem, else
// one problem of file without a line.
func (ps *Problems) Add(file string, err error) {
	var many Problems
	var one Problem
	switch {
	case err == nil:
	case errors.As(err, &many):
		*ps = append(*ps, many...)
	case errors.As(err, &one):
		*ps = append(*ps, one)
	default:
		*ps = append(*ps, Problem{File: file, Msg: err.Error()})
	}
}

var lineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// Parse parses one YAML document. An empty document yields an empty
// mapping node. A syntax error comes back as a Problem at its line.
func Parse(file string, data []byte) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, Problems{syntaxProblem(file, data, err)}
	}
	n := Resolve(&doc)
	if n == nil || n.Kind == 0 {
		return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: 1}, nil
	}
	return n, nil
}

// parserProblems are the messages of yaml.v3's parser (not its scanner).
// For them yaml.v3 prints a 0-based line: that of the construct being
// parsed (the "[" never closed, the mapping that lost its indentation),
// else that of the offending token.
var parserProblems = map[string]bool{
	"did not find expected ',' or ']'": true, "did not find expected ',' or '}'": true,
	"did not find expected '-' indicator": true, "did not find expected <document start>": true,
	"did not find expected <stream-start>": true, "did not find expected key": true,
	"did not find expected node content": true, "found duplicate %TAG directive": true,
	"found duplicate %YAML directive": true, "found incompatible YAML document": true,
	"found undefined tag handle": true,
}

// syntaxProblem places a yaml.v3 syntax error at its 1-based line.
func syntaxProblem(file string, data []byte, err error) Problem {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := lineRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if parserProblems[msg] || line == 0 {
		line++ // no line at all: both marks were on the first line
	}
	// A construct left open at the end is reported past the last line.
	if last := bytes.Count(bytes.TrimRight(data, " \t\r\n"), []byte("\n")) + 1; line > last {
		line = last
	}
	return Problem{File: file, Line: line, Msg: msg}
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
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// Join builds a field path.
func Join(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// Elem builds a field path for a sequence element.
func Elem(parent string, i int) string { return fmt.Sprintf("%s[%d]", parent, i) }

// Index maps field paths to nodes of one document, for messages about
// fields found wrong after decoding.
type Index struct {
	File   string
	prefix string
	nodes  map[string]*yaml.Node // path → value node
	keys   map[string]*yaml.Node // path → key node (mapping entries)
	root   *yaml.Node
}

// NewIndex indexes the tree below n; prefix is n's own field path ("" for
// a document root, "mapping" for the mapping section).
func NewIndex(file string, n *yaml.Node, prefix string) *Index {
	ix := &Index{File: file, prefix: prefix, nodes: map[string]*yaml.Node{}, keys: map[string]*yaml.Node{}, root: Resolve(n)}
	if ix.root != nil {
		ix.nodes[prefix] = ix.root
	}
	walk(n, prefix, 0, func(path string, key, val *yaml.Node) {
		if _, dup := ix.nodes[path]; !dup {
			ix.nodes[path], ix.keys[path] = val, key
		}
	})
	return ix
}

// walk calls fn for every mapping entry and sequence element below n,
// with its path. Aliases are not followed: what they point at is visited
// where it is defined.
func walk(n *yaml.Node, path string, depth int, fn func(path string, key, val *yaml.Node)) {
	if n == nil || depth > 200 {
		return
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			walk(c, path, depth+1, fn)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := Join(path, k.Value)
			fn(p, k, v)
			walk(v, p, depth+1, fn)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := Elem(path, i)
			fn(p, nil, c)
			walk(c, p, depth+1, fn)
		}
	}
}

// Node returns the value node of path, nil when the document has none.
func (ix *Index) Node(path string) *yaml.Node { return ix.nodes[path] }

// Has reports whether the document sets path (to anything, null included).
func (ix *Index) Has(path string) bool { _, ok := ix.nodes[path]; return ok }

// Keys returns the keys set in the mapping at path, in document order.
func (ix *Index) Keys(path string) []string {
	n := Resolve(ix.nodes[path])
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	var out []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		out = append(out, n.Content[i].Value)
	}
	return out
}

// Line returns the line of path's value, or of its closest ancestor in
// the document (0 when none is).
func (ix *Index) Line(path string) int {
	for f := path; ; {
		if n, ok := ix.nodes[f]; ok && n != nil {
			return n.Line
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 || f == ix.prefix {
			break
		}
		f = f[:i]
	}
	if ix.root != nil {
		return ix.root.Line
	}
	return 0
}

// KeyLine is Line, but for a mapping entry it is the line of the key.
func (ix *Index) KeyLine(path string) int {
	if k := ix.keys[path]; k != nil {
		return k.Line
	}
	return ix.Line(path)
}

// Problem makes a problem at path's line.
func (ix *Index) Problem(path, format string, args ...any) Problem {
	return Problem{File: ix.File, Line: ix.Line(path), Field: path, Msg: fmt.Sprintf(format, args...)}
}

// Decode decodes n into out (a pointer to a tagged struct) with yaml.v3,
// strictly: unknown keys, values of the wrong type and merge keys are
// problems at their line and field. prefix is n's field path. Decoding
// goes on past problems, so out holds whatever could be decoded.
func Decode(file string, n *yaml.Node, prefix string, out any) Problems {
	n = Resolve(n)
	if n == nil || IsNull(n) {
		return nil
	}
	var ps Problems
	// yaml.v3 merges "<<" keys; the loaders never did, so they stay errors.
	walk(n, prefix, 0, func(path string, key, _ *yaml.Node) {
		if key != nil && key.Value == "<<" && key.ShortTag() == "!!merge" {
			ps = append(ps, Problem{File: file, Line: key.Line, Field: strings.TrimSuffix(strings.TrimSuffix(path, "<<"), "."), Msg: "merge keys (<<) are not supported"})
		}
	})
	if len(ps) > 0 {
		return ps
	}
	// KnownFields is an option of yaml.Decoder, which reads bytes: encode
	// the tree and decode it again, then map lines back.
	data, err := yaml.Marshal(n)
	if err != nil {
		return Problems{{File: file, Line: n.Line, Field: prefix, Msg: err.Error()}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err = dec.Decode(out)
	var te *yaml.TypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &te):
	default:
		return Problems{{File: file, Line: n.Line, Field: prefix, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	// Only now is the re-encoded tree needed, to map lines back.
	var again yaml.Node
	if err := yaml.Unmarshal(data, &again); err != nil {
		return Problems{{File: file, Line: n.Line, Field: prefix, Msg: err.Error()}}
	}
	lines := map[int]int{}
	type entry struct {
		path  string
		key   string
		value string
		kind  yaml.Kind
	}
	byLine := map[int][]entry{}
	pair(n, Resolve(&again), 0, lines)
	byLine[Resolve(&again).Line] = append(byLine[Resolve(&again).Line], entry{path: prefix, value: n.Value, kind: n.Kind})
	walk(Resolve(&again), prefix, 0, func(path string, key, val *yaml.Node) {
		if key != nil {
			byLine[key.Line] = append(byLine[key.Line], entry{path: path, key: key.Value})
		}
		byLine[val.Line] = append(byLine[val.Line], entry{path: path, value: val.Value, kind: val.Kind})
	})
	for _, e := range te.Errors {
		m := lineRE.FindStringSubmatch(e)
		if m == nil {
			ps = append(ps, Problem{File: file, Line: n.Line, Field: prefix, Msg: e})
			continue
		}
		reLine, _ := strconv.Atoi(m[1])
		p := Problem{File: file, Line: lines[reLine], Msg: m[2]}
		if d := definedRE.FindStringSubmatch(m[2]); d != nil {
			at, _ := strconv.Atoi(d[1])
			p.Msg = strings.TrimSuffix(m[2], d[1]) + strconv.Itoa(lines[at])
		}
		if f := unknownFieldRE.FindStringSubmatch(m[2]); f != nil {
			for _, en := range byLine[reLine] {
				if en.key == f[1] {
					p.Field = en.path
					break
				}
			}
			p.Msg = "unknown field"
		} else if t := typeErrRE.FindStringSubmatch(m[2]); t != nil {
			shown := strings.TrimSuffix(t[2], "...")
			for _, en := range byLine[reLine] {
				switch {
				case en.key != "":
					continue
				case t[1] == "!!map" || t[1] == "!!seq":
					// The deepest collection of the line: had an outer one
					// failed, the decoder would not have reached the inner.
					if (t[1] == "!!map") == (en.kind == yaml.MappingNode) && en.kind != yaml.ScalarNode && len(en.path) >= len(p.Field) {
						p.Field = en.path
					}
					continue
				case en.kind == yaml.ScalarNode && (en.value == t[2] || (shown != t[2] && strings.HasPrefix(en.value, shown))):
					p.Field, shown = en.path, en.value
				default:
					continue
				}
				if p.Field != "" {
					break
				}
			}
			p.Msg = fmt.Sprintf("expected %s, got %s", describeType(t[3]), describeValue(t[1], shown))
		}
		ps = append(ps, p)
	}
	return ps
}

var (
	unknownFieldRE = regexp.MustCompile(`^field (.*) not found in type `)
	definedRE      = regexp.MustCompile(`already defined at line (\d+)$`)
	typeErrRE      = regexp.MustCompile("^cannot unmarshal (!!\\w+)(?: `(.*)`)? into (.*)$")
)

// pair maps the lines of the re-encoded tree b to those of the original a
// (both have the same shape).
func pair(a, b *yaml.Node, depth int, lines map[int]int) {
	if a == nil || b == nil || depth > 200 {
		return
	}
	if _, ok := lines[b.Line]; !ok {
		lines[b.Line] = a.Line
	}
	if a.Kind == yaml.AliasNode || b.Kind == yaml.AliasNode {
		return
	}
	for i := 0; i < len(a.Content) && i < len(b.Content); i++ {
		pair(a.Content[i], b.Content[i], depth+1, lines)
	}
}

func describeType(t string) string {
	switch {
	case t == "time.Duration":
		return "a duration (e.g. 30s, 5m, 72h)"
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "an integer"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "bool":
		return "true or false"
	case t == "string", strings.HasSuffix(t, ".Secret"):
		return "a string"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	}
	return "a mapping"
}

func describeValue(tag, v string) string {
	switch tag {
	case "!!map":
		return "a mapping"
	case "!!seq":
		return "a list"
	}
	return strconv.Quote(v)
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
