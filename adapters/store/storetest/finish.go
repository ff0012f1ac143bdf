package storetest

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// Finish records snapshot, link and outcome together, and a stale token
// records none of them.
func testFinish(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	k := key("jira", 1)
	res := accept(t, s, t0, in(event("e1", k.EntityRef), k.Route))
	job := leaseOne(t, s, "w", t0, k)
	snap := qsync.Snapshot{Ref: k.EntityRef, LastSeq: res[0].Seq, State: qsync.State{LastEvent: "t"}}
	l := sampleLink(k)

	// The lease expires and another worker takes the job: the first
	// worker's Finish writes nothing at all.
	cur := leaseOne(t, s, "v", at(time.Minute), k)
	err := s.Finish(ctx, job, qsync.JobOutcome{Outcome: qsync.OutcomeApplied, Link: &l, Snapshot: &snap}, at(time.Minute))
	if !errors.Is(err, qsync.ErrLeaseLost) {
		t.Fatalf("Finish with a stale token: %v, want ErrLeaseLost", err)
	}
	if _, found, _ := s.Link(ctx, k); found {
		t.Error("stale Finish saved the link")
	}
	if got, err := s.Snapshot(ctx, k.EntityRef); err != nil || got.LastSeq != 0 {
		t.Errorf("stale Finish saved the snapshot: %+v, %v", got, err)
	}
	if depth(t, s) != 1 {
		t.Error("stale Finish completed the job")
	}
	// Another key's link or snapshot is refused.
	other := sampleLink(key("jira", 2))
	if err := s.Finish(ctx, cur, qsync.JobOutcome{Outcome: qsync.OutcomeNoop, Link: &other}, at(time.Minute)); err == nil {
		t.Error("Finish with another key's link succeeded")
	}

	// A retry keeps the link it carries and charges the attempt.
	if err := s.Finish(ctx, cur, qsync.JobOutcome{RetryAt: at(2 * time.Minute), LastErr: "boom", Charge: true, Link: &l}, at(time.Minute)); err != nil {
		t.Fatalf("Finish (retry): %v", err)
	}
	if got, found, err := s.Link(ctx, k); err != nil || !found || !reflect.DeepEqual(got, l) {
		t.Fatalf("Link after retry = %+v, %v, %v\nwant %+v", got, found, err, l)
	}
	if js := lease(t, s, "v", 10, at(90*time.Second)); len(js) != 0 {
		t.Fatalf("job due before its retry time: %v", jobKeys(js))
	}
	cur = leaseOne(t, s, "v", at(2*time.Minute), k)
	if cur.Attempts != 1 || cur.LastError != "boom" {
		t.Errorf("retried job: attempts %d, last error %q; want 1, boom", cur.Attempts, cur.LastError)
	}

	// Completion with a snapshot and a changed link: all of it lands.
	l.Fingerprint = "fp2"
	err = s.Finish(ctx, cur, qsync.JobOutcome{Outcome: qsync.OutcomeApplied, Entry: qsync.LedgerEntry{Ops: []string{"update"}},
		Link: &l, Snapshot: &snap}, at(2*time.Minute))
	if err != nil {
		t.Fatalf("Finish: %v", err)
	}
	if got, _, _ := s.Link(ctx, k); got.Fingerprint != "fp2" {
		t.Errorf("link fingerprint = %q, want fp2", got.Fingerprint)
	}
	if got, err := s.Snapshot(ctx, k.EntityRef); err != nil || got.LastSeq != snap.LastSeq || got.State.LastEvent != "t" {
		t.Errorf("snapshot = %+v, %v; want %+v", got, err, snap)
	}
	if depth(t, s) != 0 {
		t.Error("job left after Finish")
	}
	if es := ledger(t, s, k); len(es) != 1 || es[0].Outcome != qsync.OutcomeApplied || !reflect.DeepEqual(es[0].Ops, []string{"update"}) {
		t.Errorf("ledger = %+v, want one applied update", es)
	}
	wantStatus(t, s, qsync.EventStatus{Applied: 1})

	// A snapshot that lost its compare-and-set is no error: the newer one
	// stays.
	res = accept(t, s, at(3*time.Minute), in(event("e2", k.EntityRef), k.Route))
	cur = leaseOne(t, s, "v", at(3*time.Minute), k)
	older := qsync.Snapshot{Ref: k.EntityRef, LastSeq: res[0].Seq, State: qsync.State{LastEvent: "old"}}
	if err := s.Finish(ctx, cur, qsync.JobOutcome{Outcome: qsync.OutcomeNoop, Snapshot: &older, PrevSeq: 0}, at(3*time.Minute)); err != nil {
		t.Fatalf("Finish with a stale snapshot: %v", err)
	}
	if got, _ := s.Snapshot(ctx, k.EntityRef); got.LastSeq != snap.LastSeq {
		t.Errorf("snapshot LastSeq = %d, want %d (the compare-and-set lost)", got.LastSeq, snap.LastSeq)
	}
	if depth(t, s) != 0 {
		t.Error("job left after Finish with a stale snapshot")
	}
}
