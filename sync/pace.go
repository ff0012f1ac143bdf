package sync

import (
	"context"
	"errors"
	"fmt"
	gosync "sync"
	"sync/atomic"
	"time"
)

// Pacing at the port. Request budgets are not kept here: they live where
// requests are sent, an http.RoundTripper per credential that counts HTTP
// requests (one Jira create is three of them) and may share its budget
// with other replicas (internal/ratelimit, wired in cmd/qase-sync). What
// stays at the port is what only the port knows:
//   - which calls serve a create (Create, and the Find before one), so the
//     request limiter serves them first while tokens are scarce and new
//     defects reach the tracker first during a backlog (IsCreate);
//   - spacing between writes to one issue (Jira's per-issue write limit,
//     GitHub's notification storms), which needs the issue's identity;
//   - telling the engine that a call ended while it waited for a token
//     (never sent, so not a charged attempt): ErrRateWait.

// PaceOptions configure a Paced tracker.
type PaceOptions struct {
	IssueSpace time.Duration // minimum gap between writes to one issue
	Clock      Clock
	// OnWait is told how long a write waited for its issue's gap; may be nil.
	OnWait func(d time.Duration)
}

type paceKey struct{}

// paceMark travels in a call's context down to the request limiter.
type paceMark struct {
	create bool
	cut    atomic.Bool
}

// IsCreate tells a request limiter that the request serves a create.
func IsCreate(ctx context.Context) bool {
	m, _ := ctx.Value(paceKey{}).(*paceMark)
	return m != nil && m.create
}

// NoteRateWaitCut tells the paced call that a request's context ended
// while the request waited for a rate token: it was never sent.
func NoteRateWaitCut(ctx context.Context) {
	if m, _ := ctx.Value(paceKey{}).(*paceMark); m != nil {
		m.cut.Store(true)
	}
}

// Paced wraps a tracker: creates are marked for the request limiter,
// writes to one issue are spaced, and a call cut short while waiting for
// rate tokens returns ErrRateWait whatever the SDK made of the error.
func Paced(t Tracker, o PaceOptions) Tracker {
	if o.Clock == nil {
		o.Clock = SystemClock
	}
	p := &paced{t: t, o: o, last: map[string]time.Time{}}
	if s, ok := t.(FindSettler); ok {
		return &pacedSettler{paced: p, s: s}
	}
	return p
}

type paced struct {
	t    Tracker
	o    PaceOptions
	mu   gosync.Mutex
	last map[string]time.Time // issue -> last write
}

type pacedSettler struct {
	*paced
	s FindSettler
}

func (p *pacedSettler) FindSettle() time.Duration { return p.s.FindSettle() }

// call runs f with a marked context; issue is "" for calls that write no
// existing issue.
func (p *paced) call(ctx context.Context, issue string, create bool, f func(context.Context) error) error {
	if err := p.space(ctx, issue); err != nil {
		return err
	}
	cctx, done := WatchRateWait(ctx, create)
	return done(f(cctx))
}

// WatchRateWait marks ctx for the request limiter (create: the request
// serves a create) and returns done, which turns the call's error into
// ErrRateWait when the limiter cut a wait short (NoteRateWaitCut),
// whatever the SDK or client made of that error: the request was never
// sent, and the engine retries it without charging an attempt.
func WatchRateWait(ctx context.Context, create bool) (context.Context, func(error) error) {
	m := &paceMark{create: create}
	return context.WithValue(ctx, paceKey{}, m), func(err error) error {
		if err != nil && m.cut.Load() && !errors.Is(err, ErrRateWait) {
			return fmt.Errorf("%w: %w", ErrRateWait, err)
		}
		return err
	}
}

// space waits until issue's last write is IssueSpace ago, then claims it.
func (p *paced) space(ctx context.Context, issue string) error {
	if issue == "" || p.o.IssueSpace <= 0 {
		return nil
	}
	start := p.o.Clock.Now()
	for {
		wait := p.reserve(issue)
		if wait <= 0 {
			if d := p.o.Clock.Now().Sub(start); d > 0 && p.o.OnWait != nil {
				p.o.OnWait(d)
			}
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: %w", ErrRateWait, ctx.Err())
		case <-t.C:
		}
	}
}

// reserve claims issue's slot and returns 0, or returns how long to wait.
func (p *paced) reserve(issue string) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.o.Clock.Now()
	if next := p.last[issue].Add(p.o.IssueSpace); now.Before(next) {
		return next.Sub(now)
	}
	p.last[issue] = now
	if len(p.last) > 10000 {
		for id, t := range p.last {
			if now.Sub(t) > p.o.IssueSpace {
				delete(p.last, id)
			}
		}
	}
	return 0
}

func issueOf(ref IssueRef) string { return ref.Project + "#" + ref.ID }

func (p *paced) Create(ctx context.Context, spec IssueSpec, m Marker) (is Issue, err error) {
	err = p.call(ctx, "", true, func(ctx context.Context) (err error) { is, err = p.t.Create(ctx, spec, m); return })
	return is, err
}

func (p *paced) Find(ctx context.Context, project string, m Marker, since time.Time) (out []Issue, err error) {
	err = p.call(ctx, "", true, func(ctx context.Context) (err error) { out, err = p.t.Find(ctx, project, m, since); return }) // part of a create
	return out, err
}

func (p *paced) Get(ctx context.Context, ref IssueRef) (is Issue, err error) {
	err = p.call(ctx, "", false, func(ctx context.Context) (err error) { is, err = p.t.Get(ctx, ref); return })
	return is, err
}

func (p *paced) Update(ctx context.Context, ref IssueRef, u Update) error {
	return p.call(ctx, issueOf(ref), false, func(ctx context.Context) error { return p.t.Update(ctx, ref, u) })
}

func (p *paced) SetStatus(ctx context.Context, ref IssueRef, status, reason string) error {
	return p.call(ctx, issueOf(ref), false, func(ctx context.Context) error { return p.t.SetStatus(ctx, ref, status, reason) })
}

// SetStatusWithComment implements StatusCommenter for every paced
// tracker: through the tracker's own when it has one, else as SetStatus
// and AddComment in turn (an UnreachableError still writes nothing).
func (p *paced) SetStatusWithComment(ctx context.Context, ref IssueRef, status, reason string, c Comment) error {
	return p.call(ctx, issueOf(ref), false, func(ctx context.Context) error {
		if sc, ok := p.t.(StatusCommenter); ok {
			return sc.SetStatusWithComment(ctx, ref, status, reason, c)
		}
		if err := p.t.SetStatus(ctx, ref, status, reason); err != nil {
			return err
		}
		return p.t.AddComment(ctx, ref, c)
	})
}

func (p *paced) AddComment(ctx context.Context, ref IssueRef, c Comment) error {
	return p.call(ctx, issueOf(ref), false, func(ctx context.Context) error { return p.t.AddComment(ctx, ref, c) })
}

func (p *paced) HasComment(ctx context.Context, ref IssueRef, id string) (ok bool, err error) {
	err = p.call(ctx, "", false, func(ctx context.Context) (err error) { ok, err = p.t.HasComment(ctx, ref, id); return })
	return ok, err
}

func (p *paced) Mark(ctx context.Context, ref IssueRef, m Marker) error {
	return p.call(ctx, issueOf(ref), false, func(ctx context.Context) error { return p.t.Mark(ctx, ref, m) })
}

func (p *paced) List(ctx context.Context, project string) (out []Issue, err error) {
	err = p.call(ctx, "", false, func(ctx context.Context) (err error) { out, err = p.t.List(ctx, project); return })
	return out, err
}
