package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/adapters/github/githubfake"
	"github.com/qase-sync/qase-sync/adapters/jira/jirafake"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// End-to-end tests of the reconciler: the fake Qase API is the source of
// truth, webhooks are (deliberately) not delivered, and every test asserts
// the final state of the fake trackers.

const recRepo = "acme/qa" // the example routes' github_repo

// recGitHubDefects is an extra route mirroring defects of project GHD into
// GitHub, to show status drift with GitHub's close reasons (the shipped
// GitHub routes are for reviews and runs, whose API statuses cover less).
const recGitHubDefects = `
  - name: defects-to-github
    kind: defect
    projects: [GHD]
    tracker: github
    project: '{{.vars.github_repo}}'
    title: 'Defect {{.project}}-{{.id}}: {{.title | default "untitled"}}'
    body: '{{.actual_result}}'
    labels: [qase, qase-defect]
    status: '{{lookup "defect_status_to_github" .state}}'
    reason: '{{lookup "defect_reason_to_github" .state}}'
    comments:
      - id: deleted
        when: deleted
        body: 'The defect was deleted in Qase; closing.'
`

// recRoutes are the shipped example routes, each limited to project ID so
// the reconciler knows which Qase project to enumerate, plus
// defects-to-github for project GHD.
func recRoutes(t testing.TB) string {
	r := exampleRoutes(t)
	for _, kind := range []string{"defect", "review", "run"} {
		line := "    kind: " + kind + "\n"
		if !strings.Contains(r, line) {
			t.Fatalf("example routes have no %q line", strings.TrimSpace(line))
		}
		r = strings.Replace(r, line, line+"    projects: [ID]\n", 1)
	}
	return strings.TrimRight(r, "\n") + "\n" + recGitHubDefects
}

func recKey(route, project string, kind qsync.Kind, id int64) qsync.Key {
	return qsync.Key{Route: route, EntityRef: qsync.EntityRef{Project: project, Kind: kind, ID: id}}
}

func recDefectKey(id int64) qsync.Key { return recKey("defects-to-jira", "ID", qsync.KindDefect, id) }
func recGHDefectKey(id int64) qsync.Key {
	return recKey("defects-to-github", "GHD", qsync.KindDefect, id)
}
func recReviewKey(id int64) qsync.Key {
	return recKey("declined-reviews-to-github", "ID", qsync.KindReview, id)
}
func recRunKey(id int64) qsync.Key { return recKey("failed-runs-to-github", "ID", qsync.KindRun, id) }

// newRecHarness starts the service against the fake Qase API with the
// projects ID and GHD existing there.
// newSeededRecHarness is the default reconcile harness for a test that
// seeds thousands of entities (why says so); -short skips it.
func newSeededRecHarness(t *testing.T, why string) *harness {
	t.Helper()
	if testing.Short() {
		t.Skip(why)
	}
	h, _ := newRecHarness(t, harnessOpts{})
	return h
}

func newRecHarness(t *testing.T, o harnessOpts) (*harness, harnessOpts) {
	t.Helper()
	o.qaseAPI = true
	if o.routes == "" {
		o.routes = recRoutes(t)
	}
	h := newHarness(t, o)
	h.qase.AddProject("ID")
	h.qase.AddProject("GHD")
	return h, o
}

// recReconcile runs one pass in the service (over the given routes, default
// all) and waits for its jobs. Passes over fewer routes keep GitHub's
// default pacing (1 call/s after a burst of 10, listings included) from
// slowing the suite.
func (h *harness) recReconcile(routes ...string) qsync.ReconcileReport {
	h.t.Helper()
	rep, err := h.a.engine.Reconcile(context.Background(), qsync.ReconcileOptions{Routes: routes})
	if err != nil {
		h.t.Fatalf("reconcile: %v\nlogs:\n%s", err, tail(h.logs.String(), 40))
	}
	h.drain()
	h.recNoDeadLetters()
	// What the pass found is what its keys' syncs recorded in the ledger.
	for _, k := range rep.KeyList {
		entries, err := h.a.store.Ledger(context.Background(), k, 5)
		if err != nil {
			h.t.Fatal(err)
		}
		for _, e := range entries {
			if !e.At.Before(rep.Started) {
				rep.Count(e.Drift)
				break
			}
		}
	}
	return rep
}

// recWaitIdle is drain with a longer deadline, for big seeding passes.
func (h *harness) recWaitIdle(d time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		depth, err := h.a.store.QueueDepth(context.Background())
		if err != nil {
			h.t.Fatal(err)
		}
		if depth == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.t.Fatalf("queue did not drain in %s; logs:\n%s", d, tail(h.logs.String(), 30))
}

func (h *harness) recNoDeadLetters() {
	h.t.Helper()
	dls, err := h.a.store.DeadLetters(context.Background(), 100)
	if err != nil {
		h.t.Fatal(err)
	}
	if len(dls) > 0 {
		h.t.Fatalf("dead letters: %+v\nlogs:\n%s", dls, tail(h.logs.String(), 40))
	}
}

func (h *harness) recLink(k qsync.Key) qsync.Link {
	h.t.Helper()
	l, found, err := h.a.store.Link(context.Background(), k)
	if err != nil || !found {
		h.t.Fatalf("link %s: found=%v err=%v", k, found, err)
	}
	return l
}

// recWrites is the number of write requests both trackers received so far.
func (h *harness) recWrites() (jira, github int) { return h.jira.WriteCount(), h.gh.WriteCount() }

// recQuietPass runs a reconcile pass and fails unless it wrote nothing to
// either tracker (invariant I4); after names the pass before it.
func (h *harness) recQuietPass(after string) {
	h.t.Helper()
	j0, g0 := h.recWrites()
	h.recReconcile()
	if j1, g1 := h.recWrites(); j1 != j0 || g1 != g0 {
		h.t.Fatalf("pass %s wrote jira %d, github %d", after, j1-j0, g1-g0)
	}
}

func (h *harness) recRestart(o harnessOpts) {
	h.t.Helper()
	h.stop()
	h.writeConfig(o, strings.TrimPrefix(h.url, "http://"))
	h.start(o)
}

func recPutDefect(h *harness, project string, id int64, title, severity, status string) {
	h.qase.PutDefect(project, map[string]any{"id": id, "title": title, "actual_result": "Actual " + title, "severity": severity, "status": status})
}

// recDefect is a Qase defect of project ID for recSeed.
type recDefect struct{ title, severity, status string }

// recSeed puts the defects into Qase project ID (ids from 1), and failed
// run 1 "Nightly", and syncs them with a reconcile pass.
func (h *harness) recSeed(defects ...recDefect) {
	h.t.Helper()
	for i, d := range defects {
		recPutDefect(h, "ID", int64(i+1), d.title, d.severity, d.status)
	}
	recPutFailedRun(h, 1, "Nightly")
	h.recReconcile()
}

func recPutFailedRun(h *harness, id int64, title string) {
	h.qase.PutRun("ID", map[string]any{"id": id, "title": title, "status_text": "failed", "elapsed_time": 65000,
		"stats": map[string]any{"total": 10, "statuses": map[string]any{"passed": 7, "failed": 3}}})
}

