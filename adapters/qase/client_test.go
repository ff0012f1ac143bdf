package qase_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/adapters/qase"
	"github.com/qase-sync/qase-sync/adapters/qase/qasefake"
	qsync "github.com/qase-sync/qase-sync/sync"
)

const token = "tok-9f8e7d6c5b4a-secret"

func setup(t *testing.T) (*qasefake.Server, *qase.Client, *callLog) {
	t.Helper()
	fake := qasefake.New(token)
	t.Cleanup(fake.Close)
	calls := &callLog{}
	c := qase.NewClient(qase.ClientOptions{BaseURL: fake.URL, Token: token, Observer: calls.observe, Timeout: 5 * time.Second})
	return fake, c, calls
}

type callLog struct {
	mu  sync.Mutex
	ops []string
}

func (l *callLog) observe(system, op string, status int, _ time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops = append(l.ops, fmt.Sprintf("%s %s %d", system, op, status))
}

var apiDefect = map[string]any{
	"id": 7, "title": "Login fails", "actual_result": "500 on submit", "severity": "critical",
	"status": "in_progress", "milestone_id": nil,
	"custom_fields": []any{map[string]any{"id": 1, "value": "x"}},
	"attachments":   []any{map[string]any{"size": 10, "mime": "text/plain", "filename": "a.txt", "url": "https://x"}},
	"resolved_at":   nil, "author_id": 12, "member_id": 12, "external_data": "{}",
	"runs": []any{3}, "results": []any{"abc"},
	"tags":       []any{map[string]any{"title": "auth", "internal_id": 1}, map[string]any{"title": "p1", "internal_id": 2}},
	"created_at": "2021-12-30T19:23:59+00:00", "updated_at": "2022-01-02T10:00:00+02:00",
	"created": "2021-12-30 19:23:59", "updated": "2022-01-02 08:00:00",
}

var apiRun = map[string]any{
	"id": 4, "title": "Nightly", "description": nil, "status": 1, "status_text": "complete",
	"start_time": "2022-04-21T10:00:00+00:00", "end_time": "2022-04-21T11:00:00+00:00", "public": true,
	"stats": map[string]any{
		"total": 20, "statuses": map[string]any{"passed": 15, "failed": 3, "blocked": 1, "untested": 1},
		"untested": 1, "passed": 15, "failed": 3, "blocked": 1, "skipped": 0, "retest": 0, "in_progress": 0, "invalid": 0,
	},
	"time_spent": 1000, "elapsed_time": 3600000,
	"environment": map[string]any{"title": "Staging", "description": "", "slug": "staging", "host": "s.example"},
	"milestone":   nil, "custom_fields": []any{}, "tags": []any{}, "plan_id": 9, "configurations": []any{},
}

var apiReview = map[string]any{
	"id": 5, "title": "Check login", "type": "edit", "status": "open", "case_id": 25,
	"author_uuid": "a-1",
	"reviewers": []any{
		map[string]any{"author_uuid": "r-1", "status": "approved"},
		map[string]any{"author_uuid": "R-2", "status": "changes_requested"},
		map[string]any{"author_uuid": nil, "status": "approved"},
	},
	"created_at": "2022-04-21T09:47:38+00:00", "updated_at": nil,
	"proposed_case": map[string]any{"title": "x"},
}

