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
	TakeRate(ctx context.Context, key string, n int, perSecond float64, burst int) (granted int, wait time.Duration, err error)
}

// Budget checks a shared request budget: a new budget starts full, an
// empty one says how long until the next token, budgets are independent,
// and concurrent takers (replicas) together never get more than burst plus
// the rate over the time they took.
func Budget(t *testing.T, open func(t *testing.T) RateBudget) {
	t.Run("FullThenEmpty", func(t *testing.T) {
		s := open(t)
		ctx := context.Background()
		g, _, err := s.TakeRate(ctx, "jira:a", 10, 0.5, 4)
		if err != nil || g != 4 {
			t.Fatalf("first take = %d, %v; want the whole burst of 4", g, err)
		}
		g, wait, err := s.TakeRate(ctx, "jira:a", 1, 0.5, 4)
		if err != nil || g != 0 || wait <= 0 || wait > 2*time.Second {
			t.Fatalf("take from an empty budget = %d, wait %s, %v; want 0 and a wait of at most one interval (2s)", g, wait, err)
		}
		if g, _, err := s.TakeRate(ctx, "github:b", 3, 0.5, 4); err != nil || g != 3 {
			t.Fatalf("another budget's take = %d, %v; want 3 (budgets are independent)", g, err)
		}
	})
	t.Run("ConcurrentTakersHoldTheRate", func(t *testing.T) {
		s := open(t)
		const perSecond, burst = 40.0, 5
		start := time.Now()
		var mu sync.Mutex
		total := 0
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Since(start) < 700*time.Millisecond {
					g, wait, err := s.TakeRate(context.Background(), "jira:shared", 3, perSecond, burst)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					total += g
					mu.Unlock()
					if g == 0 {
						time.Sleep(wait)
					}
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start).Seconds()
		// An upper bound (the database's clock ran no longer than ours);
		// the lower one shows the takers were not starved.
		if limit := burst + int(perSecond*elapsed) + 1; total > limit || total < burst+1 {
			t.Fatalf("three takers got %d tokens in %.2fs; want more than the burst and at most %d", total, elapsed, limit)
		}
	})
}
