// Package storetest is the conformance suite every qsync.Store backend must
// pass. A backend's test calls Run with a function that opens a fresh,
// empty store per subtest.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// Opener opens a fresh, empty store; it registers its own cleanup on t.
type Opener func(t *testing.T) qsync.Store

// t0 is the suite's clock origin (whole microseconds: stores keep µs).
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

// Run runs the whole suite.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s qsync.Store)
	}{
		{"Ping", testPing},
		{"CreatedAt", testCreatedAt},
		{"AcceptRoundTrip", testAcceptRoundTrip},
		{"AcceptRejectsEmptyDedupKey", testAcceptEmptyDedup},
		{"AcceptDedupWithinAndAcrossBatches", testAcceptDedup},
		{"AcceptZeroRoutesIsNoop", testAcceptZeroRoutes},
		{"AcceptLargeBatch", testAcceptLargeBatch},
		{"AcceptBumpsGenKeepsDue", testAcceptBumpsGen},
		{"AcceptDuplicateSyncsAgain", testAcceptDuplicateSyncsAgain},
		{"AcceptDuplicateWhileLeasedReleases", testAcceptDuplicateWhileLeased},
		{"AcceptDuplicateKeepsBackoff", testAcceptDuplicateKeepsBackoff},
		{"AcceptQuietDuplicateEnqueuesNothing", testAcceptQuietDuplicate},
		{"Enqueue", testEnqueue},
		{"LeaseDueOrderLimit", testLeaseDueOrderLimit},
		{"LeaseFairness", testLeaseFairness},
		{"LeaseExpiry", testLeaseExpiry},
		{"LeaseLost", testLeaseLost},
		{"Release", testRelease},
		{"LeaseTokensFresh", testLeaseTokensFresh},
		{"LeaseTokenFencesSameOwner", testLeaseTokenFencesSameOwner},
		{"Renew", testRenew},
		{"ReleaseEveryTokenOfOwnerOnly", testReleaseOwnerTokens},
		{"SaveLinkFenced", testSaveLinkFenced},
		{"DeleteLinkFenced", testDeleteLinkFenced},
		{"CompleteApplied", testCompleteApplied},
		{"CompleteReleasesAfterGenBump", testCompleteReleasesAfterGenBump},
		{"CompleteKeepsVerifyAskedDuringLease", testCompleteKeepsVerify},
		{"Finish", testFinish},
		{"ReadKey", testReadKey},
		{"RetryBackoff", testRetryBackoff},
		{"RetrySanitizesError", testRetrySanitizesError},
		{"RetryUncharged", testRetryUncharged},
		{"DeadLetters", testDeadLetters},
		{"EventStatusAggregation", testEventStatus},
		{"Snapshot", testSnapshot},
		{"EventsAfter", testEventsAfter},
		{"Links", testLinks},
		{"LinksPagination", testLinksPagination},
		{"Ledger", testLedger},
		{"LedgerDrift", testLedgerDrift},
		{"Deliveries", testDeliveries},
		{"Overview", testOverview},
		{"Prune", testPrune},
		{"TryLease", testTryLease},
		{"TryLeaseExclusive", func(t *testing.T, s qsync.Store) { TryLeaseExclusive(t, s) }},
		{"ReconcilePasses", testReconcilePasses},
		{"Checkpoints", testCheckpoints},
		{"ConcurrentLease", func(t *testing.T, s qsync.Store) { LeaseExclusive(t, s) }},
		{"ConcurrentAccept", testConcurrentAccept},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

func ref(id int64) qsync.EntityRef {
	return qsync.EntityRef{Project: "PRJ", Kind: qsync.KindDefect, ID: id}
}

func key(route string, id int64) qsync.Key { return qsync.Key{Route: route, EntityRef: ref(id)} }

func event(dedup string, r qsync.EntityRef) qsync.Event {
	return qsync.Event{
		DedupKey:   dedup,
		Name:       "defect.updated",
		Ref:        r,
		Timestamp:  t0.Add(-time.Minute),
		ReceivedAt: t0,
		Patch:      qsync.Patch{Attrs: map[string]any{"title": "t-" + dedup}},
		Payload:    []byte(`{"event_name":"defect.updated"}`),
	}
}

func in(ev qsync.Event, routes ...string) qsync.Inbound {
	return qsync.Inbound{Event: ev, Routes: routes}
}

func accept(t *testing.T, s qsync.Store, now time.Time, ins ...qsync.Inbound) []qsync.AcceptResult {
	t.Helper()
	res, err := s.AcceptEvents(context.Background(), ins, now)
	if err != nil {
		t.Fatalf("AcceptEvents: %v", err)
	}
	if len(res) != len(ins) {
		t.Fatalf("AcceptEvents returned %d results for %d events", len(res), len(ins))
	}
	return res
}

func lease(t *testing.T, s qsync.Store, owner string, limit int, now time.Time) []qsync.Job {
	t.Helper()
	js, err := s.Lease(context.Background(), owner, limit, now, 30*time.Second)
	if err != nil {
		t.Fatalf("Lease(%s): %v", owner, err)
	}
	return js
}

// leaseOne leases and expects exactly one job, for key k.
// leasedJob accepts one event about r/1 at t0 and leases its job as w:
// how many job tests begin.
func leasedJob(t *testing.T, s qsync.Store) (qsync.Key, qsync.Job) {
	t.Helper()
	k := key("r", 1)
	accept(t, s, t0, in(event("e", ref(1)), "r"))
	return k, leaseOne(t, s, "w", t0, k)
}

// leaseTwo leases the jobs due at t0 as w: the one of k and the other.
func leaseTwo(t *testing.T, s qsync.Store, k qsync.Key) (mine, other qsync.Job) {
	t.Helper()
	for _, j := range lease(t, s, "w", 10, t0) {
		if j.Key == k {
			mine = j
		} else {
			other = j
		}
	}
	return mine, other
}

func leaseOne(t *testing.T, s qsync.Store, owner string, now time.Time, k qsync.Key) qsync.Job {
	t.Helper()
	js := lease(t, s, owner, 10, now)
	if len(js) != 1 || js[0].Key != k {
		t.Fatalf("Lease(%s) = %v, want exactly %s", owner, jobKeys(js), k)
	}
	return js[0]
}

func jobKeys(js []qsync.Job) []string {
	var ks []string
	for _, j := range js {
		ks = append(ks, j.Key.String())
	}
	return ks
}

func complete(t *testing.T, s qsync.Store, j qsync.Job, o qsync.Outcome, e qsync.LedgerEntry, now time.Time) {
	t.Helper()
	if err := s.Complete(context.Background(), j, o, e, now); err != nil {
		t.Fatalf("Complete(%s, %s): %v", j.Key, o, err)
	}
}

func depth(t *testing.T, s qsync.Store) int {
	t.Helper()
	n, err := s.QueueDepth(context.Background())
	if err != nil {
		t.Fatalf("QueueDepth: %v", err)
	}
	return n
}

func status(t *testing.T, s qsync.Store) qsync.EventStatus {
	t.Helper()
	st, err := s.EventStatus(context.Background())
	if err != nil {
		t.Fatalf("EventStatus: %v", err)
	}
	return st
}

func wantStatus(t *testing.T, s qsync.Store, want qsync.EventStatus) {
	t.Helper()
	if got := status(t, s); got != want {
		t.Fatalf("EventStatus = %+v, want %+v", got, want)
	}
}

func eventsAfter(t *testing.T, s qsync.Store, r qsync.EntityRef, after int64, limit int) []qsync.Event {
	t.Helper()
	evs, err := s.EventsAfter(context.Background(), r, after, limit)
	if err != nil {
		t.Fatalf("EventsAfter: %v", err)
	}
	return evs
}

func wantTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
	if got.Location() != time.UTC {
		t.Errorf("%s location = %v, want UTC", what, got.Location())
	}
}

