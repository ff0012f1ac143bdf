package storetest

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// BenchJob measures the store's share of one update job as a worker makes
// it: Lease, the entity's snapshot and new events, the link, then the
// bookkeeping, either as one Finish (snapshot, link and outcome in one
// commit) or split as the engine did before Finish (SaveSnapshot, a
// fenced link save after the write and one for the fingerprint,
// Complete). It reports this process's CPU per job (a PostgreSQL
// server's own CPU is not in it) besides the wall time.
func BenchJob(b *testing.B, s qsync.Store, split bool) {
	ctx := context.Background()
	const batch = 100
	for i := 0; i < b.N; i += batch {
		var ins []qsync.Inbound
		for j := i; j < min(i+batch, b.N); j++ {
			ins = append(ins, in(event(fmt.Sprint("job-", j), ref(int64(j+1))), "jira"))
		}
		if _, err := s.AcceptEvents(ctx, ins, t0); err != nil {
			b.Fatal(err)
		}
	}
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		now := at(time.Duration(i) * time.Millisecond)
		js, err := s.Lease(ctx, "bench", 1, now, time.Minute)
		if err != nil || len(js) != 1 {
			b.Fatalf("Lease = %d jobs, %v", len(js), err)
		}
		j := js[0]
		r, err := qsync.ReadKey(ctx, s, j.Key, 500)
		snap, evs := r.Snapshot, r.Events
		if err != nil || len(evs) == 0 {
			b.Fatalf("reading the key: %d events, %v", len(evs), err)
		}
		prev := snap.LastSeq
		snap.Ref, snap.LastSeq = j.Key.EntityRef, evs[len(evs)-1].Seq
		for _, ev := range evs {
			snap.State.Fold(ev)
		}
		l := sampleLink(j.Key)
		entry := qsync.LedgerEntry{Ops: []string{"update"}}
		if split {
			if _, err := s.SaveSnapshot(ctx, snap, prev); err != nil {
				b.Fatal(err)
			}
			for range 2 {
				if err := s.SaveLinkFenced(ctx, l, j); err != nil {
					b.Fatal(err)
				}
			}
			err = s.Complete(ctx, j, qsync.OutcomeApplied, entry, now)
		} else {
			err = s.Finish(ctx, j, qsync.JobOutcome{Outcome: qsync.OutcomeApplied, Entry: entry, Link: &l, Snapshot: &snap, PrevSeq: prev}, now)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/job")
}

// cpuTime is this process's user and system CPU time so far: unlike wall
// time, other processes on the machine do not inflate it.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
