package sync

import (
	"context"
	"slices"
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

// calls records which tracker methods ran.
type callsTracker struct {
	Tracker // nil: only the methods below may be called
	calls   []string
}

func (c *callsTracker) SetStatus(context.Context, IssueRef, string, string) error {
	c.calls = append(c.calls, "set_status")
	return nil
}

func (c *callsTracker) AddComment(context.Context, IssueRef, Comment) error {
	c.calls = append(c.calls, "comment")
	return nil
}

type callsCommenter struct{ *callsTracker }

func (c callsCommenter) SetStatusWithComment(context.Context, IssueRef, string, string, Comment) error {
	c.calls = append(c.calls, "status_comment")
	return nil
}

// A paced tracker offers SetStatusWithComment: the tracker's own when it
// has one, else SetStatus then AddComment.
func TestPacedStatusCommenter(t *testing.T) {
	l := NewLimiter(PaceOptions{PerSecond: 1000, Burst: 10})
	ctx := context.Background()
	plain := &callsTracker{}
	sc, ok := Paced(plain, l).(StatusCommenter)
	if !ok {
		t.Fatal("a paced tracker is no StatusCommenter")
	}
	if err := sc.SetStatusWithComment(ctx, IssueRef{ID: "1"}, "Done", "", Comment{ID: "c"}); err != nil || !slices.Equal(plain.calls, []string{"set_status", "comment"}) {
		t.Fatalf("plain tracker: %v, calls %v", err, plain.calls)
	}
	own := callsCommenter{&callsTracker{}}
	if err := Paced(own, l).(StatusCommenter).SetStatusWithComment(ctx, IssueRef{ID: "1"}, "Done", "", Comment{ID: "c"}); err != nil || !slices.Equal(own.calls, []string{"status_comment"}) {
		t.Fatalf("commenter: %v, calls %v", err, own.calls)
	}
}