func testPing(t *testing.T, s qsync.Store) {
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

// testCreatedAt: a new database knows it was just created (the engine
// trusts no search for absence until the late-commit window has passed).
func testCreatedAt(t *testing.T, s qsync.Store) {
	at, err := s.CreatedAt(context.Background())
	if err != nil {
		t.Fatalf("CreatedAt: %v", err)
	}
	if age := time.Since(at); age < -time.Minute || age > 10*time.Minute {
		t.Fatalf("CreatedAt = %v (age %s), want about now for a new database", at, age)
	}
	if at.Location() != time.UTC {
		t.Errorf("CreatedAt location = %v, want UTC", at.Location())
	}
}

func testAcceptRoundTrip(t *testing.T, s qsync.Store) {
	zone := time.FixedZone("X", 3*3600)
	ev := qsync.Event{
		DedupKey:   "dk-1",
		Name:       "defect.created",
		Ref:        ref(7),
		Timestamp:  time.Date(2025, 2, 28, 15, 4, 5, 123456789, zone), // ns are cut to µs
		ReceivedAt: t0.Add(123 * time.Microsecond),
		ActorID:    42,
		Patch: qsync.Patch{
			Attrs: map[string]any{
				"title":    "Crash on <login> & \"quotes\" ✓",
				"severity": "critical",
				"count":    float64(3),
				"ratio":    0.25,
				"flag":     true,
				"none":     nil,
				"tags":     []any{"a", "b"},
				"nested":   map[string]any{"x": map[string]any{"y": "z"}},
			},
			Comment: &qsync.Comment{ID: "c1", Author: "jane", Body: "hello\nworld", At: t0.Add(-time.Hour)},
			Deleted: true,
		},
		Payload: []byte("{\"raw\": true, \"bin\": \"\x01\"}\n"),
	}
	res := accept(t, s, t0, in(ev, "r1", "r2", "r1")) // repeated route counts once
	if res[0].Duplicate || res[0].Seq <= 0 {
		t.Fatalf("result = %+v, want new with positive seq", res[0])
	}
	evs := eventsAfter(t, s, ev.Ref, 0, 10)
	if len(evs) != 1 {
		t.Fatalf("EventsAfter = %d events, want 1", len(evs))
	}
	got := evs[0]
	if got.Seq != res[0].Seq || got.DedupKey != ev.DedupKey || got.Name != ev.Name || got.Ref != ev.Ref || got.ActorID != 42 {
		t.Errorf("event = %+v, want fields of %+v with seq %d", got, ev, res[0].Seq)
	}
	wantTime(t, "Timestamp", got.Timestamp, ev.Timestamp.Truncate(time.Microsecond))
	wantTime(t, "ReceivedAt", got.ReceivedAt, ev.ReceivedAt)
	if !reflect.DeepEqual(got.Patch, ev.Patch) {
		t.Errorf("patch = %#v\nwant %#v", got.Patch, ev.Patch)
	}
	if string(got.Payload) != string(ev.Payload) {
		t.Errorf("payload = %q, want %q", got.Payload, ev.Payload)
	}
	if n := depth(t, s); n != 2 {
		t.Errorf("QueueDepth = %d, want 2 (one job per route)", n)
	}
	js := lease(t, s, "w", 10, t0)
	if len(js) != 2 {
		t.Fatalf("leased %v, want r1 and r2", jobKeys(js))
	}
	routes := map[string]bool{}
	for _, j := range js {
		routes[j.Key.Route] = true
		if j.Key.EntityRef != ev.Ref || j.Gen != 1 || j.Attempts != 0 || j.Verify || j.LastError != "" {
			t.Errorf("job = %+v, want gen 1, fresh", j)
		}
		wantTime(t, "FirstAt", j.FirstAt, t0)
		wantTime(t, "DueAt", j.DueAt, t0)
	}
	if !routes["r1"] || !routes["r2"] {
		t.Errorf("routes = %v, want r1 and r2", routes)
	}
	wantStatus(t, s, qsync.EventStatus{Pending: 1})
}

func testAcceptEmptyDedup(t *testing.T, s qsync.Store) {
	_, err := s.AcceptEvents(context.Background(), []qsync.Inbound{in(event("ok", ref(1)), "r"), in(event("", ref(1)), "r")}, t0)
	if err == nil {
		t.Fatal("AcceptEvents with an empty dedup key succeeded")
	}
	if evs := eventsAfter(t, s, ref(1), 0, 0); len(evs) != 0 {
		t.Errorf("a failed batch stored %d events, want none (one transaction)", len(evs))
	}
}

func testAcceptDedup(t *testing.T, s qsync.Store) {
	a, b := event("a", ref(1)), event("b", ref(2))
	a2 := event("a", ref(1))
	a2.Name = "defect.resolved" // same dedup key: the first wins, nothing changes
	res := accept(t, s, t0, in(a, "r"), in(b, "r"), in(a2, "r"))
	if res[0].Duplicate || res[1].Duplicate || !res[2].Duplicate {
		t.Fatalf("duplicates = %v %v %v, want false false true", res[0].Duplicate, res[1].Duplicate, res[2].Duplicate)
	}
	if res[1].Seq <= res[0].Seq {
		t.Errorf("seqs %d, %d not increasing", res[0].Seq, res[1].Seq)
	}
	if res[2].Seq != res[0].Seq {
		t.Errorf("duplicate seq = %d, want the original %d", res[2].Seq, res[0].Seq)
	}
	c := event("c", ref(1))
	res2 := accept(t, s, at(time.Minute), in(a, "r"), in(c, "r"), in(c, "r"))
	if !res2[0].Duplicate || res2[0].Seq != res[0].Seq {
		t.Errorf("cross-batch duplicate = %+v, want duplicate of seq %d", res2[0], res[0].Seq)
	}
	if res2[1].Duplicate || res2[1].Seq <= res[1].Seq {
		t.Errorf("new event = %+v, want new with seq > %d", res2[1], res[1].Seq)
	}
	if !res2[2].Duplicate || res2[2].Seq != res2[1].Seq {
		t.Errorf("in-batch duplicate = %+v, want duplicate of %d", res2[2], res2[1].Seq)
	}
	evs := eventsAfter(t, s, ref(1), 0, 0)
	if len(evs) != 2 || evs[0].DedupKey != "a" || evs[0].Name != "defect.updated" || evs[1].DedupKey != "c" {
		t.Errorf("events of ref 1 = %+v, want a (original name) and c", evs)
	}
	wantStatus(t, s, qsync.EventStatus{Pending: 3})
	// Every delivery bumps its key, duplicates too (I6): r:1 got a, a2,
	// then a, c, c: gen 5; r:2 one.
	gens := map[qsync.Key]int64{}
	for _, j := range lease(t, s, "w", 10, at(time.Minute)) {
		gens[j.Key] = j.Gen
	}
	if want := map[qsync.Key]int64{key("r", 1): 5, key("r", 2): 1}; !reflect.DeepEqual(gens, want) {
		t.Errorf("job gens = %v, want %v", gens, want)
	}
}

func testAcceptZeroRoutes(t *testing.T, s qsync.Store) {
	res := accept(t, s, t0, in(event("x", ref(1))))
	if res[0].Duplicate {
		t.Fatal("new event reported duplicate")
	}
	if n := depth(t, s); n != 0 {
		t.Errorf("QueueDepth = %d, want 0", n)
	}
	if evs := eventsAfter(t, s, ref(1), 0, 0); len(evs) != 1 {
		t.Errorf("event without routes not stored: %d events", len(evs))
	}
	wantStatus(t, s, qsync.EventStatus{Noop: 1})
}

func testAcceptLargeBatch(t *testing.T, s qsync.Store) {
	const n, refs = 700, 7 // more rows than one SQLite statement chunk
	var ins []qsync.Inbound
	for i := range n {
		ins = append(ins, in(event(fmt.Sprint("big-", i), ref(int64(i%refs))), "r", "s"))
	}
	ins = append(ins, in(event("big-0", ref(0)), "r"), in(event("big-1", ref(1)), "r")) // in-batch duplicates, far apart
	res := accept(t, s, t0, ins...)
	for i := 1; i < n; i++ {
		if res[i].Duplicate || res[i].Seq <= res[i-1].Seq {
			t.Fatalf("result %d = %+v after %+v, want new with increasing seq", i, res[i], res[i-1])
		}
	}
	if !res[n].Duplicate || res[n].Seq != res[0].Seq || !res[n+1].Duplicate || res[n+1].Seq != res[1].Seq {
		t.Errorf("trailing duplicates = %+v %+v, want seqs %d %d", res[n], res[n+1], res[0].Seq, res[1].Seq)
	}
	wantStatus(t, s, qsync.EventStatus{Pending: n})
	jobs := lease(t, s, "w", 100, t0)
	if len(jobs) != 2*refs {
		t.Fatalf("leased %d jobs, want %d", len(jobs), 2*refs)
	}
	for _, j := range jobs {
		want := int64(n / refs)
		if j.Key.ID < n%refs {
			want++
		}
		if j.Key.Route == "r" && j.Key.ID < 2 {
			want++ // the trailing duplicate bumps its key too (I6)
		}
		if j.Gen != want {
			t.Errorf("%s gen = %d, want %d", j.Key, j.Gen, want)
		}
		complete(t, s, j, qsync.OutcomeApplied, qsync.LedgerEntry{}, t0)
	}
	wantStatus(t, s, qsync.EventStatus{Applied: n})
}

func testAcceptBumpsGen(t *testing.T, s qsync.Store) {
	k := key("r", 1)
	accept(t, s, t0, in(event("e1", ref(1)), "r"), in(event("e2", ref(1)), "r"))
	// The job is backing off until +1h; a new event bumps its gen but
	// neither makes it due nor resets its attempts.
	j := leaseOne(t, s, "w", t0, k)
	if j.Gen != 2 {
		t.Errorf("gen after two events = %d, want 2", j.Gen)
	}
	if err := s.Retry(context.Background(), j, at(time.Hour), "boom", true, t0); err != nil {
		t.Fatalf("Retry: %v", err)
	}
	accept(t, s, at(time.Minute), in(event("e3", ref(1)), "r"))
	if js := lease(t, s, "w", 10, at(2*time.Minute)); len(js) != 0 {
		t.Fatalf("job in backoff leased after a new event: %v", jobKeys(js))
	}
	j = leaseOne(t, s, "w", at(time.Hour), k)
	if j.Gen != 3 || j.Attempts != 1 || j.LastError != "boom" {
		t.Errorf("job = %+v, want gen 3, attempts 1, last error kept", j)
	}
	wantTime(t, "DueAt", j.DueAt, at(time.Hour))
	wantTime(t, "FirstAt", j.FirstAt, t0)
}

func testEnqueue(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	k1, k2, k3 := key("r", 1), key("r", 2), key("other", 1)
	if err := s.Enqueue(ctx, nil, true, t0); err != nil {
		t.Fatalf("Enqueue(nil): %v", err)
	}
	if err := s.Enqueue(ctx, []qsync.Key{k1, k2}, false, t0); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	if err := s.Enqueue(ctx, []qsync.Key{k1, k3}, true, at(time.Minute)); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	if err := s.Enqueue(ctx, []qsync.Key{k1}, false, at(2*time.Minute)); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	if n := depth(t, s); n != 3 {
		t.Errorf("QueueDepth = %d, want 3", n)
	}
	got := map[qsync.Key]qsync.Job{}
	for _, j := range lease(t, s, "w", 10, at(time.Hour)) {
		got[j.Key] = j
	}
	if j := got[k1]; j.Gen != 3 || !j.Verify || !j.DueAt.Equal(t0) || !j.FirstAt.Equal(t0) {
		t.Errorf("k1 = %+v, want gen 3, verify or-ed in, due/first at t0", j)
	}
	if j := got[k2]; j.Gen != 1 || j.Verify || !j.DueAt.Equal(t0) {
		t.Errorf("k2 = %+v, want gen 1, no verify, due t0", j)
	}
	if j := got[k3]; j.Gen != 1 || !j.Verify || !j.DueAt.Equal(at(time.Minute)) {
		t.Errorf("k3 = %+v, want gen 1, verify, due +1m", j)
	}
}

func testLeaseDueOrderLimit(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	for i, d := range []time.Duration{3 * time.Minute, time.Minute, 2 * time.Minute, 5*time.Minute + 10*time.Second} {
		if err := s.Enqueue(ctx, []qsync.Key{key("r", int64(i+1))}, false, at(d)); err != nil {
			t.Fatalf("Enqueue: %v", err)
		}
	}
	if js := lease(t, s, "w", 0, at(time.Hour)); len(js) != 0 {
		t.Errorf("limit 0 leased %v", jobKeys(js))
	}
	js := lease(t, s, "w", 2, at(5*time.Minute))
	if got, want := strings.Join(jobKeys(js), " "), key("r", 2).String()+" "+key("r", 3).String(); got != want {
		t.Errorf("leased %q, want the two oldest due %q", got, want)
	}
	js = lease(t, s, "w2", 10, at(5*time.Minute))
	if len(js) != 1 || js[0].Key != key("r", 1) {
		t.Errorf("leased %v, want only r:1 (r:4 is not due, others leased)", jobKeys(js))
	}
	zone := time.FixedZone("Y", -5*3600)
	js = lease(t, s, "w3", 10, at(5*time.Minute+10*time.Second).In(zone)) // due exactly now
	if len(js) != 1 || js[0].Key != key("r", 4) {
		t.Fatalf("leased %v, want r:4 (due == now)", jobKeys(js))
	}
	wantTime(t, "DueAt", js[0].DueAt, at(5*time.Minute+10*time.Second))
}

func testLeaseExpiry(t *testing.T, s qsync.Store) {
	k := key("r", 1)
	if err := s.Enqueue(context.Background(), []qsync.Key{k}, false, t0); err != nil {
		t.Fatal(err)
	}
	leaseOne(t, s, "a", t0, k) // until t0+30s
	if js := lease(t, s, "b", 10, at(30*time.Second)); len(js) != 0 {
		t.Fatalf("lease taken at its expiry instant: %v", jobKeys(js))
	}
	j := leaseOne(t, s, "b", at(30*time.Second+time.Microsecond), k)
	if j.Gen != 1 {
		t.Errorf("gen = %d, want 1", j.Gen)
	}
	if js := lease(t, s, "a", 10, at(31*time.Second)); len(js) != 0 {
		t.Errorf("a re-leased b's job: %v", jobKeys(js))
	}
}

func testLeaseLost(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	k := key("r", 1)
	accept(t, s, t0, in(event("e", ref(1)), "r"))
	never := qsync.Job{Key: key("r", 99), Gen: 1}
	if err := s.Complete(ctx, never, qsync.OutcomeApplied, qsync.LedgerEntry{}, t0); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Errorf("Complete of a missing job: %v, want ErrLeaseLost", err)
	}
	ja := leaseOne(t, s, "a", t0, k)
	forged := ja
	forged.Lease = "b#" + strings.TrimPrefix(ja.Lease, "a#")
	if err := s.Complete(ctx, forged, qsync.OutcomeApplied, qsync.LedgerEntry{}, t0); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Errorf("Complete with a token not issued for the lease: %v, want ErrLeaseLost", err)
	}
	untokened := ja
	untokened.Lease = ""
	if err := s.Complete(ctx, untokened, qsync.OutcomeApplied, qsync.LedgerEntry{}, t0); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Errorf("Complete without a token: %v, want ErrLeaseLost", err)
	}
	jb := leaseOne(t, s, "b", at(time.Minute), k) // a's lease expired
	if err := s.Complete(ctx, ja, qsync.OutcomeApplied, qsync.LedgerEntry{}, at(time.Minute)); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Errorf("Complete after losing the lease: %v, want ErrLeaseLost", err)
	}
	if err := s.Retry(ctx, ja, at(time.Hour), "x", true, at(time.Minute)); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Errorf("Retry after losing the lease: %v, want ErrLeaseLost", err)
	}
	wantStatus(t, s, qsync.EventStatus{Pending: 1}) // the failed calls changed nothing
	if es, err := s.Ledger(ctx, k, 0); err != nil || len(es) != 0 {
		t.Errorf("ledger after failed Complete = %v, %v; want empty", es, err)
	}
	complete(t, s, jb, qsync.OutcomeApplied, qsync.LedgerEntry{}, at(time.Minute))
	if err := s.Complete(ctx, jb, qsync.OutcomeApplied, qsync.LedgerEntry{}, at(time.Minute)); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Errorf("second Complete: %v, want ErrLeaseLost", err)
	}
	wantStatus(t, s, qsync.EventStatus{Applied: 1})
}

