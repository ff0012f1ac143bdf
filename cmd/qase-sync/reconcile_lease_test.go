package main

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// The reconcile lease of a replica that died mid-pass (it never renews or
// releases) ends after reconcile.lease; then a pass runs and is recorded.
func TestReconcileLeaseOfDeadHolderExpires(t *testing.T) {
	h := newHarness(t, harnessOpts{extraYAML: "reconcile:\n  enabled: true\n  schedule: \"@every 1h\"\n  lease: 300ms\n"})
	ctx := context.Background()
	start := time.Now()
	if ok, err := h.a.store.TryLease(ctx, reconcileLease, "dead-replica", time.Now(), 300*time.Millisecond); err != nil || !ok {
		t.Fatalf("TryLease(dead-replica) = %v, %v", ok, err)
	}
	if _, err := h.a.adminReconcile(ctx); !errors.Is(err, errOtherReplica) {
		t.Fatalf("pass while another replica holds the lease: %v, want errOtherReplica", err)
	}
	time.Sleep(350 * time.Millisecond)
	if _, err := h.a.adminReconcile(ctx); err != nil {
		t.Fatalf("pass after the dead holder's lease ended: %v", err)
	}
	ps, err := h.a.store.ReconcilePasses(ctx, start)
	if err != nil || len(ps) != 1 || ps[0].Owner != h.a.owner {
		t.Fatalf("recorded passes = %+v, %v; want one by %s", ps, err, h.a.owner)
	}
	// An admin pass releases the lease: another replica may run at once.
	if ok, err := h.a.store.TryLease(ctx, reconcileLease, "other", time.Now(), time.Second); err != nil || !ok {
		t.Errorf("lease after an admin pass = %v, %v; want it released", ok, err)
	}
}

// TestPostgresOneReconcilePassPerTick: three replicas on one PostgreSQL
// database fire every tick at once, and one of them late; the store
// records exactly one pass per tick, and the skipped ones are counted.
func TestPostgresOneReconcilePassPerTick(t *testing.T) {
	o := harnessOpts{store: pgDatabase(t), extraYAML: "reconcile:\n  enabled: true\n  schedule: \"@every 1h\"\n  lease: 2s\n"}
	first := newHarness(t, o)
	hs := []*harness{first}
	for range 2 {
		h := &harness{t: t, jira: first.jira, gh: first.gh, dir: t.TempDir(), logs: &syncBuffer{}}
		addr := freeAddr(t)
		h.url = "http://" + addr
		h.writeConfig(o, addr)
		h.start(o)
		hs = append(hs, h)
	}
	ctx := context.Background()
	start := time.Now().Add(-time.Millisecond)
	const ticks, interval = 3, 700 * time.Millisecond
	for i := range ticks {
		next := time.Now().Add(interval)
		var wg sync.WaitGroup
		for _, h := range hs {
			wg.Add(1)
			go func() { defer wg.Done(); h.a.reconcileTick(ctx, next, interval) }()
		}
		wg.Wait()
		// A replica that lost this tick fires late, after the pass has
		// finished.
		ps, err := first.a.store.ReconcilePasses(ctx, start)
		if err != nil || len(ps) != i+1 {
			t.Fatalf("tick %d: passes %+v, %v; want %d", i, ps, err, i+1)
		}
		late := hs[0]
		for _, h := range hs {
			if h.a.owner != ps[i].Owner {
				late = h
			}
		}
		time.Sleep(100 * time.Millisecond)
		late.a.reconcileTick(ctx, next, interval)
		time.Sleep(time.Until(next))
	}
	ps, err := first.a.store.ReconcilePasses(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != ticks {
		t.Fatalf("%d passes recorded for %d ticks across 3 replicas: %+v", len(ps), ticks, ps)
	}
	for i := 1; i < len(ps); i++ {
		if gap := ps[i].Started.Sub(ps[i-1].Started); gap < interval/2 {
			t.Errorf("passes %d and %d only %s apart: two passes in one tick", i-1, i, gap)
		}
	}
	skipped := 0.0
	for _, h := range hs {
		_, samples := scrapeMetrics(t, h.url)
		n, _ := promSum(samples, "qase_sync_reconcile_runs_total", map[string]string{"result": "other_replica"})
		skipped += n
	}
	if want := float64(ticks * 3); skipped != want { // two at each tick, and the late one
		t.Errorf("other_replica skips = %v, want %v", skipped, want)
	}
}