func TestFetch(t *testing.T) {
	fake, c, calls := setup(t)
	fake.PutDefect("DEMO", apiDefect)
	fake.PutRun("DEMO", apiRun)
	fake.PutReview("DEMO", apiReview)
	ctx := context.Background()

	tests := []struct {
		ref  qsync.EntityRef
		want map[string]any
	}{
		{qsync.EntityRef{Project: "DEMO", Kind: qsync.KindDefect, ID: 7}, map[string]any{
			"title": "Login fails", "actual_result": "500 on submit", "severity": "critical", "status": "in_progress",
			"milestone_id": nil, "tags": []any{"auth", "p1"}, "author_id": int64(12),
			"created_at": "2021-12-30T19:23:59Z", "updated_at": "2022-01-02T08:00:00Z", "resolved_at": nil,
			"attachments_count": int64(1),
		}},
		{qsync.EntityRef{Project: "DEMO", Kind: qsync.KindRun, ID: 4}, map[string]any{
			"title": "Nightly", "description": nil, "status": "failed", "completed": true, "environment": "staging",
			"cases": int64(20), "passed": int64(15), "failed": int64(3), "blocked": int64(1), "skipped": int64(0),
			"untested": int64(1), "invalid": int64(0), "duration": int64(3600000),
			"start_time": "2022-04-21T10:00:00Z", "end_time": "2022-04-21T11:00:00Z", "plan_id": int64(9), "public": true,
		}},
		{qsync.EntityRef{Project: "DEMO", Kind: qsync.KindReview, ID: 5}, map[string]any{
			"title": "Check login", "type": "edit", "status": "open", "case_id": int64(25), "author_uuid": "a-1",
			"reviewers/r-1": map[string]any{"status": "approved"}, "reviewers/r-2": map[string]any{"status": "changes_requested"},
			"created_at": "2022-04-21T09:47:38Z", "updated_at": nil,
		}},
	}
	for _, tt := range tests {
		t.Run(string(tt.ref.Kind), func(t *testing.T) {
			attrs, found, err := c.Fetch(ctx, tt.ref)
			if err != nil || !found {
				t.Fatalf("Fetch: found=%v err=%v", found, err)
			}
			if !reflect.DeepEqual(attrs, tt.want) {
				for k := range merge(attrs, tt.want) {
					if !reflect.DeepEqual(attrs[k], tt.want[k]) {
						t.Errorf("%s = %#v, want %#v", k, attrs[k], tt.want[k])
					}
				}
			}
		})
	}
	reqs := fake.Requests()
	if len(reqs) != 3 || reqs[0].Path != "/v1/defect/DEMO/7" || reqs[1].Path != "/v1/run/DEMO/4" || reqs[2].Path != "/v1/review/DEMO/5" {
		t.Errorf("requests = %+v", reqs)
	}
	if len(calls.ops) != 3 || calls.ops[0] != "qase get_defect 200" {
		t.Errorf("observer saw %v", calls.ops)
	}
}

func merge(a, b map[string]any) map[string]bool {
	m := map[string]bool{}
	for k := range a {
		m[k] = true
	}
	for k := range b {
		m[k] = true
	}
	return m
}

func TestFetchRunStatusVocabulary(t *testing.T) {
	fake, c, _ := setup(t)
	cases := map[string]string{"active": "in_progress", "abort": "aborted", "in_progress": "in_progress", "passed": "passed", "aborted": "aborted"}
	id := int64(0)
	for text, want := range cases {
		id++
		fake.PutRun("P", map[string]any{"id": id, "status_text": text, "stats": map[string]any{"total": 1, "failed": 0}})
		attrs, _, err := c.Fetch(context.Background(), qsync.EntityRef{Project: "P", Kind: qsync.KindRun, ID: id})
		if err != nil || attrs["status"] != want {
			t.Errorf("status_text %q -> %v (%v), want %q", text, attrs["status"], err, want)
		}
	}
	// "complete" with no failures is passed; deprecated counters are the fallback.
	fake.PutRun("P", map[string]any{"id": 99, "status_text": "complete", "stats": map[string]any{"total": 3, "passed": 3, "failed": 0}})
	attrs, _, _ := c.Fetch(context.Background(), qsync.EntityRef{Project: "P", Kind: qsync.KindRun, ID: 99})
	if attrs["status"] != "passed" || attrs["passed"] != int64(3) || attrs["completed"] != true {
		t.Errorf("attrs = %v", attrs)
	}
}

func TestFetchNotFound(t *testing.T) {
	fake, c, _ := setup(t)
	fake.PutDefect("DEMO", map[string]any{"id": 1, "title": "x"})
	fake.Delete("DEMO", qsync.KindDefect, 1)
	for _, ref := range []qsync.EntityRef{
		{Project: "DEMO", Kind: qsync.KindDefect, ID: 1},  // deleted
		{Project: "NOPE", Kind: qsync.KindReview, ID: 1},  // unknown project
		{Project: "DEMO", Kind: qsync.KindRun, ID: 12345}, // never existed
	} {
		attrs, found, err := c.Fetch(context.Background(), ref)
		if err != nil || found || attrs != nil {
			t.Errorf("%v: attrs=%v found=%v err=%v, want not found", ref, attrs, found, err)
		}
	}
}

