package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

func tryLease(t *testing.T, s qsync.Store, owner string, now time.Time, ttl time.Duration) bool {
	t.Helper()
	ok, err := s.TryLease(context.Background(), "reconcile", owner, now, ttl)
	if err != nil {
		t.Fatalf("TryLease(%s): %v", owner, err)
	}
	return ok
}

func testTryLease(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	if !tryLease(t, s, "a", t0, time.Minute) {
		t.Fatal("a free lease was refused")
	}
	if tryLease(t, s, "b", at(30*time.Second), time.Minute) {
		t.Error("b took a's lease before it ended")
	}
	if !tryLease(t, s, "a", at(30*time.Second), time.Minute) { // renewal: until t0+90s
		t.Error("a could not renew its own lease")
	}
	if tryLease(t, s, "b", at(80*time.Second), time.Minute) {
		t.Error("b took a's renewed lease before it ended")
	}
	// a stops renewing (a dead holder): the lease ends, b takes it.
	if !tryLease(t, s, "b", at(90*time.Second), time.Minute) {
		t.Error("b could not take a lease that ended")
	}
	if tryLease(t, s, "a", at(100*time.Second), time.Minute) {
		t.Error("a took its old lease back from b")
	}
	// Another name is another lease.
	if ok, err := s.TryLease(ctx, "other", "a", at(100*time.Second), time.Minute); err != nil || !ok {
		t.Errorf("TryLease(other) = %v, %v; want a free lease", ok, err)
	}
	// Release by a non-holder does nothing; by the holder frees it.
	if err := s.ReleaseLease(ctx, "reconcile", "a"); err != nil {
		t.Fatal(err)
	}
	if tryLease(t, s, "a", at(100*time.Second), time.Minute) {
		t.Error("a release by a non-holder freed the lease")
	}
	if err := s.ReleaseLease(ctx, "reconcile", "b"); err != nil {
		t.Fatal(err)
	}
	if !tryLease(t, s, "a", at(100*time.Second), time.Minute) {
		t.Error("a released lease was refused")
	}
	// A renewal may shorten the lease.
	if !tryLease(t, s, "a", at(101*time.Second), time.Second) || !tryLease(t, s, "b", at(102*time.Second), time.Minute) {
		t.Error("a shortened lease did not end when shortened")
	}
	if _, err := s.TryLease(ctx, "", "a", t0, time.Minute); err == nil {
		t.Error("TryLease with an empty name: no error")
	}
}

// TryLeaseExclusive has owners on the given stores (one database) race for
// one lease many times: each round exactly one wins.
func TryLeaseExclusive(t *testing.T, stores ...qsync.Store) {
	ctx := context.Background()
	const owners, rounds = 6, 20
	for r := 0; r < rounds; r++ {
		now := at(time.Duration(r) * time.Hour) // every round starts after the last lease ended
		var wg sync.WaitGroup
		var mu sync.Mutex
		var won []string
		errs := make(chan error, owners)
		for o := 0; o < owners; o++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				owner := fmt.Sprintf("o%d", o)
				ok, err := stores[o%len(stores)].TryLease(ctx, "tick", owner, now, time.Minute)
				if err != nil {
					errs <- err
					return
				}
				if ok {
					mu.Lock()
					won = append(won, owner)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: TryLease: %v", r, err)
		}
		if len(won) != 1 {
			t.Fatalf("round %d: %d owners got the lease (%v), want exactly 1", r, len(won), won)
		}
	}
}

