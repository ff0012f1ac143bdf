package sync

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The failure kind: failed test results grouped by a route's signature
// into one tracker issue per root cause.
//
// A run key on a failure route (route:PROJ/run/ID, enqueued by
// run.completed, run.aborted, result.* hints and the reconciler) ingests
// the run: its results are read from Qase, grouped by signature, and one
// observation per (signature, run) is stored in the signature's snapshot.
// Storing observations keyed by run, never counters bumped per delivery,
// keeps ingest idempotent under duplicate and reordered deliveries: the
// lifecycle (open, recurrence comments, close, flaky) is a pure function
// of the set of runs seen (SummarizeFailure). Each touched signature's key
// (route:PROJ/failure/<hash>) is then enqueued and synced like any other
// entity: mapping, Decide, executor.

// FailureResult is one Qase test result as a failure route reads it.
type FailureResult struct {
	Hash        string    `json:"hash"`
	RunID       int64     `json:"run_id"`
	CaseID      int64     `json:"case_id"`
	Status      string    `json:"status"`            // passed, failed, ...
	Message     string    `json:"message,omitempty"` // the result's comment
	Stacktrace  string    `json:"stacktrace,omitempty"`
	FailedStep  string    `json:"failed_step,omitempty"` // "3.1: comment" of the first failed step
	EndTime     time.Time `json:"end_time,omitzero"`
	Attachments []string  `json:"attachments,omitempty"` // URLs
}

// RunRecord is what ingest reads of one run: its failed and passed results
// and how many results it has in all. It is also the fixture `plan --run`
// reads.
type RunRecord struct {
	Project string `json:"project"`
	RunID   int64  `json:"run_id"`
	Title   string `json:"title,omitempty"`
	// Total counts the run's results of any status (the outage breaker's
	// denominator); at least len(Results).
	Total   int             `json:"total"`
	Results []FailureResult `json:"results"`
	// CaseTitles are case titles by case id (filled for the cases that
	// failed outside an outage).
	CaseTitles map[int64]string `json:"case_titles,omitempty"`
}

// FailurePolicy is a failure route's lifecycle settings (mapping:
// failure:). Zero fields take the defaults of WithDefaults.
type FailurePolicy struct {
	// CloseAfter clean runs of a signature's cases in a row close its issue.
	CloseAfter int `json:"close_after"`
	// FlakyWindow is how many recent runs a signature is judged flaky
	// over: a run where it failed and passed (a retry), or two flips
	// between failing and clean runs.
	FlakyWindow int `json:"flaky_window"`
	// FileFlakyAfter holds a flaky signature's issue back until it failed
	// this many runs in a row (0: file flaky signatures at once).
	FileFlakyAfter int `json:"file_flaky_after,omitempty"`
	// OutagePercent: a run with more than this percentage of its results
	// failed is an outage (0: off). OutageSignature: a run in which more
	// than this many failures share one signature is an outage (0: off).
	// Either needs at least OutageMinFailed failed results.
	OutagePercent   float64 `json:"outage_percent,omitempty"`
	OutageSignature int     `json:"outage_signature,omitempty"`
	OutageMinFailed int     `json:"outage_min_failed"`
	// ReconcileRuns is how many recent runs per project a reconcile pass
	// ingests again.
	ReconcileRuns int `json:"reconcile_runs"`
	// KeepRuns is how many runs each signature remembers.
	KeepRuns int `json:"keep_runs"`
}

// Failure policy defaults.
const (
	DefaultCloseAfter      = 3
	DefaultFlakyWindow     = 5
	DefaultOutageMinFailed = 10
	DefaultReconcileRuns   = 10
	DefaultKeepRuns        = 50
)

// WithDefaults fills zero fields.
func (p FailurePolicy) WithDefaults() FailurePolicy {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&p.CloseAfter, DefaultCloseAfter)
	def(&p.FlakyWindow, DefaultFlakyWindow)
	def(&p.OutageMinFailed, DefaultOutageMinFailed)
	def(&p.ReconcileRuns, DefaultReconcileRuns)
	def(&p.KeepRuns, DefaultKeepRuns)
	return p
}

// FailureRun is what one run said about one signature: the observation
// stored per (signature, run).
type FailureRun struct {
	Run       int64     `json:"run"`
	RunTitle  string    `json:"run_title,omitempty"`
	At        time.Time `json:"at,omitzero"` // the run's last result end time
	Signature string    `json:"signature"`
	// Failed counts the run's failed results with the signature; Passed
	// the passed results of the signature's cases (a retry that passed,
	// or a clean run).
	Failed      int      `json:"failed,omitempty"`
	Passed      int      `json:"passed,omitempty"`
	Cases       []int64  `json:"cases,omitempty"`
	Results     []string `json:"results,omitempty"` // failed result hashes
	Message     string   `json:"message,omitempty"`
	Stack       string   `json:"stack,omitempty"`
	FailedStep  string   `json:"failed_step,omitempty"`
	CaseTitle   string   `json:"case_title,omitempty"`
	Attachments []string `json:"attachments,omitempty"`
}

