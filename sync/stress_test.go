package sync_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// newEngine is another process on the bundle's store (its own owner and
// coverage, as a second replica or a CLI run has).
func (b *bundle) newEngine(owner string) *qsync.Engine {
	o := b.opts
	o.Store, o.Owner, o.Coverage = b.store, owner, &qsync.Coverage{}
	o.Trackers = map[string]qsync.Tracker{"mem": b.tracker}
	return qsync.NewEngine(o)
}

// TestStress runs the whole engine against a faulty tracker for a few
// seconds: three workers' processes on one store, random refusals,
// commit-then-fail and late commits up to twice the client's timeout,
// worker restarts, concurrent reconciles, and a lost store followed by
// events before any rebuild. At the end it checks the invariants: I1 every
// accepted event applied, no-op or dead-lettered; I2 one issue per key;
// I3 converged; I4 another reconcile writes nothing.
func TestStress(t *testing.T) {
	const keys = 24
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 7))
	var rngMu gosync.Mutex
	roll := func() float64 { rngMu.Lock(); defer rngMu.Unlock(); return rng.Float64() }

	const clientTimeout = 40 * time.Millisecond
	b := setup(t, func(o *qsync.EngineOptions) {
		o.Lease = 150 * time.Millisecond
		// The fake commits a late write after sleeping 2*clientTimeout; the
		// window is the product's promise about the tracker, so its margin
		// must outlast a sleep overshot by a loaded machine (the race
		// detector with every package at once: a 40 ms margin was
		// overshot once in CI, and a duplicate followed).
		o.LateCommit = 2*clientTimeout + 200*time.Millisecond
		o.MaxAttempts = 1000
		o.Concurrency = 3
	})
	var faulty atomic.Bool
	faulty.Store(true)
	b.tracker.late = 2 * clientTimeout
	b.tracker.fault = func(op string) fault {
		if !faulty.Load() {
			return faultNone
		}
		r := roll()
		switch op {
		case "create", "update", "set_status", "comment", "mark":
			switch {
			case r < 0.08:
				return faultRefuse
			case r < 0.16:
				return faultAfter
			case r < 0.24:
				return faultLate
			}
		default:
			if r < 0.05 {
				return faultAfter // a read whose answer is lost
			}
		}
		return faultNone
	}

	titles := make([]string, keys+1)
	resolved := make([]bool, keys+1)
	edit := func(id int64, ts time.Time) {
		switch r := roll(); {
		case r < 0.15 && titles[id] != "":
			resolved[id] = true
			b.qase.set(id, map[string]any{"title": titles[id], "status": "resolved"})
			b.deliver("defect.resolved", id, ts, nil)
		default:
			titles[id] = fmt.Sprintf("title %d.%d", id, int(roll()*1000))
			status := "open"
			if resolved[id] {
				status = "resolved"
			}
			b.qase.set(id, map[string]any{"title": titles[id], "status": status})
			if r < 0.5 {
				b.deliver("defect.created", id, ts, map[string]any{"title": titles[id], "status": status})
			} else {
				b.deliver("defect.updated", id, ts, nil) // thin, often byte-identical
			}
		}
	}

	// workers runs n processes on the store, restarting one now and then.
	workers := func(ctx context.Context, tag string) *gosync.WaitGroup {
		var wg gosync.WaitGroup
		for w := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for gen := 0; ctx.Err() == nil; gen++ {
					e := b.newEngine(fmt.Sprintf("%s-w%d-%d", tag, w, gen))
					rctx, cancel := context.WithTimeout(ctx, time.Duration(100+roll()*300)*time.Millisecond)
					e.Run(rctx) // a restart when the timeout ends
					cancel()
				}
			}()
		}
		return &wg
	}
	reconcilers := func(ctx context.Context) *gosync.WaitGroup {
		var wg gosync.WaitGroup
		for r := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				e := b.newEngine(fmt.Sprintf("reconciler-%d", r))
				for ctx.Err() == nil {
					if _, err := e.Reconcile(ctx, qsync.ReconcileOptions{}); err != nil && ctx.Err() == nil {
						t.Logf("reconcile: %v", err) // faulty listings fail a pass; the next one runs
					}
					time.Sleep(time.Duration(50+roll()*100) * time.Millisecond)
				}
			}()
		}
		return &wg
	}
	phase := func(tag string, d time.Duration, deliver func(ts time.Time)) {
		ctx, cancel := context.WithCancel(context.Background())
		ws, rs := workers(ctx, tag), reconcilers(ctx)
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			deliver(time.Now())
			time.Sleep(3 * time.Millisecond)
		}
		cancel()
		ws.Wait()
		rs.Wait()
	}

	phase("a", 1500*time.Millisecond, func(ts time.Time) { edit(1+int64(roll()*keys), ts) })
	t.Logf("after phase a: writes %v reads %v", b.tracker.writes, b.tracker.reads)
	// The database is lost; events for already mirrored defects arrive
	// before any rebuild or reconcile.
	b.restart(true)
	phase("b", 1000*time.Millisecond, func(ts time.Time) { edit(1+int64(roll()*keys), ts) })

	// Calm: faults stop, late writes land, one reconcile and the queue drain.
	faulty.Store(false)
	b.tracker.pending.Wait()
	b.reconcile()
	b.reconcile()

	ctx := context.Background()
	st, err := b.store.EventStatus(ctx)
	if err != nil || st.Pending != 0 {
		t.Errorf("I1: event status %+v (%v): every accepted event must end applied, no-op or dead", st, err)
	}
	dead, _ := b.store.DeadLetters(ctx, 100)
	for _, d := range dead {
		if d.Reason == "" {
			t.Errorf("I1: dead letter without a reason: %+v", d)
		}
	}
	for id := int64(1); id <= keys; id++ {
		if titles[id] == "" {
			continue
		}
		issues := b.tracker.issuesOf(key(id))
		if len(issues) == 0 && resolved[id] {
			continue // resolved before its first sync: never filed (create_when)
		}
		if len(issues) != 1 {
			ids := []string{}
			for _, is := range issues {
				ids = append(ids, is.Ref.ID+":"+is.Status)
			}
			t.Errorf("I2: defect %d has %d issues %v, want 1", id, len(issues), ids)
			continue
		}
		is := issues[0]
		want := "To Do"
		if resolved[id] {
			want = "Done"
		}
		if is.Title != fmt.Sprintf("[QA-%d] %s", id, titles[id]) || is.Status != want {
			t.Errorf("I3: defect %d: issue %q %q, want %q %q", id, is.Title, is.Status, titles[id], want)
		}
	}
	if n := b.reconcileWrites(); n != 0 {
		t.Errorf("I4: a reconcile after convergence made %d tracker writes", n)
	}
	t.Logf("tracker writes %v, reads %v", b.tracker.writes, b.tracker.reads)
}
