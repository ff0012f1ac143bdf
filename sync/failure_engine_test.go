package sync_test

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"strconv"
	gosync "sync"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/adapters/store/sqlite"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// caseSigner is a FailureMapper with the default signature: project-case.
type caseSigner struct{}

func (caseSigner) FailurePolicy(string) (qsync.FailurePolicy, bool) {
	return qsync.FailurePolicy{}, true
}
func (caseSigner) Signature(_, project string, r qsync.FailureResult) (string, error) {
	return project + "-" + strconv.FormatInt(r.CaseID, 10), nil
}

func openFailureEngine(t *testing.T) (*qsync.Engine, *sqlite.Store) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: filepath.Join(t.TempDir(), "q.db"), Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return qsync.NewEngine(qsync.EngineOptions{Store: st, Mapper: memMapper{}, Logger: quietLog()}), st
}

// recordedRun: cases 1..5 of a run of 10, failing unless passing says so.
func recordedRun(run int64, failing ...int64) qsync.RunRecord {
	rec := qsync.RunRecord{Project: "P", RunID: run, Total: 10}
	at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(run) * time.Hour)
	for c := int64(1); c <= 10; c++ {
		st := "passed"
		for _, f := range failing {
			if f == c {
				st = "failed"
			}
		}
		rec.Results = append(rec.Results, qsync.FailureResult{Hash: fmt.Sprintf("%d-%d", run, c), RunID: run, CaseID: c, Status: st, EndTime: at, Message: "boom"})
	}
	return rec
}

