package storetest

import (
	"context"
	"testing"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// testCheckpoints: checkpoints round-trip by name, are saved together,
// and never move back (a slower pass that read earlier cannot undo a
// later one's progress).
func testCheckpoints(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	got, err := s.Checkpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("a new store has checkpoints: %v", got)
	}
	if err := s.SaveCheckpoints(ctx, nil); err != nil {
		t.Fatalf("saving none: %v", err)
	}
	a, b := qsync.CheckpointName("QA", qsync.KindDefect), qsync.CheckpointName("QA", qsync.KindRun)
	if err := s.SaveCheckpoints(ctx, map[string]time.Time{a: at(time.Minute), b: at(2 * time.Minute), qsync.CheckpointFull: t0}); err != nil {
		t.Fatal(err)
	}
	// a moves on, b is offered an older time and keeps its own.
	if err := s.SaveCheckpoints(ctx, map[string]time.Time{a: at(time.Hour), b: at(time.Second)}); err != nil {
		t.Fatal(err)
	}
	got, err = s.Checkpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Time{a: at(time.Hour), b: at(2 * time.Minute), qsync.CheckpointFull: t0}
	if len(got) != len(want) {
		t.Fatalf("checkpoints = %v, want %v", got, want)
	}
	for name, w := range want {
		if !got[name].Equal(w) {
			t.Errorf("checkpoint %s = %v, want %v", name, got[name], w)
		}
	}
}
