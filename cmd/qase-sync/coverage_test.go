package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestWebhookCoverageFlagsProject: a defect that reached the service only
// through a reconcile pass (its webhook never came) flags its project in
// the metric, the log and GET /admin/status; a project whose change came
// by webhook is not flagged.
func TestWebhookCoverageFlagsProject(t *testing.T) {
	h, _ := newRecHarness(t, harnessOpts{})
	recPutDefect(h, "ID", 1, "Example defect", "normal", "open")
	h.deliver("defect.created.json", http.StatusAccepted) // ID-1 by webhook
	h.drain()
	recPutDefect(h, "GHD", 1, "Crash on start", "major", "open") // GHD-1: no webhook
	ctx := context.Background()
	if _, err := h.a.adminReconcile(ctx); err != nil {
		t.Fatal(err)
	}
	h.drain()

	_, samples := scrapeMetrics(t, h.url)
	if n, _ := promSum(samples, "qase_sync_webhook_missed_changes_total", map[string]string{"project": "GHD"}); n != 1 {
		t.Errorf("missed changes of GHD = %v, want 1", n)
	}
	if n, found := promSum(samples, "qase_sync_webhook_missed_changes_total", map[string]string{"project": "ID"}); found || n != 0 {
		t.Errorf("missed changes of ID = %v, want none (its change came by webhook)", n)
	}
	var flagged int
	for _, line := range strings.Split(h.logs.String(), "\n") {
		if strings.Contains(line, webhookSuspectNote) {
			flagged++
			if !strings.Contains(line, `"project":"GHD"`) {
				t.Errorf("coverage log line names another project: %s", line)
			}
		}
	}
	if flagged != 1 {
		t.Errorf("%d coverage log lines, want 1 (GHD)", flagged)
	}

	status := func() []webhookSuspect {
		t.Helper()
		code, body := adminGet(t, h, "/admin/status")
		var rep struct {
			Suspects []webhookSuspect `json:"webhook_suspects"`
		}
		if code != http.StatusOK || json.Unmarshal(body, &rep) != nil {
			t.Fatalf("GET /admin/status: %d %s", code, body)
		}
		return rep.Suspects
	}
	got := status()
	if len(got) != 1 || got[0].Project != "GHD" || got[0].MissedChanges != 1 || got[0].PassStarted.IsZero() || got[0].Note != webhookSuspectNote {
		t.Fatalf("webhook_suspects = %+v, want GHD with 1 missed change", got)
	}
	// A pass that finds nothing new flags nothing new; the previous
	// pass's finding stays visible.
	if _, err := h.a.adminReconcile(ctx); err != nil {
		t.Fatal(err)
	}
	h.drain()
	got = status()
	if len(got) != 1 || got[0].Project != "GHD" {
		t.Errorf("after a quiet pass webhook_suspects = %+v, want the previous pass's GHD only", got)
	}
}
