// Package ratelimit keeps qase-sync under a remote API's request limits
// where requests are sent: an http.RoundTripper that takes one token per
// HTTP request from a budget per credential. The budget is either in this
// process (golang.org/x/time/rate) or shared by every replica through the
// store (see Source); either way creates are served before other requests
// while tokens are scarce.
//
// The package imports the standard library and x/time/rate only, so every
// adapter's client can be wrapped by cmd/qase-sync without an adapter
// importing another package.
package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// ErrWait is returned (wrapping the context's error) when a request's
// context ended while it waited for a token: it was never sent.
var ErrWait = errors.New("waiting for rate tokens")

// Source reserves the tokens of one budget.
type Source interface {
	// Reserve reserves up to n tokens (n >= 1) and returns, for each, how
	// long from now until it may be spent, in order. A reservation is
	// never refused, it is only far off: one question per batch of
	// requests, however scarce tokens are.
	Reserve(ctx context.Context, n int) ([]time.Duration, error)
}

// Local is a budget kept in this process: a token bucket of x/time/rate.
type Local struct{ l *rate.Limiter }

// NewLocal returns a full bucket of burst tokens refilled at perSecond.
func NewLocal(perSecond float64, burst int) *Local {
	return &Local{l: rate.NewLimiter(rate.Limit(perSecond), max(burst, 1))}
}

// Reserve implements Source.
func (b *Local) Reserve(_ context.Context, n int) ([]time.Duration, error) {
	now := time.Now()
	out := make([]time.Duration, 0, n)
	for range n {
		r := b.l.ReserveN(now, 1)
		if !r.OK() {
			return nil, errors.New("ratelimit: a budget without tokens")
		}
		out = append(out, r.DelayFrom(now))
	}
	return out, nil
}

// Options configure a Limiter.
type Options struct {
	Source Source
	// Batch is the most tokens one reservation takes (default 16); the
	// budget's burst is a good value: no replica runs far ahead of others.
	Batch int
	// Create tells whether a request belongs to the create lane (served
	// first); nil: every request is in one lane.
	Create func(ctx context.Context) bool
	// Cut is told about a request whose context ended while it waited,
	// so the caller can tell "never sent" from a failed request; may be nil.
	Cut func(ctx context.Context)
	// OnWait is told how long a request waited (metrics); may be nil.
	OnWait func(d time.Duration)
	// OnError is told when the source fails (the limiter keeps requests
	// waiting and asks again after a second); may be nil.
	OnError func(err error)
}

// Limiter hands out a budget's tokens to waiting requests, creates first.
// One goroutine (while anyone waits) reserves as many tokens as there are
// waiters (up to Batch) and releases a waiter at each token's time: the
// head of the create lane, else of the rest, so a create that arrives
// meanwhile still goes first. A shared source so costs one query per
// batch of requests, not one per request.
type Limiter struct {
	o       Options
	mu      sync.Mutex
	lanes   [2][]*waiter // 0: creates, 1: the rest
	running bool
}

type waiter struct {
	ready   chan struct{}
	granted bool
}

// New returns a limiter over o.Source.
func New(o Options) *Limiter {
	if o.Batch < 1 {
		o.Batch = 16
	}
	return &Limiter{o: o}
}

// Wait blocks until the request may be sent or ctx ends.
func (l *Limiter) Wait(ctx context.Context) error {
	start := time.Now()
	lane := 1
	if l.o.Create != nil && l.o.Create(ctx) {
		lane = 0
	}
	w := &waiter{ready: make(chan struct{})}
	l.mu.Lock()
	l.lanes[lane] = append(l.lanes[lane], w)
	if !l.running {
		l.running = true
		go l.dispatch()
	}
	l.mu.Unlock()
	select {
	case <-w.ready:
	case <-ctx.Done():
		l.mu.Lock()
		granted := w.granted
		if !granted {
			l.lanes[lane] = slices.DeleteFunc(l.lanes[lane], func(x *waiter) bool { return x == w })
		}
		l.mu.Unlock()
		if !granted {
			// Its place goes to the next waiter; a token granted just
			// now is lost (under-use, never over-use).
			if l.o.Cut != nil {
				l.o.Cut(ctx)
			}
			return fmt.Errorf("%w: %w", ErrWait, ctx.Err())
		}
	}
	if l.o.OnWait != nil {
		l.o.OnWait(time.Since(start))
	}
	return nil
}

// dispatch runs while requests wait: it reserves tokens for them and
// releases one waiter at each token's time.
func (l *Limiter) dispatch() {
	for {
		l.mu.Lock()
		n := len(l.lanes[0]) + len(l.lanes[1])
		if n == 0 {
			l.running = false
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		slots, err := l.o.Source.Reserve(ctx, min(n, l.o.Batch))
		cancel()
		if err != nil {
			if l.o.OnError != nil {
				l.o.OnError(err)
			}
			time.Sleep(time.Second)
			continue
		}
		start := time.Now()
		for _, d := range slots {
			if w := time.Until(start.Add(d)); w > 0 {
				time.Sleep(w)
			}
			if !l.release() {
				break // waiters left meanwhile: the rest is unused (under-use, never over-use)
			}
		}
	}
}

// release lets the first waiting request go, creates first; false when
// none waits.
func (l *Limiter) release() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lane := 0
	if len(l.lanes[0]) == 0 {
		lane = 1
	}
	if len(l.lanes[lane]) == 0 {
		return false
	}
	w := l.lanes[lane][0]
	l.lanes[lane] = l.lanes[lane][1:]
	w.granted = true
	close(w.ready)
	return true
}

// Transport sends each request through Base once the limiter gives it a
// token: one token per HTTP request, whatever tracker call it serves.
type Transport struct {
	Base    http.RoundTripper // nil: http.DefaultTransport
	Limiter *Limiter
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.Limiter.Wait(req.Context()); err != nil {
		if req.Body != nil {
			_ = req.Body.Close() // a RoundTripper must close the body, even on error
		}
		return nil, err
	}
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(req)
}

// Client returns a copy of hc (nil: a zero client) whose transport waits
// for l before each request.
func Client(hc *http.Client, l *Limiter) *http.Client {
	c := &http.Client{}
	if hc != nil {
		*c = *hc
	}
	c.Transport = &Transport{Base: c.Transport, Limiter: l}
	return c
}

// CredentialID names a budget by what identifies a credential (a kind,
// a site, a token) without revealing it: a short SHA-256 digest. It is
// safe in the store, logs and metrics.
func CredentialID(kind string, parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return kind + ":" + hex.EncodeToString(h.Sum(nil)[:12])
}
