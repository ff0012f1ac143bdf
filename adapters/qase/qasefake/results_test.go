package qasefake

import "testing"

func TestFakeResultsAndCases(t *testing.T) {
	s := New("tok")
	defer s.Close()
	s.AddProject("SHOP")
	for i, st := range []string{"failed", "passed", "failed", "blocked"} {
		s.PutResult("SHOP", map[string]any{"run_id": 7 + i%2, "case_id": i + 1, "status": st, "end_time": "2026-03-01 10:00:0" + string(rune('0'+i))})
	}
	h := s.PutResult("SHOP", map[string]any{"hash": "abc", "run_id": 9, "case_id": 3, "status": "failed"})
	s.PutCase("SHOP", map[string]any{"id": 3, "title": "Checkout"})
	count := func(b map[string]any) float64 { return b["result"].(map[string]any)["filtered"].(float64) }
	tests := []struct {
		path     string
		status   int
		filtered float64
	}{
		{"/result/SHOP?run=7&status=failed", 200, 2},
		{"/result/SHOP?run=7,8", 200, 4},
		{"/result/SHOP?run=8&status=passed", 200, 1},
		{"/result/SHOP?case_id=3", 200, 2},
		{"/result/SHOP?status=failed&limit=1", 200, 3},
		{"/result/SHOP?status=failure", 400, -1},
		{"/result/SHOP?run=x", 400, -1},
		{"/result/SHOP?limit=101", 400, -1},
		{"/result/NOPE", 404, -1},
		{"/result/SHOP/" + h, 200, -1},
		{"/result/SHOP/nope", 404, -1},
		{"/case/SHOP/3", 200, -1},
		{"/case/SHOP/4", 404, -1},
		{"/failure/SHOP", 404, -1},
	}
	for _, tc := range tests {
		code, _, body := get(t, s, tc.path, "tok")
		if code != tc.status {
			t.Errorf("%s: %d, want %d (%v)", tc.path, code, tc.status, body)
			continue
		}
		if tc.filtered >= 0 && count(body) != tc.filtered {
			t.Errorf("%s: filtered %v, want %v", tc.path, count(body), tc.filtered)
		}
	}
	if _, _, body := get(t, s, "/case/SHOP/3", "tok"); body["result"].(map[string]any)["title"] != "Checkout" {
		t.Errorf("case: %v", body)
	}
	if code, _, _ := get(t, s, "/result/SHOP", ""); code != 401 {
		t.Errorf("no token: %d", code)
	}
}
