package sync

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// caseSign is the default signature: project and case.
func caseSign(r FailureResult) (string, error) { return "P-" + strconv.FormatInt(r.CaseID, 10), nil }

// runOf builds a run of n cases where the listed cases fail.
func runOf(run int64, n int, failing ...int64) RunRecord {
	rec := RunRecord{Project: "P", RunID: run, Total: n}
	for c := int64(1); c <= int64(n); c++ {
		st := "passed"
		if slices.Contains(failing, c) {
			st = "failed"
		}
		rec.Results = append(rec.Results, FailureResult{Hash: fmt.Sprintf("r%d-%d", run, c), RunID: run, CaseID: c, Status: st,
			Message: "boom", EndTime: t0.Add(time.Duration(run) * time.Hour)})
	}
	return rec
}

func TestPlanRunIngest(t *testing.T) {
	outagePol := FailurePolicy{OutagePercent: 50, OutageSignature: 8}
	tests := []struct {
		name      string
		rec       RunRecord
		pol       FailurePolicy
		sign      func(FailureResult) (string, error)
		index     map[int64][]string
		wantSigs  []string
		wantClean []string // signatures observed without failures
		outage    string
	}{
		{name: "five failing cases of twenty", rec: runOf(1, 20, 1, 2, 3, 4, 5), pol: outagePol, sign: caseSign,
			wantSigs: []string{"P-1", "P-2", "P-3", "P-4", "P-5"}},
		{name: "eighty percent failed trips the breaker", rec: runOf(1, 25, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20),
			pol: outagePol, sign: caseSign, outage: "20 of 25 results failed (more than 50%)"},
		{name: "few failures never trip the breaker", rec: runOf(1, 3, 1, 2, 3), pol: outagePol, sign: caseSign,
			wantSigs: []string{"P-1", "P-2", "P-3"}},
		{name: "one signature shared by many failures trips the breaker", rec: runOf(1, 100, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
			pol: outagePol, sign: func(FailureResult) (string, error) { return "db down", nil }, outage: "10 failures share one signature (more than 8)"},
		{name: "breaker off", rec: runOf(1, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10), sign: caseSign,
			wantSigs: []string{"P-1", "P-10", "P-2", "P-3", "P-4", "P-5", "P-6", "P-7", "P-8", "P-9"}},
		{name: "a passing case counts for the signatures it failed with before", rec: runOf(2, 5, 2), sign: caseSign,
			index: map[int64][]string{1: {"P-1", "stack-x"}, 2: {"P-2"}, 9: {"P-9"}}, wantSigs: []string{"P-2"}, wantClean: []string{"P-1", "stack-x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PlanRunIngest(tc.rec, tc.pol, tc.sign, tc.index)
			if err != nil {
				t.Fatal(err)
			}
			if tc.outage != "" {
				if got.Outage == nil || got.Outage.Reason != tc.outage || len(got.Observations) != 0 {
					t.Fatalf("outage = %+v, observations %d; want %q and none", got.Outage, len(got.Observations), tc.outage)
				}
				if len(got.Outage.Top) == 0 || got.Outage.Top[0].Count < got.Outage.Top[len(got.Outage.Top)-1].Count {
					t.Errorf("top signatures not ordered by count: %+v", got.Outage.Top)
				}
				return
			}
			if got.Outage != nil {
				t.Fatalf("unexpected outage %+v", got.Outage)
			}
			var sigs, clean []string
			for sig, o := range got.Observations {
				if o.Failed > 0 {
					sigs = append(sigs, sig)
				} else {
					clean = append(clean, sig)
				}
			}
			slices.Sort(sigs)
			slices.Sort(clean)
			if !slices.Equal(sigs, tc.wantSigs) || !slices.Equal(clean, tc.wantClean) {
				t.Errorf("failing %v clean %v; want %v and %v", sigs, clean, tc.wantSigs, tc.wantClean)
			}
		})
	}
}

func TestPlanRunIngestRetryIsSeenInTheRun(t *testing.T) {
	rec := runOf(1, 3, 2)
	rec.Results = append(rec.Results, FailureResult{Hash: "retry", RunID: 1, CaseID: 2, Status: "passed", EndTime: t0})
	got, err := PlanRunIngest(rec, FailurePolicy{}, caseSign, nil)
	if err != nil {
		t.Fatal(err)
	}
	o := got.Observations["P-2"]
	if o.Failed != 1 || o.Passed != 1 || !o.retried() {
		t.Fatalf("observation %+v: want one failure and one pass (a retry)", o)
	}
}

func TestPlanRunIngestEmptySignatureIsPermanent(t *testing.T) {
	_, err := PlanRunIngest(runOf(1, 2, 1), FailurePolicy{}, func(FailureResult) (string, error) { return "", nil }, nil)
	if !IsPermanent(err) {
		t.Fatalf("err = %v, want permanent", err)
	}
}

// seq builds a signature's runs from a pattern: F failing, C clean, R a
// run where it failed and passed (retry), . a run it was not in.
func seq(pattern string) []FailureRun {
	var runs []FailureRun
	for i, ch := range pattern {
		r := FailureRun{Run: int64(i + 1), At: t0.Add(time.Duration(i) * time.Hour), Signature: "S", Cases: []int64{7}}
		switch ch {
		case 'F':
			r.Failed, r.Results, r.Message = 1, []string{"h" + strconv.Itoa(i+1)}, "boom "+strconv.Itoa(i+1)
		case 'C':
			r.Passed = 1
		case 'R':
			r.Failed, r.Passed = 1, 1
		default:
			continue
		}
		runs = append(runs, r)
	}
	return runs
}

func commentIDs(cs []Comment) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

func TestSummarizeFailure(t *testing.T) {
	tests := []struct {
		name     string
		runs     string
		pol      FailurePolicy
		status   string
		comments []string
		flaky    bool
		filable  bool
		clean    int64
	}{
		{name: "first failure", runs: "F", status: "open", filable: true},
		{name: "three failing runs: one comment per later run", runs: "FFF", status: "open", filable: true,
			comments: []string{"failure-run-2", "failure-run-3"}},
		{name: "two clean runs keep it open", runs: "FCC", status: "open", filable: true, clean: 2},
		{name: "three clean runs close it once", runs: "FCCCC", status: "closed", filable: true, clean: 4,
			comments: []string{"failure-closed-4"}},
		{name: "a failure after closing reopens with a comment", runs: "FCCCF", status: "open", filable: true,
			comments: []string{"failure-closed-4", "failure-run-5"}},
		{name: "close_after is the route's", runs: "FC", pol: FailurePolicy{CloseAfter: 1}, status: "closed", filable: true, clean: 1,
			comments: []string{"failure-closed-2"}},
		{name: "flipping is flaky and never churns", runs: "FCFCFCFC", status: "open", flaky: true, filable: true, clean: 1,
			comments: []string{"failure-run-3", "failure-run-5", "failure-run-7"}},
		{name: "a retry in the run is flaky", runs: "R", status: "open", flaky: true, filable: true},
		{name: "a failure after a close is a regression, not a flake", runs: "FCCCCF", status: "open", filable: true,
			comments: []string{"failure-closed-4", "failure-run-6"}},
		{name: "flaky held back until it fails K runs in a row", runs: "FCF", pol: FailurePolicy{FileFlakyAfter: 2},
			status: "open", flaky: true, filable: false, comments: []string{"failure-run-3"}},
		{name: "held flaky filed after K failing runs in a row", runs: "FCFF", pol: FailurePolicy{FileFlakyAfter: 2},
			status: "open", flaky: true, filable: true, comments: []string{"failure-run-3", "failure-run-4"}},
		{name: "runs not seen do not count", runs: "F..C.C.C", status: "closed", filable: true, clean: 3,
			comments: []string{"failure-closed-8"}},
		{name: "flips older than the window are forgotten", runs: "FCFCCCCCC", status: "closed", filable: true, clean: 6,
			comments: []string{"failure-run-3", "failure-closed-6"}},
		{name: "never failed", runs: "CC", status: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runs := seq(tc.runs)
			sum := SummarizeFailure("S", runs, tc.pol)
			st, _ := sum.Attrs["status"].(string)
			if st != tc.status {
				t.Errorf("status %q, want %q", st, tc.status)
			}
			if got := commentIDs(sum.Comments); !slices.Equal(got, tc.comments) {
				t.Errorf("comments %v, want %v", got, tc.comments)
			}
			if tc.status == "" {
				return
			}
			if sum.Attrs["flaky"] != tc.flaky || sum.Attrs["filable"] != tc.filable || sum.Attrs["clean_runs"] != tc.clean {
				t.Errorf("flaky %v filable %v clean %v; want %v %v %v", sum.Attrs["flaky"], sum.Attrs["filable"], sum.Attrs["clean_runs"], tc.flaky, tc.filable, tc.clean)
			}
			// Level-triggered: any delivery order gives the same answer.
			for i := range 5 {
				shuffled := slices.Clone(runs)
				rand.New(rand.NewPCG(uint64(i), 1)).Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
				again := SummarizeFailure("S", shuffled, tc.pol)
				if !slices.Equal(commentIDs(again.Comments), commentIDs(sum.Comments)) || again.Attrs["status"] != sum.Attrs["status"] {
					t.Fatalf("order changed the summary: %v vs %v", commentIDs(again.Comments), commentIDs(sum.Comments))
				}
			}
		})
	}
}

