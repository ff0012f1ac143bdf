package main

import (
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/qase-sync/qase-sync/internal/pgtest"
)

// pgDatabase creates a throwaway database and returns its DSN.
func pgDatabase(t *testing.T) string { return pgtest.Database(t, "qs_e2e") }

// TestPostgresReplicasShareWork: two service replicas on one PostgreSQL
// database take deliveries (with duplicates sent to both) for the same
// defects; every defect ends as exactly one Jira issue in its final state.
func TestPostgresReplicasShareWork(t *testing.T) {
	o := harnessOpts{store: pgDatabase(t)}
	a := newHarness(t, o)
	b := &harness{t: t, jira: a.jira, gh: a.gh, dir: t.TempDir(), logs: &syncBuffer{}}
	addr := freeAddr(t)
	b.url = "http://" + addr
	b.writeConfig(o, addr)
	b.start(o)

	const n = 12
	send := func(h *harness, name string, id int) {
		body := fmt.Sprintf(`{"event_name":%q,"timestamp":%d,"project_code":"PG","payload":{"id":%d,"title":"Defect %d","severity":"major","actual_result":"broken"}}`,
			name, 1700000000+id, id, id)
		if name == "defect.resolved" {
			body = fmt.Sprintf(`{"event_name":"defect.resolved","timestamp":%d,"project_code":"PG","payload":{"id":%d}}`, 1700000100+id, id)
		}
		code, resp := h.post("/webhooks/qase", []byte(body), testSecret)
		if code != http.StatusAccepted && code != http.StatusOK {
			t.Errorf("%s %d: %d %s", name, id, code, resp)
		}
	}
	var wg sync.WaitGroup
	for id := 1; id <= n; id++ {
		wg.Add(2)
		go func(id int) { defer wg.Done(); send(a, "defect.created", id) }(id)
		go func(id int) { defer wg.Done(); send(b, "defect.created", id) }(id) // duplicate to the other replica
	}
	wg.Wait()
	// Let the creates land first: a defect whose created and resolved events
	// coalesce into one sync is already resolved, and the example route
	// rightly files no issue for it.
	a.drain()
	b.drain()
	for id := 1; id <= n; id++ {
		if id%2 == 0 {
			send(a, "defect.resolved", id)
		} else {
			send(b, "defect.resolved", id)
		}
	}
	a.drain()
	b.drain()

	issues := a.jira.Issues()
	if len(issues) != n {
		t.Fatalf("jira has %d issues, want %d (one per defect)", len(issues), n)
	}
	seen := map[string]bool{}
	for _, is := range issues {
		if seen[is.Summary] {
			t.Fatalf("two issues for %q", is.Summary)
		}
		seen[is.Summary] = true
		if is.Status != "Done" {
			t.Errorf("%s: status %q, want Done", is.Summary, is.Status)
		}
	}
	st := a.eventStatus()
	if st.Pending != 0 || st.Dead != 0 || st.Applied+st.Noop != 2*n {
		t.Fatalf("ledger %+v, want %d finished events", st, 2*n)
	}
}