func TestErrorClassification(t *testing.T) {
	ref := qsync.EntityRef{Project: "DEMO", Kind: qsync.KindDefect, ID: 1}

	t.Run("429 with Retry-After", func(t *testing.T) {
		fake, c, _ := setup(t)
		fake.PutDefect("DEMO", map[string]any{"id": 1})
		fake.RateLimitNext(1, 7*time.Second)
		_, _, err := c.Fetch(context.Background(), ref)
		if wait, ok := qsync.RetryWait(err); !ok || wait != 7*time.Second {
			t.Fatalf("err = %v, want RetryAfter 7s", err)
		}
		if qsync.IsPermanent(err) || !strings.Contains(err.Error(), "API rate limit exceeded") {
			t.Errorf("err = %v", err)
		}
		if _, found, err := c.Fetch(context.Background(), ref); err != nil || !found {
			t.Errorf("after the limit: found=%v err=%v", found, err)
		}
	})
	t.Run("429 without headers waits 60s", func(t *testing.T) {
		fake, c, _ := setup(t)
		fake.AddProject("DEMO")
		fake.RateLimitNext(1, 0)
		_, _, err := c.Fetch(context.Background(), ref)
		if wait, ok := qsync.RetryWait(err); !ok || wait != 60*time.Second {
			t.Errorf("err = %v, want RetryAfter 60s", err)
		}
	})
	t.Run("429 with X-RateLimit-Reset only", func(t *testing.T) {
		now := time.Unix(1_700_000_000, 0)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-RateLimit-Reset", fmt.Sprint(now.Unix()+42))
			w.WriteHeader(429)
		}))
		defer srv.Close()
		c := qase.NewClient(qase.ClientOptions{BaseURL: srv.URL, Token: token, Clock: qsync.ClockFunc(func() time.Time { return now })})
		_, _, err := c.Fetch(context.Background(), ref)
		if wait, ok := qsync.RetryWait(err); !ok || wait != 42*time.Second {
			t.Errorf("err = %v, want RetryAfter 42s", err)
		}
	})
	t.Run("5xx is retryable", func(t *testing.T) {
		fake, c, _ := setup(t)
		fake.FailNext(1, 502, nil, "")
		_, _, err := c.Fetch(context.Background(), ref)
		if err == nil || qsync.IsPermanent(err) {
			t.Errorf("err = %v, want retryable", err)
		}
		if _, ok := qsync.RetryWait(err); ok {
			t.Error("502 should use backoff, not a server wait")
		}
	})
	for _, status := range []int{400, 401, 402, 403, 422} {
		t.Run(fmt.Sprintf("%d is permanent", status), func(t *testing.T) {
			fake, c, _ := setup(t)
			fake.FailNext(1, status, nil, "")
			_, _, err := c.Fetch(context.Background(), ref)
			var apiErr *qase.APIError
			if !qsync.IsPermanent(err) || !errors.As(err, &apiErr) || apiErr.Status != status {
				t.Errorf("err = %v, want permanent %d", err, status)
			}
			if !strings.Contains(err.Error(), "Internal server error.") {
				t.Errorf("errorMessage missing from %q", err)
			}
		})
	}
	t.Run("bad token", func(t *testing.T) {
		fake := qasefake.New(token)
		defer fake.Close()
		c := qase.NewClient(qase.ClientOptions{BaseURL: fake.URL, Token: "wrong-" + token})
		_, _, err := c.Fetch(context.Background(), ref)
		if !qsync.IsPermanent(err) || !strings.Contains(err.Error(), "401") {
			t.Errorf("err = %v", err)
		}
		if strings.Contains(err.Error(), token) {
			t.Error("token in error text")
		}
	})
	t.Run("network failure is retryable and token-free", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		base := srv.URL
		srv.Close()
		c := qase.NewClient(qase.ClientOptions{BaseURL: base, Token: token})
		_, _, err := c.Fetch(context.Background(), ref)
		if err == nil || qsync.IsPermanent(err) || strings.Contains(err.Error(), token) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("server echoing the token is scrubbed", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(400)
			fmt.Fprintf(w, `{"status":false,"errorMessage":"bad token %s"}`, r.Header.Get("Token"))
		}))
		defer srv.Close()
		c := qase.NewClient(qase.ClientOptions{BaseURL: srv.URL, Token: token})
		_, _, err := c.Fetch(context.Background(), ref)
		if err == nil || strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), "[redacted]") {
			t.Errorf("err = %v", err)
		}
	})
}

