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

// Source grants the tokens of one budget.
type Source interface {
	// Take asks for up to n tokens (n >= 1) and returns how many it
	// granted; when none, wait is how long until one may be.
	Take(ctx context.Context, n int) (granted int, wait time.Duration, err error)
}

// Local is a budget kept in this process: a token bucket of x/time/rate.
type Local struct{ l *rate.Limiter }

// NewLocal returns a full bucket of burst tokens refilled at perSecond.
func NewLocal(perSecond float64, burst int) *Local {
	return &Local{l: rate.NewLimiter(rate.Limit(perSecond), max(burst, 1))}
}

// Take implements Source.
func (b *Local) Take(_ context.Context, n int) (int, time.Duration, error) {
	now := time.Now()
	g := min(n, int(b.l.TokensAt(now)))
	if g > 0 && b.l.AllowN(now, g) {
		return g, 0, nil
	}
	r := b.l.ReserveN(now, 1)
	d := r.DelayFrom(now)
	r.CancelAt(now)
	return 0, max(d, time.Millisecond), nil
}

// Options configure a Limiter.
type Options struct {
	Source Source
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
// One goroutine (while anyone waits) asks the source for as many tokens
// as there are waiters, so a shared source costs one query per batch of
// requests, not one per request.
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
func New(o Options) *Limiter { return &Limiter{o: o} }

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
			// The token it did not get stays in the budget; one granted
			// just now is lost (under-use, never over-use).
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

// dispatch runs while requests wait: it takes tokens for all of them and
// hands them out, creates first, sleeping when the budget is empty.
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
		g, wait, err := l.o.Source.Take(ctx, n)
		cancel()
		if err != nil {
			if l.o.OnError != nil {
				l.o.OnError(err)
			}
			time.Sleep(time.Second)
			continue
		}
		l.mu.Lock()
		for ; g > 0; g-- {
			lane := 0
			if len(l.lanes[0]) == 0 {
				lane = 1
			}
			if len(l.lanes[lane]) == 0 {
				break // waiters left meanwhile: the surplus is lost (under-use)
			}
			w := l.lanes[lane][0]
			l.lanes[lane] = l.lanes[lane][1:]
			w.granted = true
			close(w.ready)
		}
		l.mu.Unlock()
		if wait > 0 {
			time.Sleep(wait)
		}
	}
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
