package qasefake

import (
	"net/url"
	"testing"
)

// The fake's search filters and orders by update time, and refuses what
// it does not understand instead of ignoring it.
func TestFakeSearch(t *testing.T) {
	s := New("tok")
	defer s.Close()
	s.PutDefect("DEMO", map[string]any{"id": 1, "updated_at": "2025-01-01T00:00:00Z"})
	s.PutDefect("DEMO", map[string]any{"id": 2, "updated_at": "2025-03-01T00:00:00Z"})
	s.PutDefect("DEMO", map[string]any{"id": 3, "updated_at": "2025-02-01T00:00:00Z"})
	s.PutDefect("OTHER", map[string]any{"id": 4, "updated_at": "2025-03-01T00:00:00Z"})
	search := func(q string) (int, map[string]any) {
		st, _, body := get(t, s, "/search?"+url.Values{"query": {q}, "limit": {"100"}}.Encode(), "tok")
		return st, body
	}
	st, body := search(`entity = "defect" and project = "DEMO" and updatedAt >= 1738368000 order by updatedAt desc`) // 2025-02-01
	if st != 200 {
		t.Fatalf("status %d: %v", st, body)
	}
	res := body["result"].(map[string]any)
	var ids []float64
	for _, e := range res["entities"].([]any) {
		ids = append(ids, e.(map[string]any)["defect_id"].(float64))
	}
	if len(ids) != 2 || ids[0] != 2 || ids[1] != 3 || res["total"].(float64) != 2 {
		t.Errorf("ids %v total %v; want [2 3] newest first, total 2", ids, res["total"])
	}
	for _, bad := range []string{
		`entity = "defect" and updatedAt >= "yesterday"`,
		`entity = "defect" and title ~ "x"`,
		`entity = "defect" or project = "DEMO"`,
		`entity = "run" and project = "DEMO"`,
		`entity = "defect" order by title`,
		`entity = "defect`,
	} {
		if st, _ := search(bad); st != 400 {
			t.Errorf("%s: status %d, want 400", bad, st)
		}
	}
	if n := s.Calls()["GET /search"]; n != 7 {
		t.Errorf("Calls counted %d searches, want 7", n)
	}
}
