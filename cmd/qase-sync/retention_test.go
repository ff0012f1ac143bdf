package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
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

// TestPruneCommand: `qase-sync prune` prunes with the configured age and
// says what it removed; retention.max_age 0 is refused.
func TestPruneCommand(t *testing.T) {
	h := newHarness(t, harnessOpts{extraYAML: "retention:\n  max_age: 1h\n"})
	h.deliver("defect.created.json", http.StatusAccepted)
	h.drain()
	// Backdate the reconcile passes so there is something old to prune.
	if err := h.a.store.RecordPass(context.Background(), qsync.ReconcilePass{Started: time.Now().Add(-2 * time.Hour), Owner: "old"}); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"prune", "-c", h.cfg, "-o", "json"}, &out, &errb); code != 0 {
		t.Fatalf("prune: exit %d: %s", code, errb.String())
	}
	var rep qsync.PruneReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep != (qsync.PruneReport{Passes: 1}) {
		t.Errorf("prune -o json = %q (%v), want only the old pass pruned", out.String(), err)
	}
	if st := h.eventStatus(); st.Applied+st.Noop != 1 {
		t.Errorf("event status after prune = %+v: a fresh event was pruned", st)
	}
	h.writeConfig(harnessOpts{extraYAML: "retention:\n  max_age: 0s\n"}, strings.TrimPrefix(h.url, "http://"))
	out.Reset()
	errb.Reset()
	if code := run([]string{"prune", "-c", h.cfg}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "retention.max_age is 0") {
		t.Errorf("prune with max_age 0: exit %d, stderr %q", code, errb.String())
	}
}
