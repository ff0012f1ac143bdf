package githubfake

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func do(t *testing.T, method, url, body string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestFakeIssuesLifecycle(t *testing.T) {
	s := New()
	defer s.Close()
	base := s.URL + "repos/o/r/issues"
	if r, _ := do(t, "POST", base, `{"body":"no title"}`); r.StatusCode != 422 {
		t.Fatalf("missing title: %d", r.StatusCode)
	}
	if r, _ := do(t, "POST", base, `{"title":"`+strings.Repeat("t", 257)+`"}`); r.StatusCode != 422 {
		t.Fatalf("long title: %d", r.StatusCode)
	}
	r, b := do(t, "POST", base, `{"title":"one","labels":["a","B"]}`)
	if r.StatusCode != 201 || !strings.Contains(string(b), `"number":1`) {
		t.Fatalf("create: %d %s", r.StatusCode, b)
	}
	s.Advance(time.Hour)
	do(t, "POST", base, `{"title":"two","labels":["a"]}`)
	do(t, "POST", s.URL+"repos/o/other/issues", `{"title":"elsewhere"}`)

	// Add labels: object and bare array forms.
	if r, _ := do(t, "POST", base+"/2/labels", `{"labels":["b"]}`); r.StatusCode != 200 {
		t.Fatalf("object form: %d", r.StatusCode)
	}
	if r, _ := do(t, "POST", base+"/2/labels", `["c/d"]`); r.StatusCode != 200 {
		t.Fatalf("array form: %d", r.StatusCode)
	}
	if r, _ := do(t, "DELETE", base+"/2/labels/c%2Fd", ""); r.StatusCode != 200 {
		t.Fatalf("remove escaped label: %d", r.StatusCode)
	}
	if r, _ := do(t, "DELETE", base+"/2/labels/zzz", ""); r.StatusCode != 404 {
		t.Fatalf("remove absent label: %d", r.StatusCode)
	}

	// labels filter is AND and case-insensitive; default state is open.
	_, b = do(t, "GET", base+"?labels=A,b&state=all", "")
	var got []map[string]any
	_ = json.Unmarshal(b, &got)
	if len(got) != 2 || got[0]["title"] != "two" {
		t.Fatalf("AND filter, newest first: %s", b)
	}
	do(t, "PATCH", base+"/1", `{"state":"closed","state_reason":"not_planned"}`)
	_, b = do(t, "GET", base+"?direction=asc", "")
	if strings.Contains(string(b), `"one"`) || !strings.Contains(string(b), `"two"`) {
		t.Fatalf("default state=open: %s", b)
	}
	if st, _ := s.Issue("o/r", 1); st.State != "closed" || st.StateReason != "not_planned" || st.ClosedAt.IsZero() {
		t.Fatalf("closed: %+v", st)
	}
	do(t, "PATCH", base+"/1", `{"state":"open"}`)
	if st, _ := s.Issue("o/r", 1); st.State != "open" || st.StateReason != "reopened" {
		t.Fatalf("reopened: %+v", st)
	}
	if r, _ := do(t, "PATCH", base+"/1", `{"state":"done"}`); r.StatusCode != 422 {
		t.Fatalf("bad state: %d", r.StatusCode)
	}

	// Paging with Link headers.
	for i := 0; i < 5; i++ {
		do(t, "POST", base+"/1/comments", `{"body":"c"}`)
	}
	r, b = do(t, "GET", base+"/1/comments?per_page=2&page=2", "")
	if !strings.Contains(r.Header.Get("Link"), `page=3&per_page=2>; rel="next"`) || strings.Count(string(b), `"id"`) < 2 {
		t.Fatalf("comments page 2: %s %s", r.Header.Get("Link"), b)
	}
	r, _ = do(t, "GET", base+"/1/comments?per_page=2&page=3", "")
	if strings.Contains(r.Header.Get("Link"), `rel="next"`) {
		t.Fatal("last page has next")
	}

	// Faults, human edits, deletion, transfer.
	s.CommitThenFail(1)
	if r, _ := do(t, "POST", base, `{"title":"ghost"}`); r.StatusCode != 502 || len(s.Issues("o/r")) != 3 {
		t.Fatalf("commit then fail: %d, %d issues", r.StatusCode, len(s.Issues("o/r")))
	}
	s.CommitThenDrop(1)
	if _, err := http.Post(base, "application/json", strings.NewReader(`{"title":"ghost 2"}`)); err == nil || len(s.Issues("o/r")) != 4 {
		t.Fatalf("commit then drop: err %v, %d issues", err, len(s.Issues("o/r")))
	}
	s.TooManyRequests(1, 3*time.Second)
	if r, _ := do(t, "GET", base+"/1", ""); r.StatusCode != 429 || r.Header.Get("Retry-After") != "3" {
		t.Fatalf("429: %d", r.StatusCode)
	}
	s.SecondaryRateLimit(1, 9*time.Second)
	if r, b := do(t, "GET", base+"/1", ""); r.StatusCode != 403 || r.Header.Get("Retry-After") != "9" || !strings.Contains(string(b), "secondary-rate-limits") {
		t.Fatalf("secondary: %d %s", r.StatusCode, b)
	}
	s.DeleteIssue("o/r", 3)
	if r, _ := do(t, "GET", base+"/3", ""); r.StatusCode != 410 {
		t.Fatalf("deleted: %d", r.StatusCode)
	}
	n, _ := s.TransferIssue("o/r", 2, "o/new")
	if r, _ := do(t, "GET", base+"/2", ""); r.StatusCode != 301 || !strings.HasSuffix(r.Header.Get("Location"), "repos/o/new/issues/1") || n != 1 {
		t.Fatalf("transfer: %d %s", r.StatusCode, r.Header.Get("Location"))
	}
	if s.WriteCount() == 0 || len(s.Requests()) == 0 {
		t.Fatal("log empty")
	}
}
