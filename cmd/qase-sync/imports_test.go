package main

import (
	"bufio"
	"bytes"
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/qase-sync/qase-sync"

// TestImportRules enforces the package boundaries of DESIGN.md with
// `go list`, so they cannot rot:
//   - sync imports only the standard library and logrus (transitively);
//   - mapping imports sync (types), internal/yamlpos, yaml.v3 and
//     expr-lang/expr only;
//   - config depends on nothing of ours but internal/yamlpos (it never
//     sees mapping: cmd hands the mapping: node over);
//   - an adapter imports sync, its own SDK and the standard library,
//     never another adapter, config or mapping; its fake server may
//     import internal/fault, the fault injection the fakes share; the
//     GitHub and Jira adapters and their fakes may import
//     internal/trackerhook, the webhook plumbing they share;
//   - internal/ratelimit (the request budgets cmd wraps every adapter's
//     client in) imports the standard library and x/time/rate only;
//   - only cmd/qase-sync imports everything.
func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}|{{join .Imports \",\"}}|{{join .Deps \",\"}}", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	own := func(p string) bool { return strings.HasPrefix(p, module+"/") }
	std := func(p string) bool { return !strings.Contains(strings.Split(p, "/")[0], ".") }
	checked := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), "|", 3)
		pkg, imports, deps := parts[0], split(parts[1]), split(parts[2])
		rel := strings.TrimPrefix(pkg, module+"/")
		switch {
		case rel == "sync":
			checked++
			for _, d := range deps {
				if !std(d) && !strings.HasPrefix(d, "github.com/sirupsen/logrus") && !strings.HasPrefix(d, "golang.org/x/sys") {
					t.Errorf("sync depends on %s: only the standard library and logrus are allowed", d)
				}
			}
		case rel == "mapping" || strings.HasPrefix(rel, "mapping/"):
			checked++
			for _, d := range imports {
				if own(d) && d != module+"/sync" && d != module+"/internal/yamlpos" && !strings.HasPrefix(d, module+"/mapping") {
					t.Errorf("%s imports %s: mapping may import sync (types) only", rel, d)
				}
				if !own(d) && !std(d) && d != "gopkg.in/yaml.v3" && !strings.HasPrefix(d, "github.com/expr-lang/expr") {
					t.Errorf("%s imports %s: mapping is pure (no SDKs, no I/O libraries)", rel, d)
				}
			}
		case strings.HasPrefix(rel, "adapters/"):
			checked++
			self := strings.Join(strings.Split(rel, "/")[:2], "/")
			if strings.HasPrefix(rel, "adapters/store/") {
				self = "adapters/store"
			}
			for _, d := range imports {
				if !own(d) {
					continue
				}
				r := strings.TrimPrefix(d, module+"/")
				if r == "sync" || strings.HasPrefix(r, self) || r == "internal/fault" && strings.HasSuffix(rel, "fake") ||
					r == "internal/trackerhook" && (self == "adapters/github" || self == "adapters/jira") {
					continue
				}
				t.Errorf("%s imports %s: an adapter imports sync and its own SDK only", rel, r)
			}
		case rel == "internal/ratelimit":
			checked++
			for _, d := range deps {
				if !std(d) && d != "golang.org/x/time/rate" {
					t.Errorf("internal/ratelimit depends on %s: only the standard library and x/time/rate are allowed", d)
				}
			}
		case rel == "config":
			checked++
			for _, d := range deps {
				if own(d) && d != module+"/internal/yamlpos" {
					t.Errorf("config depends on %s: it may use internal/yamlpos only", d)
				}
			}
		}
	}
	if checked < 8 {
		t.Fatalf("only %d packages checked; is go list output as expected?", checked)
	}
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// domainAlias is the one name the domain package (module/sync) is
// imported under outside its own directory, so that the standard
// library's sync keeps its name.
const domainAlias = "qsync"

// TestImportAliases: every Go file outside sync/ imports the domain
// package as qsync and the standard library's sync under its own name.
func TestImportAliases(t *testing.T) {
	// The check itself, on files that break the rule.
	for src, want := range map[string]string{
		"package a\nimport \"" + module + "/sync\"\n":        `imports ` + module + `/sync as "": use qsync`,
		"package a\nimport gosync \"" + module + "/sync\"\n": `imports ` + module + `/sync as "gosync": use qsync`,
		"package a\nimport gosync \"sync\"\n":                `imports the standard library's sync as "gosync"`,
	} {
		probs, n, err := aliasProblems("a.go", src)
		if err != nil || len(probs) != 1 || !strings.Contains(probs[0], want) {
			t.Errorf("%q: got %v %v (%d), want %q", src, probs, err, n, want)
		}
	}
	if probs, n, _ := aliasProblems("a.go", "package a\nimport (\n\t\"sync\"\n\tqsync \""+module+"/sync\"\n)\n"); len(probs) != 0 || n != 1 {
		t.Errorf("a correct file: %v (%d)", probs, n)
	}

	root := filepath.Join("..", "..")
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel == "sync" || d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		probs, n, err := aliasProblems(path, nil)
		for _, p := range probs {
			t.Error(p)
		}
		checked += n
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 40 {
		t.Fatalf("only %d imports of the domain package found; is the walk right?", checked)
	}
}

// aliasProblems checks the imports of one file (src, or the file at path
// when src is nil); n counts its imports of the domain package.
func aliasProblems(path string, src any) (probs []string, n int, err error) {
	f, err := parser.ParseFile(token.NewFileSet(), path, src, parser.ImportsOnly)
	if err != nil {
		return nil, 0, err
	}
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		name := ""
		if imp.Name != nil {
			name = imp.Name.Name
		}
		switch p {
		case module + "/sync":
			n++
			if name != domainAlias {
				probs = append(probs, fmt.Sprintf("%s imports %s as %q: use %s %q", path, p, name, domainAlias, p))
			}
		case "sync":
			if name != "" {
				probs = append(probs, fmt.Sprintf("%s imports the standard library's sync as %q: import it as sync", path, name))
			}
		}
	}
	return probs, n, nil
}