func TestListPaging(t *testing.T) {
	fake, c, calls := setup(t)
	for i := 1; i <= 250; i++ {
		fake.PutDefect("DEMO", map[string]any{"id": i, "title": fmt.Sprint("d", i), "status": "open"})
	}
	fake.PutRun("DEMO", map[string]any{"id": 1}) // other kinds stay out
	var ids []int64
	err := c.List(context.Background(), "DEMO", qsync.KindDefect, func(ref qsync.EntityRef, attrs map[string]any) error {
		if ref.Project != "DEMO" || ref.Kind != qsync.KindDefect || attrs["title"] != fmt.Sprint("d", ref.ID) {
			t.Errorf("ref %v attrs %v", ref, attrs)
		}
		ids = append(ids, ref.ID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 250 || ids[0] != 1 || ids[249] != 250 {
		t.Errorf("listed %d ids", len(ids))
	}
	if n := fake.RequestCount(); n != 3 {
		t.Errorf("requests = %d, want 3", n)
	}
	for i, r := range fake.Requests() {
		if r.Query.Get("limit") != "100" || r.Query.Get("offset") != fmt.Sprint(i*100) {
			t.Errorf("request %d query %v", i, r.Query)
		}
	}
	if len(calls.ops) != 3 || calls.ops[0] != "qase list_defect 200" {
		t.Errorf("observer %v", calls.ops)
	}
}

func TestListEdges(t *testing.T) {
	t.Run("exact multiple of the page size", func(t *testing.T) {
		fake, c, _ := setup(t)
		for i := 1; i <= 200; i++ {
			fake.PutReview("P", map[string]any{"id": i, "status": "open"})
		}
		n := 0
		if err := c.List(context.Background(), "P", qsync.KindReview, func(qsync.EntityRef, map[string]any) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		if n != 200 || fake.RequestCount() != 2 {
			t.Errorf("listed %d in %d requests, want 200 in 2", n, fake.RequestCount())
		}
	})
	t.Run("empty project", func(t *testing.T) {
		fake, c, _ := setup(t)
		fake.AddProject("P")
		called := false
		err := c.List(context.Background(), "P", qsync.KindRun, func(qsync.EntityRef, map[string]any) error { called = true; return nil })
		if err != nil || called || fake.RequestCount() != 1 {
			t.Errorf("err=%v called=%v requests=%d", err, called, fake.RequestCount())
		}
	})
	t.Run("unknown project is a permanent error", func(t *testing.T) {
		_, c, _ := setup(t)
		err := c.List(context.Background(), "NOPE", qsync.KindRun, func(qsync.EntityRef, map[string]any) error { return nil })
		if err == nil || !errors.Is(err, qsync.ErrNotFound) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("fn error stops the scan", func(t *testing.T) {
		fake, c, _ := setup(t)
		for i := 1; i <= 150; i++ {
			fake.PutRun("P", map[string]any{"id": i})
		}
		stop := errors.New("stop")
		n := 0
		err := c.List(context.Background(), "P", qsync.KindRun, func(qsync.EntityRef, map[string]any) error {
			n++
			if n == 5 {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) || n != 5 || fake.RequestCount() != 1 {
			t.Errorf("err=%v n=%d requests=%d", err, n, fake.RequestCount())
		}
	})
	t.Run("rate limit mid-scan surfaces RetryAfter", func(t *testing.T) {
		fake, c, _ := setup(t)
		for i := 1; i <= 150; i++ {
			fake.PutDefect("P", map[string]any{"id": i})
		}
		n := 0
		err := c.List(context.Background(), "P", qsync.KindDefect, func(qsync.EntityRef, map[string]any) error {
			n++
			if n == 100 {
				fake.RateLimitNext(1, 3*time.Second)
			}
			return nil
		})
		if wait, ok := qsync.RetryWait(err); !ok || wait != 3*time.Second || n != 100 {
			t.Errorf("err=%v n=%d", err, n)
		}
	})
}

func TestClientTokenNeverInErrors(t *testing.T) {
	fake, c, _ := setup(t)
	fake.AddProject("DEMO")
	var errs []error
	for _, status := range []int{400, 401, 403, 404, 422, 500, 503} {
		fake.FailNext(1, status, nil, "")
		_, _, err := c.Fetch(context.Background(), qsync.EntityRef{Project: "DEMO", Kind: qsync.KindDefect, ID: 1})
		errs = append(errs, err)
	}
	fake.RateLimitNext(1, time.Second)
	errs = append(errs, c.List(context.Background(), "DEMO", qsync.KindDefect, func(qsync.EntityRef, map[string]any) error { return nil }))
	for _, err := range errs {
		if err != nil && strings.Contains(fmt.Sprintf("%v %+v %#v", err, err, err), token) {
			t.Errorf("token leaked: %v", err)
		}
	}
	if errs[0] == nil || errs[len(errs)-1] == nil {
		t.Error("expected failures")
	}
}