// recJiraIssue returns the one Jira issue carrying the key's marker label.
func recJiraIssue(t *testing.T, f *jirafake.Server, k qsync.Key) jirafake.IssueState {
	t.Helper()
	list := f.IssueByLabel(qsync.MarkerFor(k).Label)
	if len(list) != 1 {
		t.Fatalf("%s: %d jira issues carry its marker, want 1: %+v", k, len(list), list)
	}
	return list[0]
}

// recGHIssue returns the one live GitHub issue whose body carries the
// key's marker.
func recGHIssue(t *testing.T, f *githubfake.Server, k qsync.Key) githubfake.IssueState {
	t.Helper()
	var found []githubfake.IssueState
	for _, is := range f.Issues(recRepo) {
		if !is.Deleted && is.MovedTo == "" && strings.Contains(is.Body, qsync.MarkerFor(k).ID) {
			found = append(found, is)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: %d github issues carry its marker, want 1: %+v", k, len(found), found)
	}
	return found[0]
}

func recLiveGitHub(f *githubfake.Server) []githubfake.IssueState {
	var out []githubfake.IssueState
	for _, is := range f.Issues(recRepo) {
		if !is.Deleted && is.MovedTo == "" {
			out = append(out, is)
		}
	}
	return out
}

// TestRecIdempotentBothTrackers: once converged, a reconcile pass right
// after another writes nothing to Jira or GitHub.
func TestRecIdempotentBothTrackers(t *testing.T) {
	h, _ := newRecHarness(t, harnessOpts{})
	recPutDefect(h, "ID", 1, "Login fails", "critical", "open")
	recPutDefect(h, "ID", 2, "Slow search", "minor", "in_progress")
	recPutDefect(h, "ID", 3, "Typo", "normal", "open")
	recPutDefect(h, "ID", 4, "Never filed", "normal", "resolved") // create_when refuses closed defects
	recPutDefect(h, "GHD", 1, "Crash on start", "major", "open")
	recPutDefect(h, "GHD", 2, "Wrong colour", "minor", "open")
	recPutFailedRun(h, 1, "Nightly")
	h.qase.PutReview("ID", map[string]any{"id": 1, "title": "Review of login cases", "status": "declined", "case_id": 5})
	// One entity also arrives by webhook, the rest only through the API.
	h.deliver("defect.created.json", http.StatusAccepted)
	h.drain()

	h.recReconcile()
	// Status changes with comments, so the converged state includes them.
	recPutDefect(h, "ID", 3, "Typo", "normal", "resolved")
	recPutDefect(h, "GHD", 2, "Wrong colour", "minor", "invalid")
	h.recReconcile()

	if n := len(h.jira.Issues()); n != 3 {
		t.Fatalf("jira has %d issues, want 3 (defects 1-3)", n)
	}
	if n := len(recLiveGitHub(h.gh)); n != 4 {
		t.Fatalf("github has %d issues, want 4 (2 defects, 1 run, 1 review)", n)
	}
	if is := recJiraIssue(t, h.jira, recDefectKey(2)); is.Status != "In Progress" {
		t.Fatalf("defect 2 status %q, want In Progress", is.Status)
	}
	if is := recJiraIssue(t, h.jira, recDefectKey(3)); is.Status != "Done" || len(is.Comments) != 1 {
		t.Fatalf("defect 3: status %q comments %q", is.Status, commentBodies(is.Comments))
	}
	if is := recGHIssue(t, h.gh, recGHDefectKey(2)); is.State != "closed" || is.StateReason != "not_planned" {
		t.Fatalf("GHD-2: %s/%s, want closed/not_planned", is.State, is.StateReason)
	}
	if is := recGHIssue(t, h.gh, recReviewKey(1)); is.Title != "Review declined: Review of login cases" || is.State != "open" {
		t.Fatalf("review issue %q %s", is.Title, is.State)
	}

	for pass := 1; pass <= 2; pass++ {
		j0, g0 := h.recWrites()
		rep := h.recReconcile()
		j1, g1 := h.recWrites()
		if j1 != j0 || g1 != g0 {
			t.Fatalf("pass %d after convergence wrote jira %d, github %d times; logs:\n%s", pass, j1-j0, g1-g0, tail(h.logs.String(), 30))
		}
		if rep.Checked != 8 || rep.Duplicates != 0 || rep.Failed != 0 {
			t.Fatalf("pass %d report %+v: want 8 keys checked, no duplicates or failures", pass, rep)
		}
	}
}

// TestRecMissingIssueFiled: a defect exists in Qase but its webhook never
// arrived; reconcile files it (and a failed run in GitHub likewise).
func TestRecMissingIssueFiled(t *testing.T) {
	h, _ := newRecHarness(t, harnessOpts{})
	recPutDefect(h, "ID", 7, "Checkout broken", "critical", "in_progress")
	recPutFailedRun(h, 4, "Regression suite")
	rep := h.recReconcile()
	if rep.Checked != 2 || rep.Enqueued != 2 {
		t.Fatalf("report %+v: want the 2 keys checked and enqueued", rep)
	}
	is := recJiraIssue(t, h.jira, recDefectKey(7))
	if is.Summary != "[ID-7] Checkout broken" || is.Priority != "High" || is.Status != "In Progress" || !strings.Contains(is.Description, "Actual Checkout broken") {
		t.Fatalf("filed issue = %q / %q / %q / %q", is.Summary, is.Priority, is.Status, is.Description)
	}
	if l := h.recLink(recDefectKey(7)); l.State != qsync.LinkLinked || l.Issue.ID != is.ID {
		t.Fatalf("link %+v, want linked to %s", l, is.ID)
	}
	run := recGHIssue(t, h.gh, recRunKey(4))
	if run.Title != "Test run failed: Regression suite" || run.State != "open" || !strings.Contains(run.Body, "| 7 | 3 |") {
		t.Fatalf("run issue = %q %s body %q", run.Title, run.State, run.Body)
	}
}

// TestRecStatusDriftJira: in_progress, invalid and reopening produce no
// webhook; reconcile moves the Jira issue through the workflow anyway.
func TestRecStatusDriftJira(t *testing.T) {
	h, _ := newRecHarness(t, harnessOpts{})
	recPutDefect(h, "ID", 1, "Login fails", "critical", "open")
	h.recReconcile("defects-to-jira")
	if is := recJiraIssue(t, h.jira, recDefectKey(1)); is.Status != "To Do" {
		t.Fatalf("initial status %q", is.Status)
	}
	steps := []struct {
		qase, jira, resolution string
		comments               int
	}{
		{"in_progress", "In Progress", "", 0},
		{"invalid", "Done", "Done", 0},
		{"open", "To Do", "", 0}, // reopened: invalid → open
		{"resolved", "Done", "Done", 1},
		{"open", "To Do", "", 1}, // reopened: resolved → open
	}
	for _, st := range steps {
		recPutDefect(h, "ID", 1, "Login fails", "critical", st.qase)
		before := recJiraTransitions(h.jira)
		h.recReconcile("defects-to-jira")
		is := recJiraIssue(t, h.jira, recDefectKey(1))
		if is.Status != st.jira || is.Resolution != st.resolution || len(is.Comments) != st.comments {
			t.Fatalf("qase %s: jira status %q resolution %q comments %q, want %q %q %d", st.qase, is.Status, is.Resolution, commentBodies(is.Comments), st.jira, st.resolution, st.comments)
		}
		if n := recJiraTransitions(h.jira) - before; n != 1 {
			t.Fatalf("qase %s: %d transitions posted, want 1", st.qase, n)
		}
	}
}

func recJiraTransitions(f *jirafake.Server) int {
	n := 0
	for _, r := range f.Requests() {
		if r.Method == http.MethodPost && strings.HasSuffix(r.Path, "/transitions") {
			n++
		}
	}
	return n
}

// TestRecStatusDriftGitHub: the same statuses on a GitHub route close and
// reopen the issue with the right state_reason.
func TestRecStatusDriftGitHub(t *testing.T) {
	h, _ := newRecHarness(t, harnessOpts{})
	recPutDefect(h, "GHD", 1, "Crash on start", "major", "open")
	h.recReconcile("defects-to-github")
	if is := recGHIssue(t, h.gh, recGHDefectKey(1)); is.State != "open" || is.Title != "Defect GHD-1: Crash on start" {
		t.Fatalf("initial issue %q %s", is.Title, is.State)
	}
	steps := []struct{ qase, state, reason string }{
		{"in_progress", "open", ""},
		{"invalid", "closed", "not_planned"},
		{"open", "open", "reopened"},
		{"resolved", "closed", "completed"},
		{"invalid", "closed", "not_planned"}, // closed → closed, only the reason differs
		{"open", "open", "reopened"},
	}
	for _, st := range steps {
		recPutDefect(h, "GHD", 1, "Crash on start", "major", st.qase)
		h.recReconcile("defects-to-github")
		is := recGHIssue(t, h.gh, recGHDefectKey(1))
		if is.State != st.state || is.StateReason != st.reason {
			t.Fatalf("qase %s: github %s/%q, want %s/%q", st.qase, is.State, is.StateReason, st.state, st.reason)
		}
	}
}

// TestRecFieldDrift: human edits of always-synced fields are reverted (and
// the revert is logged); a create-only field and a label people added
// survive.
func TestRecFieldDrift(t *testing.T) {
	h, _ := newRecHarness(t, harnessOpts{})
	h.recSeed(recDefect{"Login fails", "critical", "open"})
	orig := recJiraIssue(t, h.jira, recDefectKey(1))
	run := recGHIssue(t, h.gh, recRunKey(1))

	h.jira.Edit(orig.ID, func(is *jirafake.IssueState) {
		is.Summary = "edited by a human"
		is.Description = "nothing to see"
		is.Priority = "Lowest" // create-only in the example route
		var ls []string
		for _, l := range is.Labels {
			if l != "severity-critical" {
				ls = append(ls, l)
			}
		}
		is.Labels = append(ls, "triaged")
	})
	h.gh.EditIssue(recRepo, run.Number, func(is *githubfake.IssueState) {
		is.Title = "flaky, ignore"
		is.Body = strings.Replace(is.Body, "finished with failures", "was fine really", 1)
		is.Labels = append(is.Labels, "wontfix")
	})
	h.recReconcile()

	is := recJiraIssue(t, h.jira, recDefectKey(1))
	if is.Summary != orig.Summary || is.Description != orig.Description {
		t.Fatalf("jira fields not reverted: %q / %q", is.Summary, is.Description)
	}
	if is.Priority != "Lowest" {
		t.Fatalf("create-only priority overwritten: %q", is.Priority)
	}
	if !hasLabel(is.Labels, "severity-critical") || !hasLabel(is.Labels, "triaged") {
		t.Fatalf("labels %v: want the synced label back and the human one kept", is.Labels)
	}
	got := recGHIssue(t, h.gh, recRunKey(1))
	if got.Title != run.Title || got.Body != run.Body {
		t.Fatalf("github fields not reverted: %q / %q", got.Title, got.Body)
	}
	if !hasLabel(got.Labels, "wontfix") {
		t.Fatalf("human label removed: %v", got.Labels)
	}
	logs := h.logs.String()
	if n := strings.Count(logs, "reverting tracker-side edits of synced fields"); n != 2 {
		t.Fatalf("revert logged %d times, want 2 (one per tracker)", n)
	}
	// Converged again: the next pass writes nothing.
	h.recQuietPass("after the revert")
}

// TestRecMappingChange: restarting with a new title template updates every
// linked issue on the next pass.
func TestRecMappingChange(t *testing.T) {
	h, o := newRecHarness(t, harnessOpts{})
	for id := int64(1); id <= 5; id++ {
		recPutDefect(h, "ID", id, fmt.Sprintf("Defect number %d", id), "normal", "open")
	}
	h.recReconcile("defects-to-jira")
	const oldTitle = `title: '[{{.project}}-{{.id}}] {{.title | default "Qase defect"}}'`
	if !strings.Contains(o.routes, oldTitle) {
		t.Fatal("example defect route title changed; update this test")
	}
	o.routes = strings.Replace(o.routes, oldTitle, `title: 'Bug {{.project}}-{{.id}} — {{.title | default "Qase defect"}}'`, 1)
	h.recRestart(o)
	j0 := h.jira.WriteCount()
	h.recReconcile()
	for id := int64(1); id <= 5; id++ {
		want := fmt.Sprintf("Bug ID-%d — Defect number %d", id, id)
		if is := recJiraIssue(t, h.jira, recDefectKey(id)); is.Summary != want {
			t.Fatalf("defect %d summary %q, want %q", id, is.Summary, want)
		}
	}
	if n := len(h.jira.Issues()); n != 5 {
		t.Fatalf("jira has %d issues, want 5", n)
	}
	if w := h.jira.WriteCount() - j0; w != 5 {
		t.Fatalf("mapping change cost %d writes, want one update per issue (5)", w)
	}
}

// TestRecOrphan: an entity deleted in Qase without a webhook gets what the
// route says for deletes.
func TestRecOrphan(t *testing.T) {
	h, _ := newRecHarness(t, harnessOpts{})
	h.recSeed(recDefect{"Login fails", "critical", "open"}, recDefect{"Stays", "normal", "open"})

	h.qase.Delete("ID", qsync.KindDefect, 1)
	h.qase.Delete("ID", qsync.KindRun, 1)
	h.recReconcile()

	is := recJiraIssue(t, h.jira, recDefectKey(1))
	if is.Status != "Done" || len(is.Comments) != 1 || !strings.Contains(is.Comments[0].Body, "deleted in Qase") {
		t.Fatalf("orphan defect: status %q comments %q", is.Status, commentBodies(is.Comments))
	}
	if other := recJiraIssue(t, h.jira, recDefectKey(2)); other.Status != "To Do" || len(other.Comments) != 0 {
		t.Fatalf("untouched defect changed: %q %q", other.Status, commentBodies(other.Comments))
	}
	run := recGHIssue(t, h.gh, recRunKey(1))
	if run.State != "closed" || run.StateReason != "not_planned" || len(run.Comments) != 1 || !strings.Contains(run.Comments[0].Body, "deleted in Qase") {
		t.Fatalf("orphan run: %s/%s comments %q", run.State, run.StateReason, commentBodies(run.Comments))
	}
	// Deleted stays deleted: nothing more to do.
	h.recQuietPass("after the orphan fix")
}

// TestRecDanglingLink: a deleted tracker issue is filed again; a moved Jira
// issue is followed by id (new key in the link, no new issue).
func TestRecDanglingLink(t *testing.T) {
	h, _ := newRecHarness(t, harnessOpts{})
	h.gh.AddIssue(recRepo, githubfake.IssueState{Title: "filed by a human"}) // unmarked: never touched
	h.recSeed(recDefect{"Deleted in Jira", "normal", "open"}, recDefect{"Moved in Jira", "normal", "in_progress"})
	gone := recJiraIssue(t, h.jira, recDefectKey(1))
	moved := recJiraIssue(t, h.jira, recDefectKey(2))
	oldRun := recGHIssue(t, h.gh, recRunKey(1))

	if !h.jira.DeleteIssue(gone.ID) || !h.gh.DeleteIssue(recRepo, oldRun.Number) {
		t.Fatal("could not delete the issues")
	}
	newKey, ok := h.jira.MoveIssue(moved.ID, "OPS")
	if !ok {
		t.Fatal("move failed")
	}
	h.recReconcile()

	refiled := recJiraIssue(t, h.jira, recDefectKey(1))
	if refiled.ID == gone.ID || refiled.Summary != gone.Summary || refiled.Project != "QA" {
		t.Fatalf("re-filed issue %+v (old id %s)", refiled, gone.ID)
	}
	if l := h.recLink(recDefectKey(1)); l.Issue.ID != refiled.ID || l.Issue.Key != refiled.Key {
		t.Fatalf("link %+v, want the re-filed issue %s", l.Issue, refiled.Key)
	}
	if n := len(h.jira.Issues()); n != 2 {
		t.Fatalf("jira has %d issues, want 2 (re-filed + moved)", n)
	}
	still := recJiraIssue(t, h.jira, recDefectKey(2))
	if still.ID != moved.ID || still.Key != newKey || still.Status != "In Progress" {
		t.Fatalf("moved issue %s (%s) status %q, want %s", still.Key, still.ID, still.Status, newKey)
	}
	if l := h.recLink(recDefectKey(2)); l.Issue.ID != moved.ID || l.Issue.Key != newKey || l.Issue.Project != "OPS" {
		t.Fatalf("moved link %+v, want key %s", l.Issue, newKey)
	}
	newRun := recGHIssue(t, h.gh, recRunKey(1))
	if newRun.Number == oldRun.Number || newRun.Title != oldRun.Title || newRun.State != "open" {
		t.Fatalf("re-filed run issue #%d %q %s (old #%d)", newRun.Number, newRun.Title, newRun.State, oldRun.Number)
	}
	if n := len(recLiveGitHub(h.gh)); n != 2 { // the human's and the re-filed run
		t.Fatalf("acme/qa has %d issues, want 2: %+v", n, recLiveGitHub(h.gh))
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "linked issue is gone; re-filing") || !strings.Contains(logs, "issue moved; following") {
		t.Fatal("dangling/moved repairs were not logged")
	}
	h.recQuietPass("after the repair")
}

// TestRecTransferredGitHubIssue: a GitHub issue transferred to another
// repository is followed (GitHub answers the old address with a redirect)
// and the link names its new repository and number.
func TestRecTransferredGitHubIssue(t *testing.T) {
	h, _ := newRecHarness(t, harnessOpts{})
	// Issue numbers in acme/qa start past the one it gets in acme/triage.
	h.gh.AddIssue(recRepo, githubfake.IssueState{Title: "filed by a human"})
	h.gh.AddIssue(recRepo, githubfake.IssueState{Title: "filed by a human too"})
	recPutDefect(h, "GHD", 1, "Transferred on GitHub", "normal", "open")
	h.recReconcile("defects-to-github")
	orig := recGHIssue(t, h.gh, recGHDefectKey(1))
	newNumber, ok := h.gh.TransferIssue(recRepo, orig.Number, "acme/triage")
	if !ok || newNumber == orig.Number {
		t.Fatalf("transfer: #%d ok=%v", newNumber, ok)
	}
	h.recReconcile("defects-to-github")
	l := h.recLink(recGHDefectKey(1))
	if l.Issue.Project != "acme/triage" || l.Issue.ID != fmt.Sprint(newNumber) {
		// Another pass shows the consequence.
		h.recReconcile("defects-to-github")
		l2 := h.recLink(recGHDefectKey(1))
		t.Fatalf("after a GitHub transfer the link is %#v (want acme/triage#%d); the pass after left it %#v with %d issues in acme/qa. "+
			"cause: Sync's moved branch copies Key, URL and Project from the live issue but keeps the old ID (the issue number, "+
			"which a transfer changes), so the adapter then addresses acme/triage#<old number>",
			l.Issue, newNumber, l2.Issue, len(recLiveGitHub(h.gh)))
	}
	if n := len(recLiveGitHub(h.gh)); n != 2 {
		t.Fatalf("acme/qa has %d issues, want the 2 human ones (nothing re-filed)", n)
	}
	g0 := h.gh.WriteCount()
	h.recReconcile("defects-to-github")
	if h.gh.WriteCount() != g0 || len(recLiveGitHub(h.gh)) != 2 {
		t.Fatalf("pass after following the transfer wrote %d times", h.gh.WriteCount()-g0)
	}
}

// TestRecDuplicates: a second issue carrying the same marker is closed with
// a comment pointing to the one kept (the linked, oldest one), in Jira (same
// labels and entity property) and in GitHub (same body marker and label).
func TestRecDuplicates(t *testing.T) {
	h, _ := newRecHarness(t, harnessOpts{})
	recPutDefect(h, "ID", 1, "Login fails", "critical", "open")
	recPutDefect(h, "GHD", 1, "Crash on start", "major", "open")
	h.recReconcile()
	kept := recJiraIssue(t, h.jira, recDefectKey(1))
	keptGH := recGHIssue(t, h.gh, recGHDefectKey(1))

	dup := h.jira.AddIssue(jirafake.IssueState{Project: "QA", Type: "Bug", Summary: kept.Summary, Description: kept.Description,
		Labels: kept.Labels, Properties: kept.Properties, Created: kept.Created.Add(time.Minute)})
	h.gh.Advance(time.Minute)
	dupGH := h.gh.AddIssue(recRepo, githubfake.IssueState{Title: keptGH.Title, Body: keptGH.Body, Labels: keptGH.Labels})

	rep := h.recReconcile()
	if rep.Duplicates != 2 || rep.ByClass["duplicate"] != 2 || rep.Failed != 0 {
		t.Fatalf("report %+v: want 2 duplicates, no failure", rep)
	}
	d, _ := h.jira.Issue(dup.ID)
	if d.Status != "Done" || len(d.Comments) != 1 || !strings.Contains(d.Comments[0].Body, "Duplicate of "+kept.Key) {
		t.Fatalf("jira duplicate: status %q comments %q", d.Status, commentBodies(d.Comments))
	}
	k, _ := h.jira.Issue(kept.ID)
	if k.Status != "To Do" || len(k.Comments) != 0 || k.Summary != kept.Summary {
		t.Fatalf("kept jira issue touched: %q %q", k.Status, commentBodies(k.Comments))
	}
	if l := h.recLink(recDefectKey(1)); l.Issue.ID != kept.ID {
		t.Fatalf("link moved to %s", l.Issue)
	}
	dg, _ := h.gh.Issue(recRepo, dupGH)
	if dg.State != "closed" || len(dg.Comments) != 1 || !strings.Contains(dg.Comments[0].Body, fmt.Sprintf("Duplicate of %s#%d", recRepo, keptGH.Number)) {
		t.Fatalf("github duplicate: %s/%s comments %q", dg.State, dg.StateReason, commentBodies(dg.Comments))
	}
	kg, _ := h.gh.Issue(recRepo, keptGH.Number)
	if kg.State != "open" || len(kg.Comments) != 0 {
		t.Fatalf("kept github issue touched: %s %q", kg.State, commentBodies(kg.Comments))
	}
	if l := h.recLink(recGHDefectKey(1)); l.Issue.ID != fmt.Sprint(keptGH.Number) {
		t.Fatalf("github link moved to %s", l.Issue)
	}
	if !strings.Contains(h.logs.String(), "closed duplicate issue") {
		t.Fatal("closing duplicates was not logged")
	}
	// Closed duplicates stay closed and are not commented again.
	j0, g0 := h.recWrites()
	if rep := h.recReconcile(); rep.Duplicates != 0 {
		t.Fatalf("second pass found %d duplicates again", rep.Duplicates)
	}
	if j1, g1 := h.recWrites(); j1 != j0 || g1 != g0 {
		t.Fatalf("pass after closing duplicates wrote jira %d, github %d", j1-j0, g1-g0)
	}
}

// TestRecDuplicatesOnFilteredRoute: duplicates of a failed-run issue (a
// route whose when: looks at the run's counters) are closed too.
func TestRecDuplicatesOnFilteredRoute(t *testing.T) {
	h, _ := newRecHarness(t, harnessOpts{})
	recPutFailedRun(h, 1, "Nightly")
	h.recReconcile()
	kept := recGHIssue(t, h.gh, recRunKey(1))
	h.gh.Advance(time.Minute)
	dup := h.gh.AddIssue(recRepo, githubfake.IssueState{Title: kept.Title, Body: kept.Body, Labels: kept.Labels})
	rep := h.recReconcile()
	d, _ := h.gh.Issue(recRepo, dup)
	if d.State != "closed" || rep.Duplicates != 1 {
		if strings.Contains(h.logs.String(), "has no status for deleted entities to close duplicates with") {
			t.Fatalf("duplicate of a failed-run issue left %s (report %+v): the closing spec was rendered "+
				"from a bare {status: deleted} entity, so the route's when: (failed > 0) skips it", d.State, rep)
		}
		t.Fatalf("duplicate %s, report %+v", d.State, rep)
	}
	if len(d.Comments) != 1 || !strings.Contains(d.Comments[0].Body, fmt.Sprintf("Duplicate of %s#%d", recRepo, kept.Number)) {
		t.Fatalf("duplicate comments %q", commentBodies(d.Comments))
	}
}

// TestRecReadCost: with 1,000 linked defects a verify pass costs about one
// read per 100 entities per side, not one per key.
//
// Seeding: the harness config keeps the trackers' default pacing (Jira 5
// writes/s), so filing 1,000 issues through the service would take minutes.
// Defect 1 is filed by the service; 2..1000 are put into the fake Jira
// exactly as the adapter files them (spec from the real mapping, marker
// label and entity property) and linked with Engine.RebuildLinks. The first
// pass after that must write nothing, which also checks the seeding.
func TestRecReadCost(t *testing.T) {
	const n = 1000
	h := newSeededRecHarness(t, "seeds 1,000 issues")
	ctx := context.Background()
	attrs := func(id int64) map[string]any {
		return map[string]any{"id": id, "title": fmt.Sprintf("Defect %d", id), "actual_result": fmt.Sprintf("Actual %d", id), "severity": "normal", "status": "open"}
	}
	seedIssue := func(id int64) jirafake.IssueState {
		k := recDefectKey(id)
		a := attrs(id)
		delete(a, "id")
		d, err := h.a.mapper.Desired(k.Route, qsync.Entity{Ref: k.EntityRef, Attrs: a})
		if err != nil || d.Skip || !d.Create {
			t.Fatalf("desired %s: %+v %v", k, d, err)
		}
		m := qsync.MarkerFor(k)
		prop, _ := json.Marshal(map[string]string{"marker": m.ID})
		return jirafake.IssueState{Project: d.Spec.Project, Type: d.Spec.Type, Summary: d.Spec.Title, Description: d.Spec.Body,
			Labels: append(append([]string{}, d.Spec.Labels...), "qase-sync", m.Label), Priority: d.Spec.Priority,
			Properties: map[string]json.RawMessage{"qase-sync": prop}}
	}
	// Defect 1 through the service, to check the seeding imitates it.
	h.qase.PutDefect("ID", attrs(1))
	h.recReconcile()
	real := recJiraIssue(t, h.jira, recDefectKey(1))
	want := seedIssue(1)
	if real.Summary != want.Summary || real.Description != want.Description || real.Type != want.Type ||
		strings.Join(real.Labels, ",") != strings.Join(want.Labels, ",") || real.Priority != want.Priority {
		t.Fatalf("seeding does not imitate the adapter:\nreal %+v\nseed %+v", real, want)
	}
	for id := int64(2); id <= n; id++ {
		h.qase.PutDefect("ID", attrs(id))
		h.jira.AddIssue(seedIssue(id))
	}
	restored, err := h.a.engine.RebuildLinks(ctx, []string{"defects-to-jira"})
	if err != nil || restored != n-1 {
		t.Fatalf("rebuild restored %d links (%v), want %d", restored, err, n-1)
	}
	// First pass over the seeded links: converged already, so no writes.
	j0, g0 := h.recWrites()
	start := time.Now()
	if _, err := h.a.engine.Reconcile(ctx, qsync.ReconcileOptions{}); err != nil {
		t.Fatal(err)
	}
	h.recWaitIdle(2 * time.Minute)
	h.recNoDeadLetters()
	first := time.Since(start)
	if j1, g1 := h.recWrites(); j1 != j0 || g1 != g0 {
		t.Fatalf("first pass over %d seeded links wrote jira %d, github %d", n, j1-j0, g1-g0)
	}

	h.qase.ResetRequests()
	h.jira.ResetRequests()
	h.gh.ResetLog()
	start = time.Now()
	rep, err := h.a.engine.Reconcile(ctx, qsync.ReconcileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h.recWaitIdle(2 * time.Minute)
	took := time.Since(start)

	qaseReads := h.qase.RequestCount()
	qaseDefectLists, qaseOther := 0, 0
	for _, r := range h.qase.Requests() {
		if r.Path == "/v1/defect/ID" {
			qaseDefectLists++
		} else {
			qaseOther++
		}
	}
	jiraSearches, jiraGets, jiraWrites := 0, 0, 0
	for _, r := range h.jira.Requests() {
		switch {
		case r.Method == http.MethodPost && (r.Path == "/rest/api/2/search" || r.Path == "/rest/api/2/search/jql"):
			jiraSearches++
		case r.Method == http.MethodGet:
			jiraGets++
		default:
			jiraWrites++
		}
	}
	ghReads, ghWrites := 0, h.gh.WriteCount()
	for _, r := range h.gh.Requests() {
		if r.Method == http.MethodGet {
			ghReads++
		}
	}
	pages := (n + 99) / 100
	report := fmt.Sprintf(`Reconcile read cost: %d linked defects (route defects-to-jira), measured by
TestRecReadCost (cmd/qase-sync/e2e_reconcile_test.go) against the fake Qase
API, fake Jira and fake GitHub (SQLite store, 4 workers).

Second pass over converged links (checked %d keys, enqueued %d):
  Qase API requests: %d = %d defect list pages (limit 100) + %d lists for the
    other routes (review, run, GHD defects; each one empty page)
  Jira reads:        %d = %d search pages (maxResults 100) + %d single-issue GETs
  Jira writes:       %d
  GitHub reads:      %d (one issue list per GitHub route; the repo is empty)
  GitHub writes:     %d
Budget per side: 2 x ceil(%d/100) = %d.
Wall time (not asserted): first pass over the seeded links %s, measured pass %s.
`, n, rep.Checked, rep.Enqueued, qaseReads, qaseDefectLists, qaseOther, jiraSearches+jiraGets, jiraSearches, jiraGets,
		jiraWrites, ghReads, ghWrites, n, 2*pages, first.Round(time.Millisecond), took.Round(time.Millisecond))
	t.Log("\n" + report)
	// `make bench` collects this into docs/benchmarks.md.
	if out := os.Getenv("QASE_SYNC_READCOST_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
			t.Errorf("write %s: %v", out, err)
		}
	}

	if rep.Checked != n {
		t.Fatalf("pass checked %d keys, want %d", rep.Checked, n)
	}
	if jiraWrites != 0 || ghWrites != 0 {
		t.Fatalf("converged pass wrote jira %d, github %d", jiraWrites, ghWrites)
	}
	// Beyond the defect listing the Qase side may list each other route's
	// kind once (review, run, GHD defects).
	if qaseDefectLists > 2*pages || qaseOther > 3 {
		t.Fatalf("qase api: %d defect list pages + %d other requests, want ≤ %d + 3", qaseDefectLists, qaseOther, 2*pages)
	}
	if jiraGets != 0 {
		t.Fatalf("jira: %d single-issue GETs in a pass that listed every issue (a read per key)", jiraGets)
	}
	if jiraSearches > 2*pages {
		t.Fatalf("jira: %d search pages, want ≤ %d", jiraSearches, 2*pages)
	}
	if ghReads > 3 {
		t.Fatalf("github: %d reads of an empty repository, want ≤ 3 (one list per GitHub route)", ghReads)
	}
}

// recRun runs the CLI and returns stdout, failing on a non-zero exit.
func recRun(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run(args, &out, &errb); code != 0 {
		t.Fatalf("qase-sync %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out.String(), tail(errb.String(), 30))
	}
	return out.String()
}

// recStoreLinks reads every link straight from the SQLite file (the service
// is stopped), checking on the way that no job is queued.
func recStoreLinks(t *testing.T, h *harness) map[string]qsync.Link {
	t.Helper()
	ctx := context.Background()
	st := openStoreFile(t, h.dir)
	if depth, err := st.QueueDepth(ctx); err != nil || depth != 0 {
		t.Fatalf("queue depth %d (%v): jobs left behind", depth, err)
	}
	out := map[string]qsync.Link{}
	for _, route := range []string{"defects-to-jira", "defects-to-github", "declined-reviews-to-github", "failed-runs-to-github"} {
		ls, err := st.Links(ctx, route, qsync.Key{}, 10000)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			out[l.Key.String()] = l
		}
	}
	return out
}

// TestRecCLIDryRun: `reconcile --dry-run` prints every drifted key with
// from → to and changes nothing; `--output json` parses.
//
// The CLI runs with the service stopped (TestRecCLIWhileServing covers a
// reconcile beside a running service). A dry run enqueues nothing and only
// reads, so it works beside the service (SQLite WAL readers,
// busy_timeout), which the last step shows.
func TestRecCLIDryRun(t *testing.T) {
	h, _ := newRecHarness(t, harnessOpts{})
	h.recSeed(recDefect{"Login fails", "critical", "open"}, recDefect{"Slow search", "minor", "open"})
	d1 := recJiraIssue(t, h.jira, recDefectKey(1))
	h.stop()

	// Drift of four kinds: a human edit, a status change and a new defect
	// in Qase, a deleted GitHub issue.
	h.jira.Edit(d1.ID, func(is *jirafake.IssueState) { is.Summary = "edited by a human" })
	recPutDefect(h, "ID", 2, "Slow search", "minor", "in_progress")
	recPutDefect(h, "ID", 3, "Brand new", "normal", "open")
	runIs := recGHIssue(t, h.gh, recRunKey(1))
	h.gh.DeleteIssue(recRepo, runIs.Number)
	linksBefore := recStoreLinks(t, h)
	j0, g0 := h.recWrites()

	out := recRun(t, "reconcile", "-c", h.cfg, "--dry-run")
	t.Log("\n" + out)
	for _, want := range []string{
		"dry run: nothing changed",
		"defects-to-jira:ID/defect/1 (" + d1.Key + "): fields",
		`title: "edited by a human" → "[ID-1] Login fails"`,
		"defects-to-jira:ID/defect/2 (" + recJiraIssue(t, h.jira, recDefectKey(2)).Key + "): status",
		`status: "To Do" → "In Progress"`,
		"defects-to-jira:ID/defect/3: missing",
		`would create issue in QA: "[ID-3] Brand new"`,
		"failed-runs-to-github:ID/run/1 (acme/qa#1): dangling",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dry-run output lacks %q", want)
		}
	}
	if j1, g1 := h.recWrites(); j1 != j0 || g1 != g0 {
		t.Fatalf("dry run wrote jira %d, github %d", j1-j0, g1-g0)
	}
	if after := recStoreLinks(t, h); len(after) != len(linksBefore) {
		t.Fatalf("dry run changed the links: %d → %d", len(linksBefore), len(after))
	} else {
		for k, l := range linksBefore {
			if a, ok := after[k]; !ok || a.UpdatedAt != l.UpdatedAt || a.Issue != l.Issue {
				t.Fatalf("dry run changed link %s: %+v → %+v", k, l, a)
			}
		}
	}

	js := recRun(t, "reconcile", "-c", h.cfg, "--dry-run", "--output", "json")
	var sum struct {
		Checked int            `json:"checked"`
		Drifted int            `json:"drifted"`
		ByClass map[string]int `json:"by_class"`
		Keys    []qsync.KeyReport
	}
	if err := json.Unmarshal([]byte(js), &sum); err != nil {
		t.Fatalf("json output does not parse: %v\n%s", err, js)
	}
	if sum.Drifted != 4 || sum.ByClass["fields"] != 1 || sum.ByClass["status"] != 1 || sum.ByClass["missing"] != 1 || sum.ByClass["dangling"] != 1 || len(sum.Keys) != 4 {
		t.Fatalf("json summary = %+v, want 4 drifted keys (fields, status, missing, dangling)", sum)
	}
	var fieldOps []qsync.Op
	for _, k := range sum.Keys {
		if k.Key == recDefectKey(1).String() {
			fieldOps = k.Ops
		}
	}
	if len(fieldOps) != 1 || len(fieldOps[0].Changes) != 1 || fieldOps[0].Changes[0].From != "edited by a human" {
		t.Fatalf("json ops for defect 1 = %+v", fieldOps)
	}
	if j1, g1 := h.recWrites(); j1 != j0 || g1 != g0 {
		t.Fatalf("json dry run wrote jira %d, github %d", j1-j0, g1-g0)
	}

	// A real one-shot reconcile repairs all four, then a dry run finds nothing.
	out = recRun(t, "reconcile", "-c", h.cfg)
	t.Log("\n" + out)
	if is := recJiraIssue(t, h.jira, recDefectKey(1)); is.Summary != "[ID-1] Login fails" {
		t.Fatalf("summary after reconcile %q", is.Summary)
	}
	if is := recJiraIssue(t, h.jira, recDefectKey(2)); is.Status != "In Progress" {
		t.Fatalf("status after reconcile %q", is.Status)
	}
	recJiraIssue(t, h.jira, recDefectKey(3))
	recGHIssue(t, h.gh, recRunKey(1))

	// With the service running the dry run works too (read-only).
	h.start(harnessOpts{})
	out = recRun(t, "reconcile", "-c", h.cfg, "--dry-run")
	if !strings.Contains(out, "checked 4 keys, drifted 0") {
		t.Fatalf("dry run beside the service after repair:\n%s", out)
	}
}

