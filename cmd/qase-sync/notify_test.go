package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/config"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// receiver is a local notification endpoint that keeps what it got.
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	got  map[string][]string // path -> bodies
	fail bool
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{got: map[string][]string{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.fail {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		if req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" || !json.Valid(b) {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.got[req.URL.Path] = append(r.got[req.URL.Path], string(b))
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) bodies(path string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got[path]...)
}

func (r *receiver) wait(t *testing.T, path string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if b := r.bodies(path); len(b) >= n {
			return b
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("receiver %s got %d notifications, want %d", path, len(r.bodies(path)), n)
	return nil
}

func defectBody(id int) []byte {
	return []byte(fmt.Sprintf(`{"event_name":"defect.created","timestamp":1650532563,"payload":{"id":%d,"title":"Defect %d","severity":"normal","actual_result":"x"},"team_member_id":40,"project_code":"ID"}`, id, id))
}

// TestNotifyDeadLettersThroughServer: three jobs dead-letter in the real
// server; a Slack route (burst 2, 1/min) and a generic webhook route post
// to a local receiver; the Slack route's third message is held back by
// the rate limit; no secret (nor a route URL) reaches a log or a message.
func TestNotifyDeadLettersThroughServer(t *testing.T) {
	recv := newReceiver(t)
	extra := fmt.Sprintf(`notify:
  - name: ops-slack
    type: slack
    url: %s/services/T000/B000/slacksecretpath
    on: [dead_letter]
    per_minute: 1
    burst: 2
    interval: 50ms
  - name: ops-hook
    type: webhook
    url: %s/hook/hooksecretpath
    interval: 50ms
`, recv.URL, recv.URL)
	h := newHarness(t, harnessOpts{extraYAML: extra})
	h.jira.FailNext(3, http.StatusBadRequest, nil, "")
	for id := 1; id <= 3; id++ {
		if code, resp := h.post("/webhooks/qase", defectBody(id), testSecret); code != http.StatusAccepted {
			t.Fatalf("deliver %d: %d %s", id, code, resp)
		}
	}
	h.drain()
	hook := recv.wait(t, "/hook/hooksecretpath", 3)
	slack := recv.wait(t, "/services/T000/B000/slacksecretpath", 2)
	time.Sleep(300 * time.Millisecond) // a few more checks: nothing more may arrive
	if n := len(recv.bodies("/services/T000/B000/slacksecretpath")); n != 2 {
		t.Errorf("slack route sent %d messages; its burst is 2 and 1/min", n)
	}
	seen := map[string]bool{}
	for _, b := range hook {
		var nt notification
		if err := json.Unmarshal([]byte(b), &nt); err != nil {
			t.Fatal(err)
		}
		if nt.Kind != "dead_letter" || nt.Service != "qase-sync" || !strings.Contains(nt.Text, "400") || nt.Route != "defects-to-jira" {
			t.Errorf("webhook notification %+v", nt)
		}
		seen[nt.Key] = true
	}
	for id := 1; id <= 3; id++ {
		if k := fmt.Sprintf("defects-to-jira:ID/defect/%d", id); !seen[k] {
			t.Errorf("no notification for %s (got %v)", k, seen)
		}
	}
	for _, b := range slack {
		var m map[string]string
		if json.Unmarshal([]byte(b), &m) != nil || !strings.Contains(m["text"], "dead letter") {
			t.Errorf("slack message %s", b)
		}
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "rate limit reached") {
		t.Error("the held-back message is not logged")
	}
	for _, secret := range []string{"slacksecretpath", "hooksecretpath", "jira-api-token-value", testSecret, "test-admin-token"} {
		if strings.Contains(logs, secret) || strings.Contains(strings.Join(hook, "")+strings.Join(slack, ""), secret) {
			t.Errorf("secret %q leaked into logs or messages", secret)
		}
	}
}

type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *stepClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestNotifySilentProjectAndRepeatedDrift drives the notifier with a
// stepped clock over the real store: a project silent past silent_after
// is reported once (until it delivers again), a route drifting in two
// consecutive passes is reported once, and a message held back by the
// rate limit is counted in the next one. Secrets are redacted.
func TestNotifySilentProjectAndRepeatedDrift(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.deliver("defect.created.json", http.StatusAccepted) // project ID delivers now
	h.drain()
	recv := newReceiver(t)
	clk := &stepClock{t: time.Now()}
	ops := newOpsState()
	cfg := []config.Notifier{{Name: "hook", Type: "webhook", URL: config.Secret(recv.URL + "/n"), On: []string{"drift", "silent_project"},
		PerMinute: 1, Burst: 1, DriftPasses: 2, SilentAfter: time.Hour, Projects: []string{"ID", "NEVER"}, Interval: time.Minute}}
	red := redactor{secrets: []string{"s3cr3t-in-reason"}}
	n := newNotifier(cfg, h.a.store, ops, clk, red, h.a.log, nil)
	ctx := context.Background()

	n.check(ctx)
	if b := recv.bodies("/n"); len(b) != 0 {
		t.Fatalf("notifications before anything is due: %v", b)
	}
	// Two passes in a row with drift on one route.
	for range 2 {
		ops.reconcileStarted(clk.Now())
		ops.found("defects-to-jira", "fields")
		ops.reconcileFinished(qsync.ReconcileReport{}, nil)
	}
	ops.reconcileStarted(clk.Now()) // closes the second pass
	n.check(ctx)
	got := recv.wait(t, "/n", 1)
	var nt notification
	_ = json.Unmarshal([]byte(got[0]), &nt)
	if nt.Kind != "drift" || nt.Route != "defects-to-jira" {
		t.Fatalf("drift notification %+v", nt)
	}
	n.check(ctx)
	if len(recv.bodies("/n")) != 1 {
		t.Fatal("repeated drift reported twice for the same streak")
	}

	// Two hours later both watched projects are silent: one message fits
	// the rate limit (1/min, burst 1), the other is held back.
	clk.add(2 * time.Hour)
	n.check(ctx)
	got = recv.bodies("/n")
	if len(got) != 2 {
		t.Fatalf("after 2h of silence: %d notifications, want 2 (one held back): %v", len(got), got)
	}
	_ = json.Unmarshal([]byte(got[1]), &nt)
	if nt.Kind != "silent_project" || (nt.Project != "ID" && nt.Project != "NEVER") {
		t.Fatalf("silent notification %+v", nt)
	}
	// A minute later the limit admits a message, which counts what it held back.
	clk.add(time.Minute)
	n.check(ctx) // nothing new is due: silence is reported once
	ops.reconcileStarted(clk.Now())
	ops.found("defects-to-jira", "status")
	ops.reconcileFinished(qsync.ReconcileReport{}, nil)
	ops.reconcileStarted(clk.Now())
	n.check(ctx)
	got = recv.bodies("/n")
	if len(got) != 2 {
		t.Fatalf("the drift streak continues and silence stays: no new message expected, got %d", len(got))
	}
	// A project that delivers again and falls silent again is reported
	// again; this message carries the held-back count.
	n.routes[0].silent = map[string]bool{"NEVER": true} // ID delivered (simulated by forgetting it)
	clk.add(time.Minute)
	n.check(ctx)
	got = recv.bodies("/n")
	if len(got) != 3 {
		t.Fatalf("ID silent again: %d notifications, want 3", len(got))
	}
	_ = json.Unmarshal([]byte(got[2]), &nt)
	if nt.Kind != "silent_project" || nt.Project != "ID" || nt.Suppressed != 1 {
		t.Errorf("next message %+v, want ID silent carrying 1 held back", nt)
	}
	if strings.Contains(strings.Join(got, ""), "s3cr3t") {
		t.Error("a secret reached a notification")
	}
}

// A receiver that is down does not lose the message: it is sent again at
// the next check.
func TestNotifyRetriesWhenReceiverIsDown(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	recv := newReceiver(t)
	recv.fail = true
	clk := &stepClock{t: time.Now()}
	ops := newOpsState()
	cfg := []config.Notifier{{Name: "hook", Type: "webhook", URL: config.Secret(recv.URL + "/n"), On: []string{"drift"},
		PerMinute: 60, Burst: 5, DriftPasses: 1, SilentAfter: time.Hour, Interval: time.Minute}}
	n := newNotifier(cfg, h.a.store, ops, clk, redactor{}, h.a.log, nil)
	ops.reconcileStarted(clk.Now())
	ops.found("defects-to-jira", "status")
	ops.reconcileStarted(clk.Now())
	n.check(context.Background())
	if len(recv.bodies("/n")) != 0 || len(n.routes[0].backlog) != 1 {
		t.Fatalf("receiver down: got %v, backlog %d", recv.bodies("/n"), len(n.routes[0].backlog))
	}
	recv.mu.Lock()
	recv.fail = false
	recv.mu.Unlock()
	clk.add(time.Minute)
	n.check(context.Background())
	got := recv.bodies("/n")
	if len(got) != 1 || !strings.Contains(got[0], `"kind":"drift"`) {
		t.Fatalf("after the receiver recovered: %v", got)
	}
	if !strings.Contains(h.logs.String(), "not delivered; trying again") {
		t.Error("the failed delivery is not logged")
	}
}
