package storetest

import (
	"context"
	"reflect"
	"testing"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// entityView is what a reader of the entity sees: its snapshot and the
// events after it.
func entityView(t *testing.T, s qsync.Store, r qsync.EntityRef) (qsync.Snapshot, []int64) {
	t.Helper()
	snap, err := s.Snapshot(context.Background(), r)
	if err != nil {
		t.Fatalf("Snapshot(%s): %v", r, err)
	}
	var seqs []int64
	for _, ev := range eventsAfter(t, s, r, snap.LastSeq, 0) {
		seqs = append(seqs, ev.Seq)
	}
	return snap, seqs
}

func testPrune(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	oth := qsync.EntityRef{Project: "OTH", Kind: qsync.KindDefect, ID: 9}
	old := func(dedup string, r qsync.EntityRef) qsync.Inbound {
		ev := event(dedup, r)
		ev.ReceivedAt = t0
		return in(ev, "r")
	}
	// Entity 1: three old events, all handled; its snapshot folds the
	// first two. Entity 2: old and handled, never folded. Entity 3: old,
	// folded, but its delivery is still pending. OTH: one old folded
	// event, the newest of its project.
	res := accept(t, s, t0, old("a1", ref(1)), old("a2", ref(1)), old("a3", ref(1)), old("b1", ref(2)), old("o1", oth))
	for _, j := range lease(t, s, "w", 10, t0) {
		o := qsync.OutcomeApplied
		if j.Key.ID == 2 {
			o = qsync.OutcomeDead // a dead letter whose key has no job
		}
		complete(t, s, j, o, qsync.LedgerEntry{Detail: "old"}, t0)
	}
	// Entity 4: dead, then re-enqueued (its key has a job): its dead
	// letter stays.
	accept(t, s, t0, old("d1", ref(4)))
	j4 := leaseOne(t, s, "w", t0, key("r", 4))
	complete(t, s, j4, qsync.OutcomeDead, qsync.LedgerEntry{Detail: "old"}, t0)
	if err := s.Enqueue(ctx, []qsync.Key{key("r", 4)}, true, t0); err != nil {
		t.Fatal(err)
	}
	c := accept(t, s, t0, old("c1", ref(3)))
	save := func(r qsync.EntityRef, seq int64) {
		t.Helper()
		if ok, err := s.SaveSnapshot(ctx, qsync.Snapshot{Ref: r, LastSeq: seq, State: qsync.State{LastEvent: "defect.updated"}}, 0); err != nil || !ok {
			t.Fatalf("SaveSnapshot(%s) = %v, %v", r, ok, err)
		}
	}
	save(ref(1), res[1].Seq)
	save(ref(3), c[0].Seq)
	save(oth, res[4].Seq)
	// A recent event of entity 1 (the newest of PRJ), and a recent ledger
	// entry.
	recent := event("a4", ref(1))
	recent.ReceivedAt = at(48 * time.Hour)
	accept(t, s, at(48*time.Hour), in(recent, "r2"))
	for _, j := range lease(t, s, "w", 10, at(48*time.Hour)) {
		if j.Key == key("r2", 1) {
			complete(t, s, j, qsync.OutcomeApplied, qsync.LedgerEntry{Detail: "new"}, at(48*time.Hour))
		}
	}

	refs := []qsync.EntityRef{ref(1), ref(2), ref(3), ref(4), oth}
	type view struct {
		snap qsync.Snapshot
		seqs []int64
	}
	views := map[qsync.EntityRef]view{}
	for _, r := range refs {
		snap, seqs := entityView(t, s, r)
		views[r] = view{snap, seqs}
	}
	dls, err := s.DeadLetters(ctx, 0)
	if err != nil || len(dls) != 2 {
		t.Fatalf("DeadLetters = %v, %v; want 2", dls, err)
	}

	// Batch 1 exercises the batching: every table needs several rounds.
	rep, err := s.Prune(ctx, at(24*time.Hour), 1)
	if err != nil {
		t.Fatalf("Prune: %v", err)
	}
	// Pruned: a1, a2 (folded, handled, old). Kept: a3 (not folded), b1 (no
	// snapshot), c1 (pending), o1 (newest of OTH), d1 (no snapshot), a4
	// (recent). Ledger: the four old entries (keys 1, 2, 4 and OTH). Dead letters: entity 2's.
	want := qsync.PruneReport{Events: 2, Ledger: 4, DeadLetters: 1}
	if rep != want {
		t.Errorf("Prune = %+v, want %+v", rep, want)
	}
	for _, r := range refs {
		snap, seqs := entityView(t, s, r)
		if !reflect.DeepEqual(snap, views[r].snap) || !reflect.DeepEqual(seqs, views[r].seqs) {
			t.Errorf("%s after prune: snapshot %+v events %v; before: %+v %v", r, snap, seqs, views[r].snap, views[r].seqs)
		}
	}
	if evs := eventsAfter(t, s, ref(1), 0, 0); len(evs) != 2 || evs[0].DedupKey != "a3" || evs[1].DedupKey != "a4" {
		t.Errorf("entity 1 events after prune = %v, want a3 and a4", evs)
	}
	if evs := eventsAfter(t, s, oth, 0, 0); len(evs) != 1 {
		t.Errorf("OTH events after prune = %d, want its newest kept", len(evs))
	}
	if evs := eventsAfter(t, s, ref(3), 0, 0); len(evs) != 1 {
		t.Errorf("entity 3 events after prune = %d, want the pending one kept", len(evs))
	}
	if dls, err := s.DeadLetters(ctx, 0); err != nil || len(dls) != 1 || dls[0].Key != key("r", 4) {
		t.Errorf("dead letters after prune = %+v, %v; want entity 4's (its key has a job)", dls, err)
	}
	if l := ledger(t, s, key("r2", 1)); len(l) != 1 {
		t.Errorf("recent ledger entries after prune = %d, want 1", len(l))
	}
	if l := ledger(t, s, key("r", 1)); len(l) != 0 {
		t.Errorf("old ledger entries after prune = %d, want 0", len(l))
	}
	o, err := s.Overview(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	wantTime(t, "LastDelivery[OTH]", o.LastDelivery["OTH"], t0)
	wantTime(t, "LastDelivery[PRJ]", o.LastDelivery["PRJ"], at(48*time.Hour))

	// A second prune finds nothing; a new event still gets a seq above
	// every earlier one.
	if rep, err := s.Prune(ctx, at(24*time.Hour), 1000); err != nil || rep != (qsync.PruneReport{}) {
		t.Errorf("second Prune = %+v, %v; want nothing", rep, err)
	}
	n := accept(t, s, at(49*time.Hour), in(event("a5", ref(1)), "r"))
	if n[0].Seq <= views[ref(1)].seqs[len(views[ref(1)].seqs)-1] {
		t.Errorf("new event seq %d not above the earlier ones %v", n[0].Seq, views[ref(1)].seqs)
	}
	if _, err := s.Prune(ctx, at(time.Hour), 0); err == nil {
		t.Error("Prune with batch 0: no error")
	}
}
