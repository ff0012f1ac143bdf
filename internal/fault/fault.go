// Package fault is the fault injection the fake servers of the adapters'
// tests share (adapters/jira/jirafake, adapters/github/githubfake,
// adapters/qase/qasefake): each embeds an Injector or a TrackerInjector, so
// a test tells any fake to fail in the same words.
package fault

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// Reply is an injected answer.
type Reply struct {
	Status int
	Header http.Header
	// Body is sent as is; "" lets the fake write its own error body for
	// Status.
	Body string
}

// Injector holds the faults every fake server takes. Safe for concurrent
// use; the zero value injects nothing.
type Injector struct {
	mu      sync.Mutex
	replies []Reply
	delay   time.Duration
}

// FailNext answers the next n requests with status, header and body ("":
// the fake's own error body), without touching the fake's state. Calls
// queue up: each request takes the oldest injected reply.
func (in *Injector) FailNext(n, status int, header http.Header, body string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for range n {
		in.replies = append(in.replies, Reply{Status: status, Header: header.Clone(), Body: body})
	}
}

// Delay makes every request wait d before it is handled; 0 ends the
// delay.
func (in *Injector) Delay(d time.Duration) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.delay = d
}

// Wait is for the fake: it waits out the delay before a request is
// handled, and reports false when the request ended first.
func (in *Injector) Wait(ctx context.Context) bool {
	in.mu.Lock()
	d := in.delay
	in.mu.Unlock()
	if d <= 0 {
		return true
	}
	select {
	case <-time.After(d):
		return true
	case <-ctx.Done():
		return false
	}
}

// Next is for the fake: the reply injected for this request, if any.
func (in *Injector) Next() (Reply, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.replies) == 0 {
		return Reply{}, false
	}
	r := in.replies[0]
	in.replies = in.replies[1:]
	return r, true
}

// Commit is how a create that has stored its issue answers.
type Commit int

// Ways to answer after the commit.
const (
	Answer Commit = iota // as usual
	Fail                 // with a server error: "committed, but the answer says otherwise"
	Drop                 // not at all, the connection closes: "committed, answer lost"
)

// TrackerInjector adds the faults of a tracker's creates: the issue is
// stored, but the client does not learn it.
type TrackerInjector struct {
	Injector
	cmu        sync.Mutex
	commitFail int
	commitDrop int
}

// CommitThenFail makes the next n creates store the issue and answer with
// a server error.
func (in *TrackerInjector) CommitThenFail(n int) {
	in.cmu.Lock()
	defer in.cmu.Unlock()
	in.commitFail += n
}

// CommitThenDrop makes the next n creates store the issue and close the
// connection without an answer.
func (in *TrackerInjector) CommitThenDrop(n int) {
	in.cmu.Lock()
	defer in.cmu.Unlock()
	in.commitDrop += n
}

// AfterCommit is for the fake: how the create that has just stored its
// issue answers.
func (in *TrackerInjector) AfterCommit() Commit {
	in.cmu.Lock()
	defer in.cmu.Unlock()
	switch {
	case in.commitDrop > 0:
		in.commitDrop--
		return Drop
	case in.commitFail > 0:
		in.commitFail--
		return Fail
	}
	return Answer
}

// Hangup closes the connection under w without an answer; false when w
// cannot be taken over.
func Hangup(w http.ResponseWriter) bool {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return false
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return false
	}
	_ = conn.Close()
	return true
}
