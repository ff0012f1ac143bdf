package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestServePrunesHistory: serve prunes at start (the log says so), and a
// prune once the events are older than retention.max_age removes the
// folded ones, keeps the project's newest, and counts them in /metrics.
func TestServePrunesHistory(t *testing.T) {
	h := newHarness(t, harnessOpts{extraYAML: "retention:\n  max_age: 1h\n  interval: 1h\n  batch: 10\n"})
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(h.logs.String(), "pruned history") {
		if time.Now().After(deadline) {
			t.Fatalf("no prune at start; logs:\n%s", tail(h.logs.String(), 20))
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.deliver("defect.created.json", http.StatusAccepted)
	h.deliver("defect.updated.json", http.StatusAccepted)
	h.drain()
	if st := h.eventStatus(); st.Applied+st.Noop != 2 {
		t.Fatalf("event status before prune = %+v, want 2 handled", st)
	}
	rep, err := h.a.pruneOnce(context.Background(), time.Now().Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Events != 1 || rep.Ledger == 0 {
		t.Errorf("prune = %+v, want 1 event (the newest stays) and the ledger", rep)
	}
	if st := h.eventStatus(); st.Applied+st.Noop != 1 {
		t.Errorf("event status after prune = %+v, want 1 left", st)
	}
	_, samples := scrapeMetrics(t, h.url)
	if n, ok := promSum(samples, "qase_sync_pruned_rows_total", map[string]string{"table": "events"}); !ok || n != 1 {
		t.Errorf("qase_sync_pruned_rows_total{table=events} = %v (found %v), want 1", n, ok)
	}
}
