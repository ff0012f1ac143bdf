package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/adapters/qase"
	"github.com/qase-sync/qase-sync/config"
	"github.com/qase-sync/qase-sync/mapping"
	qsync "github.com/qase-sync/qase-sync/sync"
)

func writeConfig(t *testing.T, src string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLoadConfigMappingProblems: the mapping: section, decoded by package
// mapping from the node config hands over, reports its problems with the
// file's lines, together with the configuration's own, sorted by line.
func TestLoadConfigMappingProblems(t *testing.T) {
	base := "qase: {secrets: [s]}\n"
	cases := []struct{ name, src, want string }{
		{"route tracker missing", base + "mapping:\n  routes:\n    - name: r\n      kind: defect\n      tracker: jira\n      project: QA\n      title: x\n",
			`c.yaml:6: mapping.routes[0].tracker: tracker "jira" is not defined in trackers`},
		{"route template", base + "trackers: [{name: d, type: dryrun}]\nmapping:\n  routes:\n    - name: r\n      kind: defect\n      tracker: d\n      project: QA\n      title: '{{env \"X\"}}'\n",
			`c.yaml:9: mapping.routes[0].title: template: function "env" not defined`},
		{"route condition", base + "trackers: [{name: d, type: dryrun}]\nmapping:\n  routes:\n    - name: r\n      kind: defect\n      tracker: d\n      project: QA\n      title: x\n      when: 'contains(tags, \"x\")'\n",
			`c.yaml:10: mapping.routes[0].when: condition: col 1: contains(x, y) is written x contains y (or y in x)`},
		{"unknown route key", base + "mapping:\n  routes:\n    - name: r\n      colour: red\n",
			`c.yaml:5: mapping.routes[0].colour: unknown field`},
		{"reconcile unknown route", base + "reconcile:\n  routes: [a, b]\n", `c.yaml:3: reconcile.routes[0]: unknown route "a"`},
		{"env in mapping", base + "trackers: [{name: d, type: dryrun}]\nmapping:\n  routes:\n    - name: r\n      kind: defect\n      tracker: d\n      project: '${NOPE}'\n      title: x\n",
			`c.yaml:8: mapping.routes[0].project: environment variable NOPE is not set`},
	}
	for _, c := range cases {
		_, _, err := loadConfig(writeConfig(t, c.src), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v\nwant %q", c.name, err, c.want)
		}
	}

	// Every problem at once, in line order; a route naming a tracker that
	// exists but is invalid is not reported a second time.
	src := "server: {listen: x}\ntrackers:\n  - {name: j, type: gitlab}\nmapping:\n  routes:\n    - {name: r, kind: defect, tracker: j, project: QA, title: '{{'}\nlog: {level: loud}\n"
	path := writeConfig(t, src)
	_, _, err := loadConfig(path, nil)
	if err == nil {
		t.Fatal("want errors")
	}
	lines := strings.Split(strings.ReplaceAll(err.Error(), filepath.Dir(path)+"/", ""), "\n")
	want := []string{"c.yaml:1: server.listen", "c.yaml:1: qase.secrets", "c.yaml:3: trackers[0].type", "c.yaml:6: mapping.routes[0].title", "c.yaml:7: log.level"}
	if len(lines) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%s", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("problem %d = %q, want prefix %q", i, lines[i], w)
		}
	}
}

// TestLoadConfigExample: the repository's example configuration loads,
// with its routes and the qase_url var taken from qase.app_url.
func TestLoadConfigExample(t *testing.T) {
	cfg, m, err := loadConfig("../../config.example.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.RouteNames()) != 3 || cfg.Mapping == nil {
		t.Errorf("routes = %v", m.RouteNames())
	}
	if m.Vars()["qase_url"] != cfg.Qase.AppURL || cfg.Qase.AppURL == "" {
		t.Errorf("qase_url = %q, app_url = %q", m.Vars()["qase_url"], cfg.Qase.AppURL)
	}
}

// TestValidateNotes: validate accepts a condition whose meaning changed
// with expr and says, at its line, how to keep the former meaning.
func TestValidateNotes(t *testing.T) {
	src := "qase: {secrets: [s]}\ntrackers: [{name: d, type: dryrun}]\nmapping:\n  routes:\n    - name: r\n      kind: defect\n      tracker: d\n      project: QA\n      title: x\n      when: 'severity != \"trivial\"'\n"
	path := writeConfig(t, src)
	var out, errOut strings.Builder
	if err := cmdValidate([]string{"-c", path}, &out, &errOut); err != nil {
		t.Fatalf("validate: %v\n%s", err, errOut.String())
	}
	want := "note: " + path + `:10: mapping.routes[0].when: condition: col 10: severity != "trivial" is true when severity is missing (before expr it was false); to keep the former meaning write has(severity) && severity != "trivial"`
	if !strings.Contains(out.String(), want) || !strings.Contains(out.String(), ": OK (1 trackers, 1 routes: r)") {
		t.Errorf("validate printed:\n%s\nwant:\n%s", out.String(), want)
	}
}

// TestConditionVocabulary: every attribute the Qase adapter makes of the
// recorded webhook payloads is a name conditions can use directly
// (mapping.Attributes), so the vocabulary conditions compile against
// cannot fall behind the adapter.
func TestConditionVocabulary(t *testing.T) {
	files, err := filepath.Glob("../../testdata/qase/*.json")
	if err != nil || len(files) < 20 {
		t.Fatalf("payloads: %d, %v", len(files), err)
	}
	seen := 0
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := qase.Decode(body, qase.DecodeOptions{DefaultProject: "DEMO"}, time.Now())
		if err != nil || !ev.Ref.Kind.Valid() {
			continue // a kind that is not served
		}
		for k := range ev.Patch.Attrs {
			seen++
			name, _, _ := strings.Cut(k, "/") // grouped: reviewers/<member>
			if !slices.Contains(mapping.Attributes[ev.Ref.Kind], name) {
				t.Errorf("%s: attribute %q of a %s is missing from mapping.Attributes", filepath.Base(f), name, ev.Ref.Kind)
			}
		}
	}
	if seen < 20 {
		t.Fatalf("only %d attributes seen", seen)
	}
}

// The engine's own defaults (for callers without a configuration) are
// the configuration's: one number each, in two packages that may not
// import each other.
func TestEngineDefaultsAreTheConfigDefaults(t *testing.T) {
	w := config.Default().Worker
	if w.Concurrency != qsync.DefaultConcurrency || w.Gather != qsync.DefaultGather {
		t.Fatalf("config worker defaults %d jobs, gather %s; engine %d, %s", w.Concurrency, w.Gather, qsync.DefaultConcurrency, qsync.DefaultGather)
	}
}
