package qasefake

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/internal/testhttp"
	qsync "github.com/qase-sync/qase-sync/sync"
)

func get(t *testing.T, s *Server, path, token string) (int, http.Header, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.URL+path, nil)
	if token != "" {
		req.Header.Set("Token", token)
	}
	resp, b := testhttp.Do(t, nil, req)
	var body map[string]any
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("%s: body is not JSON: %v", path, err)
	}
	return resp.StatusCode, resp.Header, body
}

func TestFakeAPI(t *testing.T) {
	s := New("tok")
	defer s.Close()
	for i := 0; i < 15; i++ {
		st := "open"
		if i%3 == 0 {
			st = "resolved"
		}
		s.PutDefect("demo", map[string]any{"title": "d", "status": st}) // ids assigned 1..15
	}
	s.PutRun("DEMO", map[string]any{"id": 40, "status_text": "passed"})
	s.PutRun("DEMO", map[string]any{"id": 41, "status_text": "failed"})
	s.PutRun("DEMO", map[string]any{"id": 42, "status_text": "aborted"})

	tests := []struct {
		name, path, token string
		status            int
		check             func(t *testing.T, body map[string]any)
	}{
		{"no token", "/defect/DEMO/1", "", 401, nil},
		{"wrong token", "/defect/DEMO/1", "nope", 401, nil},
		{"get", "/defect/DEMO/4", "tok", 200, func(t *testing.T, b map[string]any) {
			r := b["result"].(map[string]any)
			if b["status"] != true || r["id"] != float64(4) || r["status"] != "resolved" {
				t.Errorf("body %v", b)
			}
		}},
		{"missing entity", "/defect/DEMO/99", "tok", 404, nil},
		{"missing project", "/defect/NOPE", "tok", 404, nil},
		{"default limit is 10", "/defect/DEMO", "tok", 200, func(t *testing.T, b map[string]any) {
			r := b["result"].(map[string]any)
			if r["total"] != float64(15) || r["filtered"] != float64(15) || r["count"] != float64(10) || len(r["entities"].([]any)) != 10 {
				t.Errorf("result %v", r)
			}
		}},
		{"offset page", "/defect/DEMO?limit=10&offset=10", "tok", 200, func(t *testing.T, b map[string]any) {
			r := b["result"].(map[string]any)
			ents := r["entities"].([]any)
			if r["count"] != float64(5) || ents[0].(map[string]any)["id"] != float64(11) {
				t.Errorf("result %v", r)
			}
		}},
		{"status filter", "/defect/DEMO?status=resolved&limit=100", "tok", 200, func(t *testing.T, b map[string]any) {
			r := b["result"].(map[string]any)
			if r["total"] != float64(15) || r["filtered"] != float64(5) || r["count"] != float64(5) {
				t.Errorf("result %v", r)
			}
		}},
		{"run status comma list", "/run/DEMO?status=passed,failed", "tok", 200, func(t *testing.T, b map[string]any) {
			if r := b["result"].(map[string]any); r["filtered"] != float64(2) {
				t.Errorf("result %v", r)
			}
		}},
		{"defect status takes one value", "/defect/DEMO?status=open,resolved", "tok", 400, nil},
		{"limit over 100", "/defect/DEMO?limit=101", "tok", 400, func(t *testing.T, b map[string]any) {
			if !strings.Contains(toJSON(b), "limit") {
				t.Errorf("body %v", b)
			}
		}},
		{"limit 0", "/defect/DEMO?limit=0", "tok", 400, nil},
		{"offset over the cap", "/defect/DEMO?offset=100001", "tok", 400, nil},
		{"unknown kind", "/case/DEMO/1", "tok", 404, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := get(t, s, tt.path, tt.token)
			if status != tt.status {
				t.Fatalf("status %d, want %d (%v)", status, tt.status, body)
			}
			if status != 200 && (body["status"] != false || body["errorMessage"] == "") {
				t.Errorf("error body %v", body)
			}
			if tt.check != nil {
				tt.check(t, body)
			}
		})
	}
	if n := s.RequestCount(); n != len(tests) {
		t.Errorf("RequestCount = %d, want %d", n, len(tests))
	}
	for _, r := range s.Requests() {
		if strings.Contains(toJSON(r), "tok") {
			t.Errorf("request log holds the token: %+v", r)
		}
	}
}

func TestFakeStateChanges(t *testing.T) {
	s := New("tok")
	defer s.Close()
	rec := map[string]any{"id": 5, "title": "a"}
	s.PutReview("P", rec)
	rec["title"] = "mutated after put" // must not leak in
	if _, _, b := get(t, s, "/review/P/5", "tok"); b["result"].(map[string]any)["title"] != "a" {
		t.Errorf("stored record aliased the caller's map: %v", b)
	}
	s.PutReview("P", map[string]any{"id": 5, "title": "b"})
	if _, _, b := get(t, s, "/review/P/5", "tok"); b["result"].(map[string]any)["title"] != "b" {
		t.Errorf("replace failed: %v", b)
	}
	s.Delete("P", qsync.KindReview, 5)
	if st, _, _ := get(t, s, "/review/P/5", "tok"); st != 404 {
		t.Errorf("after delete: %d", st)
	}
	if id := s.PutReview("P", map[string]any{"title": "new"}); id != 6 {
		t.Errorf("assigned id %d, want 6 (after the highest seen)", id)
	}
}

func TestFakeRateLimitAndFailures(t *testing.T) {
	s := New("tok")
	defer s.Close()
	s.AddProject("P")
	s.RateLimitNext(2, 1500*time.Millisecond)
	for i := 0; i < 2; i++ {
		st, h, b := get(t, s, "/run/P", "tok")
		if st != 429 || h.Get("Retry-After") != "2" || h.Get("X-RateLimit-Reset") == "" || b["errorMessage"] != "API rate limit exceeded." {
			t.Errorf("call %d: %d %v %v", i, st, h, b)
		}
	}
	if st, _, _ := get(t, s, "/run/P", "tok"); st != 200 {
		t.Errorf("after the limit: %d", st)
	}
	s.FailNext(1, 503, nil, "")
	if st, _, _ := get(t, s, "/run/P", "tok"); st != 503 {
		t.Errorf("FailNext: %d", st)
	}
	if st, _, _ := get(t, s, "/run/P", "tok"); st != 200 {
		t.Errorf("after FailNext: %d", st)
	}
	s.Delay(time.Hour)
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/run/P", nil)
	req.Header.Set("Token", "tok")
	c := http.Client{Timeout: 50 * time.Millisecond}
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("Delay: answered %d before the delay ended", resp.StatusCode)
	}
	s.Delay(0)
	if st, _, _ := get(t, s, "/run/P", "tok"); st != 200 {
		t.Errorf("after Delay(0): %d", st)
	}
	s.ResetRequests()
	if s.RequestCount() != 0 {
		t.Error("ResetRequests")
	}
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
