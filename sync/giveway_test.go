package sync

import (
	"context"
	"testing"
	"time"
)

// giveWay holds a job back only while Behind says so, in ticks, and never
// longer than giveWayMax.
func TestGiveWay(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cancelled, stop := context.WithCancel(context.Background())
	stop()
	for _, tc := range []struct {
		name   string
		behind int // checks that answer true; -1: no Behind
		ctx    context.Context
		ticks  int
	}{
		{"no Behind", -1, ctx, 0},
		{"not behind", 0, ctx, 0},
		{"catches up after three ticks", 4, ctx, 3},
		{"never catches up", 1 << 30, ctx, int(giveWayMax / giveWayTick)},
		{"shutting down", 1 << 30, cancelled, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ticks, checks := 0, 0
			o := EngineOptions{Sleep: func(ctx context.Context, d time.Duration) error {
				if d != giveWayTick {
					t.Errorf("slept %v, want ticks of %v", d, giveWayTick)
				}
				ticks++
				return ctx.Err()
			}}
			if tc.behind >= 0 {
				o.Behind = func() bool { checks++; return checks <= tc.behind }
			}
			NewEngine(o).giveWay(tc.ctx)
			if ticks != tc.ticks {
				t.Fatalf("%d ticks, want %d", ticks, tc.ticks)
			}
		})
	}
}
