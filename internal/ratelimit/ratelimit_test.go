package ratelimit

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/internal/testhttp"
)

// recorder is an HTTP server that logs when each request arrived.
type recorder struct {
	mu  sync.Mutex
	at  []time.Time
	srv *httptest.Server
}

func newRecorder(t *testing.T) *recorder {
	r := &recorder{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.at = append(r.at, time.Now())
		r.mu.Unlock()
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// senders runs each in n goroutines at once and waits for them; each
// stops at its first error, which fails the test.
func senders(t *testing.T, n, each int, send func() error) {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if err := send(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// Many concurrent senders through one transport: the server never sees
// more than the burst plus the rate in any window (plus a tenth for
// requests that reach it later than their token was granted: scheduling
// on a busy machine).
func TestTransportHoldsTheRate(t *testing.T) {
	rec := newRecorder(t)
	const perSecond, burst = 40.0, 4
	var waited atomic.Int64
	hc := Client(nil, New(Options{Source: NewLocal(perSecond, burst), OnWait: func(time.Duration) { waited.Add(1) }}))
	senders(t, 10, 10, func() error {
		resp, err := hc.Get(rec.srv.URL)
		if err == nil {
			resp.Body.Close()
		}
		return err
	})
	if len(rec.at) != 100 || waited.Load() != 100 {
		t.Fatalf("%d requests arrived, %d waits observed; want 100 each", len(rec.at), waited.Load())
	}
	const window = time.Second
	if got, limit := testhttp.Busiest(rec.at, window), burst+int(perSecond*window.Seconds()*1.1); got > limit {
		t.Fatalf("%d requests within %s; the budget allows %d", got, window, limit)
	}
}

// gate is a source that grants what the test says, when it says.
type gate struct {
	asked  chan int
	grants chan int
}

func (g *gate) Reserve(ctx context.Context, n int) ([]time.Duration, error) {
	g.asked <- n
	return make([]time.Duration, <-g.grants), nil
}

// queued is how many requests wait in l.
func (l *Limiter) queued() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lanes[0]) + len(l.lanes[1])
}

type createKey struct{}

// While tokens are scarce, requests of the create lane go first, whenever
// they arrived.
func TestCreatesGoFirst(t *testing.T) {
	g := &gate{asked: make(chan int), grants: make(chan int)}
	l := New(Options{Source: g, Create: func(ctx context.Context) bool { return ctx.Value(createKey{}) != nil }})
	done := make(chan string, 8)
	wait := func(name string, ctx context.Context) {
		go func() {
			if err := l.Wait(ctx); err == nil {
				done <- name
			}
		}()
	}
	wait("update0", context.Background())
	<-g.asked // the dispatcher is asking for update0's token
	for _, n := range []string{"update1", "update2"} {
		wait(n, context.Background())
	}
	for _, n := range []string{"create1", "create2"} {
		wait(n, context.WithValue(context.Background(), createKey{}, true))
	}
	for l.queued() != 5 {
		time.Sleep(time.Millisecond)
	}
	g.grants <- 1 // the answer to the first question: the one token goes to a create
	first := <-done
	if !strings.HasPrefix(first, "create") {
		t.Fatalf("%s got the token before the waiting creates", first)
	}
	if n := <-g.asked; n != 4 {
		t.Fatalf("the limiter asked for %d tokens, want 4 (one question for every waiter)", n)
	}
	g.grants <- 2
	got := []string{<-done, <-done}
	other := map[string]string{"create1": "create2", "create2": "create1"}[first]
	if slices.Sort(got); !slices.Equal(got, []string{other, "update0"}) {
		t.Fatalf("the second grant went to %v; want %s, then the oldest update", got, other)
	}
	<-g.asked
	g.grants <- 2
	got = []string{<-done, <-done}
	if slices.Sort(got); !slices.Equal(got, []string{"update1", "update2"}) {
		t.Fatalf("the last grant went to %v", got)
	}
}

// A request whose context ends while it waits is never sent: ErrWait
// wrapping the context's error, and the Cut hook is told.
func TestCancelledWaitIsNotSent(t *testing.T) {
	rec := newRecorder(t)
	var cut atomic.Bool
	empty := NewLocal(0.001, 1)
	_, _ = empty.Reserve(context.Background(), 1) // the bucket is empty for 1000 s
	hc := Client(&http.Client{Timeout: time.Minute}, New(Options{Source: empty, Cut: func(context.Context) { cut.Store(true) }}))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, rec.srv.URL, strings.NewReader("body"))
	_, err := hc.Do(req)
	if !errors.Is(err, ErrWait) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrWait wrapping the deadline", err)
	}
	if !cut.Load() {
		t.Fatal("the Cut hook was not told")
	}
	if len(rec.at) != 0 {
		t.Fatalf("%d requests reached the server", len(rec.at))
	}
}

// A credential's budget name is stable, differs per credential and never
// contains the secret.
func TestCredentialIDHidesTheSecret(t *testing.T) {
	a := CredentialID("jira", "https://x.atlassian.net", "tok-SECRET-1")
	if a != CredentialID("jira", "https://x.atlassian.net", "tok-SECRET-1") {
		t.Fatal("not stable")
	}
	if a == CredentialID("jira", "https://x.atlassian.net", "tok-SECRET-2") || a == CredentialID("jira", "https://x.atlassian.net/", "tok-SECRET-1") {
		t.Fatal("two credentials share a budget name")
	}
	if strings.Contains(a, "SECRET") || !strings.HasPrefix(a, "jira:") {
		t.Fatalf("%q", a)
	}
}

// counting counts the reservations of a source.
type counting struct {
	Source
	calls atomic.Int64
}

func (c *counting) Reserve(ctx context.Context, n int) ([]time.Duration, error) {
	c.calls.Add(1)
	return c.Source.Reserve(ctx, n)
}

// Concurrent requests are served in batches: far fewer reservations
// (queries, for a shared budget) than requests.
func TestOneReservationPerBatch(t *testing.T) {
	src := &counting{Source: NewLocal(400, 10)}
	l := New(Options{Source: src, Batch: 10})
	senders(t, 10, 20, func() error { return l.Wait(context.Background()) })
	n := src.calls.Load()
	if n > 200/4 {
		t.Fatalf("%d reservations for 200 requests from 10 senders; want batches (at most 50)", n)
	}
	t.Logf("%d reservations for 200 requests", n)
}
