package sync_test

import (
	"context"
	"sync"
	"testing"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// leaseCounter records how many jobs each lease handed out.
type leaseCounter struct {
	qsync.Store
	mu    sync.Mutex
	calls int
	sizes []int // of the leases that handed out jobs
}

func (l *leaseCounter) Lease(ctx context.Context, owner string, n int, now time.Time, d time.Duration) ([]qsync.Job, error) {
	jobs, err := l.Store.Lease(ctx, owner, n, now, d)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if len(jobs) > 0 {
		l.sizes = append(l.sizes, len(jobs))
	}
	return jobs, err
}

func (l *leaseCounter) seen() (calls int, sizes []int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls, append([]int(nil), l.sizes...)
}

// Events committed close together, though each in its own commit, are
// leased together once workers gather: their jobs run side by side and
// their writes can share transactions. Without gathering the dispatcher
// leases each as it comes.
func TestWokenWorkersGatherEventsArrivingTogether(t *testing.T) {
	for _, tc := range []struct {
		name   string
		gather time.Duration
		one    bool // one lease for all the events
	}{
		{"gathering", 400 * time.Millisecond, true},
		{"at once", -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lc := &leaseCounter{}
			b := setup(t, func(o *qsync.EngineOptions) {
				o.Gather, o.Concurrency = tc.gather, 8
				o.Poll = time.Hour // only wakes lease
				o.Sleep = func(ctx context.Context, d time.Duration) error {
					select {
					case <-time.After(d):
						return nil
					case <-ctx.Done():
						return ctx.Err()
					}
				}
			})
			b.wrap = func(s qsync.Store) qsync.Store { lc.Store = s; return lc }
			b.build()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { b.engine.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			for calls, _ := lc.seen(); calls == 0; calls, _ = lc.seen() {
				time.Sleep(time.Millisecond) // the first, empty lease: now idle
			}
			const n = 6
			for id := int64(1); id <= n; id++ {
				b.openDefect(id, "d", time.Now())
				time.Sleep(20 * time.Millisecond)
			}
			deadline := time.Now().Add(10 * time.Second)
			for q, _ := b.store.QueueDepth(ctx); q > 0; q, _ = b.store.QueueDepth(ctx) {
				if time.Now().After(deadline) {
					t.Fatalf("%d jobs left", q)
				}
				time.Sleep(5 * time.Millisecond)
			}
			for id := int64(1); id <= n; id++ {
				b.oneIssue(id)
			}
			_, sizes := lc.seen()
			if tc.one && (len(sizes) != 1 || sizes[0] != n) {
				t.Fatalf("leases handed out %v jobs, want all %d in one", sizes, n)
			}
			if !tc.one && len(sizes) < 2 {
				t.Fatalf("leases handed out %v jobs, want each event leased as it came", sizes)
			}
		})
	}
}
