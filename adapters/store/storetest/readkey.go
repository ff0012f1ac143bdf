package storetest

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// ReadKey, where a store has it, reads what Snapshot, EventsAfter and
// Link read one by one: before anything is stored, with a snapshot and
// events after it, with a limit below the events' count, and a link.
func testReadKey(t *testing.T, s qsync.Store) {
	kr, ok := s.(qsync.KeyReader)
	if !ok {
		t.Skip("the store reads a key's parts one by one")
	}
	ctx := context.Background()
	k := key("jira", 1)
	check := func(what string, limit int) {
		t.Helper()
		got, err := kr.ReadKey(ctx, k, limit)
		if err != nil {
			t.Fatalf("%s: ReadKey: %v", what, err)
		}
		snap, err := s.Snapshot(ctx, k.EntityRef)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := s.EventsAfter(ctx, k.EntityRef, snap.LastSeq, limit)
		if err != nil {
			t.Fatal(err)
		}
		l, linked, err := s.Link(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		want := qsync.KeyRead{Snapshot: snap, Events: evs, Link: l, Linked: linked}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: ReadKey =\n%+v\nwant (one by one)\n%+v", what, got, want)
		}
		if len(got.Events) > limit {
			t.Errorf("%s: %d events, limit %d", what, len(got.Events), limit)
		}
	}
	check("nothing stored", 500)
	var ins []qsync.Inbound
	for i := range 5 {
		ins = append(ins, in(event(fmt.Sprint("e", i), k.EntityRef), k.Route))
	}
	res := accept(t, s, t0, ins...)
	check("events, no snapshot", 500)
	check("limit below the count", 2)
	snap := qsync.Snapshot{Ref: k.EntityRef, LastSeq: res[2].Seq, State: qsync.State{LastEvent: "x"}}
	if ok, err := s.SaveSnapshot(ctx, snap, 0); err != nil || !ok {
		t.Fatalf("SaveSnapshot = %v, %v", ok, err)
	}
	if err := s.SaveLink(ctx, sampleLink(k)); err != nil {
		t.Fatal(err)
	}
	check("snapshot, later events and a link", 500)
	if got, _ := kr.ReadKey(ctx, k, 500); len(got.Events) != 2 || !got.Linked {
		t.Errorf("ReadKey after the snapshot: %d events, linked %v; want 2, true", len(got.Events), got.Linked)
	}
}
