package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// Every key a configuration file can set has a row, or a mention in
// backquotes, in its section of docs/configuration.md: the reference
// cannot fall behind the code.
func TestEveryKeyIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]string{}
	for _, part := range strings.Split(string(doc), "\n## ")[1:] {
		head, body, _ := strings.Cut(part, "\n")
		sections[strings.Trim(head, "` ")] = body
	}
	env := sections["Environment and secrets"] // the _file twins of secrets
	top := reflect.TypeOf(Config{})
	for i := 0; i < top.NumField(); i++ {
		f := top.Field(i)
		name := yamlName(f)
		if name == "" {
			continue
		}
		body, ok := sections[name]
		if !ok {
			t.Errorf("docs/configuration.md has no section for %s", name)
			continue
		}
		for _, key := range keys(f.Type, name) {
			rel := strings.TrimPrefix(key, name+".")
			leaf := rel[strings.LastIndex(rel, ".")+1:]
			switch {
			case strings.Contains(body, "`"+rel): // `sqlite.path`, `rate.burst`
			case strings.Contains(body, "`"+leaf+"`"): // `read_timeout`, `write_timeout`
			case strings.HasSuffix(leaf, "_file") && (strings.Contains(env, "`"+leaf+"`") || strings.Contains(env, "`"+key+"`")):
			default:
				t.Errorf("docs/configuration.md, section %s: %s is not documented", name, key)
			}
		}
	}
}

// keys lists the yaml keys under t, dotted from prefix.
func keys(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Slice || t.Kind() == reflect.Pointer || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t.PkgPath() != reflect.TypeOf(Config{}).PkgPath() {
		return nil
	}
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" {
			continue
		}
		out = append(out, prefix+"."+name)
		out = append(out, keys(f.Type, prefix+"."+name)...)
	}
	return out
}

func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	return name
}
