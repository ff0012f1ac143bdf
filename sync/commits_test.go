package sync_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// commitCounter counts the store's write transactions: each write method
// of the SQL stores is exactly one commit (Lease and Renew are counted
// apart: every job has one Lease, and Renew depends on time).
type commitCounter struct {
	qsync.Store
	n atomic.Int64
}

func (c *commitCounter) SaveSnapshot(ctx context.Context, s qsync.Snapshot, prev int64) (bool, error) {
	c.n.Add(1)
	return c.Store.SaveSnapshot(ctx, s, prev)
}

func (c *commitCounter) SaveLink(ctx context.Context, l qsync.Link) error {
	c.n.Add(1)
	return c.Store.SaveLink(ctx, l)
}

func (c *commitCounter) SaveLinkFenced(ctx context.Context, l qsync.Link, j qsync.Job) error {
	c.n.Add(1)
	return c.Store.SaveLinkFenced(ctx, l, j)
}

func (c *commitCounter) DeleteLink(ctx context.Context, k qsync.Key) error {
	c.n.Add(1)
	return c.Store.DeleteLink(ctx, k)
}

func (c *commitCounter) DeleteLinkFenced(ctx context.Context, k qsync.Key, j qsync.Job) error {
	c.n.Add(1)
	return c.Store.DeleteLinkFenced(ctx, k, j)
}

func (c *commitCounter) Complete(ctx context.Context, j qsync.Job, o qsync.Outcome, e qsync.LedgerEntry, now time.Time) error {
	c.n.Add(1)
	return c.Store.Complete(ctx, j, o, e, now)
}

func (c *commitCounter) Retry(ctx context.Context, j qsync.Job, due time.Time, lastErr string, charge bool, now time.Time) error {
	c.n.Add(1)
	return c.Store.Retry(ctx, j, due, lastErr, charge, now)
}

func (c *commitCounter) Finish(ctx context.Context, j qsync.Job, o qsync.JobOutcome, now time.Time) error {
	c.n.Add(1)
	return c.Store.Finish(ctx, j, o, now)
}

// take returns the count so far and starts again from zero.
func (c *commitCounter) take() int64 { return c.n.Swap(0) }

// A job's bookkeeping is one commit, whatever it did; a create adds the
// one commit the crash-safe protocol needs before the tracker call (the
// intent), and a comment the one that marks it pending before posting.
func TestCommitsPerJob(t *testing.T) {
	cc := &commitCounter{}
	b := setup(t)
	b.wrap = func(s qsync.Store) qsync.Store { cc.Store = s; return cc }
	b.build()
	ts := time.Now().Add(-time.Hour)
	for _, tc := range []struct {
		name string
		run  func()
		want int64
	}{
		{"create", func() { b.openDefect(1, "first", ts) }, 2},
		{"update", func() {
			b.qase.set(1, map[string]any{"title": "second", "status": "open"})
			b.deliver("defect.updated", 1, ts.Add(time.Second), nil)
		}, 1},
		{"no-op", func() { b.deliver("defect.updated", 1, ts.Add(2*time.Second), nil) }, 1},
		{"delete (status and comment)", func() {
			b.qase.set(1, nil)
			b.deliver("defect.deleted", 1, ts.Add(3*time.Second), nil)
		}, 2},
	} {
		tc.run()
		cc.take() // the inbox's
		b.drain()
		if got := cc.take(); got != tc.want {
			t.Errorf("%s job: %d commits, want %d", tc.name, got, tc.want)
		}
	}
	if got := b.oneIssue(1); got.Title != "[QA-1] second" || got.Status != "Done" || got.comments[route+":deleted"] == "" {
		t.Errorf("issue = %+v, want the updated title, Done and the deletion comment", got)
	}
}
