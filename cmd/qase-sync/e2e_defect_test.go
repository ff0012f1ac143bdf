package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/qase-sync/qase-sync/adapters/jira/jirafake"
	qsync "github.com/qase-sync/qase-sync/sync"
)

func hasLabel(labels []string, l string) bool { return slices.Contains(labels, l) }

func onlyIssue(t *testing.T, f *jirafake.Server) jirafake.IssueState {
	t.Helper()
	issues := f.Issues()
	if len(issues) != 1 {
		t.Fatalf("jira has %d issues, want exactly 1: %+v", len(issues), issues)
	}
	return issues[0]
}

// TestDefectLifecycleToJira drives every defect.* payload (newest shape)
// through the real HTTP server into the fake Jira and checks the issue.
func TestDefectLifecycleToJira(t *testing.T) {
	h := newHarness(t, harnessOpts{})

	h.deliver("defect.created.json", http.StatusAccepted)
	h.drain()
	is := onlyIssue(t, h.jira)
	if is.Project != "QA" || is.Type != "Bug" || is.Summary != "[ID-1] Example defect" {
		t.Fatalf("created issue = %+v", is)
	}
	if is.Priority != "Medium" || is.Status != "To Do" {
		t.Fatalf("priority/status = %q/%q, want Medium/To Do", is.Priority, is.Status)
	}
	for _, l := range []string{"qase", "qase-id", "severity-normal", "qase-sync", qsync.MarkerFor(qsync.Key{Route: "defects-to-jira", EntityRef: qsync.EntityRef{Project: "ID", Kind: qsync.KindDefect, ID: 1}}).Label} {
		if !hasLabel(is.Labels, l) {
			t.Errorf("label %q missing from %v", l, is.Labels)
		}
	}
	if !strings.Contains(is.Description, "Something") || !strings.Contains(is.Description, "https://app.qase.io/defect/ID/1") {
		t.Errorf("description = %q", is.Description)
	}
	if _, ok := is.Properties["qase-sync"]; !ok {
		t.Error("issue lacks the qase-sync entity property")
	}

	// A repeated delivery is a duplicate and writes nothing.
	writes := h.jira.WriteCount()
	if resp := h.deliver("defect.created.json", http.StatusOK); !strings.Contains(resp, "duplicate") {
		t.Fatalf("duplicate answer = %s", resp)
	}
	// defect.updated carries only the id: without an API token nothing changes.
	h.deliver("defect.updated.json", http.StatusAccepted)
	h.drain()
	if w := h.jira.WriteCount(); w != writes {
		t.Fatalf("duplicate/thin update wrote %d times", w-writes)
	}

	h.deliver("defect.resolved.json", http.StatusAccepted)
	h.drain()
	is = onlyIssue(t, h.jira)
	if is.Status != "Done" {
		t.Fatalf("status after resolve = %q, want Done", is.Status)
	}
	if got := commentBodies(is.Comments); len(got) != 1 || !strings.Contains(got[0], "resolved in Qase") {
		t.Fatalf("comments after resolve = %q", got)
	}

	h.deliver("defect.deleted.json", http.StatusAccepted)
	h.drain()
	is = onlyIssue(t, h.jira)
	if is.Status != "Done" || len(is.Comments) != 2 || !strings.Contains(is.Comments[1].Body, "deleted in Qase") {
		t.Fatalf("after delete: status %q comments %q", is.Status, commentBodies(is.Comments))
	}

	// Ledger: four distinct accepted events, each ended applied or no-op.
	st := h.eventStatus()
	if st.Pending != 0 || st.Dead != 0 || st.Applied+st.Noop != 4 {
		t.Fatalf("event ledger = %+v, want 4 finished events", st)
	}
	// Idempotence: a reconcile pass writes nothing.
	h.recQuietPass("after convergence")
}

// TestLegacyDefectPayloads: S21 envelopes (event, no project_code, same
// timestamp on every event) with the project taken from the URL.
func TestLegacyDefectPayloads(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.deliverTo("/webhooks/qase/LEG", "defect.created.legacy.json", http.StatusAccepted)
	h.drain()
	is := onlyIssue(t, h.jira)
	if is.Summary != "[LEG-1] Authorization" || !strings.Contains(is.Description, "Something went wrong") {
		t.Fatalf("legacy create = %+v", is)
	}
	h.deliverTo("/webhooks/qase/LEG", "defect.resolved.legacy.json", http.StatusAccepted)
	h.deliverTo("/webhooks/qase/LEG", "defect.deleted.legacy.json", http.StatusAccepted)
	h.drain()
	is = onlyIssue(t, h.jira)
	if is.Status != "Done" || len(is.Comments) != 2 {
		t.Fatalf("legacy final state: status %q comments %q", is.Status, commentBodies(is.Comments))
	}
	// Without a project anywhere the delivery is refused with a reason.
	code, body := h.post("/webhooks/qase", mustRead(t, "defect.created.legacy.json"), testSecret)
	if code != http.StatusBadRequest || !strings.Contains(body, "project") {
		t.Fatalf("legacy without project: %d %s", code, body)
	}
}

