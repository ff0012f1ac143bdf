package storetest

import (
	"context"
	"sync"
	"testing"
	"time"
)

// RateBudget is a store that keeps request budgets shared by replicas
// (PostgreSQL; a single SQLite process keeps its budgets in memory).
type RateBudget interface {
	ReserveRate(ctx context.Context, key string, n int, perSecond float64, burst int) ([]time.Duration, error)
}

// Budget checks a shared request budget: a new budget starts full, later
// tokens come one interval apart, budgets are independent, and concurrent
// takers (replicas) together never get more tokens due in a span than the
// burst plus the rate over it.
func Budget(t *testing.T, open func(t *testing.T) RateBudget) {
	t.Run("FullThenPaced", func(t *testing.T) {
		s := open(t)
		ctx := context.Background()
		ds, err := s.ReserveRate(ctx, "jira:a", 6, 0.5, 4)
		if err != nil || len(ds) != 6 {
			t.Fatalf("reserve = %v, %v; want 6 tokens", ds, err)
		}
		for i, d := range ds[:4] {
			if d != 0 {
				t.Errorf("token %d of the burst is %s off, want now", i, d)
			}
		}
		// The fifth and sixth are one and two intervals (2 s) off, less
		// the moment the query took.
		if ds[4] < 1500*time.Millisecond || ds[4] > 2*time.Second || ds[5]-ds[4] < 1999*time.Millisecond || ds[5]-ds[4] > 2001*time.Millisecond {
			t.Errorf("tokens after the burst are %s and %s off, want about 2s and 4s", ds[4], ds[5])
		}
		if ds, err := s.ReserveRate(ctx, "jira:a", 1, 0.5, 4); err != nil || ds[0] < 5*time.Second {
			t.Errorf("the next reservation is %v off (%v), want behind the earlier ones (about 6s)", ds, err)
		}
		if ds, err := s.ReserveRate(ctx, "github:b", 3, 0.5, 4); err != nil || ds[2] != 0 {
			t.Errorf("another budget's reservation = %v, %v; want its burst now (budgets are independent)", ds, err)
		}
	})
	t.Run("ConcurrentTakersHoldTheRate", func(t *testing.T) {
		s := open(t)
		const perSecond, burst = 40.0, 5
		const span = 700 * time.Millisecond
		start := time.Now()
		var mu sync.Mutex
		due := 0 // tokens due within span
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					asked := time.Now()
					ds, err := s.ReserveRate(context.Background(), "jira:shared", 3, perSecond, burst)
					if err != nil {
						t.Error(err)
						return
					}
					last := asked.Add(ds[len(ds)-1])
					mu.Lock()
					for _, d := range ds {
						if asked.Add(d).Sub(start) <= span {
							due++
						}
					}
					mu.Unlock()
					if last.Sub(start) > span {
						return
					}
					time.Sleep(time.Until(last)) // spend them, as a replica would
				}
			}()
		}
		wg.Wait()
		// Tokens are due no earlier than the database says (asked is
		// before it answered), so this bound holds on a busy machine.
		if limit := burst + int(perSecond*span.Seconds()) + 1; due > limit || due < burst+1 {
			t.Fatalf("three takers had %d tokens due within %s; want more than the burst and at most %d", due, span, limit)
		}
	})
}
