package sqlite

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// testGroupSync is a groupSync over an empty WAL file of its own.
func testGroupSync(t *testing.T) *groupSync {
	t.Helper()
	wal := filepath.Join(t.TempDir(), "db-wal")
	if err := os.WriteFile(wal, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return newGroupSync(wal)
}

// A commit made while a round's fsync runs is not covered by it: its
// writer waits for the next round.
func TestGroupSyncWaitsForARoundStartedAfterTheCommit(t *testing.T) {
	g := testGroupSync(t)
	entered, release := make(chan struct{}), make(chan struct{})
	var rounds atomic.Int32
	g.fsync = func(*os.File) error {
		if rounds.Add(1) == 1 {
			close(entered)
			<-release
		}
		return nil
	}
	first := g.commit()
	firstDone := make(chan error, 1)
	go func() { firstDone <- g.wait(first) }()
	<-entered // round 1 is flushing, covering commit 1 only
	second := g.commit()
	secondDone := make(chan error, 1)
	go func() { secondDone <- g.wait(second) }()
	select {
	case err := <-secondDone:
		t.Fatalf("commit 2 done (%v) while the round that began before it was still flushing", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	for _, ch := range []chan error{firstDone, secondDone} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	if n := rounds.Load(); n != 2 {
		t.Errorf("rounds = %d, want 2 (commit 2 needs one of its own)", n)
	}
}

// Many concurrent writers share fsyncs, and each returns only once a
// round that covers it has ended.
func TestGroupSyncSharesRounds(t *testing.T) {
	g := testGroupSync(t)
	var rounds atomic.Int32
	var durable atomic.Uint64 // highest commit a finished round covered
	g.fsync = func(f *os.File) error {
		g.mu.Lock()
		upto := g.committed
		g.mu.Unlock()
		time.Sleep(time.Millisecond)
		rounds.Add(1)
		for {
			d := durable.Load()
			if upto <= d || durable.CompareAndSwap(d, upto) {
				break
			}
		}
		return f.Sync()
	}
	const writers, each = 16, 20
	var wg sync.WaitGroup
	var late atomic.Int32
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				n := g.commit()
				if err := g.wait(n); err != nil {
					t.Error(err)
					return
				}
				if durable.Load() < n {
					late.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if late.Load() > 0 {
		t.Errorf("%d waits returned before a round covering them ended", late.Load())
	}
	if n := rounds.Load(); n >= writers*each/2 {
		t.Errorf("%d fsyncs for %d commits: rounds are not shared", n, writers*each)
	}
	if err := g.close(); err != nil {
		t.Fatal(err)
	}
}

// After a failed fsync nothing is reported durable again, and the store
// stops answering pings (readiness).
func TestGroupSyncFailureIsFinal(t *testing.T) {
	g := testGroupSync(t)
	fail := true
	g.fsync = func(*os.File) error {
		if fail {
			return errors.New("EIO")
		}
		return nil
	}
	if err := g.wait(g.commit()); err == nil {
		t.Fatal("wait after a failed fsync = nil")
	}
	fail = false
	if err := g.wait(g.commit()); err == nil {
		t.Fatal("a later fsync that succeeds made a commit durable after a failure")
	}

	ctx := context.Background()
	s, err := Open(ctx, Options{Path: filepath.Join(t.TempDir(), "q.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	s.group.fsync = func(*os.File) error { return errors.New("EIO") }
	if err := s.Enqueue(ctx, []qsync.Key{{Route: "r", EntityRef: qsync.EntityRef{Project: "P", Kind: qsync.KindDefect, ID: 1}}}, false, time.Now()); err == nil {
		t.Error("a write returned nil although its fsync failed")
	}
	if err := s.Ping(ctx); err == nil {
		t.Error("Ping = nil after a failed fsync")
	}
}

// With synchronous=full every write of the store, an ingest batch, an
// enqueue, a link saved before a tracker call, returns only after an fsync
// of the WAL that began after its commit, but for a job's lease, its
// renewal and its outcome, which need not be durable and are covered by
// the next write that waits; with normal, none waits for one.
func TestWritesReturnOnceTheWALIsSynced(t *testing.T) {
	for _, mode := range []string{"full", "normal"} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "q.db")
			s, err := Open(ctx, Options{Path: path, Synchronous: mode})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var fsyncs atomic.Int32
			if s.group != nil {
				real := s.group.fsync
				s.group.fsync = func(f *os.File) error {
					fsyncs.Add(1)
					return real(f)
				}
			}
			check := func(what string) {
				t.Helper()
				if s.group == nil {
					if n := fsyncs.Load(); n != 0 {
						t.Errorf("%s: %d group fsyncs with synchronous=normal", what, n)
					}
					return
				}
				s.group.mu.Lock()
				committed, synced := s.group.committed, s.group.synced
				s.group.mu.Unlock()
				if synced < committed || committed == 0 {
					t.Errorf("%s returned with commits %d, synced %d", what, committed, synced)
				}
			}
			ev := qsync.Event{DedupKey: "d1", Name: "defect.created", Ref: qsync.EntityRef{Project: "P", Kind: qsync.KindDefect, ID: 1},
				Timestamp: time.Unix(1700000000, 0), Patch: qsync.Patch{Attrs: map[string]any{"title": "x"}}}
			in := qsync.Inbound{Event: ev, Routes: []string{"r"}}
			if _, err := s.AcceptEvents(ctx, []qsync.Inbound{in}, time.Now()); err != nil {
				t.Fatal(err)
			}
			check("AcceptEvents")
			if err := s.Enqueue(ctx, []qsync.Key{{Route: "r", EntityRef: qsync.EntityRef{Project: "P", Kind: qsync.KindDefect, ID: 2}}}, false, time.Now()); err != nil {
				t.Fatal(err)
			}
			check("Enqueue")
			before := fsyncs.Load()
			jobs, err := s.Lease(ctx, "w", 2, time.Now().Add(time.Minute), time.Minute)
			if err != nil || len(jobs) != 2 {
				t.Fatalf("Lease = %d jobs, %v; want 2", len(jobs), err)
			}
			if err := s.Renew(ctx, jobs[0], time.Now().Add(2*time.Minute)); err != nil {
				t.Fatal(err)
			}
			if n := fsyncs.Load(); n != before {
				t.Errorf("Lease and Renew waited for %d fsyncs; a lease need not be on disk", n-before)
			}
			if err := s.Retry(ctx, jobs[0], time.Now(), "x", true, time.Now()); err != nil {
				t.Fatal(err)
			}
			if err := s.Finish(ctx, jobs[1], qsync.JobOutcome{Outcome: qsync.OutcomeApplied}, time.Now()); err != nil {
				t.Fatal(err)
			}
			if n := fsyncs.Load(); n != before {
				t.Errorf("Retry and Finish waited for %d fsyncs; an outcome need not be on disk", n-before)
			}
			if err := s.SaveLink(ctx, qsync.Link{Key: jobs[0].Key, State: qsync.LinkCreating}); err != nil {
				t.Fatal(err)
			}
			check("SaveLink after the outcomes")
			if mode == "full" && fsyncs.Load() == 0 {
				t.Error("no group fsync with synchronous=full")
			}
		})
	}
}
