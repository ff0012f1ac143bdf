package jirafake

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseJQL(t *testing.T) {
	is := &IssueState{Project: "OPS", Labels: []string{"qs-1", "qase-sync"}, Status: "To Do",
		Created: time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)}
	for jql, want := range map[string]bool{
		`labels = "qs-1"`: true,
		`labels = "qs-2"`: false,
		`project = "OPS" AND labels = "qase-sync" ORDER BY created ASC`: true,
		`project = "DEV" AND labels = "qase-sync"`:                      false,
		`labels = "qs-1" AND created >= "2025/03/10 12:00"`:             true,
		`labels = "qs-1" AND created >= "2025/03/10 12:01"`:             false,
		`labels = 'qs-1' AND status = "to do"`:                          true,
		`labels = "q\"s"`:                                               false,
	} {
		q, err := parseJQL(jql)
		if err != nil {
			t.Errorf("%s: %v", jql, err)
			continue
		}
		if got := q.match(is); got != want {
			t.Errorf("%s matched %v, want %v", jql, got, want)
		}
	}
	for _, bad := range []string{``, `labels ~ "x"`, `summary = "x"`, `labels = "x" OR labels = "y"`,
		`labels = "x" ORDER BY key`, `created >= "yesterday"`, `labels = "x`} {
		if _, err := parseJQL(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func do(t *testing.T, s *Server, method, path, body string) (*http.Response, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, s.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp, out
}

func TestServer(t *testing.T) {
	s := New()
	defer s.Close()

	resp, out := do(t, s, "POST", "/rest/api/2/issue", `{"fields":{"project":{"key":"OPS"},"issuetype":{"name":"Bug"},"summary":"a","labels":["x y"]}}`)
	if resp.StatusCode != 400 || !strings.Contains(toJSON(out["errors"]), "spaces") {
		t.Errorf("label with space: %d %v", resp.StatusCode, out)
	}
	resp, out = do(t, s, "POST", "/rest/api/2/issue", `{"fields":{"project":{"key":"OPS"},"issuetype":{"name":"Bug"},"summary":"a","labels":["m"]}}`)
	if resp.StatusCode != 201 || out["key"] != "OPS-1" {
		t.Fatalf("create: %d %v", resp.StatusCode, out)
	}
	id := out["id"].(string)

	resp, _ = do(t, s, "PUT", "/rest/api/2/issue/"+id, `{"fields":{"labels":["a"]},"update":{"labels":[{"add":"b"}]}}`)
	if resp.StatusCode != 400 {
		t.Errorf("labels in fields and update: %d", resp.StatusCode)
	}
	resp, _ = do(t, s, "PUT", "/rest/api/2/issue/"+id, `{"fields":{"bogus":1}}`)
	if resp.StatusCode != 400 {
		t.Errorf("unknown field: %d", resp.StatusCode)
	}

	newKey, _ := s.MoveIssue(id, "ARCH")
	for _, k := range []string{id, "OPS-1", newKey} {
		if resp, out := do(t, s, "GET", "/rest/api/2/issue/"+k, ""); resp.StatusCode != 200 || out["key"] != newKey {
			t.Errorf("GET %s: %d %v", k, resp.StatusCode, out["key"])
		}
	}

	resp, _ = do(t, s, "POST", "/rest/api/2/issue/"+id+"/transitions", `{"transition":{"id":"31"}}`)
	if resp.StatusCode != 400 {
		t.Errorf("Reopen from To Do: %d", resp.StatusCode)
	}
	resp, _ = do(t, s, "POST", "/rest/api/2/issue/"+id+"/comment", `{"body":{"type":"doc"}}`)
	if resp.StatusCode != 400 {
		t.Errorf("ADF comment: %d", resp.StatusCode)
	}

	s.FailNext(1, 429, http.Header{"Retry-After": {"3"}}, "")
	resp, _ = do(t, s, "GET", "/rest/api/2/issue/"+id, "")
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "3" {
		t.Errorf("fault: %d %v", resp.StatusCode, resp.Header)
	}
	resp, out = do(t, s, "POST", "/rest/api/2/search/jql", `{"jql":"summary ~ \"a\""}`)
	if resp.StatusCode != 400 {
		t.Errorf("unsupported JQL: %d %v", resp.StatusCode, out)
	}
	if n := s.WriteCount(); n != 6 {
		t.Errorf("WriteCount = %d, want 6 (searches and GETs are reads)", n)
	}
	if resp, _ := do(t, s, "GET", "/rest/api/3/issue/"+id, ""); resp.StatusCode != 404 {
		t.Errorf("v3 path: %d", resp.StatusCode)
	}
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