// recLoseDatabase stops the service and deletes the SQLite files.
func recLoseDatabase(t *testing.T, h *harness) {
	t.Helper()
	h.stop()
	for _, suf := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(filepath.Join(h.dir, "qase-sync.db"+suf)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
}

// TestRecLinksRebuild: after losing the database, `links rebuild` restores
// the links from the markers, and the next reconcile creates nothing and
// recWrites nothing. The CLI runs with the service stopped (the database file
// is gone under it; a running service would keep its deleted file open).
func TestRecLinksRebuild(t *testing.T) {
	h, _ := newRecHarness(t, harnessOpts{})
	recPutDefect(h, "ID", 1, "Login fails", "critical", "open")
	recPutDefect(h, "ID", 2, "Slow search", "minor", "in_progress")
	recPutDefect(h, "GHD", 1, "Crash on start", "major", "open")
	recPutDefect(h, "GHD", 2, "Wrong colour", "minor", "invalid") // closed, not_planned
	recPutFailedRun(h, 1, "Nightly")
	h.qase.PutReview("ID", map[string]any{"id": 1, "title": "Review of login cases", "status": "declined"})
	h.recReconcile()
	h.stop()
	before := map[string]string{}
	for k, l := range recStoreLinks(t, h) {
		before[k] = l.Issue.ID
	}
	if len(before) != 6 { // defects-to-github has no create_when: GHD-2 is filed closed
		t.Fatalf("%d links before the loss, want 6: %v", len(before), before)
	}
	if is := recGHIssue(t, h.gh, recGHDefectKey(2)); is.State != "closed" || is.StateReason != "not_planned" {
		t.Fatalf("GHD-2 filed %s/%s", is.State, is.StateReason)
	}
	recLoseDatabase(t, h)
	if links := recStoreLinks(t, h); len(links) != 0 {
		t.Fatalf("fresh database has %d links", len(links))
	}
	jiraN, ghN := len(h.jira.Issues()), len(recLiveGitHub(h.gh))
	j0, g0 := h.recWrites()

	out := recRun(t, "links", "rebuild", "-c", h.cfg)
	if !strings.Contains(out, fmt.Sprintf("restored %d links", len(before))) {
		t.Fatalf("links rebuild said %q, want %d restored", out, len(before))
	}
	after := recStoreLinks(t, h)
	if len(after) != len(before) {
		t.Fatalf("%d links after rebuild, want %d", len(after), len(before))
	}
	for k, id := range before {
		if after[k].Issue.ID != id || after[k].State != qsync.LinkLinked {
			t.Errorf("link %s after rebuild = %+v, want issue %s", k, after[k].Issue, id)
		}
	}
	out = recRun(t, "reconcile", "-c", h.cfg)
	t.Log("\n" + out)
	if j1, g1 := h.recWrites(); j1 != j0 || g1 != g0 {
		t.Fatalf("reconcile after rebuild wrote jira %d, github %d\n%s", j1-j0, g1-g0, out)
	}
	if len(h.jira.Issues()) != jiraN || len(recLiveGitHub(h.gh)) != ghN {
		t.Fatalf("reconcile after rebuild filed issues: jira %d → %d, github %d → %d", jiraN, len(h.jira.Issues()), ghN, len(recLiveGitHub(h.gh)))
	}
	if !strings.Contains(out, "jobs: applied 0") {
		t.Fatalf("reconcile after rebuild applied changes:\n%s", out)
	}
}

// TestRecLinksRebuildKeepsComments: a rebuilt link must know which comments
// the issue already carries, or the next reconcile posts them again.
func TestRecLinksRebuildKeepsComments(t *testing.T) {
	h, _ := newRecHarness(t, harnessOpts{})
	recPutDefect(h, "ID", 1, "Typo", "normal", "open")
	h.recReconcile("defects-to-jira")
	recPutDefect(h, "ID", 1, "Typo", "normal", "resolved")
	h.recReconcile("defects-to-jira")
	is := recJiraIssue(t, h.jira, recDefectKey(1))
	if is.Status != "Done" || len(is.Comments) != 1 {
		t.Fatalf("before the loss: %q %q", is.Status, commentBodies(is.Comments))
	}
	recLoseDatabase(t, h)
	if out := recRun(t, "links", "rebuild", "-c", h.cfg); !strings.Contains(out, "restored 1 links") {
		t.Fatalf("links rebuild said %q", out)
	}
	j0 := h.jira.WriteCount()
	out := recRun(t, "reconcile", "-c", h.cfg, "--route", "defects-to-jira")
	is = recJiraIssue(t, h.jira, recDefectKey(1))
	if len(is.Comments) != 1 || h.jira.WriteCount() != j0 {
		t.Fatalf("after links rebuild the reconcile posted the %q comment again (%d comments, %d writes):\n%s"+
			"cause: RebuildLinks sets Applied from BaselineFromIssue(is, Applied{}), so Applied.Comments is empty and "+
			"Diff re-posts every comment; the Jira issue's CommentIDs are ignored",
			"resolved", len(is.Comments), h.jira.WriteCount()-j0, out)
	}
}

// TestRecLostDatabaseWithoutRebuild: the database is lost and nobody runs
// `links rebuild`; the reconciler sees the marked issues in its tracker
// listing and must adopt them, not file second copies (which the pass
// after would then close in favour of the copy, losing the original).
func TestRecLostDatabaseWithoutRebuild(t *testing.T) {
	h, o := newRecHarness(t, harnessOpts{})
	recPutDefect(h, "ID", 1, "Login fails", "critical", "open")
	recPutDefect(h, "GHD", 1, "Crash on start", "major", "open")
	h.recReconcile("defects-to-jira", "defects-to-github")
	orig := recJiraIssue(t, h.jira, recDefectKey(1))
	origGH := recGHIssue(t, h.gh, recGHDefectKey(1))
	recLoseDatabase(t, h)
	h.start(o)
	h.recReconcile("defects-to-jira", "defects-to-github")
	jn := len(h.jira.IssueByLabel(qsync.MarkerFor(recDefectKey(1)).Label))
	var gn int
	for _, is := range recLiveGitHub(h.gh) {
		if strings.Contains(is.Body, qsync.MarkerFor(recGHDefectKey(1)).ID) {
			gn++
		}
	}
	if jn != 1 || gn != 1 {
		h.recReconcile("defects-to-jira", "defects-to-github")
		o, _ := h.jira.Issue(orig.ID)
		og, _ := h.gh.Issue(recRepo, origGH.Number)
		t.Fatalf("after losing the database a reconcile (no links rebuild) filed second issues: jira %d, github %d "+
			"carry the marker; the pass after left the originals %s %q and #%d %s (closed as duplicates of the copies). "+
			"cause: Sync → ensureIssue(hadLink=false) creates without looking for the marker (Find runs only for "+
			"LinkCreating links), although enumerate had just listed the marked issue", jn, gn, o.Key, o.Status, og.Number, og.State)
	}
	if l := h.recLink(recDefectKey(1)); l.Issue.ID != orig.ID {
		t.Fatalf("jira link %s, want the original %s", l.Issue, orig.Key)
	}
	if l := h.recLink(recGHDefectKey(1)); l.Issue.ID != fmt.Sprint(origGH.Number) {
		t.Fatalf("github link %s, want the original #%d", l.Issue, origGH.Number)
	}
}

// TestRecConfiguredProjects: routes without a projects: list are enumerated
// for the projects in reconcile.projects (the CLI passes them on).
func TestRecConfiguredProjects(t *testing.T) {
	h, _ := newRecHarness(t, harnessOpts{routes: exampleRoutes(t), extraYAML: "reconcile:\n  projects: [ID]\n"})
	recPutDefect(h, "ID", 5, "Only in the API", "normal", "open")
	h.stop()
	out := recRun(t, "reconcile", "-c", h.cfg, "--route", "defects-to-jira")
	if n := len(h.jira.IssueByLabel(qsync.MarkerFor(recDefectKey(5)).Label)); n != 1 {
		t.Fatalf("reconcile.projects [ID]: missing defect filed %d times, want 1:\n%s", n, out)
	}
	if is := recJiraIssue(t, h.jira, recDefectKey(5)); is.Summary != "[ID-5] Only in the API" {
		t.Fatalf("filed %q", is.Summary)
	}
}

// TestRecScheduled: with reconcile.enabled and a schedule, a missed webhook
// is repaired without anyone calling Reconcile.
func TestRecScheduled(t *testing.T) {
	h, _ := newRecHarness(t, harnessOpts{extraYAML: "reconcile:\n  enabled: true\n  schedule: \"@every 1s\"\n"})
	recPutDefect(h, "ID", 9, "Missed webhook", "critical", "open")
	recPutFailedRun(h, 2, "Missed run")
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if len(h.jira.IssueByLabel(qsync.MarkerFor(recDefectKey(9)).Label)) == 1 && len(recLiveGitHub(h.gh)) == 1 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	is := recJiraIssue(t, h.jira, recDefectKey(9))
	if is.Summary != "[ID-9] Missed webhook" || is.Status != "To Do" {
		t.Fatalf("scheduled repair filed %q %q", is.Summary, is.Status)
	}
	recGHIssue(t, h.gh, recRunKey(2))
	// Drift after the first pass is repaired by a later one too.
	recPutDefect(h, "ID", 9, "Missed webhook", "critical", "in_progress")
	deadline = time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if is, _ := h.jira.Issue(is.ID); is.Status == "In Progress" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got, _ := h.jira.Issue(is.ID); got.Status != "In Progress" {
		t.Fatalf("scheduled pass did not repair the status: %q", got.Status)
	}
	if !strings.Contains(h.logs.String(), `"msg":"reconcile pass"`) {
		t.Fatal("no scheduled reconcile pass was logged")
	}
	if n := len(h.jira.IssueByLabel(qsync.MarkerFor(recDefectKey(9)).Label)); n != 1 {
		t.Fatalf("repeated passes filed %d issues", n)
	}
}

// TestRecCLIWhileServing: `qase-sync reconcile` from the CLI while the
// service runs on the same store, and the service reconciling at the same
// time: one issue per defect, and the CLI reports what its pass caused for
// every key, whichever process synced it.
func TestRecCLIWhileServing(t *testing.T) {
	h, _ := newRecHarness(t, harnessOpts{})
	h.waitVouched()
	const n = 18
	for id := int64(1); id <= n; id++ {
		recPutDefect(h, "ID", id, fmt.Sprint("Defect ", id), "major", "open")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := h.a.engine.Reconcile(context.Background(), qsync.ReconcileOptions{}); err != nil {
			t.Errorf("service reconcile: %v", err)
		}
	}()
	out := recRun(t, "reconcile", "-c", h.cfg, "--wait", "30s")
	<-done
	h.drain()
	t.Log("\n" + out)
	for id := int64(1); id <= n; id++ {
		recJiraIssue(t, h.jira, recDefectKey(id)) // exactly one each
	}
	if got := len(h.jira.Issues()); got != n {
		t.Fatalf("%d Jira issues for %d defects", got, n)
	}
	var checked, drifted, dups, failed, applied, noop, retrying, dead int
	if _, err := fmt.Sscanf(out, "reconcile: checked %d keys, drifted %d, duplicates %d, failed %d", &checked, &drifted, &dups, &failed); err != nil {
		t.Fatalf("summary line: %v\n%s", err, out)
	}
	i := strings.Index(out, "jobs: ")
	if i < 0 {
		t.Fatalf("no jobs line:\n%s", out)
	}
	if _, err := fmt.Sscanf(out[i:], "jobs: applied %d, no-op %d, retrying %d, dead-lettered %d", &applied, &noop, &retrying, &dead); err != nil {
		t.Fatalf("jobs line: %v\n%s", err, out)
	}
	// Keys found in sync get no job: the pass counts them apart.
	var mode string
	var unchanged, enqueued int
	j := strings.Index(out, "keys in sync")
	k := strings.LastIndex(out[:max(j, 0)], "\n")
	if j < 0 || k < 0 {
		t.Fatalf("no pass line:\n%s", out)
	}
	if _, err := fmt.Sscanf(strings.TrimSpace(out[k:]), "%s pass: %d keys in sync (nothing written), %d enqueued", &mode, &unchanged, &enqueued); err != nil {
		t.Fatalf("pass line: %v\n%s", err, out)
	}
	if checked < n || applied+noop != enqueued || enqueued+unchanged != checked || retrying+dead+failed+dups != 0 || strings.Contains(out, "still queued") {
		t.Fatalf("the CLI must account for every key of its pass (%d checked), whichever process synced it:\n%s", checked, out)
	}
}

// commentBodies lists the bodies of comments of either fake tracker.
func commentBodies[C jirafake.CommentState | githubfake.CommentState](cs []C) []string {
	var out []string
	for _, c := range cs {
		switch c := any(c).(type) {
		case jirafake.CommentState:
			out = append(out, c.Body)
		case githubfake.CommentState:
			out = append(out, c.Body)
		}
	}
	return out
}