func (r FailureRun) failing() bool { return r.Failed > 0 && r.Passed == 0 }
func (r FailureRun) retried() bool { return r.Failed > 0 && r.Passed > 0 }
func (r FailureRun) clean() bool   { return r.Failed == 0 && r.Passed > 0 }

// Outage is a run the breaker tripped on: one environment issue instead
// of one per signature.
type Outage struct {
	Run     int64            `json:"run"`
	Title   string           `json:"title,omitempty"`
	At      time.Time        `json:"at,omitzero"`
	Total   int              `json:"total"`
	Failed  int              `json:"failed"`
	Percent float64          `json:"percent"`
	Reason  string           `json:"reason"`
	Top     []SignatureCount `json:"top"`
}

// SignatureCount is one signature's failures in a run.
type SignatureCount struct {
	Signature string `json:"signature"`
	Count     int    `json:"count"`
}

// RunIngest is what ingesting one run records.
type RunIngest struct {
	// Observations per signature (none when the run is an outage).
	Observations map[string]FailureRun
	Outage       *Outage
}

// Caps on text kept per observation (the mapping caps again per tracker).
const (
	maxFailureMessage = 2000
	maxFailureStack   = 8000
	maxAttachments    = 20
	outageTop         = 5
)

// PlanRunIngest decides what a run records: per signature of its failed
// results one observation, plus a clean (or retry) observation for every
// signature in index (case id → signatures seen failing before) whose
// case passed. When the outage breaker trips, only the Outage. Pure.
func PlanRunIngest(rec RunRecord, pol FailurePolicy, sign func(FailureResult) (string, error), index map[int64][]string) (RunIngest, error) {
	pol = pol.WithDefaults()
	var at time.Time
	passed := map[int64]int{}
	type group struct {
		results []FailureResult
	}
	groups := map[string]*group{}
	failed := 0
	for _, r := range rec.Results {
		if r.EndTime.After(at) {
			at = r.EndTime
		}
		switch r.Status {
		case "passed":
			passed[r.CaseID]++
		case "failed":
			sig, err := sign(r)
			if err != nil {
				return RunIngest{}, fmt.Errorf("signature of result %s: %w", r.Hash, err)
			}
			if sig == "" {
				return RunIngest{}, Permanentf("signature of result %s renders empty", r.Hash)
			}
			g := groups[sig]
			if g == nil {
				g = &group{}
				groups[sig] = g
			}
			g.results = append(g.results, r)
			failed++
		}
	}
	total := max(rec.Total, len(rec.Results))
	var top []SignatureCount
	for sig, g := range groups {
		top = append(top, SignatureCount{Signature: sig, Count: len(g.results)})
	}
	slices.SortFunc(top, func(a, b SignatureCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Signature, b.Signature))
	})
	if o := outage(pol, total, failed, top); o != "" {
		pct := 0.0
		if total > 0 {
			pct = float64(failed) * 100 / float64(total)
		}
		return RunIngest{Outage: &Outage{Run: rec.RunID, Title: rec.Title, At: at, Total: total, Failed: failed, Percent: pct, Reason: o, Top: top[:min(len(top), outageTop)]}}, nil
	}
	out := RunIngest{Observations: map[string]FailureRun{}}
	for sig, g := range groups {
		// The newest result speaks for the signature in this run.
		slices.SortStableFunc(g.results, func(a, b FailureResult) int { return a.EndTime.Compare(b.EndTime) })
		last := g.results[len(g.results)-1]
		o := FailureRun{Run: rec.RunID, RunTitle: rec.Title, At: at, Signature: sig, Failed: len(g.results),
			Message: capRunes(last.Message, maxFailureMessage), Stack: capRunes(last.Stacktrace, maxFailureStack),
			FailedStep: capRunes(last.FailedStep, maxFailureMessage)}
		for _, r := range g.results {
			if !slices.Contains(o.Cases, r.CaseID) {
				o.Cases = append(o.Cases, r.CaseID)
				o.Passed += passed[r.CaseID]
			}
			o.Results = append(o.Results, r.Hash)
			for _, a := range r.Attachments {
				if len(o.Attachments) < maxAttachments && !slices.Contains(o.Attachments, a) {
					o.Attachments = append(o.Attachments, a)
				}
			}
		}
		slices.Sort(o.Cases)
		o.CaseTitle = rec.CaseTitles[o.Cases[0]]
		out.Observations[sig] = o
	}
	for _, c := range slices.Sorted(maps.Keys(passed)) {
		for _, sig := range index[c] {
			o, ok := out.Observations[sig]
			if !ok {
				o = FailureRun{Run: rec.RunID, RunTitle: rec.Title, At: at, Signature: sig}
			}
			if slices.Contains(o.Cases, c) && o.Failed > 0 {
				continue // counted with the failures above
			}
			o.Passed += passed[c]
			if !slices.Contains(o.Cases, c) {
				o.Cases = append(o.Cases, c)
				slices.Sort(o.Cases)
			}
			out.Observations[sig] = o
		}
	}
	return out, nil
}

