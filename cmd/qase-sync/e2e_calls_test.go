package main

import (
	"bytes"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qase-sync/qase-sync/adapters/jira/jirafake"
)

// TestJiraLifecycleCalls counts the Jira requests of one defect's
// lifecycle through the real server, engine and adapter: created →
// updated (title) → resolved (status and a comment) is three desired
// states and costs three writes: the create carries the marker property,
// the update is one edit and the resolving transition carries the comment.
func TestJiraLifecycleCalls(t *testing.T) {
	h := newHarness(t, harnessOpts{qaseAPI: true})
	h.waitVouched() // a vouching store creates without looking for its marker first
	h.jira.ResetRequests()

	step := func(title, status, file string) []jirafake.Request {
		t.Helper()
		h.jira.ResetRequests()
		h.qase.PutDefect("ID", map[string]any{"id": 1, "title": title, "actual_result": "500 on submit", "severity": "critical", "status": status})
		h.deliver(file, http.StatusAccepted)
		h.drain()
		return h.jira.Requests()
	}
	var all []jirafake.Request
	for _, s := range []struct{ title, status, file string }{
		{"Login fails", "open", "defect.created.json"},
		{"Login fails on Safari", "open", "defect.updated.json"},
		{"Login fails on Safari", "resolved", "defect.resolved.json"},
	} {
		reqs := step(s.title, s.status, s.file)
		for _, r := range reqs {
			t.Logf("%s: %s %s?%s -> %d", s.file, r.Method, r.Path, r.Query, r.Status)
		}
		if w := writes(reqs); w != 1 {
			t.Errorf("%s cost %d writes, want 1", s.file, w)
		}
		all = append(all, reqs...)
	}
	if w := writes(all); w != 3 {
		t.Errorf("lifecycle cost %d writes, want 3", w)
	}
	// Reads: the new issue's status (Jira's create answer does not say
	// where the workflow put it) and the transitions to resolve with,
	// each in one request that brings the status and the transitions.
	if r := len(all) - writes(all); r != 2 {
		t.Errorf("lifecycle cost %d reads, want 2", r)
	}
	is := onlyIssue(t, h.jira)
	if is.Summary != "[ID-1] Login fails on Safari" || is.Status != "Done" {
		t.Errorf("issue = %q / %q, want the new title and Done", is.Summary, is.Status)
	}
	if got := commentBodies(is.Comments); len(got) != 1 || !strings.Contains(got[0], "resolved in Qase") {
		t.Errorf("comments = %q, want the resolve comment once", got)
	}
	if _, ok := is.Properties["qase-sync"]; !ok {
		t.Error("issue lacks the marker property")
	}
}

// writes counts the requests that may change state (a search is a POST
// but reads).
func writes(reqs []jirafake.Request) int {
	n := 0
	for _, r := range reqs {
		if r.Method != http.MethodGet && !strings.HasPrefix(r.Path, "/rest/api/2/search") {
			n++
		}
	}
	return n
}

// TestJiraPlanShowsOneRequestCreate: `plan` shows the requests a sync
// sends: the create alone carries the marker property, and a status
// change followed by its comment says the comment rides on the transition.
func TestJiraPlanShowsOneRequestCreate(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	plan := func(file string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := run([]string{"plan", "-c", h.cfg, "--event", filepath.Join("..", "..", "testdata", "qase", file)}, &stdout, &stderr); code != 0 {
			t.Fatalf("plan %s: exit %d\n%s%s", file, code, stdout.String(), stderr.String())
		}
		return stdout.String()
	}
	out := plan("defect.created.json")
	if !strings.Contains(out, `"properties": [`) || !strings.Contains(out, `"marker": "qase-sync:defects-to-jira:ID/defect/1"`) {
		t.Errorf("the create request does not carry the marker property:\n%s", out)
	}
	if strings.Contains(out, "/properties/") || strings.Count(out, "POST /rest/api/2/issue\n") != 1 {
		t.Errorf("create planned as more than its one request:\n%s", out)
	}
	out = plan("defect.resolved.json")
	if !strings.Contains(out, "rides on the transition") || !strings.Contains(out, "expand=transitions.fields") {
		t.Errorf("resolve plan does not show the comment riding on the transition:\n%s", out)
	}
}
