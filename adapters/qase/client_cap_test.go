package qase

import (
	"context"
	"errors"
	"testing"

	"github.com/qase-sync/qase-sync/adapters/qase/qasefake"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// The API caps offset at 100000; the cap is lowered here (client and fake
// alike) so the split-by-status path runs on a few hundred entities.
func TestListSplitsByStatusAtTheOffsetCap(t *testing.T) {
	fake := capped(t, 200)
	statuses := []string{"open", "in_progress", "resolved", "invalid"}
	for i := 1; i <= 420; i++ { // 420 > cap+limit: one scan cannot reach them all
		fake.PutDefect("P", map[string]any{"id": i, "status": statuses[i%4]})
	}
	c := NewClient(ClientOptions{BaseURL: fake.URL, Token: "tok"})
	seen := map[int64]int{}
	err := c.List(context.Background(), "P", qsync.KindDefect, func(ref qsync.EntityRef, attrs map[string]any) error {
		seen[ref.ID]++
		if attrs["status"] != statuses[ref.ID%4] {
			t.Errorf("%d: status %v", ref.ID, attrs["status"])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 420 {
		t.Errorf("listed %d distinct defects, want 420", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("defect %d listed %d times", id, n)
		}
	}
	for _, r := range fake.Requests() {
		if r.Status != 200 {
			t.Errorf("request %s?%s answered %d", r.Path, r.Query.Encode(), r.Status)
		}
	}
	// first unfiltered probe, then 2 pages for each of the 4 statuses (105 each)
	if n := fake.RequestCount(); n != 1+4*2 {
		t.Errorf("requests = %d, want 9", n)
	}
}

// capped lowers the offset cap of client and fake alike to n for one test.
func capped(t *testing.T, n int) *qasefake.Server {
	old := maxOffset
	maxOffset = n
	t.Cleanup(func() { maxOffset = old })
	fake := qasefake.New("tok")
	t.Cleanup(fake.Close)
	fake.SetOffsetCap(n)
	return fake
}

func TestListReportsTruncation(t *testing.T) {
	fake := capped(t, 100)
	for i := 1; i <= 350; i++ { // all one status: splitting cannot help
		fake.PutDefect("P", map[string]any{"id": i, "status": "open"})
	}
	c := NewClient(ClientOptions{BaseURL: fake.URL, Token: "tok"})
	n := 0
	err := c.List(context.Background(), "P", qsync.KindDefect, func(qsync.EntityRef, map[string]any) error { n++; return nil })
	if !errors.Is(err, ErrListTruncated) {
		t.Fatalf("err = %v, want ErrListTruncated", err)
	}
	if n != 200 { // offsets 0 and 100 are reachable
		t.Errorf("listed %d, want 200", n)
	}
	for _, r := range fake.Requests() {
		if r.Status != 200 {
			t.Errorf("request %s %v answered %d", r.Path, r.Query, r.Status)
		}
	}
}