// TestDefectReadFromQaseAPI: with a token, thin events are hints and the
// defect is read from the Qase API (statuses no webhook reports included).
func TestDefectReadFromQaseAPI(t *testing.T) {
	h := newHarness(t, harnessOpts{qaseAPI: true})
	h.qase.PutDefect("ID", map[string]any{"id": 1, "title": "Login fails", "actual_result": "500 on submit", "severity": "critical", "status": "open"})
	h.deliver("defect.created.json", http.StatusAccepted)
	h.drain()
	is := onlyIssue(t, h.jira)
	if is.Summary != "[ID-1] Login fails" || is.Priority != "High" {
		t.Fatalf("issue from API = %q / %q", is.Summary, is.Priority)
	}
	h.qase.PutDefect("ID", map[string]any{"id": 1, "title": "Login fails on Safari", "actual_result": "500 on submit", "severity": "critical", "status": "in_progress"})
	h.deliver("defect.updated.json", http.StatusAccepted)
	h.drain()
	is = onlyIssue(t, h.jira)
	if is.Summary != "[ID-1] Login fails on Safari" || is.Status != "In Progress" {
		t.Fatalf("after update: %q / %q", is.Summary, is.Status)
	}
	// Priority is create-only in the example mapping: triage owns it.
	h.jira.Edit(is.ID, func(s *jirafake.IssueState) { s.Priority = "Lowest" })
	h.qase.PutDefect("ID", map[string]any{"id": 1, "title": "Login fails on Safari", "severity": "blocker", "status": "in_progress"})
	h.deliver("defect.resolved.json", http.StatusAccepted) // the API still says in_progress: the API wins
	h.drain()
	is = onlyIssue(t, h.jira)
	if is.Priority != "Lowest" || is.Status != "In Progress" {
		t.Fatalf("priority %q status %q: create-only field overwritten or stale event won", is.Priority, is.Status)
	}
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../../testdata/qase/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWebhookBadInput: the bad-input table through the real server.
func TestWebhookBadInput(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	created := mustRead(t, "defect.created.json")
	big := `{"event_name":"defect.created","project_code":"ID","timestamp":1,"payload":{"id":9,"title":"` + strings.Repeat("x", 70000) + `"}}`
	tests := []struct {
		name, path, body, secret string
		want                     int
		contains                 string
	}{
		{"wrong secret", "/webhooks/qase", string(created), "nope", http.StatusUnauthorized, `"unauthorized"`},
		{"missing secret", "/webhooks/qase", string(created), "", http.StatusUnauthorized, `"unauthorized"`},
		{"rotated secret", "/webhooks/qase", strings.Replace(string(created), `"id": 1`, `"id": 2`, 1), "previous-secret", http.StatusAccepted, "accepted"},
		{"project secret for its project", "/webhooks/qase", strings.Replace(string(created), `"ID"`, `"PSEC"`, 1), "project-only-secret", http.StatusAccepted, "accepted"},
		{"project secret for another project", "/webhooks/qase", string(created), "project-only-secret", http.StatusUnauthorized, `"unauthorized"`},
		{"oversized", "/webhooks/qase", big, testSecret, http.StatusRequestEntityTooLarge, "error"},
		{"malformed json", "/webhooks/qase", `{"event_name": "defect.created", "payload": {`, testSecret, http.StatusBadRequest, "JSON"},
		{"not an object", "/webhooks/qase", `[1,2]`, testSecret, http.StatusBadRequest, "object"},
		{"missing event name", "/webhooks/qase", `{"project_code":"ID","timestamp":1,"payload":{"id":1}}`, testSecret, http.StatusBadRequest, "event"},
		{"missing project", "/webhooks/qase", `{"event_name":"defect.created","timestamp":1,"payload":{"id":1}}`, testSecret, http.StatusBadRequest, "project"},
		{"missing id", "/webhooks/qase", `{"event_name":"defect.created","project_code":"ID","timestamp":1,"payload":{"title":"x"}}`, testSecret, http.StatusBadRequest, "id"},
		{"unknown event", "/webhooks/qase", `{"event_name":"case.created","project_code":"ID","timestamp":1,"payload":{"id":1}}`, testSecret, http.StatusAccepted, "ignored"},
		{"future event kind", "/webhooks/qase", `{"event_name":"result.created","project_code":"ID","timestamp":1,"payload":{}}`, testSecret, http.StatusAccepted, "ignored"},
		{"deeply nested JSON", "/webhooks/qase", `{"event_name":"defect.created","project_code":"ID","timestamp":1,"payload":{"id":7,"x":` +
			strings.Repeat(`[`, 20000) + strings.Repeat(`]`, 20000) + `}}`, testSecret, http.StatusBadRequest, "error"},
		{"invalid UTF-8 in user text", "/webhooks/qase", "{\"event_name\":\"defect.created\",\"project_code\":\"ID\",\"timestamp\":5,\"payload\":{\"id\":8,\"title\":\"bad \xff\xfe bytes\"}}", testSecret, http.StatusAccepted, "accepted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := h.post(tt.path, []byte(tt.body), tt.secret)
			if code != tt.want || !strings.Contains(body, tt.contains) {
				t.Fatalf("%d %s, want %d containing %q", code, body, tt.want, tt.contains)
			}
			if code == http.StatusUnauthorized && (strings.Contains(body, testSecret) || len(body) > 40) {
				t.Fatalf("401 body leaks detail: %s", body)
			}
			var js map[string]any
			if err := json.Unmarshal([]byte(body), &js); err != nil {
				t.Fatalf("answer is not JSON: %s", body)
			}
		})
	}
	req, _ := http.NewRequest(http.MethodGet, h.url+"/webhooks/qase", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET webhook = %d", resp.StatusCode)
	}
	h.drain()
	// Invalid UTF-8 from Qase is replaced, never forwarded to the tracker.
	filed := false
	for _, is := range h.jira.Issues() {
		if strings.HasPrefix(is.Summary, "[ID-8]") {
			filed = true
			if !utf8.ValidString(is.Summary) || !strings.Contains(is.Summary, "bad") {
				t.Fatalf("title of the invalid-UTF-8 defect = %q", is.Summary)
			}
		}
	}
	if !filed {
		t.Fatal("defect with invalid UTF-8 was not filed")
	}
	if strings.Contains(h.logs.String(), testSecret) || strings.Contains(h.logs.String(), "jira-api-token-value") {
		t.Fatal("a secret reached the logs")
	}
}

