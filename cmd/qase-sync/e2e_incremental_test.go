package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/adapters/jira/jirafake"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// TestIncrementalReconcileCalls (issues 10 and 11) on the whole path: the
// real server, engine, Qase client and SQLite store against the fake Qase
// API and fake Jira, with 10,000 defects in sync. A full sweep over them
// enqueues nothing; an incremental pass makes at most 10 Qase calls; a
// defect changed in Qase (no webhook) is repaired by the next incremental
// pass.
//
// Seeding: 10,000 issues filed through the service would take long at
// Jira's default pacing, so defect 1 is filed by the service and 2..10000
// are put into the fake Jira as the adapter files them, with links as the
// engine saves them (the baseline of defect 1, per defect); the full
// sweep finding every key in sync checks the seeding.
func TestIncrementalReconcileCalls(t *testing.T) {
	const n = 10000
	h := newSeededRecHarness(t, "seeds 10,000 defects")
	ctx := context.Background()
	old := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	attrs := func(id int64, title string) map[string]any {
		return map[string]any{"id": id, "title": title, "actual_result": fmt.Sprintf("Actual %d", id), "severity": "normal", "status": "open", "updated_at": old}
	}
	desired := func(id int64, a map[string]any) qsync.Desired {
		k := recDefectKey(id)
		a = maps.Clone(a)
		delete(a, "id")
		d, err := h.a.mapper.Desired(k.Route, qsync.Entity{Ref: k.EntityRef, Attrs: a})
		if err != nil || d.Skip || !d.Create {
			t.Fatalf("desired %s: %+v %v", k, d, err)
		}
		return d
	}
	h.qase.PutDefect("ID", attrs(1, "Defect 1"))
	h.recReconcile()
	real := recJiraIssue(t, h.jira, recDefectKey(1))
	l1 := h.recLink(recDefectKey(1))
	baseline := func(d qsync.Desired) qsync.Applied {
		a := qsync.AppliedFromSpec(d.Spec)
		a.Status, a.Reason = l1.Applied.Status, l1.Applied.Reason
		return a
	}
	if got, want := mustJSON(t, l1.Applied), mustJSON(t, baseline(desired(1, attrs(1, "Defect 1")))); got != want {
		t.Fatalf("seeded baselines would not match the engine's:\nengine %s\nseed   %s", got, want)
	}
	for id := int64(2); id <= n; id++ {
		a := attrs(id, fmt.Sprintf("Defect %d", id))
		h.qase.PutDefect("ID", a)
		d := desired(id, a)
		k := recDefectKey(id)
		m := qsync.MarkerFor(k)
		prop, _ := json.Marshal(map[string]string{"marker": m.ID})
		is := h.jira.AddIssue(jirafake.IssueState{Project: d.Spec.Project, Type: d.Spec.Type, Summary: d.Spec.Title, Description: d.Spec.Body,
			Labels: append(append([]string{}, d.Spec.Labels...), "qase-sync", m.Label), Priority: d.Spec.Priority, Status: real.Status,
			Properties: map[string]json.RawMessage{"qase-sync": prop}})
		now := time.Now()
		l := qsync.Link{Key: k, State: qsync.LinkLinked, Tracker: l1.Tracker, Marker: m,
			Issue:   qsync.IssueRef{Project: l1.Issue.Project, ID: is.ID, Key: is.Key, URL: strings.Replace(l1.Issue.URL, l1.Issue.Key, is.Key, 1)},
			Applied: baseline(d), Fingerprint: qsync.Fingerprint(d.Spec), CreatedAt: now, UpdatedAt: now}
		if err := h.a.store.SaveLink(ctx, l); err != nil {
			t.Fatal(err)
		}
	}

	// A full sweep over 10,000 defects in sync: no job, no tracker write.
	j0, g0 := h.recWrites()
	cpu0, wall0 := processCPU(), time.Now()
	full, err := h.a.engine.Reconcile(ctx, qsync.ReconcileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Not asserted (timing): the process's CPU includes the fake servers
	// answering in this process.
	t.Logf("full sweep over %d defects in sync: %s wall, %.0f µs CPU per key (service and fakes)",
		n, time.Since(wall0).Round(time.Millisecond), float64((processCPU()-cpu0).Microseconds())/n)
	if full.Mode != qsync.ModeFull || full.Checked != n || full.Enqueued != 0 || full.Unchanged != n {
		t.Fatalf("full sweep over %d defects in sync: mode %s, checked %d, enqueued %d (%v…), unchanged %d",
			n, full.Mode, full.Checked, full.Enqueued, full.KeyList[:min(3, len(full.KeyList))], full.Unchanged)
	}
	if d, err := h.a.store.QueueDepth(ctx); err != nil || d != 0 {
		t.Fatalf("queue depth after the sweep: %d, %v", d, err)
	}

	// Incremental, nothing changed: one search per defect route's project.
	incr := qsync.ReconcileOptions{Incremental: true, FullEvery: time.Hour, Overlap: 10 * time.Minute}
	h.qase.ResetRequests()
	rep, err := h.a.engine.Reconcile(ctx, incr)
	if err != nil {
		t.Fatal(err)
	}
	calls := h.qase.Calls()
	t.Logf("incremental pass over %d unchanged defects: %+v Qase calls %v", n, rep.Mode, calls)
	if rep.Mode != qsync.ModeIncremental || rep.Checked != 0 || rep.Enqueued != 0 {
		t.Fatalf("incremental pass over unchanged defects: %+v", rep)
	}
	if total := h.qase.RequestCount(); total > 10 || calls["GET /search"] == 0 {
		t.Fatalf("incremental pass made %d Qase calls %v, want ≤ 10 searches", total, calls)
	}

	// Defect 4321 changes in Qase, no webhook: the next incremental pass
	// finds and repairs it, still within 10 calls.
	changed := attrs(4321, "Defect 4321 renamed in Qase")
	changed["updated_at"] = time.Now().UTC().Format(time.RFC3339)
	h.qase.PutDefect("ID", changed)
	h.qase.ResetRequests()
	rep, err = h.a.engine.Reconcile(ctx, incr)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Checked != 1 || rep.Enqueued != 1 || rep.KeyList[0] != recDefectKey(4321) {
		t.Fatalf("incremental pass after one change: %+v", rep)
	}
	h.drain()
	h.recNoDeadLetters()
	if got, want := recJiraIssue(t, h.jira, recDefectKey(4321)).Summary, desired(4321, changed).Spec.Title; got != want {
		t.Fatalf("issue of the changed defect: %q, want %q", got, want)
	}
	if total := h.qase.RequestCount(); total > 10 {
		t.Fatalf("incremental pass with one change made %d Qase calls %v, want ≤ 10", total, h.qase.Calls())
	}
	if j1, g1 := h.recWrites(); j1-j0 != 1 || g1 != g0 {
		t.Fatalf("tracker writes since the seeding: jira %d, github %d; want the one update", j1-j0, g1-g0)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// processCPU is the CPU time this process has used (user and system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
