package sync

import (
	"context"
	"fmt"
	"math"
	gosync "sync"
	"time"
)

// Pacing keeps qase-sync under a tracker's limits before the tracker has to
// say 429: a token bucket for every call, spacing between writes to the
// same issue (Jira's per-issue write limit, GitHub's notification storms),
// and creates served before updates when tokens are scarce, so new defects
// reach the tracker first during a backlog.

// PaceOptions configure a Paced tracker.
type PaceOptions struct {
	PerSecond  float64       // sustained calls per second (<= 0: unlimited)
	Burst      int           // bucket size (default 1)
	IssueSpace time.Duration // minimum gap between writes to one issue
	Clock      Clock
	// OnWait is told how long a call waited (metrics); may be nil.
	OnWait func(d time.Duration)
}

// Limiter is a token bucket with a priority lane.
type Limiter struct {
	o        PaceOptions
	mu       gosync.Mutex
	tokens   float64
	last     time.Time
	creates  int // create calls waiting: updates yield to them
	lastByID map[string]time.Time
}

// NewLimiter returns a full bucket.
func NewLimiter(o PaceOptions) *Limiter {
	if o.Clock == nil {
		o.Clock = SystemClock
	}
	if o.Burst <= 0 {
		o.Burst = 1
	}
	return &Limiter{o: o, tokens: float64(o.Burst), last: o.Clock.Now(), lastByID: map[string]time.Time{}}
}

// Wait blocks until the call may proceed. issue is "" for calls not tied
// to an existing issue; create marks the priority lane.
func (l *Limiter) Wait(ctx context.Context, issue string, create bool) error {
	if l == nil {
		return nil
	}
	start := l.o.Clock.Now()
	if create {
		l.mu.Lock()
		l.creates++
		l.mu.Unlock()
		defer func() {
			l.mu.Lock()
			l.creates--
			l.mu.Unlock()
		}()
	}
	for {
		wait := l.reserve(issue, create)
		if wait <= 0 {
			if l.o.OnWait != nil {
				if d := l.o.Clock.Now().Sub(start); d > 0 {
					l.o.OnWait(d)
				}
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

// reserve takes a token and returns 0, or returns how long to wait.
func (l *Limiter) reserve(issue string, create bool) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.o.Clock.Now()
	if issue != "" && l.o.IssueSpace > 0 {
		if next := l.lastByID[issue].Add(l.o.IssueSpace); now.Before(next) {
			return next.Sub(now)
		}
	}
	if l.o.PerSecond > 0 {
		l.tokens = math.Min(float64(l.o.Burst), l.tokens+now.Sub(l.last).Seconds()*l.o.PerSecond)
		l.last = now
		if !create && l.creates > 0 {
			// Yield to waiting creates; check again shortly.
			return time.Duration(float64(time.Second) / l.o.PerSecond)
		}
		if l.tokens < 1 {
			return time.Duration((1 - l.tokens) / l.o.PerSecond * float64(time.Second))
		}
		l.tokens--
	}
	if issue != "" {
		l.lastByID[issue] = now
		if len(l.lastByID) > 10000 {
			l.prune(now)
		}
	}
	return 0
}

func (l *Limiter) prune(now time.Time) {
	for id, t := range l.lastByID {
		if now.Sub(t) > l.o.IssueSpace {
			delete(l.lastByID, id)
		}
	}
}

// Paced wraps a tracker so every call goes through the limiter.
func Paced(t Tracker, l *Limiter) Tracker {
	if l == nil {
		return t
	}
	p := &paced{t: t, l: l}
	if s, ok := t.(FindSettler); ok {
		return &pacedSettler{paced: p, s: s}
	}
	return p
}

type paced struct {
	t Tracker
	l *Limiter
}

type pacedSettler struct {
	*paced
	s FindSettler
}

func (p *pacedSettler) FindSettle() time.Duration { return p.s.FindSettle() }

func (p *paced) Create(ctx context.Context, spec IssueSpec, m Marker) (Issue, error) {
	if err := p.l.Wait(ctx, "", true); err != nil {
		return Issue{}, err
	}
	return p.t.Create(ctx, spec, m)
}

func (p *paced) Find(ctx context.Context, project string, m Marker, since time.Time) ([]Issue, error) {
	if err := p.l.Wait(ctx, "", true); err != nil { // part of a create
		return nil, err
	}
	return p.t.Find(ctx, project, m, since)
}

func (p *paced) Get(ctx context.Context, ref IssueRef) (Issue, error) {
	if err := p.l.Wait(ctx, "", false); err != nil {
		return Issue{}, err
	}
	return p.t.Get(ctx, ref)
}

func (p *paced) Update(ctx context.Context, ref IssueRef, u Update) error {
	if err := p.l.Wait(ctx, ref.Project+"#"+ref.ID, false); err != nil {
		return err
	}
	return p.t.Update(ctx, ref, u)
}

func (p *paced) SetStatus(ctx context.Context, ref IssueRef, status, reason string) error {
	if err := p.l.Wait(ctx, ref.Project+"#"+ref.ID, false); err != nil {
		return err
	}
	return p.t.SetStatus(ctx, ref, status, reason)
}

// SetStatusWithComment implements StatusCommenter for every paced
// tracker: through the tracker's own when it has one, else as SetStatus
// and AddComment in turn (an UnreachableError still writes nothing).
func (p *paced) SetStatusWithComment(ctx context.Context, ref IssueRef, status, reason string, c Comment) error {
	if err := p.l.Wait(ctx, ref.Project+"#"+ref.ID, false); err != nil {
		return err
	}
	if sc, ok := p.t.(StatusCommenter); ok {
		return sc.SetStatusWithComment(ctx, ref, status, reason, c)
	}
	if err := p.t.SetStatus(ctx, ref, status, reason); err != nil {
		return err
	}
	return p.AddComment(ctx, ref, c)
}

func (p *paced) AddComment(ctx context.Context, ref IssueRef, c Comment) error {
	if err := p.l.Wait(ctx, ref.Project+"#"+ref.ID, false); err != nil {
		return err
	}
	return p.t.AddComment(ctx, ref, c)
}

func (p *paced) HasComment(ctx context.Context, ref IssueRef, id string) (bool, error) {
	if err := p.l.Wait(ctx, "", false); err != nil {
		return false, err
	}
	return p.t.HasComment(ctx, ref, id)
}

func (p *paced) Mark(ctx context.Context, ref IssueRef, m Marker) error {
	if err := p.l.Wait(ctx, ref.Project+"#"+ref.ID, false); err != nil {
		return err
	}
	return p.t.Mark(ctx, ref, m)
}

func (p *paced) List(ctx context.Context, project string) ([]Issue, error) {
	if err := p.l.Wait(ctx, "", false); err != nil {
		return nil, err
	}
	return p.t.List(ctx, project)
}