func testRelease(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	if err := s.Enqueue(ctx, []qsync.Key{key("r", 1), key("r", 2), key("r", 3)}, false, t0); err != nil {
		t.Fatal(err)
	}
	lease(t, s, "a", 2, t0)
	lease(t, s, "b", 1, t0)
	if err := s.Release(ctx, "a"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := s.Release(ctx, "nobody"); err != nil {
		t.Fatalf("Release(nobody): %v", err)
	}
	js := lease(t, s, "c", 10, at(time.Second))
	if len(js) != 2 {
		t.Errorf("after Release(a), c leased %v, want a's two jobs", jobKeys(js))
	}
	if n := depth(t, s); n != 3 {
		t.Errorf("QueueDepth = %d, want 3 (Release keeps jobs)", n)
	}
}

func testCompleteApplied(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	k := key("r", 1)
	accept(t, s, t0, in(event("e1", ref(1)), "r"), in(event("e2", ref(1)), "r"))
	j := leaseOne(t, s, "w", t0, k)
	complete(t, s, j, qsync.OutcomeApplied, qsync.LedgerEntry{Ops: []string{"create", "comment"}, Issue: "PROJ-1", Detail: "created"}, at(time.Second))
	if n := depth(t, s); n != 0 {
		t.Errorf("QueueDepth = %d, want 0 (job deleted)", n)
	}
	wantStatus(t, s, qsync.EventStatus{Applied: 2})
	es, err := s.Ledger(ctx, k, 10)
	if err != nil || len(es) != 1 {
		t.Fatalf("Ledger = %v, %v; want one entry", es, err)
	}
	e := es[0]
	if e.ID <= 0 || e.Key != k || e.Gen != 2 || e.Outcome != qsync.OutcomeApplied || e.Issue != "PROJ-1" ||
		e.Detail != "created" || !reflect.DeepEqual(e.Ops, []string{"create", "comment"}) {
		t.Errorf("ledger entry = %+v, want filled from the job", e)
	}
	wantTime(t, "ledger At", e.At, at(time.Second))
}

// A reconcile pass that asks for verification while a plain attempt holds
// the lease must not lose that request.
func testCompleteKeepsVerify(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	k, j := leasedJob(t, s)
	if j.Verify {
		t.Fatalf("job = %+v, want no verify", j)
	}
	if err := s.Enqueue(ctx, []qsync.Key{k}, true, t0); err != nil {
		t.Fatal(err)
	}
	complete(t, s, j, qsync.OutcomeApplied, qsync.LedgerEntry{}, at(time.Second))
	j2 := leaseOne(t, s, "w", at(time.Second), k)
	if !j2.Verify || j2.Gen != 2 {
		t.Fatalf("released job = %+v, want gen 2 with verify kept", j2)
	}
}

func testCompleteReleasesAfterGenBump(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	k, j := leasedJob(t, s)
	if err := s.Retry(ctx, j, at(time.Second), "flaky", true, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(ctx, []qsync.Key{k}, true, t0); err != nil { // verify or-ed in
		t.Fatal(err)
	}
	j = leaseOne(t, s, "w", at(time.Second), k)
	if j.Attempts != 1 || j.Gen != 2 || !j.Verify {
		t.Fatalf("job = %+v, want attempts 1, gen 2, verify", j)
	}
	// A new event arrives while the job is leased: gen 3.
	accept(t, s, at(2*time.Second), in(event("e2", ref(1)), "r"))
	complete(t, s, j, qsync.OutcomeApplied, qsync.LedgerEntry{}, at(3*time.Second))
	if n := depth(t, s); n != 1 {
		t.Fatalf("QueueDepth = %d, want 1 (job released, not deleted)", n)
	}
	wantStatus(t, s, qsync.EventStatus{Applied: 1, Pending: 1})
	j2 := leaseOne(t, s, "other", at(3*time.Second), k) // released: due now, free
	if j2.Gen != 3 || j2.Attempts != 0 || j2.LastError != "" || j2.Verify {
		t.Errorf("released job = %+v, want gen 3, attempts 0, no error, no verify", j2)
	}
	wantTime(t, "DueAt", j2.DueAt, at(3*time.Second))
	wantTime(t, "FirstAt", j2.FirstAt, at(3*time.Second))
	complete(t, s, j2, qsync.OutcomeNoop, qsync.LedgerEntry{}, at(4*time.Second))
	wantStatus(t, s, qsync.EventStatus{Applied: 1, Noop: 1})
	if n := depth(t, s); n != 0 {
		t.Errorf("QueueDepth = %d, want 0", n)
	}
	es, err := s.Ledger(ctx, k, 0)
	if err != nil || len(es) != 2 || es[0].Gen != 3 || es[0].Outcome != qsync.OutcomeNoop || es[1].Gen != 2 {
		t.Errorf("ledger = %+v, %v; want noop@3 then applied@2", es, err)
	}
}

func testRetryBackoff(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	k, j := leasedJob(t, s)
	if err := s.Retry(ctx, j, at(time.Minute), "503 from jira", true, t0); err != nil {
		t.Fatalf("Retry: %v", err)
	}
	if js := lease(t, s, "w", 10, at(59*time.Second)); len(js) != 0 {
		t.Fatalf("job leased before its retry time: %v", jobKeys(js))
	}
	j = leaseOne(t, s, "w2", at(time.Minute), k) // lease cleared by Retry, so any owner
	if j.Attempts != 1 || j.LastError != "503 from jira" || j.Gen != 1 {
		t.Errorf("job = %+v, want attempts 1 with the error", j)
	}
	wantTime(t, "DueAt", j.DueAt, at(time.Minute))
	wantTime(t, "FirstAt", j.FirstAt, t0)
	if err := s.Retry(ctx, j, at(3*time.Minute), "timeout", true, at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	j = leaseOne(t, s, "w", at(3*time.Minute), k)
	if j.Attempts != 2 || j.LastError != "timeout" {
		t.Errorf("job = %+v, want attempts 2", j)
	}
	wantStatus(t, s, qsync.EventStatus{Pending: 1})
}

func testRetrySanitizesError(t *testing.T, s qsync.Store) {
	k := key("r", 1)
	if err := s.Enqueue(context.Background(), []qsync.Key{k}, false, t0); err != nil {
		t.Fatal(err)
	}
	j := leaseOne(t, s, "w", t0, k)
	// Tracker error bodies can carry anything; the store must not choke.
	if err := s.Retry(context.Background(), j, t0, "bad\x00body\xff: ünïcode", true, t0); err != nil {
		t.Fatalf("Retry with odd bytes: %v", err)
	}
	j = leaseOne(t, s, "w", t0, k)
	if !strings.HasPrefix(j.LastError, "bad") || !strings.Contains(j.LastError, "body") || !strings.HasSuffix(j.LastError, "ünïcode") {
		t.Errorf("LastError = %q, want the text kept", j.LastError)
	}
}

func testDeadLetters(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	k1, k2 := key("r", 1), key("r", 2)
	accept(t, s, t0, in(event("e1", ref(1)), "r"), in(event("e2", ref(2)), "r"))
	ja, jb := leaseTwo(t, s, k1)
	if ja.Key != k1 || jb.Key != k2 {
		t.Fatalf("leased %v and %v, want both keys", ja.Key, jb.Key)
	}
	if err := s.Retry(ctx, ja, t0, "e", true, t0); err != nil {
		t.Fatal(err)
	}
	ja = leaseOne(t, s, "w", t0, k1) // attempts 1
	complete(t, s, ja, qsync.OutcomeDead, qsync.LedgerEntry{Detail: "422 invalid field", Request: "POST /rest/api/2/issue -> 422"}, at(time.Second))
	complete(t, s, jb, qsync.OutcomeDead, qsync.LedgerEntry{Detail: "403"}, at(2*time.Second))
	wantStatus(t, s, qsync.EventStatus{Dead: 2})
	ds, err := s.DeadLetters(ctx, 10)
	if err != nil || len(ds) != 2 {
		t.Fatalf("DeadLetters = %v, %v; want 2", ds, err)
	}
	if ds[0].Key != k2 || ds[1].Key != k1 || ds[0].ID <= ds[1].ID {
		t.Errorf("dead letters %+v, want newest (k2) first", ds)
	}
	d := ds[1]
	if d.Reason != "422 invalid field" || d.Attempts != 2 || d.LastRequest != "POST /rest/api/2/issue -> 422" {
		t.Errorf("dead letter = %+v, want reason, attempts 2 (one retry + this), last request", d)
	}
	wantTime(t, "CreatedAt", d.CreatedAt, at(time.Second))
	if ds1, err := s.DeadLetters(ctx, 1); err != nil || len(ds1) != 1 || ds1[0].Key != k2 {
		t.Errorf("DeadLetters(1) = %+v, %v", ds1, err)
	}
	if got, ok, err := s.DeadLetter(ctx, d.ID); err != nil || !ok || !reflect.DeepEqual(got, d) {
		t.Errorf("DeadLetter(%d) = %+v, %v, %v; want %+v", d.ID, got, ok, err, d)
	}
	if _, ok, err := s.DeadLetter(ctx, 1<<40); err != nil || ok {
		t.Errorf("DeadLetter(missing) = %v, %v; want not found", ok, err)
	}
	if n := depth(t, s); n != 0 {
		t.Fatalf("QueueDepth = %d, want 0", n)
	}
	// Retry the k1 letter: gone from the list, its key due again.
	if err := s.RetryDeadLetter(ctx, d.ID, at(time.Minute)); err != nil {
		t.Fatalf("RetryDeadLetter: %v", err)
	}
	if err := s.RetryDeadLetter(ctx, d.ID, at(time.Minute)); !errors.Is(err, qsync.ErrNotFound) {
		t.Errorf("RetryDeadLetter twice: %v, want ErrNotFound", err)
	}
	j := leaseOne(t, s, "w", at(time.Minute), k1)
	if j.Gen != 1 || j.Attempts != 0 || j.Verify {
		t.Errorf("retried job = %+v, want fresh gen 1 without verify", j)
	}
	wantTime(t, "DueAt", j.DueAt, at(time.Minute))
	// The retried key's event is pending again, and the retry decides it.
	wantStatus(t, s, qsync.EventStatus{Pending: 1, Dead: 1})
	complete(t, s, j, qsync.OutcomeApplied, qsync.LedgerEntry{}, at(time.Minute))
	wantStatus(t, s, qsync.EventStatus{Applied: 1, Dead: 1})
	// Retrying a letter whose key has a job bumps that job.
	if err := s.Enqueue(ctx, []qsync.Key{k2}, false, at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.RetryDeadLetter(ctx, ds[0].ID, at(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	j = leaseOne(t, s, "w", at(2*time.Minute), k2)
	if j.Gen != 2 {
		t.Errorf("gen = %d, want 2", j.Gen)
	}
	wantTime(t, "DueAt", j.DueAt, at(time.Minute))
	// Drop.
	complete(t, s, j, qsync.OutcomeDead, qsync.LedgerEntry{Detail: "again"}, at(3*time.Minute))
	ds, _ = s.DeadLetters(ctx, 0)
	if len(ds) != 1 || ds[0].Reason != "again" {
		t.Fatalf("DeadLetters = %+v, want the new one", ds)
	}
	if err := s.DropDeadLetter(ctx, ds[0].ID); err != nil {
		t.Fatalf("DropDeadLetter: %v", err)
	}
	if err := s.DropDeadLetter(ctx, ds[0].ID); !errors.Is(err, qsync.ErrNotFound) {
		t.Errorf("DropDeadLetter twice: %v, want ErrNotFound", err)
	}
	if ds, err := s.DeadLetters(ctx, 0); err != nil || len(ds) != 0 {
		t.Errorf("DeadLetters after drop = %+v, %v", ds, err)
	}
}

func testEventStatus(t *testing.T, s qsync.Store) {
	wantStatus(t, s, qsync.EventStatus{})
	// e1 on routes a,b of entity 1; e2 on a,b of entity 2; e3 on a of
	// entity 3; e4 on no route.
	accept(t, s, t0,
		in(event("e1", ref(1)), "a", "b"),
		in(event("e2", ref(2)), "a", "b"),
		in(event("e3", ref(3)), "a"),
		in(event("e4", ref(4))))
	wantStatus(t, s, qsync.EventStatus{Pending: 3, Noop: 1})
	jobs := map[qsync.Key]qsync.Job{}
	for _, j := range lease(t, s, "w", 10, t0) {
		jobs[j.Key] = j
	}
	if len(jobs) != 5 {
		t.Fatalf("leased %d jobs, want 5", len(jobs))
	}
	done := func(k qsync.Key, o qsync.Outcome) {
		t.Helper()
		complete(t, s, jobs[k], o, qsync.LedgerEntry{}, t0)
	}
	done(key("a", 1), qsync.OutcomeApplied)
	wantStatus(t, s, qsync.EventStatus{Pending: 3, Noop: 1}) // e1 still pending on b
	done(key("b", 1), qsync.OutcomeDead)
	done(key("a", 2), qsync.OutcomeApplied)
	done(key("b", 2), qsync.OutcomeNoop)
	done(key("a", 3), qsync.OutcomeNoop)
	wantStatus(t, s, qsync.EventStatus{Dead: 1, Applied: 1, Noop: 2})
}

func testSnapshot(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	r := ref(5)
	snap, err := s.Snapshot(ctx, r)
	if err != nil || !reflect.DeepEqual(snap, qsync.Snapshot{Ref: r}) {
		t.Fatalf("Snapshot(none) = %+v, %v; want zero with ref", snap, err)
	}
	state := qsync.State{
		Attrs: map[string]qsync.Attr{
			"title":          {V: "Login fails", Stamp: qsync.Stamp{At: 1740830400123456789, Seq: 7}},
			"severity":       {V: float64(2), Stamp: qsync.Stamp{At: 1740830400000000000, Seq: 1<<62 - 1}},
			"reviewers/jane": {V: map[string]any{"status": "approved", "n": 1.5, "l": []any{"x", true, nil}}, Stamp: qsync.Stamp{At: -5, Seq: 0}},
			"gone":           {V: nil, Stamp: qsync.Stamp{At: 1}},
		},
		Comments:  []qsync.Comment{{ID: "c1", Author: "a", Body: "b", At: t0}},
		Deleted:   true,
		LastEvent: "defect.updated",
		LastStamp: qsync.Stamp{At: 1740830400123456789, Seq: 7},
		Events:    map[string]int{"defect.updated": 3, "defect.created": 1},
		Seen:      map[string]bool{"dk1": true, "dk2": true},
	}
	want := qsync.Snapshot{Ref: r, LastSeq: 5, State: state}
	if ok, err := s.SaveSnapshot(ctx, want, 3); err != nil || ok {
		t.Fatalf("SaveSnapshot(prev 3, none stored) = %v, %v; want conflict", ok, err)
	}
	if ok, err := s.SaveSnapshot(ctx, want, 0); err != nil || !ok {
		t.Fatalf("SaveSnapshot(prev 0) = %v, %v; want ok", ok, err)
	}
	got, err := s.Snapshot(ctx, r)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Snapshot = %#v, %v\nwant %#v", got, err, want)
	}
	if ok, err := s.SaveSnapshot(ctx, qsync.Snapshot{Ref: r, LastSeq: 6}, 0); err != nil || ok {
		t.Errorf("SaveSnapshot(prev 0, 5 stored) = %v, %v; want conflict", ok, err)
	}
	next := qsync.Snapshot{Ref: r, LastSeq: 9, State: qsync.State{LastEvent: "defect.resolved"}}
	if ok, err := s.SaveSnapshot(ctx, next, 5); err != nil || !ok {
		t.Fatalf("SaveSnapshot(prev 5) = %v, %v; want ok", ok, err)
	}
	if ok, err := s.SaveSnapshot(ctx, qsync.Snapshot{Ref: r, LastSeq: 10}, 5); err != nil || ok {
		t.Errorf("stale SaveSnapshot(prev 5) = %v, %v; want conflict", ok, err)
	}
	if got, _ := s.Snapshot(ctx, r); !reflect.DeepEqual(got, next) {
		t.Errorf("Snapshot = %+v, want %+v", got, next)
	}
	// A snapshot stored at LastSeq 0 (API read, no events yet) is CAS-able from 0.
	r0 := ref(6)
	for i, ls := range []int64{0, 0, 4} {
		if ok, err := s.SaveSnapshot(ctx, qsync.Snapshot{Ref: r0, LastSeq: ls, State: qsync.State{Deleted: i == 2}}, 0); err != nil || !ok {
			t.Fatalf("SaveSnapshot #%d (prev 0, stored 0) = %v, %v; want ok", i, ok, err)
		}
	}
	if got, _ := s.Snapshot(ctx, r0); got.LastSeq != 4 || !got.State.Deleted {
		t.Errorf("Snapshot = %+v, want last seq 4", got)
	}
	if got, _ := s.Snapshot(ctx, ref(7)); got.LastSeq != 0 {
		t.Errorf("other entity sees %+v", got)
	}
}

func testEventsAfter(t *testing.T, s qsync.Store) {
	var seqs []int64
	for i := range 5 {
		res := accept(t, s, t0, in(event(fmt.Sprint("e", i), ref(1)), "r"), in(event(fmt.Sprint("o", i), ref(2)), "r"))
		seqs = append(seqs, res[0].Seq)
	}
	other := qsync.EntityRef{Project: "PRJ", Kind: qsync.KindRun, ID: 1} // same id, other kind
	accept(t, s, t0, in(qsync.Event{DedupKey: "run", Name: "run.started", Ref: other}, "r"))
	check := func(after int64, limit int, want []int64) {
		t.Helper()
		var got []int64
		for _, ev := range eventsAfter(t, s, ref(1), after, limit) {
			if ev.Ref != ref(1) {
				t.Errorf("event of %s returned for %s", ev.Ref, ref(1))
			}
			got = append(got, ev.Seq)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("EventsAfter(%d, %d) = %v, want %v", after, limit, got, want)
		}
	}
	check(0, 0, seqs)
	check(0, 2, seqs[:2])
	check(seqs[1], 2, seqs[2:4])
	check(seqs[4], 10, nil)
	evs := eventsAfter(t, s, other, 0, 0)
	if len(evs) != 1 || evs[0].Payload != nil || evs[0].Patch.Attrs != nil || !evs[0].Timestamp.IsZero() {
		t.Errorf("sparse event = %+v, want empty payload/patch and zero time", evs)
	}
}

func sampleLink(k qsync.Key) qsync.Link {
	return qsync.Link{
		Key:     k,
		State:   qsync.LinkLinked,
		Tracker: "jira-main",
		Marker:  qsync.MarkerFor(k),
		Issue:   qsync.IssueRef{Project: "OPS", ID: "10042", Key: "OPS-42", URL: "https://x.atlassian.net/browse/OPS-42"},
		Applied: qsync.Applied{
			IssueFields: qsync.IssueFields{
				Title: "T", Body: "B", Labels: []string{"qase", "bug"}, Priority: "High",
				Assignees: []string{"acc-1"}, Components: []string{"api"},
				Fields: map[string]string{"customfield_1": "v"}, Status: "Open", Reason: "Done",
			},
			Comments: []string{"c1"}, Pending: []string{"c2"},
		},
		Fingerprint: "fp1",
		IntentAt:    at(-time.Minute),
		CreatedAt:   t0,
		UpdatedAt:   at(time.Second),
	}
}

func testLinks(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	k := key("jira", 1)
	if _, found, err := s.Link(ctx, k); err != nil || found {
		t.Fatalf("Link(missing) = %v, %v", found, err)
	}
	l := sampleLink(k)
	l.State = qsync.LinkCreating
	l.Issue = qsync.IssueRef{}
	l.Applied = qsync.Applied{}
	if err := s.SaveLink(ctx, l); err != nil {
		t.Fatalf("SaveLink: %v", err)
	}
	got, found, err := s.Link(ctx, k)
	if err != nil || !found || !reflect.DeepEqual(got, l) {
		t.Fatalf("Link = %+v, %v, %v\nwant %+v", got, found, err, l)
	}
	l2 := sampleLink(k)
	l2.IntentAt = time.Time{}
	if err := s.SaveLink(ctx, l2); err != nil {
		t.Fatalf("SaveLink (replace): %v", err)
	}
	got, found, err = s.Link(ctx, k)
	if err != nil || !found || !reflect.DeepEqual(got, l2) {
		t.Fatalf("Link = %+v, %v, %v\nwant %+v", got, found, err, l2)
	}
	wantTime(t, "UpdatedAt", got.UpdatedAt, l2.UpdatedAt)
	if _, found, _ := s.Link(ctx, key("github", 1)); found {
		t.Error("link found under another route")
	}
	if err := s.DeleteLink(ctx, k); err != nil {
		t.Fatalf("DeleteLink: %v", err)
	}
	if err := s.DeleteLink(ctx, k); err != nil {
		t.Fatalf("DeleteLink (absent): %v", err)
	}
	if _, found, err := s.Link(ctx, k); err != nil || found {
		t.Errorf("Link after delete = %v, %v", found, err)
	}
}

func testLinksPagination(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	var keys []qsync.Key
	for _, route := range []string{"gh", "jira"} {
		for _, proj := range []string{"A", "B"} {
			for _, kind := range []qsync.Kind{qsync.KindDefect, qsync.KindRun} {
				for _, id := range []int64{10, 2} { // numeric, not text, order
					keys = append(keys, qsync.Key{Route: route, EntityRef: qsync.EntityRef{Project: proj, Kind: kind, ID: id}})
				}
			}
		}
	}
	for _, i := range rand.Perm(len(keys)) {
		if err := s.SaveLink(ctx, sampleLink(keys[i])); err != nil {
			t.Fatal(err)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keyLess(keys[i], keys[j]) })
	page := func(route string, after qsync.Key, limit int) []qsync.Key {
		t.Helper()
		ls, err := s.Links(ctx, route, after, limit)
		if err != nil {
			t.Fatalf("Links: %v", err)
		}
		var ks []qsync.Key
		for _, l := range ls {
			ks = append(ks, l.Key)
		}
		return ks
	}
	all := page("", qsync.Key{}, 0)
	if !reflect.DeepEqual(all, keys) {
		t.Fatalf("Links(all) = %v\nwant %v", all, keys)
	}
	var walked []qsync.Key
	after := qsync.Key{}
	for range len(keys) {
		p := page("", after, 3)
		if len(p) == 0 {
			break
		}
		walked = append(walked, p...)
		after = p[len(p)-1]
	}
	if !reflect.DeepEqual(walked, keys) {
		t.Errorf("paged walk = %v\nwant %v", walked, keys)
	}
	jira := page("jira", qsync.Key{}, 0)
	if len(jira) != 8 || jira[0].Route != "jira" || !reflect.DeepEqual(jira, keys[8:]) {
		t.Errorf("Links(jira) = %v", jira)
	}
	if p := page("jira", keys[9], 2); !reflect.DeepEqual(p, keys[10:12]) {
		t.Errorf("Links(jira, after %s) = %v, want %v", keys[9], p, keys[10:12])
	}
	if p := page("gh", keys[7], 5); len(p) != 0 {
		t.Errorf("Links(gh, after last gh) = %v, want none", p)
	}
	ls, _ := s.Links(ctx, "", keys[0], 1)
	if len(ls) != 1 || !reflect.DeepEqual(ls[0], sampleLink(keys[1])) {
		t.Errorf("Links row = %+v, want full link", ls)
	}
}

func keyLess(a, b qsync.Key) bool {
	if a.Route != b.Route {
		return a.Route < b.Route
	}
	if a.Project != b.Project {
		return a.Project < b.Project
	}
	if a.Kind != b.Kind {
		return a.Kind < b.Kind
	}
	return a.ID < b.ID
}

func testLedger(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	k, other := key("r", 1), key("r", 2)
	for i := range 3 {
		if err := s.Enqueue(ctx, []qsync.Key{k, other}, false, at(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
		for _, j := range lease(t, s, "w", 10, at(time.Duration(i)*time.Minute)) {
			e := qsync.LedgerEntry{Detail: fmt.Sprint("pass ", i), At: at(time.Hour), Request: "GET /x"}
			complete(t, s, j, qsync.OutcomeNoop, e, at(time.Duration(i)*time.Minute))
		}
	}
	es, err := s.Ledger(ctx, k, 2)
	if err != nil || len(es) != 2 {
		t.Fatalf("Ledger(2) = %v, %v", es, err)
	}
	if es[0].Detail != "pass 2" || es[1].Detail != "pass 1" || es[0].ID <= es[1].ID {
		t.Errorf("ledger = %+v, want newest first", es)
	}
	if e := es[0]; e.Key != k || e.Gen != 1 || e.Outcome != qsync.OutcomeNoop || e.Request != "GET /x" || e.Ops != nil {
		t.Errorf("entry = %+v", e)
	}
	wantTime(t, "At (given)", es[0].At, at(time.Hour))
	if es, _ := s.Ledger(ctx, k, 0); len(es) != 3 {
		t.Errorf("Ledger(all) = %d entries, want 3", len(es))
	}
	if es, _ := s.Ledger(ctx, key("r", 3), 0); len(es) != 0 {
		t.Errorf("Ledger(unknown) = %v", es)
	}
}

// LeaseExclusive has workers lease and complete many jobs concurrently
// through the given stores (several instances over one database test
// cross-replica safety) and checks no key is ever held by two owners.
func LeaseExclusive(t *testing.T, stores ...qsync.Store) {
	t.Helper()
	ctx := context.Background()
	const nJobs, nWorkers = 60, 6
	var keys []qsync.Key
	for i := range nJobs {
		keys = append(keys, key("r", int64(i+1)))
	}
	if err := stores[0].Enqueue(ctx, keys, false, t0); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	held := map[qsync.Key]string{}
	done := map[qsync.Key]int{}
	var wg sync.WaitGroup
	errs := make(chan error, nWorkers)
	for w := range nWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[w%len(stores)]
			owner := fmt.Sprint("worker-", w)
			for idle := 0; idle < 3; {
				js, err := s.Lease(ctx, owner, 4, at(time.Second), time.Hour)
				if err != nil {
					errs <- fmt.Errorf("%s: Lease: %w", owner, err)
					return
				}
				if len(js) == 0 {
					idle++
					time.Sleep(time.Millisecond)
					continue
				}
				idle = 0
				for _, j := range js {
					mu.Lock()
					if h, ok := held[j.Key]; ok {
						mu.Unlock()
						errs <- fmt.Errorf("%s leased %s while %s held it", owner, j.Key, h)
						return
					}
					held[j.Key] = owner
					mu.Unlock()
				}
				for _, j := range js {
					mu.Lock()
					delete(held, j.Key)
					done[j.Key]++
					mu.Unlock()
					if err := s.Complete(ctx, j, qsync.OutcomeApplied, qsync.LedgerEntry{}, at(time.Second)); err != nil {
						errs <- fmt.Errorf("%s: Complete %s: %w", owner, j.Key, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(done) != nJobs {
		t.Errorf("%d keys processed, want %d", len(done), nJobs)
	}
	for k, n := range done {
		if n != 1 {
			t.Errorf("%s processed %d times", k, n)
		}
	}
	if n := depth(t, stores[0]); n != 0 {
		t.Errorf("QueueDepth = %d, want 0", n)
	}
}

func testConcurrentAccept(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	const goroutines, batches, perBatch = 6, 8, 4
	results := make([][]accepted, goroutines)
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				var ins []qsync.Inbound
				for e := range perBatch {
					dk := fmt.Sprintf("g%d-b%d-e%d", g, b, e)
					if e == 0 {
						dk = fmt.Sprintf("shared-%d", b) // every goroutine sends it
					}
					ins = append(ins, in(event(dk, ref(int64(e+1))), "r", "s"))
				}
				res, err := s.AcceptEvents(ctx, ins, t0)
				if err != nil {
					errs <- err
					return
				}
				for i, r := range res {
					results[g] = append(results[g], accepted{ins[i].Event.DedupKey, ins[i].Event.Ref, r})
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("AcceptEvents: %v", err)
	}
	distinct := checkAccepted(t, s, slices.Concat(results...))
	if want := batches + goroutines*batches*(perBatch-1); distinct != want {
		t.Errorf("%d distinct dedup keys, want %d", distinct, want)
	}
}

// accepted is AcceptEvents' answer for one event.
type accepted struct {
	dedup string
	ref   qsync.EntityRef
	res   qsync.AcceptResult
}

// checkAccepted checks the answers of concurrent AcceptEvents calls
// (routes "r" and "s") against what s stores: one seq per dedup key, new
// exactly once, no seq shared; every key pending and stored once; each
// key's job gen counting every delivery, duplicates included. It returns
// the number of distinct dedup keys.
func checkAccepted(t *testing.T, s qsync.Store, results []accepted) int {
	t.Helper()
	seqOf := map[string]int64{}
	newCount := map[string]int{}
	perRef := map[qsync.EntityRef]int64{} // deliveries, duplicates included
	for _, a := range results {
		if q, ok := seqOf[a.dedup]; ok && q != a.res.Seq {
			t.Errorf("%s got seqs %d and %d", a.dedup, q, a.res.Seq)
		}
		seqOf[a.dedup] = a.res.Seq
		perRef[a.ref]++
		if !a.res.Duplicate {
			newCount[a.dedup]++
		}
	}
	distinct := len(seqOf)
	bySeq := map[int64]string{}
	for dk, seq := range seqOf {
		if newCount[dk] != 1 {
			t.Errorf("%s accepted as new %d times", dk, newCount[dk])
		}
		if o, ok := bySeq[seq]; ok {
			t.Errorf("seq %d shared by %s and %s", seq, o, dk)
		}
		bySeq[seq] = dk
	}
	wantStatus(t, s, qsync.EventStatus{Pending: distinct})
	stored := 0
	for r := range perRef {
		stored += len(eventsAfter(t, s, r, 0, 0))
	}
	if stored != distinct {
		t.Errorf("%d events stored, want %d", stored, distinct)
	}
	gens := map[qsync.Key]int64{}
	for _, j := range lease(t, s, "w", 100, t0) {
		gens[j.Key] = j.Gen
	}
	for r, n := range perRef {
		for _, route := range []string{"r", "s"} {
			if g := gens[qsync.Key{Route: route, EntityRef: r}]; g != n {
				t.Errorf("gen of %s:%s = %d, want %d (one per delivery, duplicates too)", route, r, g, n)
			}
		}
	}
	return distinct
}

// ledger returns the key's ledger, newest first.
func ledger(t *testing.T, s qsync.Store, k qsync.Key) []qsync.LedgerEntry {
	t.Helper()
	es, err := s.Ledger(context.Background(), k, 0)
	if err != nil {
		t.Fatalf("Ledger(%s): %v", k, err)
	}
	return es
}

// I6: a delivery equal to one already stored still makes its key sync
// again; dedup spares the event and delivery rows (and so a ledger row
// for the event), never the sync.
func testAcceptDuplicateSyncsAgain(t *testing.T, s qsync.Store) {
	k, k2 := key("r", 1), key("s", 1)
	e := event("e", ref(1))
	first := accept(t, s, t0, in(e, "r"))
	j := leaseOne(t, s, "w", t0, k)
	complete(t, s, j, qsync.OutcomeApplied, qsync.LedgerEntry{}, at(time.Second))
	if n := depth(t, s); n != 0 {
		t.Fatalf("QueueDepth = %d, want 0 after the sync", n)
	}
	// The same body again, now also on route s (no job there yet).
	res := accept(t, s, at(time.Minute), in(e, "r", "s"))
	if !res[0].Duplicate || res[0].Seq != first[0].Seq {
		t.Fatalf("result = %+v, want duplicate of seq %d", res[0], first[0].Seq)
	}
	if evs := eventsAfter(t, s, ref(1), 0, 0); len(evs) != 1 {
		t.Errorf("EventsAfter = %d events, want 1 (no new event row)", len(evs))
	}
	wantStatus(t, s, qsync.EventStatus{Applied: 1}) // one event, no new delivery
	jobs := map[qsync.Key]qsync.Job{}
	for _, j := range lease(t, s, "w", 10, at(time.Minute)) {
		jobs[j.Key] = j
	}
	if len(jobs) != 2 {
		t.Fatalf("leased %v, want jobs for %s and %s due again", jobs, k, k2)
	}
	for _, j := range jobs {
		wantTime(t, "DueAt of "+j.Key.String(), j.DueAt, at(time.Minute))
		if j.Gen < 1 || j.Attempts != 0 {
			t.Errorf("job = %+v, want a fresh job", j)
		}
	}
	if es := ledger(t, s, k); len(es) != 1 {
		t.Errorf("ledger before the new sync = %d rows, want 1", len(es))
	}
	complete(t, s, jobs[k], qsync.OutcomeNoop, qsync.LedgerEntry{}, at(2*time.Minute))
	complete(t, s, jobs[k2], qsync.OutcomeNoop, qsync.LedgerEntry{}, at(2*time.Minute))
	if es := ledger(t, s, k); len(es) != 2 || es[0].Outcome != qsync.OutcomeNoop || es[1].Outcome != qsync.OutcomeApplied {
		t.Errorf("ledger = %+v, want noop then applied", es)
	}
	if es := ledger(t, s, k2); len(es) != 1 {
		t.Errorf("ledger of %s = %+v, want the one sync", k2, es)
	}
	wantStatus(t, s, qsync.EventStatus{Applied: 1}) // the event keeps its outcome
	if n := depth(t, s); n != 0 {
		t.Errorf("QueueDepth = %d, want 0", n)
	}
}

// quiet is an inbound whose duplicates do not requeue (a tracker delivery
// keyed by its delivery id).
func quiet(ev qsync.Event, routes ...string) qsync.Inbound {
	ib := in(ev, routes...)
	ib.QuietDuplicate = true
	return ib
}

// A QuietDuplicate duplicate is answered as one but enqueues nothing: not
// after the sync, not on a route with no job yet, not while the key's job
// is leased (the attempt then ends the job), not within its own batch.
func testAcceptQuietDuplicate(t *testing.T, s qsync.Store) {
	k := key("r", 1)
	e := event("tracker:d-1", ref(1))
	e.Name = qsync.TrackerEventPrefix + "github.issues.edited"
	first := accept(t, s, t0, quiet(e, "r"))
	j := leaseOne(t, s, "w", t0, k)
	if j.Gen != 1 {
		t.Errorf("job gen = %d, want 1", j.Gen)
	}
	complete(t, s, j, qsync.OutcomeApplied, qsync.LedgerEntry{}, at(time.Second))

	// Redelivered, now also naming route s (no job there yet).
	res := accept(t, s, at(time.Minute), quiet(e, "r", "s"))
	if !res[0].Duplicate || res[0].Seq != first[0].Seq {
		t.Fatalf("result = %+v, want duplicate of seq %d", res[0], first[0].Seq)
	}
	if n := depth(t, s); n != 0 {
		t.Fatalf("QueueDepth = %d after a quiet duplicate, want 0", n)
	}
	if js := lease(t, s, "w", 10, at(time.Hour)); len(js) != 0 {
		t.Fatalf("leased %v after a quiet duplicate, want nothing", jobKeys(js))
	}
	if es := ledger(t, s, k); len(es) != 1 {
		t.Errorf("ledger = %d rows, want 1 (one sync)", len(es))
	}
	wantStatus(t, s, qsync.EventStatus{Applied: 1})

	// Redelivered while the key's job is leased: the attempt ends the job.
	e2 := event("tracker:d-2", ref(1))
	accept(t, s, at(2*time.Hour), quiet(e2, "r"))
	j = leaseOne(t, s, "w", at(2*time.Hour), k)
	if res := accept(t, s, at(2*time.Hour+time.Second), quiet(e2, "r")); !res[0].Duplicate {
		t.Fatalf("result = %+v, want duplicate", res[0])
	}
	complete(t, s, j, qsync.OutcomeNoop, qsync.LedgerEntry{}, at(2*time.Hour+2*time.Second))
	if n := depth(t, s); n != 0 {
		t.Fatalf("QueueDepth = %d, want 0 (job deleted, not released)", n)
	}

	// A delivery and its redelivery in one batch: one job, one bump.
	e3 := event("tracker:d-3", ref(2))
	res = accept(t, s, at(3*time.Hour), quiet(e3, "r"), quiet(e3, "r"))
	if res[0].Duplicate || !res[1].Duplicate || res[1].Seq != res[0].Seq {
		t.Fatalf("results = %+v, want new then its duplicate", res)
	}
	if j = leaseOne(t, s, "w", at(3*time.Hour), key("r", 2)); j.Gen != 1 {
		t.Errorf("job gen = %d, want 1 (the duplicate bumped nothing)", j.Gen)
	}
	complete(t, s, j, qsync.OutcomeNoop, qsync.LedgerEntry{}, at(3*time.Hour))

	// The flag concerns the duplicate only: a quiet duplicate beside a
	// Qase duplicate of another event still lets that one bump.
	q := event("qase-1", ref(3))
	accept(t, s, at(4*time.Hour), in(q, "r"))
	complete(t, s, leaseOne(t, s, "w2", at(4*time.Hour), key("r", 3)), qsync.OutcomeApplied, qsync.LedgerEntry{}, at(4*time.Hour))
	accept(t, s, at(5*time.Hour), quiet(e, "r"), in(q, "r"))
	leaseOne(t, s, "w2", at(5*time.Hour), key("r", 3))
}

// A duplicate arriving while its key's job is leased bumps the gen, so
// the running attempt (which may have read the state before the
// delivery) releases the job instead of deleting it.
func testAcceptDuplicateWhileLeased(t *testing.T, s qsync.Store) {
	k := key("r", 1)
	e := event("e", ref(1))
	accept(t, s, t0, in(e, "r"))
	j := leaseOne(t, s, "w", t0, k)
	if res := accept(t, s, at(time.Second), in(e, "r")); !res[0].Duplicate {
		t.Fatalf("result = %+v, want duplicate", res[0])
	}
	complete(t, s, j, qsync.OutcomeApplied, qsync.LedgerEntry{}, at(2*time.Second))
	if n := depth(t, s); n != 1 {
		t.Fatalf("QueueDepth = %d, want 1 (released, not deleted)", n)
	}
	wantStatus(t, s, qsync.EventStatus{Applied: 1})
	j2 := leaseOne(t, s, "w", at(2*time.Second), k)
	if j2.Gen <= j.Gen {
		t.Errorf("gen after duplicate = %d, want > %d", j2.Gen, j.Gen)
	}
	complete(t, s, j2, qsync.OutcomeNoop, qsync.LedgerEntry{}, at(3*time.Second))
	if es := ledger(t, s, k); len(es) != 2 {
		t.Errorf("ledger = %d rows, want 2 (one per sync)", len(es))
	}
	wantStatus(t, s, qsync.EventStatus{Applied: 1})
}

// A duplicate, like a new event, bumps a job in backoff without making
// it due early or forgiving its attempts.
func testAcceptDuplicateKeepsBackoff(t *testing.T, s qsync.Store) {
	k := key("r", 1)
	e := event("e", ref(1))
	accept(t, s, t0, in(e, "r"))
	j := leaseOne(t, s, "w", t0, k)
	if err := s.Retry(context.Background(), j, at(time.Hour), "boom", true, t0); err != nil {
		t.Fatal(err)
	}
	accept(t, s, at(time.Minute), in(e, "r"))
	if js := lease(t, s, "w", 10, at(2*time.Minute)); len(js) != 0 {
		t.Fatalf("job in backoff leased after a duplicate: %v", jobKeys(js))
	}
	j = leaseOne(t, s, "w", at(time.Hour), k)
	if j.Gen != 2 || j.Attempts != 1 {
		t.Errorf("job = %+v, want gen 2, attempts 1", j)
	}
}

func testLeaseTokensFresh(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	keys := []qsync.Key{key("r", 1), key("r", 2), key("r", 3)}
	if err := s.Enqueue(ctx, keys, false, t0); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	check := func(js []qsync.Job, owner string) {
		t.Helper()
		for _, j := range js {
			if !strings.HasPrefix(j.Lease, owner+"#") || len(j.Lease) <= len(owner)+1 {
				t.Errorf("token %q of %s, want %s#...", j.Lease, j.Key, owner)
			}
			if seen[j.Lease] {
				t.Errorf("token %q issued twice", j.Lease)
			}
			seen[j.Lease] = true
		}
	}
	js := lease(t, s, "w", 10, t0)
	if len(js) != 3 {
		t.Fatalf("leased %v, want 3", jobKeys(js))
	}
	check(js, "w")
	// Expired leases taken again, by the same owner: new tokens.
	js = lease(t, s, "w", 10, at(time.Minute))
	if len(js) != 3 {
		t.Fatalf("re-leased %v, want 3", jobKeys(js))
	}
	check(js, "w")
	for _, j := range js {
		if err := s.Retry(ctx, j, at(time.Minute), "x", true, at(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	check(lease(t, s, "v", 10, at(time.Minute)), "v")
}

// A worker whose lease expired and was taken over, even by its own
// process under the same owner name, can no longer write.
func testLeaseTokenFencesSameOwner(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	k, old := leasedJob(t, s)
	cur := leaseOne(t, s, "w", at(time.Minute), k) // old expired at +30s
	if old.Lease == cur.Lease {
		t.Fatalf("re-lease kept token %q", old.Lease)
	}
	if err := s.Complete(ctx, old, qsync.OutcomeApplied, qsync.LedgerEntry{}, at(time.Minute)); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Errorf("Complete with the stale token: %v, want ErrLeaseLost", err)
	}
	if err := s.Retry(ctx, old, at(time.Hour), "x", true, at(time.Minute)); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Errorf("Retry with the stale token: %v, want ErrLeaseLost", err)
	}
	if err := s.Retry(ctx, old, at(time.Hour), "x", false, at(time.Minute)); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Errorf("uncharged Retry with the stale token: %v, want ErrLeaseLost", err)
	}
	if err := s.Renew(ctx, old, at(time.Hour)); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Errorf("Renew with the stale token: %v, want ErrLeaseLost", err)
	}
	wantStatus(t, s, qsync.EventStatus{Pending: 1})
	if es := ledger(t, s, k); len(es) != 0 {
		t.Errorf("ledger after fenced calls = %+v, want empty", es)
	}
	// The current holder is unaffected: still leased (not due to others),
	// attempts untouched, and it completes.
	if js := lease(t, s, "x", 10, at(time.Minute+time.Second)); len(js) != 0 {
		t.Errorf("stale calls freed the job: %v leased", jobKeys(js))
	}
	complete(t, s, cur, qsync.OutcomeApplied, qsync.LedgerEntry{}, at(time.Minute))
	if es := ledger(t, s, k); len(es) != 1 || es[0].Gen != cur.Gen {
		t.Errorf("ledger = %+v, want the current holder's entry", es)
	}
}

func testRenew(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	k := key("r", 1)
	if err := s.Enqueue(ctx, []qsync.Key{k}, false, t0); err != nil {
		t.Fatal(err)
	}
	j := leaseOne(t, s, "a", t0, k) // until +30s
	if err := s.Renew(ctx, j, at(2*time.Minute)); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if js := lease(t, s, "b", 10, at(time.Minute)); len(js) != 0 {
		t.Fatalf("renewed lease taken at +1m: %v", jobKeys(js))
	}
	if err := s.Renew(ctx, j, at(3*time.Minute)); err != nil {
		t.Fatalf("second Renew: %v", err)
	}
	if js := lease(t, s, "b", 10, at(3*time.Minute)); len(js) != 0 {
		t.Fatalf("renewed lease taken at its new expiry: %v", jobKeys(js))
	}
	jb := leaseOne(t, s, "b", at(3*time.Minute+time.Microsecond), k)
	if err := s.Renew(ctx, j, at(time.Hour)); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Errorf("Renew after takeover: %v, want ErrLeaseLost", err)
	}
	if js := lease(t, s, "c", 10, at(4*time.Minute)); len(js) != 1 {
		t.Errorf("failed Renew extended b's lease: leased %v at +4m, want the job", jobKeys(js))
	}
	if err := s.Renew(ctx, jb, at(time.Hour)); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Errorf("Renew by b after c's takeover: %v, want ErrLeaseLost", err)
	}
	// An expired lease nobody took over is still held by its token.
	if err := s.Enqueue(ctx, []qsync.Key{key("r", 3)}, false, t0); err != nil {
		t.Fatal(err)
	}
	var jl qsync.Job
	for _, j := range lease(t, s, "a", 10, at(10*time.Minute)) { // r:1 (c's lease expired) and r:3, until +10m30s
		if j.Key == key("r", 3) {
			jl = j
		}
	}
	if err := s.Renew(ctx, jl, at(20*time.Minute)); err != nil {
		t.Errorf("Renew of an expired lease not taken over: %v", err)
	}
	if js := lease(t, s, "b", 10, at(15*time.Minute)); len(js) != 1 || js[0].Key != k {
		t.Errorf("leased %v at +15m, want only %s (r:3 renewed)", jobKeys(js), k)
	}
	never := qsync.Job{Key: key("r", 2), Gen: 1, Lease: j.Lease}
	if err := s.Renew(ctx, never, at(time.Hour)); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Errorf("Renew of a missing job: %v, want ErrLeaseLost", err)
	}
}

// Release gives back every lease issued to an owner, across Lease calls,
// and none of an owner whose name merely starts like it or matches it as
// a pattern.
func testReleaseOwnerTokens(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	owners := []string{"w", "w", "w%", "w_", "wx", "w#1", "%", "W"}
	var keys []qsync.Key
	for i := range owners {
		keys = append(keys, key("r", int64(i+1)))
	}
	for i, k := range keys {
		if err := s.Enqueue(ctx, []qsync.Key{k}, false, at(time.Duration(i)*time.Microsecond)); err != nil {
			t.Fatal(err)
		}
	}
	held := map[qsync.Key]qsync.Job{}
	for i, o := range owners { // one job per call, in due order
		j := leaseOne(t, s, o, at(time.Duration(i)*time.Microsecond), keys[i])
		held[j.Key] = j
	}
	if err := s.Release(ctx, "w"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	got := map[qsync.Key]bool{}
	for _, j := range lease(t, s, "c", 100, at(time.Second)) {
		got[j.Key] = true
	}
	if want := map[qsync.Key]bool{keys[0]: true, keys[1]: true}; !reflect.DeepEqual(got, want) {
		t.Errorf("after Release(w), c leased %v, want only w's two jobs %v", got, want)
	}
	// Released tokens no longer hold their jobs.
	if err := s.Complete(ctx, held[keys[0]], qsync.OutcomeApplied, qsync.LedgerEntry{}, at(time.Second)); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Errorf("Complete after Release: %v, want ErrLeaseLost", err)
	}
	// Others still hold theirs.
	for _, k := range keys[2:] {
		if err := s.Renew(ctx, held[k], at(time.Minute)); err != nil {
			t.Errorf("Renew of %s (not released): %v", k, err)
		}
	}
	if err := s.Release(ctx, "%"); err != nil {
		t.Fatal(err)
	}
	if err := s.Renew(ctx, held[keys[2]], at(time.Minute)); err != nil {
		t.Errorf("Release(%%) released w%%'s job: %v", err)
	}
	if err := s.Renew(ctx, held[keys[6]], at(time.Minute)); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Errorf("Renew of %%'s job after Release(%%): %v, want ErrLeaseLost", err)
	}
}

// testDeleteLinkFenced: only the lease that holds the key's job may forget
// its link; a stale lease of the same owner may not.
func testDeleteLinkFenced(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	k := key("jira", 1)
	if err := s.SaveLink(ctx, sampleLink(k)); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(ctx, []qsync.Key{k}, false, t0); err != nil {
		t.Fatal(err)
	}
	stale := leaseOne(t, s, "w", t0, k)
	current := leaseOne(t, s, "w", at(time.Hour), k) // the first lease expired
	if err := s.DeleteLinkFenced(ctx, k, stale); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Fatalf("DeleteLinkFenced with a stale lease: %v, want ErrLeaseLost", err)
	}
	if _, found, _ := s.Link(ctx, k); !found {
		t.Fatal("a stale lease deleted the link")
	}
	if err := s.DeleteLinkFenced(ctx, key("jira", 2), current); err == nil {
		t.Error("DeleteLinkFenced for another key's job succeeded")
	}
	if err := s.DeleteLinkFenced(ctx, k, current); err != nil {
		t.Fatalf("DeleteLinkFenced: %v", err)
	}
	if _, found, _ := s.Link(ctx, k); found {
		t.Fatal("link still there")
	}
}

func testSaveLinkFenced(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	k := key("jira", 1)
	l := sampleLink(k)
	l.State = qsync.LinkCreating
	if err := s.SaveLinkFenced(ctx, l, qsync.Job{Key: k, Gen: 1, Lease: "w#nope"}); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Errorf("SaveLinkFenced without a job: %v, want ErrLeaseLost", err)
	}
	if err := s.Enqueue(ctx, []qsync.Key{k, key("jira", 2)}, false, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveLinkFenced(ctx, l, qsync.Job{Key: k, Gen: 1}); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Errorf("SaveLinkFenced for a job never leased: %v, want ErrLeaseLost", err)
	}
	if _, found, _ := s.Link(ctx, k); found {
		t.Fatal("fenced-off SaveLinkFenced stored a link")
	}
	old, other := leaseTwo(t, s, k)
	if err := s.SaveLinkFenced(ctx, l, old); err != nil {
		t.Fatalf("SaveLinkFenced: %v", err)
	}
	if got, found, err := s.Link(ctx, k); err != nil || !found || !reflect.DeepEqual(got, l) {
		t.Fatalf("Link = %+v, %v, %v\nwant %+v", got, found, err, l)
	}
	// Replace, as SaveLink does.
	l2 := sampleLink(k)
	if err := s.SaveLinkFenced(ctx, l2, old); err != nil {
		t.Fatalf("SaveLinkFenced (replace): %v", err)
	}
	if got, _, _ := s.Link(ctx, k); !reflect.DeepEqual(got, l2) {
		t.Fatalf("Link = %+v, want %+v", got, l2)
	}
	// Another key's lease does not fence this key.
	if err := s.SaveLinkFenced(ctx, l, other); err == nil {
		t.Error("SaveLinkFenced with another key's job succeeded")
	}
	complete(t, s, other, qsync.OutcomeNoop, qsync.LedgerEntry{}, t0)
	// The lease expires and the same owner takes the job again: the old
	// token can no longer record anything.
	cur := leaseOne(t, s, "w", at(time.Minute), k)
	stale := l2
	stale.State, stale.Fingerprint = qsync.LinkCreating, "stale"
	if err := s.SaveLinkFenced(ctx, stale, old); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Errorf("SaveLinkFenced with a stale token: %v, want ErrLeaseLost", err)
	}
	if got, _, _ := s.Link(ctx, k); !reflect.DeepEqual(got, l2) {
		t.Errorf("stale write changed the link: %+v", got)
	}
	complete(t, s, cur, qsync.OutcomeApplied, qsync.LedgerEntry{}, at(time.Minute))
	if err := s.SaveLinkFenced(ctx, stale, cur); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Errorf("SaveLinkFenced after Complete: %v, want ErrLeaseLost", err)
	}
	if got, _, _ := s.Link(ctx, k); !reflect.DeepEqual(got, l2) {
		t.Errorf("link = %+v, want %+v", got, l2)
	}
}

func testRetryUncharged(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	k, j := leasedJob(t, s)
	if err := s.Retry(ctx, j, at(time.Minute), "503", true, t0); err != nil {
		t.Fatal(err)
	}
	j = leaseOne(t, s, "w", at(time.Minute), k)
	if err := s.Retry(ctx, j, at(2*time.Minute), "shutting down", false, at(time.Minute)); err != nil {
		t.Fatalf("uncharged Retry: %v", err)
	}
	if err := s.Retry(ctx, j, at(2*time.Minute), "again", false, at(time.Minute)); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Errorf("Retry with a released token: %v, want ErrLeaseLost", err)
	}
	if js := lease(t, s, "w", 10, at(2*time.Minute-time.Microsecond)); len(js) != 0 {
		t.Fatalf("leased before due: %v", jobKeys(js))
	}
	j = leaseOne(t, s, "w", at(2*time.Minute), k)
	if j.Attempts != 1 || j.LastError != "shutting down" {
		t.Errorf("job = %+v, want attempts still 1, the last error recorded", j)
	}
	wantTime(t, "DueAt", j.DueAt, at(2*time.Minute))
	complete(t, s, j, qsync.OutcomeDead, qsync.LedgerEntry{Detail: "gave up"}, at(2*time.Minute))
	if ds, err := s.DeadLetters(ctx, 0); err != nil || len(ds) != 1 || ds[0].Attempts != 2 {
		t.Errorf("dead letters = %+v, %v; want one with attempts 2", ds, err)
	}
}

func testLedgerDrift(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	k := key("r", 1)
	for i, drift := range [][]string{{"title", "labels", "fields.customfield_1"}, nil, {}} {
		if err := s.Enqueue(ctx, []qsync.Key{k}, true, at(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
		j := leaseOne(t, s, "w", at(time.Duration(i)*time.Minute), k)
		complete(t, s, j, qsync.OutcomeApplied, qsync.LedgerEntry{Ops: []string{"update"}, Drift: drift}, at(time.Duration(i)*time.Minute))
	}
	es := ledger(t, s, k)
	if len(es) != 3 {
		t.Fatalf("ledger = %+v, want 3 entries", es)
	}
	if want := []string{"title", "labels", "fields.customfield_1"}; !reflect.DeepEqual(es[2].Drift, want) {
		t.Errorf("drift = %#v, want %#v", es[2].Drift, want)
	}
	if es[1].Drift != nil || es[0].Drift != nil {
		t.Errorf("drift of entries without = %#v, %#v; want nil", es[1].Drift, es[0].Drift)
	}
	if !reflect.DeepEqual(es[2].Ops, []string{"update"}) {
		t.Errorf("ops = %#v", es[2].Ops)
	}
}

func testDeliveries(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	k, other := key("r", 1), key("q", 1)
	e1, e2, e3 := event("d1", ref(1)), event("d2", ref(1)), event("d3", ref(2))
	accept(t, s, t0, in(e1, "r", "q"), in(e3, "r"))
	j := leaseOne2(t, s, t0, k)
	accept(t, s, at(time.Second), in(e2, "r")) // arrives during the sync: gen 2
	complete(t, s, j, qsync.OutcomeApplied, qsync.LedgerEntry{}, at(2*time.Second))
	ds, err := s.Deliveries(ctx, k, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || ds[0].EventSeq <= ds[1].EventSeq {
		t.Fatalf("Deliveries = %+v, want the key's two events, newest first", ds)
	}
	if ds[1].Status != "applied" || ds[1].Gen != 1 || ds[0].Status != "pending" || ds[0].Gen != 2 {
		t.Errorf("Deliveries = %+v, want gen 1 applied and gen 2 pending", ds)
	}
	if ds, _ := s.Deliveries(ctx, k, 1); len(ds) != 1 {
		t.Errorf("Deliveries(limit 1) = %+v", ds)
	}
	if ds, _ := s.Deliveries(ctx, other, 0); len(ds) != 1 || ds[0].Status != "pending" {
		t.Errorf("Deliveries(other route) = %+v", ds)
	}
	if ds, _ := s.Deliveries(ctx, key("r", 9), 0); len(ds) != 0 {
		t.Errorf("Deliveries(unknown) = %+v", ds)
	}
}

// leaseOne2 leases until it holds k's job, completing nothing else.
func leaseOne2(t *testing.T, s qsync.Store, now time.Time, k qsync.Key) qsync.Job {
	t.Helper()
	for _, j := range lease(t, s, "w", 10, now) {
		if j.Key == k {
			return j
		}
	}
	t.Fatalf("no job for %s", k)
	return qsync.Job{}
}

func testOverview(t *testing.T, s qsync.Store) {
	ctx := context.Background()
	o, err := s.Overview(ctx, t0)
	if err != nil {
		t.Fatal(err)
	}
	if o.QueueDepth != 0 || !o.OldestPending.IsZero() || o.DeadLetters != 0 || len(o.Outcomes) != 0 || len(o.LastDelivery) != 0 {
		t.Fatalf("empty store overview = %+v", o)
	}
	a, b := event("o1", ref(1)), event("o2", qsync.EntityRef{Project: "OTH", Kind: qsync.KindDefect, ID: 1})
	b.ReceivedAt = at(time.Minute)
	accept(t, s, t0, in(a, "r"))
	accept(t, s, at(time.Minute), in(b, "r"))
	for _, j := range lease(t, s, "w", 10, at(time.Minute)) {
		if j.Key.Project == "PRJ" {
			complete(t, s, j, qsync.OutcomeDead, qsync.LedgerEntry{Detail: "422"}, at(2*time.Minute))
		}
	}
	o, err = s.Overview(ctx, at(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if o.QueueDepth != 1 || o.DeadLetters != 1 || o.Outcomes[qsync.OutcomeDead] != 1 || len(o.Outcomes) != 1 {
		t.Errorf("overview = %+v", o)
	}
	wantTime(t, "OldestPending", o.OldestPending, at(time.Minute))
	wantTime(t, "LastDelivery[PRJ]", o.LastDelivery["PRJ"], t0)
	wantTime(t, "LastDelivery[OTH]", o.LastDelivery["OTH"], at(time.Minute))
	if o, _ := s.Overview(ctx, at(time.Hour)); len(o.Outcomes) != 0 {
		t.Errorf("outcomes since a later time = %+v", o.Outcomes)
	}
}

// Opened is for a backend's Opener: it fails the test if the open failed
// and closes s when the test ends.
func Opened[S interface{ Close() error }](t testing.TB, s S, err error) S {
	t.Helper()
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// UpgradedLeaseAndLedger checks a store opened over a database written by
// its first schema, seeded with a ledger entry for key r:P/defect/5 (issue
// P-1, one op) and that key's job at gen 2, leased to owner "w" before
// leases carried tokens: the old entry reads without drift, the old lease
// cannot complete, and once released the job is leased again with a
// token and completes with drift recorded.
func UpgradedLeaseAndLedger(t *testing.T, s qsync.Store) {
	t.Helper()
	ctx := context.Background()
	k := qsync.Key{Route: "r", EntityRef: qsync.EntityRef{Project: "P", Kind: qsync.KindDefect, ID: 5}}
	es, err := s.Ledger(ctx, k, 0)
	if err != nil || len(es) != 1 || es[0].Drift != nil || es[0].Issue != "P-1" || len(es[0].Ops) != 1 {
		t.Fatalf("Ledger = %+v, %v; want the old entry without drift", es, err)
	}
	if err := s.Complete(ctx, qsync.Job{Key: k, Gen: 2}, qsync.OutcomeApplied, qsync.LedgerEntry{}, time.Now()); !errors.Is(err, qsync.ErrLeaseLost) {
		t.Errorf("Complete through a pre-token lease: %v, want ErrLeaseLost", err)
	}
	if err := s.Release(ctx, "w"); err != nil {
		t.Fatal(err)
	}
	js, err := s.Lease(ctx, "w2", 10, time.Now(), time.Minute)
	if err != nil || len(js) != 1 || js[0].Key != k || js[0].Lease == "" {
		t.Fatalf("Lease after Release = %+v, %v; want the old job with a token", js, err)
	}
	if err := s.Complete(ctx, js[0], qsync.OutcomeNoop, qsync.LedgerEntry{Drift: []string{"title"}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if es, _ := s.Ledger(ctx, k, 1); len(es) != 1 || len(es[0].Drift) != 1 {
		t.Errorf("Ledger = %+v, want the new entry's drift", es)
	}
}
