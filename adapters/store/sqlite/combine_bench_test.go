package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// BenchmarkJobsParallel runs jobs' store steps (lease, reads, the intent,
// the outcome) from eight workers at once, as the engine does, with and
// without combined writes (combineWrites).
func BenchmarkJobsParallel(b *testing.B) {
	for _, comb := range []int{1, 32} {
		b.Run(fmt.Sprint("combine=", comb), func(b *testing.B) {
			old := combineWrites
			combineWrites = comb
			defer func() { combineWrites = old }()
			ctx := context.Background()
			s, err := Open(ctx, Options{Path: filepath.Join(b.TempDir(), "qs.db"), Synchronous: "full"})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			t0 := time.Unix(1700000000, 0)
			for i := 0; i < b.N; i += 100 {
				var ins []qsync.Inbound
				for j := i; j < min(i+100, b.N); j++ {
					ev := qsync.Event{DedupKey: fmt.Sprint("d", j), Name: "defect.created", Ref: qsync.EntityRef{Project: "P", Kind: qsync.KindDefect, ID: int64(j + 1)},
						Timestamp: t0, Patch: qsync.Patch{Attrs: map[string]any{"title": "x", "status": "open"}}}
					ins = append(ins, qsync.Inbound{Event: ev, Routes: []string{"jira"}})
				}
				if _, err := s.AcceptEvents(ctx, ins, t0); err != nil {
					b.Fatal(err)
				}
			}
			var left atomic.Int64
			left.Store(int64(b.N))
			cpu0 := cpuNow()
			b.ResetTimer()
			var wg sync.WaitGroup
			for w := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for left.Add(-1) >= 0 {
						now := t0.Add(time.Hour)
						js, err := s.Lease(ctx, fmt.Sprint("w", w), 1, now, time.Minute)
						if err != nil || len(js) != 1 {
							b.Errorf("Lease = %d jobs, %v", len(js), err)
							return
						}
						j := js[0]
						r, err := s.ReadKey(ctx, j.Key, 500)
						if err != nil {
							b.Error(err)
							return
						}
						snap, evs := r.Snapshot, r.Events
						prev := snap.LastSeq
						snap.Ref = j.Key.EntityRef
						for _, ev := range evs {
							snap.State.Fold(ev)
							snap.LastSeq = ev.Seq
						}
						l := qsync.Link{Key: j.Key, Tracker: "jira", Issue: qsync.IssueRef{ID: "1", Key: "X-1", Project: "X"}, Fingerprint: "f", CreatedAt: now, UpdatedAt: now}
						if err := s.SaveLinkFenced(ctx, l, j); err != nil {
							b.Error(err)
							return
						}
						if err := s.Finish(ctx, j, qsync.JobOutcome{Outcome: qsync.OutcomeApplied, Entry: qsync.LedgerEntry{Ops: []string{"create"}}, Link: &l, Snapshot: &snap, PrevSeq: prev}, now); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64((cpuNow()-cpu0).Microseconds())/float64(b.N), "cpu-µs/job")
		})
	}
}

// cpuNow is this process's user and system CPU time so far.
func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
