package sync_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// Pruning forgets events a snapshot has folded, never what the engine
// knows: the entity view is the same before and after, and later events
// still fold on top of it.
func TestPruneKeepsEntityView(t *testing.T) {
	b := setup(t, func(o *qsync.EngineOptions) { o.Source = nil }) // events only: the view is what the store holds
	ctx := context.Background()
	ts := time.Now().Add(-time.Hour)
	for id := int64(1); id <= 3; id++ {
		b.deliver("defect.created", id, ts, map[string]any{"title": "first", "status": "open", "severity": "major"})
		b.deliver("defect.updated", id, ts.Add(time.Second), map[string]any{"title": "second"})
		b.deliver("defect.updated", id, ts.Add(2*time.Second), map[string]any{"title": "third"})
	}
	b.drain()
	refs := []qsync.EntityRef{key(1).EntityRef, key(2).EntityRef, key(3).EntityRef}
	before := map[qsync.EntityRef]qsync.Entity{}
	for _, r := range refs {
		e, err := b.engine.Entity(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if e.Attrs["title"] != "third" {
			t.Fatalf("%s title = %v before prune, want third", r, e.Attrs["title"])
		}
		before[r] = e
	}
	rep, err := b.store.Prune(ctx, time.Now().Add(time.Hour), 2)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Events != 8 { // nine events, the project's newest kept
		t.Fatalf("pruned %d events, want 8", rep.Events)
	}
	for _, r := range refs {
		e, err := b.engine.Entity(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(e, before[r]) {
			t.Errorf("%s after prune:\n%+v\nbefore:\n%+v", r, e, before[r])
		}
	}
	b.deliver("defect.updated", 1, ts.Add(3*time.Second), map[string]any{"title": "fourth"})
	b.drain()
	if e, err := b.engine.Entity(ctx, refs[0]); err != nil || e.Attrs["title"] != "fourth" || e.Attrs["severity"] != "major" {
		t.Errorf("after a new event: %+v, %v; want title fourth and the pruned events' severity", e.Attrs, err)
	}
	if n := len(b.tracker.issuesOf(key(1))); n != 1 {
		t.Errorf("defect 1 has %d issues, want 1", n)
	}
}