// failLinkOnce simulates a crash between "issue created" and "link saved":
// the first save of a linked link fails as if the process died there.
type failLinkOnce struct {
	qsync.Store
	failed bool
}

func (f *failLinkOnce) SaveLink(ctx context.Context, l qsync.Link) error {
	if err := f.crash(l); err != nil {
		return err
	}
	return f.Store.SaveLink(ctx, l)
}

func (f *failLinkOnce) SaveLinkFenced(ctx context.Context, l qsync.Link, j qsync.Job) error {
	if err := f.crash(l); err != nil {
		return err
	}
	return f.Store.SaveLinkFenced(ctx, l, j)
}

// Finish saves a worker's link with the job's outcome, in one commit.
func (f *failLinkOnce) Finish(ctx context.Context, j qsync.Job, o qsync.JobOutcome, now time.Time) error {
	if o.Link != nil {
		if err := f.crash(*o.Link); err != nil {
			return err
		}
	}
	return f.Store.Finish(ctx, j, o, now)
}

func (f *failLinkOnce) crash(l qsync.Link) error {
	if l.State == qsync.LinkLinked && !f.failed {
		f.failed = true
		return errors.New("simulated crash before the link was saved")
	}
	return nil
}

// TestCrashBetweenCreateAndLinkAdopts: the retry finds the issue by its
// marker and adopts it instead of filing a second one (invariant I2).
func TestCrashBetweenCreateAndLinkAdopts(t *testing.T) {
	var wrapped *failLinkOnce
	h := newHarness(t, harnessOpts{wrapStore: func(s qsync.Store) qsync.Store { wrapped = &failLinkOnce{Store: s}; return wrapped }})
	h.deliver("defect.created.json", http.StatusAccepted)
	h.drain()
	if !wrapped.failed {
		t.Fatal("the simulated crash did not happen")
	}
	is := onlyIssue(t, h.jira)
	link, found, err := h.a.store.Link(context.Background(), qsync.Key{Route: "defects-to-jira", EntityRef: qsync.EntityRef{Project: "ID", Kind: qsync.KindDefect, ID: 1}})
	if err != nil || !found || link.State != qsync.LinkLinked || link.Issue.ID != is.ID {
		t.Fatalf("link = %+v found=%v err=%v, want linked to %s", link, found, err, is.ID)
	}
	if !strings.Contains(h.logs.String(), "adopting the issue that carries this key's marker") {
		t.Fatal("adoption was not logged")
	}
}

// TestAmbiguousCreateFailureAdopts: Jira commits the create but the answer
// is lost (500); the retry adopts the committed issue.
func TestAmbiguousCreateFailureAdopts(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.jira.CommitThenFail(1)
	h.deliver("defect.created.json", http.StatusAccepted)
	h.drain()
	onlyIssue(t, h.jira)
	if st := h.eventStatus(); st.Applied != 1 || st.Dead != 0 {
		t.Fatalf("ledger = %+v", st)
	}
}
