package config

import (
	"fmt"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/qase-sync/qase-sync/internal/yamlpos"
)

// Environment expansion happens per scalar node after YAML parsing, so
// line numbers stay exact and an expanded value can never inject YAML
// structure. Syntax: ${VAR}, ${VAR:-default} (default when unset or
// empty), and $${ for a literal "${".

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// optionalFields may reference unset variables without a default: they
// expand to "". Paths use [*] for any list index; a trailing ".*" matches
// any key below.
var optionalFields = []string{
	"server.admin_token",
	"qase.api_token",
	"qase.default_project",
	"trackers[*].base_url",
	"trackers[*].user_field",
	"mapping.vars.*",
}

var indexRE = regexp.MustCompile(`\[\d+\]`)

func isOptional(field string) bool {
	f := indexRE.ReplaceAllString(field, "[*]")
	for _, o := range optionalFields {
		if f == o || (strings.HasSuffix(o, ".*") && strings.HasPrefix(f, strings.TrimSuffix(o, "*"))) {
			return true
		}
	}
	return false
}

// expandNodes expands every scalar value below n in place.
//
// Aliases are not followed: the anchored node is expanded where it is
// defined, and following them could loop forever (a: &a [*a]).
func expandNodes(file string, n *yaml.Node, field string, env func(string) (string, bool)) yamlpos.Problems {
	if n == nil || n.Kind == yaml.AliasNode {
		return nil
	}
	var ps yamlpos.Problems
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			ps = append(ps, expandNodes(file, c, field, env)...)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			ps = append(ps, expandNodes(file, n.Content[i+1], yamlpos.Join(field, n.Content[i].Value), env)...)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			ps = append(ps, expandNodes(file, c, yamlpos.Elem(field, i), env)...)
		}
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "$") {
			return nil
		}
		v, err := expand(n.Value, env, isOptional(field))
		if err != nil {
			return yamlpos.Problems{{File: file, Line: n.Line, Field: field, Msg: err.Error()}}
		}
		if v != n.Value {
			// The expanded text is one scalar whatever it holds; its
			// type (string, number, boolean) is resolved from it as if
			// it had been written plain, and the field decides.
			n.Value = v
			n.Tag = ""
			if v == "" {
				n.Tag = "!!str"
			}
			if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) == 0 {
				n.Style = 0
			}
		}
	}
	return ps
}

// expand replaces ${VAR} and ${VAR:-default} in s.
func expand(s string, env func(string) (string, bool), optional bool) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); {
		if strings.HasPrefix(s[i:], "$${") {
			b.WriteString("${")
			i += 3
			continue
		}
		if !strings.HasPrefix(s[i:], "${") {
			b.WriteByte(s[i])
			i++
			continue
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", fmt.Errorf("unterminated ${ (write $${ for a literal)")
		}
		expr := s[i+2 : i+end]
		i += end + 1
		name, def, hasDef := strings.Cut(expr, ":-")
		if !envName.MatchString(name) {
			return "", fmt.Errorf("invalid environment variable name %q", name)
		}
		val, ok := "", false
		if env != nil {
			val, ok = env(name)
		}
		switch {
		case ok && (val != "" || !hasDef):
			b.WriteString(val)
		case hasDef:
			b.WriteString(def)
		case optional:
		default:
			return "", fmt.Errorf("environment variable %s is not set", name)
		}
	}
	return b.String(), nil
}
