package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/qase-sync/qase-sync/internal/testhttp"
)

func adminGet(t *testing.T, h *harness, path string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.url+path, nil)
	req.Header.Set("Authorization", "Bearer test-admin-token")
	resp, b := testhttp.Do(t, nil, req)
	return resp.StatusCode, b
}

// TestExplainThroughServer: a defect is filed, updated (a no-op: thin
// event) and resolved; explain, by issue key and by entity, through the
// admin API and the CLI, tells each tracker change with its request and
// rule and the event behind it, newest first.
func TestExplainThroughServer(t *testing.T) { testExplain(t, harnessOpts{}) }

// The same over PostgreSQL (skipped when it is unreachable, unless
// QASE_SYNC_REQUIRE_POSTGRES=1).
func TestExplainThroughServerPostgres(t *testing.T) {
	testExplain(t, harnessOpts{store: pgDatabase(t)})
}

func testExplain(t *testing.T, o harnessOpts) {
	h := newHarness(t, o)
	h.deliver("defect.created.json", http.StatusAccepted)
	h.drain()
	h.deliver("defect.updated.json", http.StatusAccepted)
	h.drain()
	h.deliver("defect.resolved.json", http.StatusAccepted)
	h.drain()
	is := onlyIssue(t, h.jira)

	code, body := adminGet(t, h, "/admin/explain?q="+url.QueryEscape(strings.ToLower(is.Key)))
	if code != http.StatusOK {
		t.Fatalf("explain %s: %d %s", is.Key, code, body)
	}
	var x explanation
	if err := json.Unmarshal(body, &x); err != nil {
		t.Fatal(err)
	}
	if len(x.Keys) != 1 {
		t.Fatalf("keys = %+v", x.Keys)
	}
	k := x.Keys[0]
	if k.Route != "defects-to-jira" || k.Entity != "ID/defect/1" || k.Issue == nil || k.Issue.Key != is.Key || k.TrackerType != "jira" {
		t.Fatalf("key = %+v", k)
	}
	if len(k.Syncs) != 3 {
		t.Fatalf("syncs = %+v, want create, no-op update, resolve", k.Syncs)
	}
	newest, middle, oldest := k.Syncs[0], k.Syncs[1], k.Syncs[2]
	if !newest.At.After(oldest.At) && !newest.At.Equal(oldest.At) {
		t.Errorf("not newest first: %v then %v", newest.At, oldest.At)
	}
	wantEvents := func(name string, ch explainChange, ev string) {
		if len(ch.Events) != 1 || ch.Events[0].Name != ev {
			t.Errorf("%s sync caused by %+v, want %s", name, ch.Events, ev)
		}
	}
	wantEvents("oldest", oldest, "defect.created")
	wantEvents("middle", middle, "defect.updated")
	wantEvents("newest", newest, "defect.resolved")
	if len(oldest.Ops) == 0 || oldest.Ops[0].Op != "create" || !strings.HasPrefix(oldest.Ops[0].Request, "POST /rest/api/2/issue") {
		t.Errorf("create sync ops = %+v", oldest.Ops)
	}
	if middle.Outcome != "noop" || len(middle.Ops) != 0 {
		t.Errorf("thin update sync = %+v", middle)
	}
	var sawStatus, sawComment bool
	for _, op := range newest.Ops {
		switch {
		case op.Op == "set_status:Done":
			sawStatus = op.Request == "POST /rest/api/2/issue/"+is.ID+"/transitions" && strings.Contains(op.Rule, "status")
		case op.Op == "comment:defects-to-jira:resolved":
			sawComment = strings.Contains(op.Rule, "comments[resolved]") && op.Request == "POST /rest/api/2/issue/"+is.ID+"/comment"
		}
	}
	if !sawStatus || !sawComment {
		t.Errorf("resolve sync ops = %+v", newest.Ops)
	}

	// The entity form gives the same chain; the CLI prints it.
	code, body2 := adminGet(t, h, "/admin/explain?q=ID/defect/1")
	var y explanation
	if code != http.StatusOK || json.Unmarshal(body2, &y) != nil || len(y.Keys) != 1 || len(y.Keys[0].Syncs) != 3 {
		t.Errorf("explain by entity: %d %s", code, body2)
	}
	var out, errb bytes.Buffer
	if c := run([]string{"explain", is.Key, "-c", h.cfg}, &out, &errb); c != 0 {
		t.Fatalf("explain CLI: exit %d: %s", c, errb.String())
	}
	text := out.String()
	for _, w := range []string{is.Key, "route defects-to-jira", "set_status:Done", "rule:", "request: POST /rest/api/2/issue/" + is.ID + "/transitions", "← event #", "defect.resolved", "defect.created"} {
		if !strings.Contains(text, w) {
			t.Errorf("explain output lacks %q:\n%s", w, text)
		}
	}
	if strings.Index(text, "defect.resolved") > strings.Index(text, "defect.created") {
		t.Errorf("explain output not newest first:\n%s", text)
	}
	for _, secret := range []string{"jira-api-token-value", "test-admin-token", testSecret} {
		if strings.Contains(text+string(body), secret) {
			t.Errorf("explain shows a secret")
		}
	}

	if code, _ := adminGet(t, h, "/admin/explain?q=NOPE-404"); code != http.StatusNotFound {
		t.Errorf("unknown issue: %d", code)
	}
	if code, _ := adminGet(t, h, "/admin/explain?q="); code != http.StatusBadRequest {
		t.Errorf("empty query: %d", code)
	}
	if c := run([]string{"explain", "ZZ/defect/9", "-c", h.cfg}, &out, &errb); c != 1 {
		t.Errorf("explain of an unknown entity: exit %d", c)
	}
}