// outage says why the breaker trips for a run ("" if it does not).
func outage(pol FailurePolicy, total, failed int, top []SignatureCount) string {
	if failed < pol.OutageMinFailed || failed == 0 {
		return ""
	}
	if pol.OutagePercent > 0 && float64(failed)*100 > pol.OutagePercent*float64(total) {
		return fmt.Sprintf("%d of %d results failed (more than %s%%)", failed, total, strconv.FormatFloat(pol.OutagePercent, 'f', -1, 64))
	}
	if pol.OutageSignature > 0 && len(top) > 0 && top[0].Count > pol.OutageSignature {
		return fmt.Sprintf("%d failures share one signature (more than %d)", top[0].Count, pol.OutageSignature)
	}
	return ""
}

func capRunes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// SignatureID is the entity id of a route's signature: a 62-bit hash, so
// keys and markers stay "route:PROJ/failure/<id>".
func SignatureID(route, signature string) int64 {
	sum := sha256.Sum256([]byte(route + "\x00" + signature))
	return int64(binary.BigEndian.Uint64(sum[:8])>>2) + 1
}

// OutageSignature is the signature of a run's environment issue.
func OutageSignature(run int64) string { return "environment:run:" + strconv.FormatInt(run, 10) }

// FailureSummary is a signature's lifecycle derived from its runs.
type FailureSummary struct {
	Attrs    map[string]any
	Comments []Comment
}

// Failure status values (the failure entity's status attribute).
const (
	FailureOpen   = "open"
	FailureClosed = "closed"
)

