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

// gather waits out what is left of Gather since the first wake after the
// last lease; without a wake, once it has passed, or when gathering is
// off, it does not wait.
func TestGatherWaitsFromTheFirstWake(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		name   string
		gather time.Duration
		wakes  []time.Duration // after t0
		now    time.Duration   // after t0
		want   time.Duration   // slept; 0: no sleep
	}{
		{"no wake", 0, nil, 0, 0},
		{"default, just woken", 0, []time.Duration{0}, 0, DefaultGather},
		{"from the first wake", 20 * time.Millisecond, []time.Duration{0, 5 * time.Millisecond}, 8 * time.Millisecond, 12 * time.Millisecond},
		{"already passed", 20 * time.Millisecond, []time.Duration{0}, 25 * time.Millisecond, 0},
		{"off", -1, []time.Duration{0}, 0, 0},
		{"the clock stepped back", 20 * time.Millisecond, []time.Duration{0}, -time.Hour, 20 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := t0
			var slept time.Duration
			e := NewEngine(EngineOptions{Gather: tc.gather, Clock: ClockFunc(func() time.Time { return now }),
				Sleep: func(ctx context.Context, d time.Duration) error { slept += d; return nil }})
			for _, w := range tc.wakes {
				now = t0.Add(w)
				e.Wake()
			}
			now = t0.Add(tc.now)
			e.gather(context.Background())
			if slept != tc.want {
				t.Fatalf("slept %v, want %v", slept, tc.want)
			}
		})
	}
}
