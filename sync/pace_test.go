package sync

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"
)

type manualClock struct{ t time.Time }

func (c *manualClock) Now() time.Time { return c.t }

// Writes to one issue are spaced by IssueSpace; other issues and calls
// that write no issue do not wait.
func TestPacedSpacesWritesToOneIssue(t *testing.T) {
	clk := &manualClock{t: time.Unix(0, 0)}
	p := Paced(&callsTracker{}, PaceOptions{IssueSpace: time.Second, Clock: clk}).(*paced)
	if w := p.reserve("A"); w != 0 {
		t.Fatalf("first write to A waited %s", w)
	}
	clk.t = clk.t.Add(600 * time.Millisecond)
	if w := p.reserve("A"); w != 400*time.Millisecond {
		t.Fatalf("second write to A wait = %s, want 400ms", w)
	}
	if w := p.reserve("B"); w != 0 {
		t.Fatalf("write to B waited %s", w)
	}
	clk.t = clk.t.Add(400 * time.Millisecond)
	if w := p.reserve("A"); w != 0 {
		t.Fatalf("write to A after the gap waited %s", w)
	}
	if err := p.space(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	// A write whose gap outlasts its context is a rate wait, not a failure.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.space(ctx, "A"); !errors.Is(err, ErrRateWait) || !errors.Is(err, context.Canceled) {
		t.Fatalf("space on a cancelled context: %v, want ErrRateWait wrapping context.Canceled", err)
	}
}

// laneTracker records, per call, whether the request limiter would see
// it in the create lane; Update reports a cut rate wait when told to.
type laneTracker struct {
	Tracker
	lanes map[string]bool
	cut   bool
}

func (l *laneTracker) Create(ctx context.Context, _ IssueSpec, _ Marker) (Issue, error) {
	l.lanes["create"] = IsCreate(ctx)
	return Issue{}, nil
}

func (l *laneTracker) Find(ctx context.Context, _ string, _ Marker, _ time.Time) ([]Issue, error) {
	l.lanes["find"] = IsCreate(ctx)
	return nil, nil
}

func (l *laneTracker) Get(ctx context.Context, _ IssueRef) (Issue, error) {
	l.lanes["get"] = IsCreate(ctx)
	return Issue{}, nil
}

func (l *laneTracker) Update(ctx context.Context, _ IssueRef, _ Update) error {
	l.lanes["update"] = IsCreate(ctx)
	if l.cut {
		NoteRateWaitCut(ctx)
		return context.DeadlineExceeded // what an SDK may make of the limiter's error
	}
	return errors.New("boom")
}

// Creates and the search before one travel in the create lane; a request
// cut short while waiting for a token surfaces as ErrRateWait however the
// SDK wrapped it, and only then.
func TestPacedCreateLaneAndRateWaitCut(t *testing.T) {
	ctx := context.Background()
	lt := &laneTracker{lanes: map[string]bool{}}
	p := Paced(lt, PaceOptions{})
	_, _ = p.Create(ctx, IssueSpec{}, Marker{})
	_, _ = p.Find(ctx, "P", Marker{}, time.Time{})
	_, _ = p.Get(ctx, IssueRef{ID: "1"})
	err := p.Update(ctx, IssueRef{ID: "1"}, Update{})
	want := map[string]bool{"create": true, "find": true, "get": false, "update": false}
	if !maps.Equal(lt.lanes, want) {
		t.Fatalf("lanes %v, want %v", lt.lanes, want)
	}
	if err == nil || errors.Is(err, ErrRateWait) {
		t.Fatalf("a plain failure became %v", err)
	}
	if IsCreate(ctx) {
		t.Fatal("an unmarked context is in the create lane")
	}
	lt.cut = true
	if err := p.Update(ctx, IssueRef{ID: "1"}, Update{}); !errors.Is(err, ErrRateWait) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cut wait: %v, want ErrRateWait wrapping the SDK's error", err)
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
	ctx := context.Background()
	plain := &callsTracker{}
	sc, ok := Paced(plain, PaceOptions{}).(StatusCommenter)
	if !ok {
		t.Fatal("a paced tracker is no StatusCommenter")
	}
	if err := sc.SetStatusWithComment(ctx, IssueRef{ID: "1"}, "Done", "", Comment{ID: "c"}); err != nil || !slices.Equal(plain.calls, []string{"set_status", "comment"}) {
		t.Fatalf("plain tracker: %v, calls %v", err, plain.calls)
	}
	own := callsCommenter{&callsTracker{}}
	if err := Paced(own, PaceOptions{}).(StatusCommenter).SetStatusWithComment(ctx, IssueRef{ID: "1"}, "Done", "", Comment{ID: "c"}); err != nil || !slices.Equal(own.calls, []string{"status_comment"}) {
		t.Fatalf("commenter: %v, calls %v", err, own.calls)
	}
}