// SummarizeFailure derives a signature's attributes and the comments its
// issue should carry from the runs seen (any order, each run once). Pure
// and level-triggered: the same set of runs always gives the same answer.
//
// A run where the signature failed opens the issue, or reopens it, with
// one comment per later failing run; CloseAfter clean runs in a row close
// it with a comment. A run where a case failed and passed again (a retry)
// counts as a failure and marks the signature flaky, as does a failure
// after fewer clean runs than close the issue: a flaky signature stays
// open instead of closing and reopening.
func SummarizeFailure(sig string, runs []FailureRun, pol FailurePolicy) FailureSummary {
	pol = pol.WithDefaults()
	runs = slices.Clone(runs)
	slices.SortFunc(runs, func(a, b FailureRun) int { return cmp.Or(a.At.Compare(b.At), cmp.Compare(a.Run, b.Run)) })
	attrs := map[string]any{"signature": sig, "environment": false}
	var (
		comments            []Comment
		open, everFailed    bool
		clean, streak       int // clean runs in a row; failing runs in a row
		occurrences         int
		failingRuns         []any
		lastFail, firstFail *FailureRun
		lastPass            int64
		cases               []int64
		cleanRuns           []int64
	)
	for i := range runs {
		r := runs[i]
		for _, c := range r.Cases {
			if r.Failed > 0 && !slices.Contains(cases, c) {
				cases = append(cases, c)
			}
		}
		if r.Passed > 0 {
			lastPass = r.Run
		}
		switch {
		case r.Failed > 0:
			occurrences += r.Failed
			failingRuns = append(failingRuns, r.Run)
			if firstFail == nil {
				firstFail = &runs[i]
			} else {
				body := fmt.Sprintf("Failed again in run %d (%s).", r.Run, plural(r.Failed, "failed result"))
				if !open {
					body = fmt.Sprintf("Failed again in run %d (%s); reopening.", r.Run, plural(r.Failed, "failed result"))
				}
				if r.retried() {
					body += " It also passed in that run (a retry): flaky."
				}
				if line, _, _ := strings.Cut(strings.TrimSpace(r.Message), "\n"); line != "" {
					body += " " + capRunes(line, 200)
				}
				comments = append(comments, Comment{ID: "failure-run-" + strconv.FormatInt(r.Run, 10), Body: body, At: r.At})
			}
			lastFail, open, everFailed, clean = &runs[i], true, true, 0
			cleanRuns = nil
			if r.failing() {
				streak++
			} else {
				streak = 0
			}
		case r.clean():
			streak = 0
			if !everFailed {
				continue
			}
			clean++
			cleanRuns = append(cleanRuns, r.Run)
			if open && clean == pol.CloseAfter {
				open = false
				comments = append(comments, Comment{ID: "failure-closed-" + strconv.FormatInt(r.Run, 10),
					Body: fmt.Sprintf("Passed %s in a row (%s); closing.", plural(clean, "run"), runList(cleanRuns)), At: r.At})
			}
		}
	}
	slices.Sort(cases)
	attrs["occurrences"] = int64(occurrences)
	attrs["failing_runs"] = failingRuns
	attrs["runs_failed"] = int64(len(failingRuns))
	attrs["clean_runs"] = int64(clean)
	if lastPass > 0 {
		attrs["last_passing_run"] = lastPass
	}
	if len(cases) > 0 {
		attrs["case_id"] = cases[0]
		attrs["case_ids"] = each64(cases)
	}
	flaky := flakyIn(runs, pol.FlakyWindow, pol.CloseAfter)
	attrs["flaky"] = flaky
	attrs["filable"] = !flaky || pol.FileFlakyAfter <= 0 || streak >= pol.FileFlakyAfter
	if firstFail != nil {
		attrs["first_seen"] = timeText(firstFail.At)
		attrs["first_run"] = firstFail.Run
	}
	if lastFail != nil {
		attrs["last_seen"] = timeText(lastFail.At)
		attrs["run_id"] = lastFail.Run
		if lastFail.RunTitle != "" {
			attrs["run_title"] = lastFail.RunTitle
		}
		attrs["results"] = eachString(lastFail.Results)
		if len(lastFail.Results) > 0 {
			attrs["result_hash"] = lastFail.Results[0]
		}
		attrs["attachments"] = eachString(lastFail.Attachments)
		// The newest observation that kept its text (older ones are
		// trimmed to save room) gives the message and stack trace.
		for j := len(runs) - 1; j >= 0; j-- {
			if runs[j].Failed > 0 && (runs[j].Message != "" || runs[j].Stack != "" || runs[j].FailedStep != "") {
				attrs["message"], attrs["stacktrace"] = runs[j].Message, runs[j].Stack
				if runs[j].FailedStep != "" {
					attrs["failed_step"] = runs[j].FailedStep
				}
				break
			}
		}
		for j := len(runs) - 1; j >= 0; j-- {
			if runs[j].CaseTitle != "" {
				attrs["case_title"] = runs[j].CaseTitle
				break
			}
		}
	}
	if everFailed {
		attrs["status"] = FailureClosed
		if open {
			attrs["status"] = FailureOpen
		}
	}
	return FailureSummary{Attrs: attrs, Comments: comments}
}

// flakyIn: within the last window runs, a retry (failed and passed in one
// run), or a failure after fewer clean runs than close the issue (it
// passed, briefly, and failed again). A failure after the issue closed is
// a regression, not a flake.
func flakyIn(runs []FailureRun, window, closeAfter int) bool {
	if len(runs) > window {
		runs = runs[len(runs)-window:]
	}
	failed, clean := false, 0
	for _, r := range runs {
		switch {
		case r.retried():
			return true
		case r.failing():
			if failed && clean > 0 && clean < closeAfter {
				return true
			}
			failed, clean = true, 0
		case r.clean():
			clean++
		}
	}
	return false
}

// OutageAttrs are the attributes of a run's environment issue.
func OutageAttrs(o Outage) map[string]any {
	top := make([]any, 0, len(o.Top))
	lines := make([]any, 0, len(o.Top))
	for _, t := range o.Top {
		top = append(top, map[string]any{"signature": t.Signature, "count": int64(t.Count)})
		lines = append(lines, fmt.Sprintf("%s (%d)", t.Signature, t.Count))
	}
	return map[string]any{
		"environment": true, "signature": OutageSignature(o.Run), "run_id": o.Run, "total": int64(o.Total),
		"failed": int64(o.Failed), "failed_percent": int64(o.Percent + 0.5), "outage_reason": o.Reason,
		"top_signatures": top, "top_lines": lines, "last_seen": timeText(o.At), "first_seen": timeText(o.At),
		"filable": true, "flaky": false, "run_title": o.Title, "status": FailureOpen,
	}
}

func timeText(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

func runList(runs []int64) string {
	parts := make([]string, len(runs))
	for i, r := range runs {
		parts[i] = strconv.FormatInt(r, 10)
	}
	return "runs " + strings.Join(parts, ", ")
}

func each64(s []int64) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func eachString(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}
