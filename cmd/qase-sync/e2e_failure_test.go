package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/adapters/github/githubfake"
	"github.com/qase-sync/qase-sync/adapters/jira/jirafake"
	"github.com/qase-sync/qase-sync/mapping"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// End-to-end tests for failure routes: run.completed webhooks through the
// real HTTP server and SQLite store; the Qase fake serves the runs' results
// and cases, the tracker fakes hold the issues.

const failProject = "SHOP"

// failGitHubRoutes files failures by case in GitHub; a run with more than
// half of its results failed (at least ten) is one environment issue.
var failGitHubRoutes = failRoutes("github", "acme/qa", `
    title: '{{if .environment}}Environment failure in run {{.run_id}}: {{.failed}} of {{.total}} results failed{{else}}Failing test: {{.case_title | default .signature}}{{end}}'
    body: |
      {{if .environment}}Run: {{.run_title}}. {{.outage_reason}}. Top signatures:
      {{range .top_lines}}- {{.}}
      {{end}}{{else}}Signature: {{.signature}}
      Message: {{.message}}
      Newest failing run: {{.run_title}}
      Failing runs: {{join ", " .failing_runs}} · occurrences: {{.occurrences}}
      {{code .stacktrace}}{{end}}
    labels: [qase-failure, '{{if .flaky}}flaky{{end}}', '{{if .environment}}environment{{end}}']
    status: '{{lookup "failure_status_to_github" .state}}'
    reason: '{{lookup "failure_reason_to_github" .state}}'
    comments:
      - from: entity
        body: '{{.comment.body}}'
    failure:
      outage: {failed_percent: 50, min_failed: 10}
`)

// failJiraRoutes files failures in Jira grouped by stack trace.
var failJiraRoutes = failRoutes("jira", "QA", `
    signature: '{{first_frame .stacktrace | mask}} {{oneline .message | mask}}'
    title: 'Failing: {{.signature}}'
    body: '{{.message}} (cases {{join ", " .case_ids}})'
    labels: [qase-failure]
    status: '{{lookup "failure_status_to_jira" .state}}'
    comments:
      - from: entity
        body: '{{.comment.body}}'
`)

// failRoutes is a routes table with one failure route, failures-to-TRACKER,
// from project SHOP into the tracker's project; keys is the rest of the
// route, indented under it.
func failRoutes(tracker, project, keys string) string {
	return "\nroutes:\n  - name: failures-to-" + tracker + "\n    kind: failure\n    projects: [" + failProject + "]\n" +
		"    tracker: " + tracker + "\n    project: " + project + keys
}

// failRig is a harness with the Qase fake holding project SHOP.
type failRig struct {
	*harness
	at time.Time
}

func newFailRig(t *testing.T, routes string) *failRig { return newFailRigOn(t, routes, "") }

