package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/qase-sync/qase-sync/adapters/github/githubfake"
	"github.com/qase-sync/qase-sync/adapters/jira/jirafake"
	"github.com/qase-sync/qase-sync/adapters/qase/qasefake"
	"github.com/qase-sync/qase-sync/internal/testhttp"
	"github.com/qase-sync/qase-sync/internal/trackerhook"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// Two-way routes: tracker changes flow back to Qase through the tracker
// webhooks, the inbox and the same worker path; the fakes send a webhook for
// every change, including qase-sync's own, so echo loops would show up in
// their request logs.

const (
	jiraHookToken = "jira-hook-token-value"
	ghHookSecret  = "github-hook-secret-value"
)

const twoWayRoutes = `routes:
  - name: defects-to-jira
    kind: defect
    projects: [ID]
    tracker: jira
    project: QA
    issue_type: Bug
    title: '{{.title | default "Qase defect"}}'
    body: '{{.actual_result}}'
    labels: [qase]
    status: '{{lookup "defect_status_to_jira" .state}}'
    comments:
      - id: resolved
        when: 'status == "resolved"'
        body: 'The defect was resolved in Qase.'
    two_way:
      fields: {status: both}
      status:
        Done: resolved
        In Progress: in_progress
  - name: defects-to-github
    kind: defect
    projects: [GH]
    tracker: github
    project: acme/qa
    title: '{{.title | default "Qase defect"}}'
    body: '{{.actual_result}}'
    labels: [qase]
    status: '{{lookup "defect_status_to_github" .state}}'
    reason: '{{lookup "defect_reason_to_github" .state}}'
    two_way:
      fields: {status: both}
      status:
        "closed:completed": resolved
        "closed:not_planned": invalid
`

func newTwoWayHarness(t *testing.T, hooks bool) *harness {
	t.Helper()
	return newTwoWayHarnessOn(t, hooks, "")
}

// redeliverer is a fake tracker that sends webhooks and can send one again.
type redeliverer[D any] interface {
	Deliveries() []trackerhook.Sent[D]
	Redeliver(id string) bool
}

// redeliverLast sends f's last webhook again and checks the receiver
// answered 200, a duplicate.
func redeliverLast[D any](t *testing.T, h *harness, f redeliverer[D]) {
	t.Helper()
	dels := f.Deliveries()
	last := dels[len(dels)-1]
	if !f.Redeliver(last.ID) {
		t.Fatal("redeliver failed")
	}
	h.settle()
	if got := f.Deliveries(); got[len(got)-1].Status != http.StatusOK || got[len(got)-1].ID != last.ID {
		t.Fatalf("redelivery %s answered %d, want 200 (duplicate of %s)", got[len(got)-1].ID, got[len(got)-1].Status, last.ID)
	}
}

// fileLoginDefect stores open defect ID-1, delivers its defect.created
// and returns the Jira issue filed for it.
func fileLoginDefect(t *testing.T, h *harness) jirafake.IssueState {
	t.Helper()
	h.qase.PutDefect("ID", map[string]any{"id": 1, "title": "Login fails", "actual_result": "500", "severity": "normal", "status": "open"})
	h.deliver("defect.created.json", http.StatusAccepted)
	h.settle()
	return onlyIssue(t, h.jira)
}

func newTwoWayHarnessOn(t *testing.T, hooks bool, store string) *harness {
	t.Helper()
	o := harnessOpts{qaseAPI: true, routes: twoWayRoutes, store: store,
		trackerYAML: "    webhook_secrets: [\"" + jiraHookToken + "\", \"" + ghHookSecret + "\"]\n",
		extraYAML:   "reconcile:\n  enabled: false\n  projects: [ID, GH]\n"}
	h := newHarness(t, o)
	h.qase.AddProject("ID")
	h.qase.AddProject("GH")
	if hooks {
		h.jira.SetWebhook(h.url+"/webhooks/jira?token="+jiraHookToken, "")
		h.gh.SetWebhook(h.url+"/webhooks/github", ghHookSecret)
	}
	return h
}

