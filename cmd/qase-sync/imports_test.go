package main

import (
	"bufio"
	"bytes"
	"os/exec"
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
//     never another adapter, config or mapping;
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
				if r == "sync" || strings.HasPrefix(r, self) {
					continue
				}
				t.Errorf("%s imports %s: an adapter imports sync and its own SDK only", rel, r)
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