// newFailRigOn is newFailRig on a store ("" SQLite, or a PostgreSQL DSN).
func newFailRigOn(t *testing.T, routes, store string) *failRig {
	h := newHarness(t, harnessOpts{qaseAPI: true, routes: routes, store: store, trackerYAML: "    rate: {per_second: 500, burst: 100}\n"})
	h.qase.AddProject(failProject)
	for c := int64(1); c <= 30; c++ {
		h.qase.PutCase(failProject, map[string]any{"id": c, "title": fmt.Sprintf("Case %d works", c)})
	}
	return &failRig{harness: h, at: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
}

// result is one result a run records.
type result struct {
	caseID  int64
	status  string
	message string
	stack   string
}

// putRun records a run of n cases in the Qase fake: the failing cases fail
// with a message and stack trace naming the run, the others pass; extra
// results are added as given.
func (r *failRig) putRun(run int64, n int, failing []int64, extra ...result) {
	r.at = r.at.Add(time.Hour)
	status := "passed"
	if len(failing) > 0 {
		status = "failed"
	}
	r.qase.PutRun(failProject, map[string]any{"id": run, "title": fmt.Sprintf("Nightly %d", run), "status_text": status})
	var rs []result
	for c := int64(1); c <= int64(n); c++ {
		st := "passed"
		if slices.Contains(failing, c) {
			st = "failed"
		}
		rs = append(rs, result{caseID: c, status: st, message: fmt.Sprintf("expected 200, got 500 (order %d)", run*1000+c),
			stack: fmt.Sprintf("AssertionError\n\tat com.acme.Case%dTest.run(Case%dTest.java:%d)\n", c, c, 40+run)})
	}
	rs = append(rs, extra...)
	for i, x := range rs {
		rec := map[string]any{"hash": fmt.Sprintf("run%d-%d-%d", run, x.caseID, i), "run_id": run, "case_id": x.caseID, "status": x.status,
			"end_time": r.at.Add(time.Duration(i) * time.Second).Format(time.RFC3339), "attachments": []any{}}
		if x.status == "failed" {
			rec["comment"], rec["stacktrace"] = x.message, x.stack
			rec["attachments"] = []any{map[string]any{"url": fmt.Sprintf("https://qase.example/att/%d-%d.png", run, x.caseID), "filename": "shot.png"}}
		}
		r.qase.PutResult(failProject, rec)
	}
}

// complete delivers run.completed for the run (Qase says nothing more);
// a repeated delivery is acknowledged as a duplicate.
func (r *failRig) complete(run int64, sec int64) {
	r.t.Helper()
	body := rrCraft(r.t, "run.completed.json", func(env, p map[string]any) {
		env["project_code"], env["timestamp"] = failProject, 1772355600+sec
		p["id"] = run
	})
	code, resp := r.post("/webhooks/qase", body, testSecret)
	if code != 202 && (code != 200 || !strings.Contains(resp, "duplicate")) {
		r.t.Errorf("run.completed for run %d: %d %s", run, code, resp)
	}
}

func (r *failRig) issuesByTitle() map[string]githubfake.IssueState {
	out := map[string]githubfake.IssueState{}
	for _, is := range rrIssues(r.gh, "acme/qa") {
		if _, dup := out[is.Title]; dup {
			r.t.Fatalf("two issues titled %q", is.Title)
		}
		out[is.Title] = is
	}
	return out
}

// TestFailureRecurringCasesOneIssueEach: three runs in which the same five
// cases fail give five issues with one recurrence comment per later run,
// under duplicate and reordered deliveries; three clean runs close each
// issue once.
func TestFailureRecurringCasesOneIssueEach(t *testing.T) {
	t.Parallel()
	r := newFailRig(t, failGitHubRoutes)
	failing := []int64{1, 2, 3, 4, 5}
	for run := int64(1); run <= 3; run++ {
		r.putRun(run, 20, failing)
	}
	r.complete(1, 1)
	r.drain()
	if got := len(r.issuesByTitle()); got != 5 {
		t.Fatalf("after run 1: %d issues, want 5", got)
	}
	// Run 3's webhook overtakes run 2's; both arrive twice.
	r.complete(3, 3)
	r.complete(3, 3)
	r.complete(2, 2)
	r.complete(3, 3)
	r.complete(2, 2)
	r.drain()
	issues := r.issuesByTitle()
	if len(issues) != 5 {
		t.Fatalf("after runs 2 and 3: %d issues, want 5: %v", len(issues), keys(issues))
	}
	for c := 1; c <= 5; c++ {
		is, ok := issues[fmt.Sprintf("Failing test: Case %d works", c)]
		if !ok {
			t.Fatalf("no issue for case %d: %v", c, keys(issues))
		}
		rrState(t, is, "open", "")
		if rrComments(is, "Failed again in run 2") != 1 || rrComments(is, "Failed again in run 3") != 1 || len(is.Comments) != 2 {
			t.Fatalf("case %d comments: %+v; want one per later run", c, is.Comments)
		}
		rrContains(t, "body", is.Body, "Signature: SHOP-", "Newest failing run: Nightly 3", "Failing runs: 1, 2, 3", "occurrences: 3", "Case"+fmt.Sprint(c)+"Test.java:43")
		if slices.Contains(is.Labels, "flaky") {
			t.Errorf("case %d labelled flaky: %v", c, is.Labels)
		}
	}
	// The reconciler re-reads recent runs: nothing new, nothing written.
	r.recQuietPass("after three runs")

	// Three clean runs close every issue once, with one comment.
	for run := int64(4); run <= 6; run++ {
		r.putRun(run, 20, nil)
		r.complete(run, run)
	}
	r.complete(6, 6)
	r.drain()
	r.recQuietPass("after closing")
	for title, is := range r.issuesByTitle() {
		rrState(t, is, "closed", "completed")
		if rrComments(is, "Passed 3 runs in a row (runs 4, 5, 6); closing.") != 1 || len(is.Comments) != 3 {
			t.Fatalf("%s comments: %+v; want one closing comment", title, is.Comments)
		}
	}
	// A failure after the close reopens the case's issue with one comment.
	r.putRun(7, 20, []int64{2})
	r.complete(7, 7)
	r.drain()
	for title, is := range r.issuesByTitle() {
		if title == "Failing test: Case 2 works" {
			rrState(t, is, "open", "reopened")
			if rrComments(is, "Failed again in run 7 (1 failed result); reopening.") != 1 {
				t.Fatalf("case 2 comments: %+v", is.Comments)
			}
			continue
		}
		rrState(t, is, "closed", "completed")
	}
	// Seven runs, seven events: repeated deliveries were duplicates, and
	// each run's ingest is a no-op for the tracker (its signatures' syncs
	// write).
	rrLedger(t, r.harness, 7)
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestFailureOutageFilesOneEnvironmentIssue: a run with 80% of its
// results failed is one environment issue, not twenty.
func TestFailureOutageFilesOneEnvironmentIssue(t *testing.T) {
	t.Parallel()
	r := newFailRig(t, failGitHubRoutes)
	var failing []int64
	for c := int64(1); c <= 20; c++ {
		failing = append(failing, c)
	}
	r.putRun(1, 25, failing)
	r.complete(1, 1)
	r.complete(1, 1)
	r.drain()
	issues := rrIssues(r.gh, "acme/qa")
	if len(issues) != 1 {
		t.Fatalf("%d issues, want one environment issue: %+v", len(issues), issues)
	}
	is := issues[0]
	if is.Title != "Environment failure in run 1: 20 of 25 results failed" || !slices.Contains(is.Labels, "environment") {
		t.Fatalf("environment issue %q labels %v", is.Title, is.Labels)
	}
	rrContains(t, "body", is.Body, "20 of 25 results failed (more than 50%)", "- SHOP-1 (1)", "Run: Nightly 1")
	// The run's events are folded into its snapshot, so retention can
	// prune them although no run route syncs the run.
	snap, err := r.a.store.Snapshot(context.Background(), qsync.EntityRef{Project: failProject, Kind: qsync.KindRun, ID: 1})
	if err != nil || snap.LastSeq == 0 || snap.State.Attrs["title"].V != "Nightly 1" {
		t.Fatalf("run snapshot %+v (err %v): want its event folded and its title read", snap, err)
	}
	rrState(t, is, "open", "")
	// The next, healthy run files the failures it has on their own...
	r.putRun(2, 25, []int64{3})
	r.complete(2, 2)
	r.drain()
	if got := len(rrIssues(r.gh, "acme/qa")); got != 2 {
		t.Fatalf("after a healthy run: %d issues, want the environment issue and case 3's", got)
	}
	// ... and closes the environment issue, once.
	r.complete(2, 2)
	r.drain()
	env := r.issuesByTitle()["Environment failure in run 1: 20 of 25 results failed"]
	rrState(t, env, "closed", "completed")
	if len(env.Comments) != 1 || rrComments(env, "Run 2 was not an outage; closing.") != 1 {
		t.Fatalf("environment issue comments %+v", env.Comments)
	}
	r.recQuietPass("after the outage")
}

// TestFailureFlakyCaseLabelledWithoutChurn: a case that fails and passes
// in one run (a retry), then flips across runs, is labelled flaky and its
// issue is neither closed nor reopened.
func TestFailureFlakyCaseLabelledWithoutChurn(t *testing.T) {
	t.Parallel()
	r := newFailRig(t, failGitHubRoutes)
	r.putRun(1, 10, []int64{6}, result{caseID: 6, status: "passed"}) // retried and passed
	r.complete(1, 1)
	r.drain()
	is := rrOnlyIssue(t, r.gh, "acme/qa")
	if !slices.Contains(is.Labels, "flaky") {
		t.Fatalf("labels %v, want flaky", is.Labels)
	}
	for run := int64(2); run <= 7; run++ {
		var failing []int64
		if run%2 == 0 {
			failing = []int64{6} // fails every other run
		}
		r.putRun(run, 10, failing)
		r.complete(run, run)
		r.drain()
		is = rrOnlyIssue(t, r.gh, "acme/qa")
		if is.State != "open" || !is.ClosedAt.IsZero() {
			t.Fatalf("after run %d the flaky issue is %s (closed at %v), want open throughout", run, is.State, is.ClosedAt)
		}
	}
	if !slices.Contains(is.Labels, "flaky") || rrComments(is, "closing") != 0 || rrComments(is, "reopening") != 0 {
		t.Fatalf("flaky issue labels %v comments %+v", is.Labels, is.Comments)
	}
	if got := len(is.Comments); got != 3 { // runs 2, 4 and 6 failed again
		t.Fatalf("%d comments, want one per failing run after the first: %+v", got, is.Comments)
	}
}

// TestFailureStackSignatureOneJiraIssue: two failures that differ only in
// line numbers and ids share a stack-trace signature: one Jira issue,
// which passes three runs later are closed.
func TestFailureStackSignatureOneJiraIssue(t *testing.T) {
	t.Parallel()
	r := newFailRig(t, failJiraRoutes)
	shared := func(line int, order int64) result {
		return result{status: "failed", message: fmt.Sprintf("order %d not found (request 3f2a9c1e-77b0-4c1d-9a2e-%012d)", order, order),
			stack: fmt.Sprintf("AssertionError\n\tat com.acme.OrderRepo.find(OrderRepo.java:%d)\n\tat com.acme.Case", line)}
	}
	a, b := shared(88, 1234), shared(91, 98765)
	a.caseID, b.caseID = 11, 12
	r.putRun(1, 10, nil, a, b)
	r.complete(1, 1)
	r.drain()
	issues := r.jira.Issues()
	if len(issues) != 1 {
		t.Fatalf("%d Jira issues, want one: %+v", len(issues), issues)
	}
	is := issues[0]
	if is.Summary != "Failing: at com.acme.OrderRepo.find(OrderRepo.java:<n>) order <n> not found (request <uuid>)" {
		t.Fatalf("summary %q", is.Summary)
	}
	rrContains(t, "description", is.Description, "cases 11, 12")
	// Cases 11 and 12 pass three runs in a row: the issue is done.
	for run := int64(2); run <= 4; run++ {
		r.putRun(run, 12, nil)
		r.complete(run, run)
	}
	r.drain()
	is, _ = r.jira.Issue(is.ID)
	if is.Status != "Done" || jiraComments(is, "closing") != 1 {
		t.Fatalf("status %q comments %+v; want Done with one closing comment", is.Status, is.Comments)
	}
}

// jiraComments counts the issue's comments containing s.
func jiraComments(is jirafake.IssueState, s string) int {
	return countBodies(is.Comments, func(c jirafake.CommentState) string { return c.Body }, s)
}

// countBodies counts the comments whose body contains s.
func countBodies[C any](cs []C, body func(C) string, s string) int {
	n := 0
	for _, c := range cs {
		if strings.Contains(body(c), s) {
			n++
		}
	}
	return n
}

// TestFailureResultHintsAndLostWebhooks: a result.* delivery naming its
// run is a hint to read the run; one without is acknowledged and ignored;
// a run whose webhook was lost is filed by the reconciler.
func TestFailureResultHintsAndLostWebhooks(t *testing.T) {
	t.Parallel()
	r := newFailRig(t, failGitHubRoutes)
	r.putRun(1, 10, []int64{4})
	body := []byte(`{"event_name":"result.created","timestamp":1772355601,"project_code":"SHOP","payload":{"hash":"x","run_id":1}}`)
	rrContains(t, "answer", rrSend(r.harness, "/webhooks/qase", body, 202), "accepted")
	body = []byte(`{"event_name":"result.updated","timestamp":1772355602,"project_code":"SHOP","payload":{"hash":"x"}}`)
	rrContains(t, "answer", rrSend(r.harness, "/webhooks/qase", body, 202), "ignored")
	r.drain()
	if is := rrOnlyIssue(t, r.gh, "acme/qa"); is.Title != "Failing test: Case 4 works" {
		t.Fatalf("issue %q", is.Title)
	}
	// Run 2's webhook never arrives: the reconciler reads recent runs.
	r.putRun(2, 10, []int64{4, 5})
	r.recReconcile()
	issues := r.issuesByTitle()
	if len(issues) != 2 || rrComments(issues["Failing test: Case 4 works"], "Failed again in run 2") != 1 {
		t.Fatalf("after reconcile: %v", issues)
	}
	caseReads := func() int {
		n := 0
		for _, rq := range r.qase.Requests() {
			if strings.HasPrefix(rq.Path, "/v1/case/") {
				n++
			}
		}
		return n
	}
	before := caseReads()
	r.recQuietPass("after the repair")
	if got := caseReads(); got != before {
		t.Errorf("a pass over runs recorded before read %d case titles again", got-before)
	}
	// Every new Qase request has the shape the API documents.
	for _, rq := range r.qase.Requests() {
		if strings.HasPrefix(rq.Path, "/v1/result/") && (rq.Query.Get("run") == "" || rq.Status != 200) {
			t.Errorf("result request %s %v answered %d", rq.Path, rq.Query, rq.Status)
		}
	}
}

// TestFailureRouteNeedsQaseToken: validate names the missing token.
func TestFailureRouteNeedsQaseToken(t *testing.T) {
	t.Parallel()
	h := &harness{t: t, jira: jirafake.New(), gh: githubfake.New(), dir: t.TempDir()}
	t.Cleanup(h.jira.Close)
	t.Cleanup(h.gh.Close)
	h.writeConfig(harnessOpts{routes: failGitHubRoutes}, "127.0.0.1:0")
	_, _, err := loadConfig(h.cfg, func(string) (string, bool) { return "", false })
	if err == nil || !strings.Contains(err.Error(), "qase.api_token: required: route failures-to-github files failed test results") {
		t.Fatalf("err = %v", err)
	}
}

// TestFailurePostgresRunsAtOnce: three runs' webhooks arrive together on
// PostgreSQL, so their ingests update the same signatures concurrently;
// every run still counts once.
func TestFailurePostgresRunsAtOnce(t *testing.T) {
	r := newFailRigOn(t, failGitHubRoutes, pgDatabase(t))
	for run := int64(1); run <= 3; run++ {
		r.putRun(run, 20, []int64{1, 2, 3, 4, 5})
	}
	var wg sync.WaitGroup
	for run := int64(1); run <= 3; run++ {
		wg.Add(2)
		go func() { defer wg.Done(); r.complete(run, run) }()
		go func() { defer wg.Done(); r.complete(run, run) }()
	}
	wg.Wait()
	r.drain()
	issues := r.issuesByTitle()
	if len(issues) != 5 {
		t.Fatalf("%d issues, want 5: %v", len(issues), keys(issues))
	}
	for title, is := range issues {
		rrContains(t, title, is.Body, "Failing runs: 1, 2, 3", "occurrences: 3")
		if len(is.Comments) != 2 {
			t.Fatalf("%s: comments %+v, want two recurrence comments", title, is.Comments)
		}
	}
}

// TestPlanRecordedRun: plan --run prints each signature's operations for
// a recorded run (testdata/qase/runs), retries labelled flaky.
func TestPlanRecordedRun(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	doc := `qase:
  secrets: ["plan-secret-value"]
  api_token: plan-qase-token
trackers:
  - name: github
    type: github
    token: plan-github-token
mapping:
` + indent(strings.Replace(failGitHubRoutes, "    failure:\n", "    signature: '"+mapping.StackSignature+"'\n    failure:\n", 1), "  ")
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	fixture := filepath.Join("..", "..", "testdata", "qase", "runs", "nightly-42.json")
	var out, errb bytes.Buffer
	if code := run([]string{"plan", "-c", cfg, "--run", fixture}, &out, &errb); code != 0 {
		t.Fatalf("plan --run: exit %d: %s", code, errb.String())
	}
	text := out.String()
	rrContains(t, "plan", text, "recorded run SHOP/run/42: 7 results, 3 failed", "route failures-to-github: 2 signatures",
		`signature "at com.acme.checkout.OrderApi.place(OrderApi.java:<n>) expected status <n>, got <n> (order <n>)"`,
		`create issue in acme/qa: "Failing test: Customer places an order"`, `create issue in acme/qa: "Failing test: User logs in"`,
		"POST /repos/acme/qa/issues")
	for _, secret := range []string{"plan-qase-token", "plan-github-token", "plan-secret-value"} {
		if strings.Contains(text, secret) {
			t.Fatalf("plan output shows a secret:\n%s", text)
		}
	}
	out.Reset()
	if code := run([]string{"plan", "-c", cfg, "--run", fixture, "--output", "json"}, &out, &errb); code != 0 {
		t.Fatalf("plan --run --output json: exit %d: %s", code, errb.String())
	}
	var got planRunOutput
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	flaky := 0
	for _, s := range got.Routes[0].Signatures {
		spec, _ := json.Marshal(s.Plan.Spec)
		if strings.Contains(string(spec), `"flaky"`) {
			flaky++
			rrContains(t, "flaky signature", s.Signature, "login.ts")
		}
	}
	if flaky != 1 {
		t.Fatalf("%d flaky signatures, want the retried login case only:\n%s", flaky, out.String())
	}
}

// TestExampleFailureRoute: the failure route config.example.yaml ships
// commented out loads once uncommented with an API token, and plans the
// recorded run; without the token, loading says the token is required.
func TestExampleFailureRoute(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "config.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	i := strings.Index(text, "    # - name: failures-to-github")
	if i < 0 {
		t.Fatal("config.example.yaml lacks the commented failure route")
	}
	var lines []string
	for _, l := range strings.Split(text[i:], "\n") {
		if strings.TrimSpace(l) == "#" {
			l = ""
		}
		lines = append(lines, strings.Replace(l, "    # ", "    ", 1))
	}
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte(text[:i]+strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadConfig(cfg, func(string) (string, bool) { return "", false }); err == nil || !strings.Contains(err.Error(), "qase.api_token: required") {
		t.Fatalf("without a token: err = %v", err)
	}
	t.Setenv("QASE_API_TOKEN", "example-qase-token")
	var out, errb bytes.Buffer
	if code := run([]string{"plan", "-c", cfg, "--run", filepath.Join("..", "..", "testdata", "qase", "runs", "nightly-42.json")}, &out, &errb); code != 0 {
		t.Fatalf("plan --run: exit %d: %s", code, errb.String())
	}
	rrContains(t, "plan", out.String(), "route failures-to-github: 3 signatures", `"Failing test: User logs in"`)
	// plan --event on a run's end says the failure route reads the run.
	out.Reset()
	if code := run([]string{"plan", "-c", cfg, "--event", filepath.Join("..", "..", "testdata", "qase", "run.completed.json")}, &out, &errb); code != 0 {
		t.Fatalf("plan --event: exit %d: %s", code, errb.String())
	}
	rrContains(t, "plan", out.String(), "route failures-to-github → tracker github (github): ingest:", "route failed-runs-to-github")
}

// TestFailureLostDatabase: after the database is lost, a reconcile pass
// re-reads the recent runs and adopts the marked issues: no second issue,
// no comment posted twice, no field written from nothing.
func TestFailureLostDatabase(t *testing.T) {
	t.Parallel()
	o := harnessOpts{qaseAPI: true, routes: failGitHubRoutes, trackerYAML: "    rate: {per_second: 500, burst: 100}\n"}
	r := newFailRig(t, failGitHubRoutes)
	for run := int64(1); run <= 2; run++ {
		r.putRun(run, 20, []int64{1, 2})
		r.complete(run, run)
	}
	r.drain()
	before := r.issuesByTitle()
	if len(before) != 2 {
		t.Fatalf("%d issues before the loss, want 2", len(before))
	}
	recLoseDatabase(t, r.harness)
	r.start(o)
	r.recReconcile()
	after := r.issuesByTitle()
	if len(after) != 2 {
		t.Fatalf("%d issues after the loss, want the same 2: %v", len(after), keys(after))
	}
	for title, is := range after {
		was := before[title]
		if is.Number != was.Number || is.Body != was.Body || len(is.Comments) != 1 || is.State != "open" {
			t.Fatalf("%s after the loss: #%d %s, comments %+v, body changed %v; want #%d unchanged with its one comment",
				title, is.Number, is.State, is.Comments, is.Body != was.Body, was.Number)
		}
	}
	r.recQuietPass("after the repair")
}
