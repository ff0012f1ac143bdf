package sync

import (
	"context"
	"errors"
	"fmt"
	"io"
	gosync "sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// memInbox is an InboxStore that records batches; fail makes it error.
type memInbox struct {
	mu      gosync.Mutex
	seen    map[string]int64
	batches []int
	stored  []Inbound
	fail    error
	block   chan struct{} // if set, AcceptEvents waits on it
}

func (m *memInbox) AcceptEvents(_ context.Context, in []Inbound, _ time.Time) ([]AcceptResult, error) {
	if m.block != nil {
		<-m.block
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	m.batches = append(m.batches, len(in))
	m.stored = append(m.stored, in...)
	out := make([]AcceptResult, len(in))
	for i, ib := range in {
		if seq, ok := m.seen[ib.Event.DedupKey]; ok {
			out[i] = AcceptResult{Seq: seq, Duplicate: true}
			continue
		}
		m.seen[ib.Event.DedupKey] = int64(len(m.seen) + 1)
		out[i] = AcceptResult{Seq: m.seen[ib.Event.DedupKey]}
	}
	return out, nil
}

// oneRoute routes defect events of project P; review events have a route
// kind but no triggering event names.
type oneRoute struct{}

func (oneRoute) Routes(name, project string, kind Kind) []string {
	if kind == KindDefect && project == "P" {
		return []string{"r"}
	}
	return nil
}
func (oneRoute) RouteInfo(name string) (RouteInfo, bool) {
	return map[string]RouteInfo{"r": {Name: "r", Kind: KindDefect, Projects: []string{"P"}}, "rv": {Name: "rv", Kind: KindReview}}[name], true
}
func (oneRoute) RouteNames() []string                    { return []string{"r", "rv"} }
func (oneRoute) Desired(string, Entity) (Desired, error) { return Desired{}, nil }
func quietLog() *logrus.Entry                            { l := logrus.New(); l.SetOutput(io.Discard); return logrus.NewEntry(l) }
func ev(key string, kind Kind, project string) Event {
	return Event{DedupKey: key, Name: string(kind) + ".updated", Ref: EntityRef{Project: project, Kind: kind, ID: 1}}
}

func TestInboxGroupCommitAndStatuses(t *testing.T) {
	st := &memInbox{seen: map[string]int64{}, block: make(chan struct{})}
	woke := make(chan struct{}, 100)
	in := NewInbox(InboxOptions{Store: st, Mapper: oneRoute{}, Logger: quietLog(), Notify: func() { woke <- struct{}{} }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { in.Run(ctx); close(done) }()

	// 20 concurrent deliveries while the store is blocked: they must end up
	// in few commits, and every caller gets its own answer.
	var wg gosync.WaitGroup
	results := make([]AcceptStatus, 20)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s, err := in.Accept(context.Background(), ev(fmt.Sprint("k", i%10), KindDefect, "P"))
			if err != nil {
				t.Error(err)
			}
			results[i] = s
		}(i)
	}
	time.Sleep(50 * time.Millisecond)
	close(st.block)
	wg.Wait()
	accepted, dup := 0, 0
	for _, r := range results {
		switch r {
		case StatusAccepted:
			accepted++
		case StatusDuplicate:
			dup++
		}
	}
	if accepted != 10 || dup != 10 {
		t.Fatalf("accepted %d duplicate %d, want 10/10", accepted, dup)
	}
	if len(st.batches) >= 20 || len(woke) == 0 {
		t.Fatalf("batches %v, notifications %d: no group commit or no wake-up", st.batches, len(woke))
	}

	// Unrouted kinds are ignored without touching the store; a served kind
	// with no triggering route is stored as context.
	n := len(st.batches)
	if s, _ := in.Accept(context.Background(), ev("x", KindRun, "P")); s != StatusIgnored {
		t.Fatalf("run event: %s, want ignored", s)
	}
	if s, _ := in.Accept(context.Background(), ev("y", KindDefect, "OTHER")); s != StatusIgnored {
		t.Fatalf("other project: %s, want ignored", s)
	}
	if s, _ := in.Accept(context.Background(), ev("z", KindReview, "P")); s != StatusAccepted {
		t.Fatalf("review event: %s, want accepted (kept as context)", s)
	}
	if len(st.batches) != n+1 {
		t.Fatalf("batches %v: ignored events reached the store", st.batches)
	}

	// A store failure is reported to the caller (the webhook answers 503).
	st.mu.Lock()
	st.fail = errors.New("disk full")
	st.mu.Unlock()
	if _, err := in.Accept(context.Background(), ev("f", KindDefect, "P")); err == nil {
		t.Fatal("store failure not reported")
	}

	cancel()
	<-done
	if _, err := in.Accept(context.Background(), ev("late", KindDefect, "P")); !errors.Is(err, ErrInboxClosed) {
		t.Fatalf("after stop: %v, want ErrInboxClosed", err)
	}
}

// twoWayRoute makes oneRoute's route r two-way, taking the status in.
type twoWayRoute struct{ oneRoute }

func (twoWayRoute) TwoWay(route string) (TwoWay, bool) {
	return TwoWay{Fields: map[string]Direction{"status": DirIn}}, route == "r"
}

// A tracker delivery keyed by its delivery id is stored with
// QuietDuplicate (its redelivery is no news); one keyed by a body hash,
// and every Qase event, is not (an equal body may be a new change, I6).
func TestInboxTrackerDuplicatesQuiet(t *testing.T) {
	st := &memInbox{seen: map[string]int64{}}
	in := NewInbox(InboxOptions{Store: st, Mapper: twoWayRoute{}, Logger: quietLog()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { in.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	k := Key{Route: "r", EntityRef: EntityRef{Project: "P", Kind: KindDefect, ID: 1}}
	cases := []struct {
		dedup string
		quiet bool
	}{
		{"github:72d3162e-cc78-11e3-81ab-4c9367dc0958", true},
		{"jira:1234567", true},
		{"github:" + TrackerBodyKey + "0123456789abcdef0123456789abcdef", false},
		{"jira:" + TrackerBodyKey + "0123456789abcdef0123456789abcdef", false},
		{"nocolon", false},
	}
	for _, c := range cases {
		if st, err := in.AcceptTracker(context.Background(), k, Event{DedupKey: c.dedup, Name: "github.issues.edited"}); err != nil || st != StatusAccepted {
			t.Fatalf("AcceptTracker(%s) = %s, %v", c.dedup, st, err)
		}
	}
	if _, err := in.Accept(context.Background(), ev("qase", KindDefect, "P")); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.stored) != len(cases)+1 {
		t.Fatalf("stored %d inbounds, want %d", len(st.stored), len(cases)+1)
	}
	for i, c := range cases {
		if got := st.stored[i]; got.QuietDuplicate != c.quiet || !IsTrackerEvent(got.Event.Name) {
			t.Errorf("%s: QuietDuplicate = %v (name %q), want %v", c.dedup, got.QuietDuplicate, got.Event.Name, c.quiet)
		}
	}
	if st.stored[len(cases)].QuietDuplicate {
		t.Error("a Qase event was stored with QuietDuplicate (I6)")
	}
}

// A busy process lingers for stragglers (one larger batch); an idle one
// commits what is queued at once (lingering would only add latency).
func TestInboxLingersOnlyWhenBusy(t *testing.T) {
	for _, busy := range []bool{true, false} {
		t.Run(fmt.Sprintf("busy=%v", busy), func(t *testing.T) {
			st := &memInbox{seen: map[string]int64{}}
			in := NewInbox(InboxOptions{Store: st, Mapper: oneRoute{}, Logger: quietLog(),
				Linger: 400 * time.Millisecond, Busy: func() bool { return busy }})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { in.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()

			first := make(chan error, 1)
			go func() { _, err := in.Accept(context.Background(), ev("a", KindDefect, "P")); first <- err }()
			time.Sleep(100 * time.Millisecond) // well inside the linger
			if _, err := in.Accept(context.Background(), ev("b", KindDefect, "P")); err != nil {
				t.Fatal(err)
			}
			if err := <-first; err != nil {
				t.Fatal(err)
			}
			st.mu.Lock()
			defer st.mu.Unlock()
			want := []int{1, 1}
			if busy {
				want = []int{2}
			}
			if fmt.Sprint(st.batches) != fmt.Sprint(want) {
				t.Errorf("batches %v, want %v", st.batches, want)
			}
		})
	}
}

func TestCPUGauge(t *testing.T) {
	var cpu time.Duration
	known := true
	at := time.Unix(1000, 0)
	g := NewCPUGauge(func() (time.Duration, bool) { return cpu, known }, func() time.Time { return at })
	g.procs = 2
	step := func(wall, used time.Duration) bool {
		at = at.Add(wall)
		cpu += used
		return g.Busy()
	}
	if step(0, 0) {
		t.Fatal("busy before any measurement")
	}
	// Both cores fully used: busy after the average has risen.
	var busy bool
	for range 10 {
		busy = step(10*time.Millisecond, 20*time.Millisecond)
	}
	if !busy {
		t.Fatalf("not busy at 100%% (smoothed %.2f)", g.busy)
	}
	// Half the cores: not busy once the average has fallen.
	for range 10 {
		busy = step(10*time.Millisecond, 10*time.Millisecond)
	}
	if busy {
		t.Fatalf("busy at 50%% (smoothed %.2f)", g.busy)
	}
	// Samples shorter than the rusage resolution are folded into the next.
	before := g.busy
	step(100*time.Microsecond, 200*time.Microsecond)
	if g.busy != before {
		t.Errorf("short sample changed the average: %.2f -> %.2f", before, g.busy)
	}
	// A clock going backwards restarts the measurement; unknown CPU time
	// never counts as busy.
	at = at.Add(-time.Hour)
	step(0, 0)
	known = false
	if step(10*time.Millisecond, 20*time.Millisecond) {
		t.Error("busy with unknown CPU time")
	}
}

// The default gauge reads this process's CPU time.
func TestProcessCPUTime(t *testing.T) {
	a, ok := processCPUTime()
	if !ok {
		t.Skip("no CPU time on this platform")
	}
	x := 0
	for i := range 20_000_000 {
		x += i % 7
	}
	b, _ := processCPUTime()
	if b <= a || x == 0 {
		t.Errorf("CPU time did not advance over a busy loop: %v -> %v", a, b)
	}
}

// The inbox is behind while behindAt or more deliveries wait for their
// commit, and no longer once they are answered.
func TestInboxBehind(t *testing.T) {
	st := &memInbox{seen: map[string]int64{}, block: make(chan struct{})}
	in := NewInbox(InboxOptions{Store: st, Mapper: oneRoute{}, Logger: quietLog()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go in.Run(ctx)

	var wg gosync.WaitGroup
	send := func(n int) {
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := in.Accept(context.Background(), ev(fmt.Sprint("k", i, "-", n), KindDefect, "P")); err != nil {
					t.Error(err)
				}
			}()
		}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d waiting", what, in.waiting.Load())
			}
		}
	}
	send(behindAt - 1)
	waitFor("one short of behindAt waiting", func() bool { return in.waiting.Load() == behindAt-1 })
	if in.Behind() {
		t.Fatalf("behind with %d waiting, want not before %d", behindAt-1, behindAt)
	}
	send(1)
	waitFor("behindAt waiting", func() bool { return in.waiting.Load() == behindAt })
	if !in.Behind() {
		t.Fatalf("not behind with %d deliveries waiting for their commit", behindAt)
	}
	close(st.block)
	wg.Wait()
	if in.Behind() || in.waiting.Load() != 0 {
		t.Fatalf("after every answer: behind %v, %d waiting", in.Behind(), in.waiting.Load())
	}
}
