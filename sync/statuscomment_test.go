package sync_test

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// commenter is the mem tracker with the StatusCommenter capability: the
// status change and the comment land in one write.
type commenter struct{ *memTracker }

func (t commenter) SetStatusWithComment(_ context.Context, ref qsync.IssueRef, status, reason string, c qsync.Comment) error {
	return t.write("status_comment", ref, func(is *memIssue) error {
		if !strings.EqualFold(is.Status, status) {
			if t.unreachable[is.Status+">"+status] {
				return qsync.Permanent(&qsync.UnreachableError{From: is.Status, To: status, Detail: "available transitions: none"})
			}
			is.Status, is.Reason = status, reason
			is.history = append(is.history, status)
		}
		is.comments[c.ID] = c.Body
		return nil
	})
}

func withCommenter(t *testing.T) *bundle {
	b := setup(t)
	b.as = func(m *memTracker) qsync.Tracker { return commenter{m} }
	b.build()
	return b
}

// deleteDefect deletes defect id in Qase and delivers the event: the plan
// is set_status Done followed by the deletion comment.
func (b *bundle) deleteDefect(id int64) {
	b.qase.set(id, nil)
	b.deliver("defect.deleted", id, time.Now(), nil)
	b.drain()
}

// A status change followed by its comment is one tracker write, and the
// link records both.
func TestStatusAndCommentInOneWrite(t *testing.T) {
	b := withCommenter(t)
	b.openDefect(1, "x", time.Now())
	b.drain()
	b.deleteDefect(1)
	w := b.tracker.writes
	if w["status_comment"] != 1 || w["set_status"] != 0 || w["comment"] != 0 {
		t.Fatalf("writes %v: want one status_comment and no separate transition or comment", w)
	}
	if n := b.tracker.reads["has_comment"]; n != 0 {
		t.Fatalf("%d comment lookups on a first attempt, want none", n)
	}
	b.wantDeletedComment(1, "Done")
	l := b.link(1)
	if l.Applied.Status != "Done" || !slices.Contains(l.Applied.Comments, route+":deleted") || len(l.Applied.Pending) != 0 {
		t.Fatalf("applied %+v: want Done, the comment recorded and nothing pending", l.Applied)
	}
	b.wantConverged()
}

// The combined write committed but its answer was lost: the retry looks
// for the pending comment before posting, so it is not posted twice.
func TestStatusCommentRetryLooksFirst(t *testing.T) {
	b := withCommenter(t)
	b.openDefect(1, "x", time.Now())
	b.drain()
	var failed atomic.Bool
	b.tracker.fault = func(op string) fault {
		if op == "status_comment" && failed.CompareAndSwap(false, true) {
			return faultAfter
		}
		return faultNone
	}
	b.deleteDefect(1)
	if !failed.Load() {
		t.Fatal("the combined write was never made")
	}
	if n := b.tracker.reads["has_comment"]; n < 1 {
		t.Fatal("the retry did not look for the pending comment")
	}
	if n := b.tracker.writes["comment"]; n != 0 {
		t.Fatalf("the comment was posted again %d times", n)
	}
	l := b.link(1)
	if l.Applied.Status != "Done" || !slices.Contains(l.Applied.Comments, route+":deleted") || len(l.Applied.Pending) != 0 {
		t.Fatalf("applied %+v", l.Applied)
	}
}

// An unreachable status writes nothing; the comment is then posted on its
// own, without a lookup (nothing can have been posted).
func TestStatusCommentUnreachable(t *testing.T) {
	b := withCommenter(t)
	b.openDefect(1, "x", time.Now())
	b.drain()
	b.tracker.mu.Lock()
	b.tracker.unreachable["To Do>Done"] = true
	b.tracker.mu.Unlock()
	b.deleteDefect(1)
	if n := b.tracker.writes["comment"]; n != 1 {
		t.Fatalf("comment posted %d times, want once on its own", n)
	}
	if n := b.tracker.reads["has_comment"]; n != 0 {
		t.Fatalf("%d comment lookups, want none", n)
	}
	b.wantDeletedComment(1, "To Do")
	l := b.link(1)
	if l.Applied.Blocked == nil || l.Applied.Blocked.To != "Done" || len(l.Applied.Pending) != 0 {
		t.Fatalf("applied %+v: want the status blocked, nothing pending", l.Applied)
	}
}

// An executed update names the key's marker, so a tracker that keeps part
// of the marker in the text it rewrites need not read it first.
func TestUpdateNamesTheMarker(t *testing.T) {
	b := setup(t)
	b.openDefect(1, "x", time.Now())
	b.drain()
	b.qase.set(1, map[string]any{"title": "y", "status": "open"})
	b.deliver("defect.updated", 1, time.Now(), nil)
	b.drain()
	b.tracker.mu.Lock()
	got := slices.Clone(b.tracker.updMarkers)
	b.tracker.mu.Unlock()
	if len(got) != 1 || got[0] != qsync.MarkerFor(key(1)) {
		t.Fatalf("updates named markers %+v, want one naming %+v", got, qsync.MarkerFor(key(1)))
	}
	if is := b.oneIssue(1); is.Title != "[QA-1] y" {
		t.Fatalf("title %q", is.Title)
	}
}