func testReconcilePasses(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	if ps, err := s.ReconcilePasses(ctx, time.Time{}); err != nil || len(ps) != 0 {
		t.Fatalf("ReconcilePasses on an empty store = %v, %v", ps, err)
	}
	for i, p := range []qsync.ReconcilePass{
		{Started: at(2 * time.Minute), Owner: "b", Checked: 7, Enqueued: 7},
		{Started: t0, Owner: "a", Checked: 3, Enqueued: 2},
		{Started: at(time.Hour), Owner: "c"},
	} {
		if err := s.RecordPass(ctx, p); err != nil {
			t.Fatalf("RecordPass %d: %v", i, err)
		}
	}
	ps, err := s.ReconcilePasses(ctx, at(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].Owner != "b" || ps[0].Checked != 7 || ps[0].Enqueued != 7 || ps[1].Owner != "c" || ps[0].ID == 0 {
		t.Fatalf("ReconcilePasses since t0+1m = %+v, want b then c", ps)
	}
	wantTime(t, "Started", ps[0].Started, at(2*time.Minute))
	if all, _ := s.ReconcilePasses(ctx, time.Time{}); len(all) != 3 || all[0].Owner != "a" {
		t.Errorf("all passes = %+v, want a, b, c in start order", all)
	}
	rep, err := s.Prune(ctx, at(30*time.Minute), 1)
	if err != nil || rep.Passes != 2 {
		t.Errorf("Prune = %+v, %v; want the 2 passes started before the cut", rep, err)
	}
	if all, _ := s.ReconcilePasses(ctx, time.Time{}); len(all) != 1 || all[0].Owner != "c" {
		t.Errorf("passes after prune = %+v, want c", all)
	}
}

// BenchLease measures Lease over a backlog: projects × perProject due jobs
// (one project per route key's project); each round leases limit jobs and
// releases them again.
func BenchLease(b *testing.B, s qsync.Store, projects, perProject, limit int) {
	ctx := context.Background()
	keys := make([]qsync.Key, 0, projects*perProject)
	for p := 0; p < projects; p++ {
		for i := 0; i < perProject; i++ {
			keys = append(keys, qsync.Key{Route: "r", EntityRef: qsync.EntityRef{Project: fmt.Sprintf("P%03d", p), Kind: qsync.KindDefect, ID: int64(i + 1)}})
		}
	}
	for i := 0; i < len(keys); i += 1000 {
		if err := s.Enqueue(ctx, keys[i:min(i+1000, len(keys))], false, at(time.Duration(i)*time.Millisecond)); err != nil {
			b.Fatal(err)
		}
	}
	now := at(time.Hour)
	b.ResetTimer()
	for b.Loop() {
		js, err := s.Lease(ctx, "bench", limit, now, time.Minute)
		if err != nil || len(js) != limit {
			b.Fatalf("Lease = %d jobs, %v", len(js), err)
		}
		if err := s.Release(ctx, "bench"); err != nil {
			b.Fatal(err)
		}
	}
}

// testLeaseFairness: a project's burst does not hold the queue: Lease
// takes each project's oldest due job before any project's next one.
func testLeaseFairness(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	pk := func(project string, id int64) qsync.Key {
		return qsync.Key{Route: "r", EntityRef: qsync.EntityRef{Project: project, Kind: qsync.KindDefect, ID: id}}
	}
	var burst []qsync.Key
	for i := int64(1); i <= 1000; i++ {
		burst = append(burst, pk("BIG", i))
	}
	if err := s.Enqueue(ctx, burst[:500], false, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(ctx, burst[500:], false, at(time.Second)); err != nil {
		t.Fatal(err)
	}
	// Enqueued after the whole burst: by due time alone it would wait for
	// a thousand jobs.
	if err := s.Enqueue(ctx, []qsync.Key{pk("SMALL", 1)}, false, at(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	js := lease(t, s, "w", 4, at(time.Minute))
	got := map[string]int{}
	for _, j := range js {
		got[j.Key.Project]++
	}
	if len(js) != 4 || got["SMALL"] != 1 || got["BIG"] != 3 {
		t.Fatalf("first lease batch = %v, want SMALL's job and 3 of BIG's", jobKeys(js))
	}
	// Within a project, oldest first.
	for _, j := range js {
		if j.Key.Project == "BIG" && !j.DueAt.Equal(t0) {
			t.Errorf("leased %s due %s, want BIG's oldest (due %s)", j.Key, j.DueAt, t0)
		}
	}
	// Next batch: SMALL has nothing left, BIG goes on.
	if js := lease(t, s, "w", 4, at(time.Minute)); len(js) != 4 || js[0].Key.Project != "BIG" {
		t.Errorf("second batch = %v, want 4 of BIG's", jobKeys(js))
	}
	// Three more projects (SMALL's job is still leased), limit 4: one job
	// of each project.
	for _, k := range []qsync.Key{pk("A", 1), pk("A", 2), pk("B", 1), pk("B", 2), pk("C", 1)} {
		if err := s.Enqueue(ctx, []qsync.Key{k}, false, at(3*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	js = lease(t, s, "w2", 4, at(time.Minute))
	got = map[string]int{}
	for _, j := range js {
		got[j.Key.Project]++
	}
	if got["A"] != 1 || got["B"] != 1 || got["C"] != 1 || got["BIG"] != 1 {
		t.Errorf("lease over four projects = %v, want one job of each", jobKeys(js))
	}
}
