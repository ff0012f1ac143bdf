package mapping

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	qsync "github.com/qase-sync/qase-sync/sync"
)

func TestMask(t *testing.T) {
	tests := []struct{ in, want string }{
		{"expected 200 but got 503", "expected <n> but got <n>"},
		{"user 3f2a9c1e-77b0-4c1d-9a2e-0b8f6c4d2e11 not found", "user <uuid> not found"},
		{"at 2026-03-01T12:00:05.123Z the job failed", "at <ts> the job failed"},
		{"at 2026-03-01 12:00:05 the job failed", "at <ts> the job failed"},
		{"segfault at 0x7ffd5e8c", "segfault at <hex>"},
		{"commit deadbeef1234 is missing", "commit <hex> is missing"},
		{"the face was added", "the face was added"}, // short hex-looking words stay
		{"TestLogin2fa failed", "TestLogin2fa failed"},
	}
	for _, tc := range tests {
		if got := Mask(tc.in); got != tc.want {
			t.Errorf("Mask(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestFirstFrame(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"java", "java.lang.AssertionError: expected 1\n\tat com.acme.LoginTest.login(LoginTest.java:42)\n\tat sun.reflect.X", "at com.acme.LoginTest.login(LoginTest.java:42)"},
		{"js", "Error: boom\n    at Context.<anonymous> (test/login.spec.js:17:9)\n    at next", "at Context.<anonymous> (test/login.spec.js:17:9)"},
		{"python", "Traceback (most recent call last):\n  File \"tests/test_login.py\", line 12, in test_login\n    assert x", "File \"tests/test_login.py\", line 12, in test_login"},
		{"go", "login_test.go:31: want 200, got 500\n", "login_test.go:31: want 200, got 500"},
		{"no frame", "\n  something broke\nmore", "something broke"},
		{"empty", "", ""},
	}
	for _, tc := range tests {
		if got := FirstFrame(tc.in); got != tc.want {
			t.Errorf("%s: FirstFrame = %q, want %q", tc.name, got, tc.want)
		}
	}
}

const failureRoutes = `
routes:
  - name: by-case
    kind: failure
    tracker: gh
    tracker_type: github
    project: acme/qa
    title: '{{if .environment}}Environment failure in run {{.run_id}}{{else}}Failing: {{.case_title | default .signature}}{{end}}'
    status: '{{lookup "failure_status_to_github" .state}}'
    labels: ['{{if .flaky}}flaky{{end}}']
    comments:
      - from: entity
        body: '{{.comment.body}}'
  - name: by-stack
    kind: failure
    tracker: gh
    tracker_type: github
    project: acme/qa
    signature: '` + StackSignature + `'
    title: 'Failing: {{.signature}}'
    failure:
      close_after: 2
      flaky_window: 4
      file_flaky_after: 3
      outage: {failed_percent: 60, same_signature: 30, min_failed: 5}
      reconcile_runs: 7
`

func loadFailureRoutes(t *testing.T) *Mapping {
	t.Helper()
	m, err := Parse("routes.yaml", []byte(failureRoutes), Options{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSignatures(t *testing.T) {
	m := loadFailureRoutes(t)
	res := qsync.FailureResult{CaseID: 42, RunID: 7, Status: "failed", Message: "order 1234 not found after 30s",
		Stacktrace: "AssertionError\n\tat com.acme.OrderTest.find(OrderTest.java:88)\n"}
	if got, err := m.Signature("by-case", "SHOP", res); err != nil || got != "SHOP-42" {
		t.Fatalf("default signature = %q, %v; want SHOP-42", got, err)
	}
	a, err := m.Signature("by-stack", "SHOP", res)
	if err != nil {
		t.Fatal(err)
	}
	// Another case, another run: only line numbers and ids differ.
	other := res
	other.CaseID, other.RunID = 43, 8
	other.Message = "order 98765 not found after 31s"
	other.Stacktrace = "AssertionError\n\tat com.acme.OrderTest.find(OrderTest.java:91)\n"
	b, err := m.Signature("by-stack", "SHOP", other)
	if err != nil {
		t.Fatal(err)
	}
	if a != b || a != "at com.acme.OrderTest.find(OrderTest.java:<n>) order <n> not found after <n>s" {
		t.Fatalf("stack signatures %q and %q; want one masked signature", a, b)
	}
	third := res
	third.Stacktrace = "AssertionError\n\tat com.acme.CartTest.add(CartTest.java:88)\n"
	if c, _ := m.Signature("by-stack", "SHOP", third); c == a {
		t.Fatalf("a different frame gave the same signature %q", c)
	}
}

func TestFailurePolicy(t *testing.T) {
	m := loadFailureRoutes(t)
	p, ok := m.FailurePolicy("by-stack")
	want := qsync.FailurePolicy{CloseAfter: 2, FlakyWindow: 4, FileFlakyAfter: 3, OutagePercent: 60, OutageSignature: 30, OutageMinFailed: 5,
		ReconcileRuns: 7, KeepRuns: qsync.DefaultKeepRuns}
	if !ok || p != want {
		t.Fatalf("policy = %+v, %v; want %+v", p, ok, want)
	}
	if p, _ := m.FailurePolicy("by-case"); p != (qsync.FailurePolicy{}).WithDefaults() {
		t.Fatalf("default policy = %+v", p)
	}
	if _, ok := m.FailurePolicy("nope"); ok {
		t.Fatal("unknown route has a policy")
	}
}

func TestFailureRouteErrors(t *testing.T) {
	tests := []struct{ doc, want string }{
		{`routes: [{name: d, kind: defect, tracker: gh, tracker_type: github, project: a/b, title: x, signature: '{{.case_id}}'}]`, "only failure routes take signature"},
		{`routes: [{name: f, kind: failure, tracker: gh, tracker_type: github, project: a/b, title: x, signature: '{{.case_id'}]`, "signature"},
		{`routes: [{name: f, kind: failure, tracker: gh, tracker_type: github, project: a/b, title: x, failure: {outage: {failed_percent: 120}}}]`, "failure.outage.failed_percent: must be between 0 and 100"},
		{`routes: [{name: f, kind: failure, tracker: gh, tracker_type: github, project: a/b, title: x, failure: {close_after: -1}}]`, "failure.close_after: must not be negative"},
		{`routes: [{name: f, kind: failure, tracker: gh, tracker_type: github, project: a/b, title: x, failure: {close_aftr: 4}}]`, "close_aftr"},
		{`routes: [{name: f, kind: failure, tracker: gh, tracker_type: github, project: a/b, title: x, failure: {keep_runs: 4}}]`, "failure.keep_runs: must be at least close_after and flaky_window (5)"},
		{`routes: [{name: f, kind: failure, tracker: gh, tracker_type: github, project: a/b, title: x, events: [run.started]}]`, "unknown failure event"},
	}
	for _, tc := range tests {
		_, err := Parse("r.yaml", []byte(tc.doc), Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s\n  err = %v, want %q", tc.doc, err, tc.want)
		}
	}
}

func TestFailureRoutesTakeRunEndsAndResultHints(t *testing.T) {
	m := loadFailureRoutes(t)
	for _, ev := range []string{"run.completed", "run.aborted", "result.created", "result.updated"} {
		if got := m.Routes(ev, "SHOP", qsync.KindRun); len(got) != 2 {
			t.Errorf("%s: routes %v, want both failure routes", ev, got)
		}
	}
	if got := m.Routes("run.started", "SHOP", qsync.KindRun); len(got) != 0 {
		t.Errorf("run.started: routes %v, want none", got)
	}
}

func TestFailureDesired(t *testing.T) {
	m := loadFailureRoutes(t)
	ref := qsync.FailureRef("by-case", "SHOP", "SHOP-42")
	runs := []qsync.FailureRun{
		{Run: 1, Signature: "SHOP-42", Failed: 1, Cases: []int64{42}, CaseTitle: "Checkout"},
		{Run: 2, Signature: "SHOP-42", Failed: 1, Cases: []int64{42}},
	}
	st := stateOf(runs...)
	d, err := m.Desired("by-case", qsync.FailureEntity(ref, st, qsync.FailurePolicy{}))
	if err != nil {
		t.Fatal(err)
	}
	if !d.Create || d.Spec.Title != "Failing: Checkout" || d.Spec.Status != "open" || len(d.Spec.Comments) != 1 || d.Spec.Comments[0].ID != "failure-run-2" {
		t.Fatalf("open failure: create %v spec %+v", d.Create, d.Spec)
	}
	closed := append(runs, qsync.FailureRun{Run: 3, Passed: 1, Cases: []int64{42}}, qsync.FailureRun{Run: 4, Passed: 1, Cases: []int64{42}},
		qsync.FailureRun{Run: 5, Passed: 1, Cases: []int64{42}})
	d, err = m.Desired("by-case", qsync.FailureEntity(ref, stateOf(closed...), qsync.FailurePolicy{}))
	if err != nil {
		t.Fatal(err)
	}
	if d.Create || d.Spec.Status != "closed" {
		t.Fatalf("closed failure: create %v status %q; want no create, closed", d.Create, d.Spec.Status)
	}
	// Nothing stored (a restored store): nothing known, nothing written.
	d, err = m.Desired("by-case", qsync.FailureEntity(ref, qsync.State{}, qsync.FailurePolicy{}))
	if err != nil {
		t.Fatal(err)
	}
	if d.Create || !slices.Contains(d.Unknown, "title") || !slices.Contains(d.Unknown, "status") {
		t.Fatalf("unknown failure: create %v unknown %v; want no create, title and status unknown", d.Create, d.Unknown)
	}
	env := qsync.FailureRef("by-case", "SHOP", qsync.OutageSignature(9))
	var es qsync.State
	es.Attrs = map[string]qsync.Attr{}
	for k, v := range qsync.OutageAttrs(qsync.Outage{Run: 9, Total: 10, Failed: 8, Percent: 80}) {
		es.Attrs[k] = qsync.Attr{V: v}
	}
	d, err = m.Desired("by-case", qsync.FailureEntity(env, es, qsync.FailurePolicy{}))
	if err != nil {
		t.Fatal(err)
	}
	if !d.Create || d.Spec.Title != "Environment failure in run 9" || d.Spec.Status != "open" {
		t.Fatalf("environment: create %v title %q status %q", d.Create, d.Spec.Title, d.Spec.Status)
	}
	es.Attrs["status"], es.Attrs["recovered_run"] = qsync.Attr{V: "closed"}, qsync.Attr{V: float64(10)}
	d, err = m.Desired("by-case", qsync.FailureEntity(env, es, qsync.FailurePolicy{}))
	if err != nil {
		t.Fatal(err)
	}
	if d.Create || d.Spec.Status != "closed" || len(d.Spec.Comments) != 1 || d.Spec.Comments[0].Body != "Run 10 was not an outage; closing." {
		t.Fatalf("recovered environment: create %v status %q comments %+v", d.Create, d.Spec.Status, d.Spec.Comments)
	}
}

// stateOf stores runs as ingest does: one "runs/<id>" attribute each.
func stateOf(runs ...qsync.FailureRun) qsync.State {
	st := qsync.State{Attrs: map[string]qsync.Attr{}}
	for _, r := range runs {
		st.Attrs["runs/"+strconv.FormatInt(r.Run, 10)] = qsync.Attr{V: map[string]any{"run": float64(r.Run), "signature": r.Signature, "failed": float64(r.Failed),
			"passed": float64(r.Passed), "cases": []any{float64(r.Cases[0])}, "case_title": r.CaseTitle}}
	}
	return st
}

// TestDocsFailureRouteLoads: the failure route docs/mapping.md shows loads.
func TestDocsFailureRouteLoads(t *testing.T) {
	b, err := os.ReadFile("../docs/mapping.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, "```yaml\n- name: failures-to-jira")
	if i < 0 {
		t.Fatal("docs/mapping.md lacks the failure route example")
	}
	block := doc[i+len("```yaml\n"):]
	block = block[:strings.Index(block, "```")]
	src := "routes:\n" + strings.ReplaceAll("  "+strings.TrimRight(block, "\n"), "\n", "\n  ") + "\n    tracker_type: jira\n"
	m, err := Parse("docs.yaml", []byte(src), Options{})
	if err != nil {
		t.Fatalf("%v\n%s", err, src)
	}
	if p, _ := m.FailurePolicy("failures-to-jira"); p.OutagePercent != 50 || p.OutageSignature != 25 || p.KeepRuns != 50 {
		t.Fatalf("policy %+v", p)
	}
}