// settle drains the queue until the trackers' webhooks (sent for
// qase-sync's own writes too) stop causing work.
func (h *harness) settle() {
	h.t.Helper()
	for range 10 {
		h.drain()
		n := len(h.jira.Deliveries()) + len(h.gh.Deliveries())
		h.jira.WaitWebhooks()
		h.gh.WaitWebhooks()
		h.drain()
		if len(h.jira.Deliveries())+len(h.gh.Deliveries()) == n {
			return
		}
	}
	h.t.Fatal("webhooks never settled")
}

func deliverFor(t *testing.T, h *harness, file, project string, id int) {
	t.Helper()
	body := mustRead(t, file)
	body = bytes.Replace(body, []byte(`"project_code": "ID"`), []byte(`"project_code": "`+project+`"`), 1)
	body = bytes.Replace(body, []byte(`"id": 1`), []byte(`"id": `+itoa(id)), 1)
	if code, resp := h.post("/webhooks/qase", body, testSecret); code != http.StatusAccepted && code != http.StatusOK {
		t.Fatalf("deliver %s: %d %s", file, code, resp)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func qaseWrites(q *qasefake.Server) []string {
	var out []string
	for _, r := range q.Writes() {
		out = append(out, r.Method+" "+r.Path+" "+strings.TrimSpace(r.Body))
	}
	return out
}

func defectStatus(t *testing.T, q *qasefake.Server, project string, id int64) string {
	t.Helper()
	rec, ok := q.Defect(project, id)
	if !ok {
		t.Fatalf("defect %s/%d missing", project, id)
	}
	s, _ := rec["status"].(string)
	return s
}

// TestTwoWayJira: a Qase change reaches Jira with one write and its Jira
// webhook echo writes nothing back; a person moving the issue to Done
// resolves the defect with one Qase write, and neither that write's Qase
// webhook nor the Jira webhook writes anything more.
func TestTwoWayJira(t *testing.T) {
	h := newTwoWayHarness(t, true)
	is := fileLoginDefect(t, h)
	if is.Status != "To Do" {
		t.Fatalf("created status %q", is.Status)
	}
	if w := qaseWrites(h.qase); len(w) != 0 {
		t.Fatalf("creating wrote to qase: %v", w)
	}

	// Qase → Jira: exactly one Jira write, no Qase write from its echo.
	jw := h.jira.WriteCount()
	h.qase.PutDefect("ID", map[string]any{"id": 1, "title": "Login fails", "actual_result": "500", "severity": "normal", "status": "in_progress"})
	h.deliver("defect.updated.json", http.StatusAccepted)
	h.settle()
	if is = onlyIssue(t, h.jira); is.Status != "In Progress" {
		t.Fatalf("status after qase change %q", is.Status)
	}
	if d := h.jira.WriteCount() - jw; d != 1 {
		t.Fatalf("jira writes for one qase change = %d, want 1", d)
	}
	if w := qaseWrites(h.qase); len(w) != 0 {
		t.Fatalf("the jira echo wrote to qase: %v", w)
	}
	if len(h.jira.Deliveries()) == 0 {
		t.Fatal("the jira fake sent no webhook for the transition")
	}

	// Jira → Qase: a person moves the issue to Done.
	jw = h.jira.WriteCount()
	h.jira.Edit(is.ID, func(s *jirafake.IssueState) { s.Status, s.Resolution = "Done", "Done" })
	h.settle()
	if st := defectStatus(t, h.qase, "ID", 1); st != "resolved" {
		t.Fatalf("qase status after Done = %q, want resolved; logs:\n%s", st, tail(h.logs.String(), 30))
	}
	w := qaseWrites(h.qase)
	if len(w) != 1 || !strings.HasPrefix(w[0], "PATCH /v1/defect/ID/status/1") || !strings.Contains(w[0], `"resolved"`) {
		t.Fatalf("qase writes = %v, want one status write", w)
	}
	// Qase's webhook for that write (defect.resolved) must not write to Jira:
	// no transition, and no "resolved in Qase" comment for a change Jira made.
	h.deliver("defect.resolved.json", http.StatusAccepted)
	h.settle()
	if d := h.jira.WriteCount() - jw; d != 0 {
		t.Fatalf("jira writes after a person's change = %d, want 0 (echo); requests: %+v", d, h.jira.Requests()[len(h.jira.Requests())-3:])
	}
	if is = onlyIssue(t, h.jira); len(is.Comments) != 0 || is.Status != "Done" {
		t.Fatalf("issue after echo: status %q comments %q", is.Status, commentBodies(is.Comments))
	}
	if w := qaseWrites(h.qase); len(w) != 1 {
		t.Fatalf("qase writes after echo = %v", w)
	}
	h.recNoDeadLetters()
	// The ledger names the write back.
	k := qsync.Key{Route: "defects-to-jira", EntityRef: qsync.EntityRef{Project: "ID", Kind: qsync.KindDefect, ID: 1}}
	entries, err := h.a.store.Ledger(context.Background(), k, 20)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range entries {
		for _, op := range e.Ops {
			found = found || op == "qase_status:resolved"
		}
	}
	if !found {
		t.Fatalf("no ledger entry records qase_status:resolved: %+v", entries)
	}
	// No secret in the logs.
	for _, s := range []string{"test-qase-token", jiraHookToken, ghHookSecret} {
		if strings.Contains(h.logs.String(), s) {
			t.Fatalf("logs contain secret %q", s)
		}
	}
}

// TestTwoWayGitHub: closed as completed → resolved; closed as not planned →
// invalid (the example mapping); a redelivered webhook is a duplicate and
// writes nothing; bad signatures are refused and store nothing.
func TestTwoWayGitHub(t *testing.T) {
	h := newTwoWayHarness(t, true)
	for id := 1; id <= 2; id++ {
		h.qase.PutDefect("GH", map[string]any{"id": id, "title": "Defect " + itoa(id), "actual_result": "x", "severity": "normal", "status": "open"})
		deliverFor(t, h, "defect.created.json", "GH", id)
	}
	h.settle()
	issues := h.gh.Issues("acme/qa")
	if len(issues) != 2 {
		t.Fatalf("github issues = %d", len(issues))
	}
	issueOf := func(id int) int {
		for _, is := range issues {
			if strings.Contains(is.Body, "GH/defect/"+itoa(id)+" ") {
				return is.Number
			}
		}
		t.Fatalf("no issue for defect %d", id)
		return 0
	}
	ghw := h.gh.WriteCount()
	h.gh.EditIssue("acme/qa", issueOf(1), func(s *githubfake.IssueState) { s.State, s.StateReason = "closed", "completed" })
	h.gh.EditIssue("acme/qa", issueOf(2), func(s *githubfake.IssueState) { s.State, s.StateReason = "closed", "not_planned" })
	h.settle()
	if a, b := defectStatus(t, h.qase, "GH", 1), defectStatus(t, h.qase, "GH", 2); a != "resolved" || b != "invalid" {
		t.Fatalf("qase statuses = %q, %q; want resolved, invalid; logs:\n%s", a, b, tail(h.logs.String(), 30))
	}
	if w := qaseWrites(h.qase); len(w) != 2 {
		t.Fatalf("qase writes = %v, want 2", w)
	}
	// Qase's webhooks for those writes: no GitHub write.
	deliverFor(t, h, "defect.resolved.json", "GH", 1)
	deliverFor(t, h, "defect.updated.json", "GH", 2)
	h.settle()
	if d := h.gh.WriteCount() - ghw; d != 0 {
		t.Fatalf("github writes after people's changes = %d, want 0", d)
	}

	// A duplicate delivery (same X-GitHub-Delivery) is stored once and
	// causes no second sync: no job, no ledger entry, no read of either side.
	ledgers := func() (n int) {
		for id := int64(1); id <= 2; id++ {
			k := qsync.Key{Route: "defects-to-github", EntityRef: qsync.EntityRef{Project: "GH", Kind: qsync.KindDefect, ID: id}}
			es, err := h.a.store.Ledger(context.Background(), k, 100)
			if err != nil {
				t.Fatal(err)
			}
			n += len(es)
		}
		return n
	}
	jobsRun := func() (n float64) {
		_, samples := scrapeMetrics(t, h.url)
		for _, s := range samples {
			if s.name == "qase_sync_jobs_total" && s.labels["route"] == "defects-to-github" {
				n += s.value
			}
		}
		return n
	}
	before, ledgerBefore, jobsBefore := h.eventStatus(), ledgers(), jobsRun()
	ghReqs, qaseReqs := len(h.gh.Requests()), h.qase.RequestCount()
	redeliverLast(t, h, h.gh)
	after := h.eventStatus()
	if after.Applied+after.Noop+after.Dead != before.Applied+before.Noop+before.Dead {
		t.Fatalf("duplicate stored: %+v → %+v", before, after)
	}
	if n, err := h.a.store.QueueDepth(context.Background()); err != nil || n != 0 {
		t.Fatalf("queue depth after the duplicate = %d, %v; want 0", n, err)
	}
	if d := ledgers() - ledgerBefore; d != 0 {
		t.Fatalf("duplicate added %d ledger entries, want 0 (one sync per delivery)", d)
	}
	if d := jobsRun() - jobsBefore; d != 0 {
		t.Fatalf("duplicate ran %v jobs, want 0", d)
	}
	if d := len(h.gh.Requests()) - ghReqs; d != 0 {
		t.Fatalf("duplicate made %d github requests, want 0: %+v", d, h.gh.Requests()[ghReqs:])
	}
	if d := h.qase.RequestCount() - qaseReqs; d != 0 {
		t.Fatalf("duplicate made %d qase requests, want 0", d)
	}
	if w := qaseWrites(h.qase); len(w) != 2 {
		t.Fatalf("duplicate wrote to qase: %v", w)
	}

	// Bad or missing signatures: 401, nothing stored.
	body := []byte(`{"action":"closed","issue":{"number":1,"body":"<!-- qase-sync:marker qase-sync:defects-to-github:GH/defect/1 -->"}}`)
	for _, sig := range []string{"", "sha256=00", "sha1=abc"} {
		req, _ := http.NewRequest(http.MethodPost, h.url+"/webhooks/github", bytes.NewReader(body))
		req.Header.Set("X-GitHub-Event", "issues")
		if sig != "" {
			req.Header.Set("X-Hub-Signature-256", sig)
		}
		if resp, _ := testhttp.Do(t, nil, req); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("signature %q: %d, want 401", sig, resp.StatusCode)
		}
	}
	for _, u := range []string{"/webhooks/jira", "/webhooks/jira?token=wrong"} {
		if code, _ := h.post(u, []byte(`{"webhookEvent":"jira:issue_updated","issue":{"id":"10000"}}`), ""); code != http.StatusUnauthorized {
			t.Fatalf("jira %s: %d, want 401", u, code)
		}
	}
	if st := h.eventStatus(); st != after {
		t.Fatalf("refused deliveries stored something: %+v → %+v", after, st)
	}
	// /metrics counts tracker deliveries by result (and holds no secret).
	metricsText, samples := scrapeMetrics(t, h.url)
	count := func(tracker, result string) float64 {
		for _, s := range samples {
			if s.name == "qase_sync_tracker_webhook_events_total" && s.labels["tracker"] == tracker && s.labels["result"] == result {
				return s.value
			}
		}
		return 0
	}
	if count("github", "rejected") != 3 || count("jira", "rejected") != 2 || count("github", "duplicate") != 1 || count("github", "accepted") < 2 {
		t.Fatalf("tracker webhook metrics: rejected gh %v jira %v, duplicate %v, accepted %v",
			count("github", "rejected"), count("jira", "rejected"), count("github", "duplicate"), count("github", "accepted"))
	}
	if strings.Contains(metricsText, ghHookSecret) || strings.Contains(metricsText, jiraHookToken) {
		t.Fatal("a webhook secret reached /metrics")
	}
}

// TestTwoWayReconcileRepairsMissedWebhook: without tracker webhooks, the
// reconciler reads the issue and writes the change back; its dry run shows
// the inbound op first, and a second pass writes nothing.
func TestTwoWayReconcileRepairsMissedWebhook(t *testing.T) {
	h := newTwoWayHarness(t, false)
	is := fileLoginDefect(t, h)
	h.jira.Edit(is.ID, func(s *jirafake.IssueState) { s.Status, s.Resolution = "Done", "Done" })

	rep, err := h.a.engine.Reconcile(context.Background(), qsync.ReconcileOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	var planned []string
	for _, k := range rep.Keys {
		for _, op := range k.Ops {
			planned = append(planned, op.String())
		}
	}
	if !strings.Contains(strings.Join(planned, " "), "qase_status:resolved") || rep.ByClass[qsync.DriftInbound] != 1 {
		t.Fatalf("dry run = %+v (ops %v), want qase_status:resolved", rep, planned)
	}
	if w := qaseWrites(h.qase); len(w) != 0 {
		t.Fatalf("dry run wrote: %v", w)
	}
	jw := h.jira.WriteCount()
	h.recReconcile()
	if st := defectStatus(t, h.qase, "ID", 1); st != "resolved" {
		t.Fatalf("after reconcile: %q, want resolved; logs:\n%s", st, tail(h.logs.String(), 30))
	}
	if d := h.jira.WriteCount() - jw; d != 0 {
		t.Fatalf("reconcile wrote %d times to jira", d)
	}
	h.recReconcile()
	if w := qaseWrites(h.qase); len(w) != 1 {
		t.Fatalf("qase writes after two passes = %v, want 1", w)
	}
	if d := h.jira.WriteCount() - jw; d != 0 {
		t.Fatalf("second pass wrote %d times to jira", d)
	}
}

func runCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String() + errb.String()
}

// TestAdoptIssues: links adopt stamps the marker on existing issues and
// links them, one by one or by a tracker query (JQL, GitHub label); the
// next sync brings them to what the route wants, creating nothing.
func TestAdoptIssues(t *testing.T) {
	h := newTwoWayHarness(t, false)
	h.waitVouched()
	for _, id := range []int{5, 6, 7} {
		h.qase.PutDefect("ID", map[string]any{"id": id, "title": "Defect " + itoa(id), "actual_result": "x", "severity": "normal", "status": "open"})
	}
	h.qase.PutDefect("GH", map[string]any{"id": 3, "title": "Defect 3", "actual_result": "x", "severity": "normal", "status": "open"})
	single := h.jira.AddIssue(jirafake.IssueState{Project: "QA", Type: "Bug", Summary: "Crash on save", Status: "To Do", Labels: []string{"triage"}})
	h.jira.AddIssue(jirafake.IssueState{Project: "QA", Type: "Bug", Summary: "[ID-6] first", Status: "To Do", Labels: []string{"from-qase"}})
	h.jira.AddIssue(jirafake.IssueState{Project: "QA", Type: "Bug", Summary: "[ID-7] second", Status: "To Do", Labels: []string{"from-qase"}})
	h.jira.AddIssue(jirafake.IssueState{Project: "QA", Type: "Bug", Summary: "names no defect", Status: "To Do", Labels: []string{"from-qase"}})
	ghNum := h.gh.AddIssue("acme/qa", githubfake.IssueState{Title: "[GH-3] legacy", Body: "filed by hand", Labels: []string{"legacy"}})

	code, out := runCmd(t, "links", "adopt", "-c", h.cfg, "--route", "defects-to-jira", "--entity", "ID/defect/5", "--issue", single.Key)
	if code != 0 || !strings.Contains(out, "adopted "+single.Key) {
		t.Fatalf("single adopt: %d %s", code, out)
	}
	code, out = runCmd(t, "links", "adopt", "-c", h.cfg, "--route", "defects-to-jira", "--jql", `labels = "from-qase"`)
	if code != 0 || strings.Count(out, "adopted ") != 2 || !strings.Contains(out, "skipped") {
		t.Fatalf("bulk jira adopt: %d %s", code, out)
	}
	code, out = runCmd(t, "links", "adopt", "-c", h.cfg, "--route", "defects-to-github", "--label", "legacy")
	if code != 0 || !strings.Contains(out, "adopted acme/qa#"+itoa(ghNum)) {
		t.Fatalf("bulk github adopt: %d %s", code, out)
	}
	h.settle()
	h.recNoDeadLetters()
	if n := len(h.jira.Issues()); n != 4 {
		t.Fatalf("jira has %d issues, want the 4 filed by hand (nothing created)", n)
	}
	for _, id := range []int64{5, 6, 7} {
		k := qsync.Key{Route: "defects-to-jira", EntityRef: qsync.EntityRef{Project: "ID", Kind: qsync.KindDefect, ID: id}}
		l := h.recLink(k)
		is, _ := h.jira.Issue(l.Issue.ID)
		if !hasLabel(is.Labels, qsync.MarkerFor(k).Label) || is.Properties["qase-sync"] == nil {
			t.Fatalf("%s: issue %s not marked: %+v", k, is.Key, is.Labels)
		}
		if is.Summary != "Defect "+itoa(int(id)) {
			t.Fatalf("%s: summary %q, want the mapping's title", k, is.Summary)
		}
	}
	if is, _ := h.jira.Issue(single.Key); !hasLabel(is.Labels, "triage") {
		t.Fatalf("adoption removed a person's label: %v", is.Labels)
	}
	gk := qsync.Key{Route: "defects-to-github", EntityRef: qsync.EntityRef{Project: "GH", Kind: qsync.KindDefect, ID: 3}}
	if l := h.recLink(gk); l.Issue.ID != itoa(ghNum) {
		t.Fatalf("github link = %+v", l.Issue)
	}
	if is, _ := h.gh.Issue("acme/qa", ghNum); !strings.Contains(is.Body, qsync.MarkerFor(gk).ID) {
		t.Fatalf("github issue not stamped: %q", is.Body)
	}
	if n := len(h.gh.Issues("acme/qa")); n != 1 {
		t.Fatalf("github has %d issues, want 1", n)
	}
	// Idempotent; and an issue another key owns is refused.
	if code, out = runCmd(t, "links", "adopt", "-c", h.cfg, "--route", "defects-to-jira", "--entity", "ID/defect/5", "--issue", single.Key); code != 0 || !strings.Contains(out, "already linked") {
		t.Fatalf("second adopt: %d %s", code, out)
	}
	if code, out = runCmd(t, "links", "adopt", "-c", h.cfg, "--route", "defects-to-jira", "--entity", "ID/defect/9", "--issue", single.Key); code == 0 || !strings.Contains(out, "already belongs") {
		t.Fatalf("stealing adopt: %d %s", code, out)
	}
}

// TestLinkWriteBack: a run route to Jira links the run to its issue and a
// defect route attaches the issue to the defect's case, once each; a
// second reconcile pass writes nothing.
func TestLinkWriteBack(t *testing.T) {
	routes := `routes:
  - name: runs-to-jira
    kind: run
    projects: [ID]
    events: [run.completed]
    tracker: jira
    project: QA
    title: 'Run {{.id}} failed'
    when: 'failed > 0'
    write_back: {run_issue: true}
  - name: defects-to-jira
    kind: defect
    tracker: jira
    project: QA
    title: '{{.title | default "Qase defect"}}'
    write_back: {case_issue: true, defect_tag: true, defect_field: "5"}
`
	h := newHarness(t, harnessOpts{qaseAPI: true, routes: routes, extraYAML: "reconcile:\n  enabled: false\n  projects: [ID]\n"})
	h.qase.AddProject("ID")
	h.qase.PutDefect("ID", map[string]any{"id": 1, "title": "Login fails", "severity": "normal", "status": "open", "case_id": 44})
	h.deliver("defect.created.json", http.StatusAccepted)
	h.drain()
	is := onlyIssue(t, h.jira)
	if got := h.qase.CaseIssues("ID", 44); len(got) != 1 || got[0] != is.Key {
		t.Fatalf("case 44 issues = %v, want [%s]; logs:\n%s", got, is.Key, tail(h.logs.String(), 20))
	}
	if tags := defectTags(t, h.qase, "ID", 1); !slices.Equal(tags, []string{is.Key}) {
		t.Fatalf("defect tags = %v, want the issue key", tags)
	}
	if rec, _ := h.qase.Defect("ID", 1); !strings.Contains(fmt.Sprint(rec["custom_fields"]), "id:5") || !strings.Contains(fmt.Sprint(rec["custom_fields"]), "/browse/"+is.Key) {
		t.Fatalf("defect custom fields = %v, want field 5 = the issue URL", rec["custom_fields"])
	}
	h.qase.PutRun("ID", map[string]any{"id": 7, "title": "nightly", "status_text": "failed", "stats": map[string]any{"statuses": map[string]any{"failed": 2, "passed": 1}}})
	h.recReconcile()
	var runIssue string
	for _, j := range h.jira.Issues() {
		if strings.HasPrefix(j.Summary, "Run 7") {
			runIssue = j.Key
		}
	}
	run, _ := h.qase.Get("ID", qsync.KindRun, 7)
	if ext, _ := run["external_issue"].(map[string]any); runIssue == "" || ext["id"] != runIssue || ext["type"] != "jira-cloud" {
		t.Fatalf("run external issue = %v, want %s; logs:\n%s", run["external_issue"], runIssue, tail(h.logs.String(), 60))
	}
	n := len(h.qase.Writes())
	h.recReconcile()
	if w := h.qase.Writes(); len(w) != n || n != 3 {
		t.Fatalf("qase writes = %d then %d, want 3 and no more: %+v", n, len(w), w)
	}
}

func defectTags(t *testing.T, q *qasefake.Server, project string, id int64) []string {
	t.Helper()
	rec, _ := q.Defect(project, id)
	var out []string
	list, _ := rec["tags"].([]any)
	for _, x := range list {
		switch v := x.(type) {
		case string:
			out = append(out, v)
		case map[string]any:
			s, _ := v["title"].(string)
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// TestTwoWayTags: labels people add to or remove from the Jira issue
// become the defect's tags; the route's own labels and the marker do not;
// neither change nor its Qase echo writes to Jira.
func TestTwoWayTags(t *testing.T) {
	routes := `routes:
  - name: defects-to-jira
    kind: defect
    tracker: jira
    project: QA
    title: '{{.title | default "Qase defect"}}'
    labels: [qase, '{{lines .tags}}']
    status: '{{lookup "defect_status_to_jira" .state}}'
    two_way:
      fields: {status: both, tags: both}
      status: {Done: resolved}
`
	h := newHarness(t, harnessOpts{qaseAPI: true, routes: routes,
		trackerYAML: "    webhook_secrets: [\"" + jiraHookToken + "\"]\n", extraYAML: "reconcile:\n  enabled: false\n"})
	h.qase.AddProject("ID")
	h.jira.SetWebhook(h.url+"/webhooks/jira?token="+jiraHookToken, "")
	h.qase.PutDefect("ID", map[string]any{"id": 1, "title": "Login fails", "severity": "normal", "status": "open",
		"tags": []any{map[string]any{"title": "smoke test"}}})
	h.deliver("defect.created.json", http.StatusAccepted)
	h.settle()
	is := onlyIssue(t, h.jira)
	if !hasLabel(is.Labels, "smoke-test") || !hasLabel(is.Labels, "qase") {
		t.Fatalf("created labels %v", is.Labels)
	}
	jw := h.jira.WriteCount()
	h.jira.Edit(is.ID, func(s *jirafake.IssueState) { s.Labels = append(s.Labels, "regression") })
	h.settle()
	if got := defectTags(t, h.qase, "ID", 1); !slices.Equal(got, []string{"regression", "smoke test"}) {
		t.Fatalf("tags after a label was added = %v; logs:\n%s", got, tail(h.logs.String(), 30))
	}
	h.deliver("defect.updated.json", http.StatusAccepted) // Qase's webhook for that write
	h.settle()
	h.jira.Edit(is.ID, func(s *jirafake.IssueState) {
		s.Labels = slices.DeleteFunc(s.Labels, func(l string) bool { return l == "smoke-test" })
	})
	h.settle()
	if got := defectTags(t, h.qase, "ID", 1); !slices.Equal(got, []string{"regression"}) {
		t.Fatalf("tags after a label was removed = %v", got)
	}
	h.deliver("defect.updated.json", http.StatusOK) // the same body again: a duplicate, still a sync
	h.settle()
	if d := h.jira.WriteCount() - jw; d != 0 {
		t.Fatalf("jira writes after people's label changes = %d, want 0", d)
	}
	if w := qaseWrites(h.qase); len(w) != 2 {
		t.Fatalf("qase writes = %v, want 2", w)
	}
	if is = onlyIssue(t, h.jira); !hasLabel(is.Labels, "regression") || hasLabel(is.Labels, "smoke-test") || !hasLabel(is.Labels, "qase") {
		t.Fatalf("labels at the end %v", is.Labels)
	}
	h.recNoDeadLetters()
}

// TestTwoWayPostgres: the Jira round trip on PostgreSQL (the baseline lives
// in the link record, which both stores keep as JSON).
func TestTwoWayPostgres(t *testing.T) {
	h := newTwoWayHarnessOn(t, true, pgDatabase(t))
	is := fileLoginDefect(t, h)
	jw := h.jira.WriteCount()
	h.jira.Edit(is.ID, func(s *jirafake.IssueState) { s.Status, s.Resolution = "Done", "Done" })
	h.settle()
	h.deliver("defect.resolved.json", http.StatusAccepted)
	h.settle()
	if st := defectStatus(t, h.qase, "ID", 1); st != "resolved" {
		t.Fatalf("qase status = %q, want resolved", st)
	}
	if w := qaseWrites(h.qase); len(w) != 1 {
		t.Fatalf("qase writes = %v, want 1", w)
	}
	if d := h.jira.WriteCount() - jw; d != 0 {
		t.Fatalf("jira writes = %d, want 0", d)
	}

	// A Jira redelivery (same X-Atlassian-Webhook-Identifier) enqueues no
	// second sync on PostgreSQL either: no ledger entry, no Qase request.
	k := qsync.Key{Route: "defects-to-jira", EntityRef: qsync.EntityRef{Project: "ID", Kind: qsync.KindDefect, ID: 1}}
	ledger := func() int {
		es, err := h.a.store.Ledger(context.Background(), k, 100)
		if err != nil {
			t.Fatal(err)
		}
		return len(es)
	}
	entries, qaseReqs := ledger(), h.qase.RequestCount()
	redeliverLast(t, h, h.jira)
	if n, err := h.a.store.QueueDepth(context.Background()); err != nil || n != 0 {
		t.Fatalf("queue depth after the duplicate = %d, %v; want 0", n, err)
	}
	if d := ledger() - entries; d != 0 {
		t.Fatalf("duplicate added %d ledger entries, want 0", d)
	}
	if d := h.qase.RequestCount() - qaseReqs; d != 0 {
		t.Fatalf("duplicate made %d qase requests, want 0", d)
	}
}
