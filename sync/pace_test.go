package sync

import (
	"testing"
	"time"
)

type manualClock struct{ t time.Time }

func (c *manualClock) Now() time.Time { return c.t }

func TestLimiterBucketSpacingAndPriority(t *testing.T) {
	clk := &manualClock{t: time.Unix(0, 0)}
	l := NewLimiter(PaceOptions{PerSecond: 2, Burst: 2, IssueSpace: time.Second, Clock: clk})

	// The burst is available at once, then one token per 500ms.
	if w := l.reserve("", false); w != 0 {
		t.Fatalf("first call waited %s", w)
	}
	if w := l.reserve("", false); w != 0 {
		t.Fatalf("second call (burst) waited %s", w)
	}
	if w := l.reserve("", false); w != 500*time.Millisecond {
		t.Fatalf("third call wait = %s, want 500ms", w)
	}
	clk.t = clk.t.Add(500 * time.Millisecond)
	if w := l.reserve("A", false); w != 0 {
		t.Fatalf("refilled call waited %s", w)
	}

	// A second write to issue A within IssueSpace waits for the gap,
	// even with tokens available.
	clk.t = clk.t.Add(600 * time.Millisecond)
	if w := l.reserve("A", false); w != 400*time.Millisecond {
		t.Fatalf("same-issue write wait = %s, want 400ms", w)
	}
	if w := l.reserve("B", false); w != 0 {
		t.Fatalf("other issue waited %s", w)
	}

	// While a create waits, updates yield; the create proceeds.
	clk.t = clk.t.Add(10 * time.Second)
	l.creates = 1
	if w := l.reserve("C", false); w == 0 {
		t.Fatal("update did not yield to a waiting create")
	}
	if w := l.reserve("", true); w != 0 {
		t.Fatalf("create waited %s", w)
	}
}