func TestSummarizeFailureAttributes(t *testing.T) {
	runs := seq("FFC")
	runs[1].CaseTitle, runs[1].Attachments = "Login works", []string{"https://qase.example/a.png"}
	runs[1].FailedStep = "2: button missing"
	sum := SummarizeFailure("S", runs, FailurePolicy{})
	a := sum.Attrs
	want := map[string]any{"signature": "S", "occurrences": int64(2), "runs_failed": int64(2), "run_id": int64(2), "first_run": int64(1),
		"last_passing_run": int64(3), "case_id": int64(7), "case_title": "Login works", "message": "boom 2", "failed_step": "2: button missing", "result_hash": "h2",
		"first_seen": "2026-03-01T12:00:00Z", "last_seen": "2026-03-01T13:00:00Z"}
	for k, v := range want {
		if a[k] != v {
			t.Errorf("%s = %#v, want %#v", k, a[k], v)
		}
	}
	if fr := a["failing_runs"].([]any); len(fr) != 2 || fr[0] != int64(1) || fr[1] != int64(2) {
		t.Errorf("failing_runs = %v", fr)
	}
	if at := a["attachments"].([]any); len(at) != 1 {
		t.Errorf("attachments = %v", at)
	}
}

func TestObserveIsIdempotentAndBounded(t *testing.T) {
	var s State
	runs := seq("FFFFFF")
	for _, r := range runs {
		observe(&s, r, 4)
	}
	if observe(&s, runs[5], 4) {
		t.Error("observing the same run again changed the state")
	}
	got := failureRuns(s)
	if len(got) != 4 || got[0].Run != 3 || got[3].Run != 6 {
		t.Fatalf("kept runs %v, want the newest four (3..6)", got)
	}
	withText := 0
	for _, r := range got {
		if r.Message != "" {
			withText++
		}
	}
	if withText != 3 || got[0].Message != "" {
		t.Errorf("%d runs keep their text (oldest %q); want the newest three", withText, got[0].Message)
	}
}

func TestSignatureIDIsStableAndPositive(t *testing.T) {
	a, b := SignatureID("r", "P-1"), SignatureID("r", "P-1")
	if a != b || a <= 0 || SignatureID("r", "P-2") == a || SignatureID("other", "P-1") == a {
		t.Fatalf("ids %d %d %d %d", a, b, SignatureID("r", "P-2"), SignatureID("other", "P-1"))
	}
	k := Key{Route: "r", EntityRef: FailureRef("r", "P", "P-1")}
	back, err := ParseKey(k.String())
	if err != nil || back != k {
		t.Fatalf("ParseKey(%s) = %v, %v", k, back, err)
	}
}