// summary is the failure entity of case c as the store holds it.
func summary(t *testing.T, st *sqlite.Store, c int64) qsync.Entity {
	t.Helper()
	ref := qsync.FailureRef("r", "P", "P-"+strconv.FormatInt(c, 10))
	snap, err := st.Snapshot(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	return qsync.FailureEntity(ref, snap.State, qsync.FailurePolicy{})
}

// TestIngestRunIsIdempotentAndOrderFree: runs ingested in order, or
// reordered and repeated, leave the same failure state behind.
func TestIngestRunIsIdempotentAndOrderFree(t *testing.T) {
	runs := []qsync.RunRecord{recordedRun(1, 1, 2), recordedRun(2, 1), recordedRun(3), recordedRun(4), recordedRun(5), recordedRun(6, 2)}
	ctx := context.Background()
	a, sa := openFailureEngine(t)
	for _, r := range runs {
		if _, err := a.IngestRun(ctx, "r", r, caseSigner{}, qsync.FailurePolicy{}, nil, false); err != nil {
			t.Fatal(err)
		}
	}
	b, sb := openFailureEngine(t)
	for _, i := range []int{5, 2, 0, 0, 4, 1, 3, 5, 2} {
		if _, err := b.IngestRun(ctx, "r", runs[i], caseSigner{}, qsync.FailurePolicy{}, nil, false); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []int64{1, 2} {
		ea, eb := summary(t, sa, c), summary(t, sb, c)
		if !reflect.DeepEqual(ea, eb) {
			t.Fatalf("case %d differs:\n in order %+v\n reordered %+v", c, ea, eb)
		}
	}
	// Case 1 failed in runs 1-2 and passed in 3-5: closed. Case 2 failed
	// in run 1, passed in 2-5 (closed) and failed again in run 6.
	if got := summary(t, sa, 1).Attrs["status"]; got != qsync.FailureClosed {
		t.Errorf("case 1 status %v, want closed", got)
	}
	e2 := summary(t, sa, 2)
	if e2.Attrs["status"] != qsync.FailureOpen || len(e2.Comments) != 2 || e2.Comments[1].ID != "failure-run-6" {
		t.Errorf("case 2: status %v comments %+v; want open, closed once and reopened by run 6", e2.Attrs["status"], e2.Comments)
	}
	depth, err := sa.QueueDepth(ctx)
	if err != nil || depth != 2 {
		t.Errorf("queue depth %d (%v): want one job per touched signature", depth, err)
	}
}

// TestIngestRunsConcurrently: ingests of many runs at once all land in the
// one signature they share.
func TestIngestRunsConcurrently(t *testing.T) {
	e, st := openFailureEngine(t)
	var wg gosync.WaitGroup
	errs := make(chan error, 12)
	for run := int64(1); run <= 12; run++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.IngestRun(context.Background(), "r", recordedRun(run, 7), caseSigner{}, qsync.FailurePolicy{}, nil, false)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := summary(t, st, 7).Attrs["runs_failed"]; got != int64(12) {
		t.Fatalf("runs_failed = %v, want 12", got)
	}
}

// BenchmarkIngestRun: one run of 1,000 results, 50 of them failed, over
// SQLite with 500 signatures known from earlier runs (each of their cases
// passing counts as a clean run).
func BenchmarkIngestRun(b *testing.B) {
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: filepath.Join(b.TempDir(), "q.db"), Synchronous: "normal"})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	e := qsync.NewEngine(qsync.EngineOptions{Store: st, Mapper: memMapper{}, Logger: quietLog()})
	run := func(id int64, failFrom, failTo int64) qsync.RunRecord {
		rec := qsync.RunRecord{Project: "P", RunID: id, Total: 1000}
		for c := int64(1); c <= 1000; c++ {
			s := "passed"
			if c >= failFrom && c < failTo {
				s = "failed"
			}
			rec.Results = append(rec.Results, qsync.FailureResult{Hash: fmt.Sprintf("%d-%d", id, c), RunID: id, CaseID: c, Status: s, Message: "boom", Stacktrace: "at x(X.java:1)"})
		}
		return rec
	}
	ctx := context.Background()
	for i := int64(0); i < 10; i++ { // 500 signatures seen failing before
		if _, err := e.IngestRun(ctx, "r", run(i+1, i*50+1, i*50+51), caseSigner{}, qsync.FailurePolicy{}, nil, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := e.IngestRun(ctx, "r", run(int64(100+i), 1, 51), caseSigner{}, qsync.FailurePolicy{}, nil, false); err != nil {
			b.Fatal(err)
		}
	}
}

// envEntity is run's environment entity as the store holds it.
func envEntity(t *testing.T, st *sqlite.Store, run int64) qsync.Entity {
	t.Helper()
	ref := qsync.FailureRef("r", "P", qsync.OutageSignature(run))
	snap, err := st.Snapshot(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	return qsync.FailureEntity(ref, snap.State, qsync.FailurePolicy{})
}

// TestOutageRecovery: an environment issue stays open until a later run
// is not an outage, whichever order the runs are ingested in.
func TestOutageRecovery(t *testing.T) {
	pol := qsync.FailurePolicy{OutagePercent: 50, OutageMinFailed: 5}
	outage := recordedRun(2, 1, 2, 3, 4, 5, 6, 7, 8)
	for _, tc := range []struct {
		name  string
		order []qsync.RunRecord
		open  bool
	}{
		{"outage alone", []qsync.RunRecord{recordedRun(1), outage}, true},
		{"healthy run after", []qsync.RunRecord{outage, recordedRun(3, 1)}, false},
		{"healthy run first", []qsync.RunRecord{recordedRun(3), outage}, false},
		{"repeated after recovery", []qsync.RunRecord{outage, recordedRun(3), outage, outage}, false},
		{"another outage is no recovery", []qsync.RunRecord{outage, recordedRun(4, 1, 2, 3, 4, 5, 6, 7, 8)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, st := openFailureEngine(t)
			for _, r := range tc.order {
				if _, err := e.IngestRun(context.Background(), "r", r, caseSigner{}, pol, nil, false); err != nil {
					t.Fatal(err)
				}
			}
			ent := envEntity(t, st, 2)
			if open := ent.Attrs["status"] == qsync.FailureOpen; open != tc.open {
				t.Fatalf("status %v, want open=%v", ent.Attrs["status"], tc.open)
			}
			if !tc.open && (len(ent.Comments) != 1 || ent.Attrs["recovered_run"] != int64(3)) {
				t.Fatalf("recovered: comments %+v recovered_run %v", ent.Comments, ent.Attrs["recovered_run"])
			}
		})
	}
}
