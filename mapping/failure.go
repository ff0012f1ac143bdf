package mapping

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/qase-sync/qase-sync/internal/yamlpos"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// Failure routes (kind: failure) file failed test results, one issue per
// signature. This file holds what only they have: the signature template,
// the lifecycle settings and the fingerprint helpers mask and first_frame.

var _ qsync.FailureMapper = (*Mapping)(nil)

// DefaultSignature groups failures by project and case.
const DefaultSignature = "{{.project}}-{{.case_id}}"

// StackSignature is the offered alternative: the first stack frame and the
// message, numbers, hex ids, UUIDs and timestamps masked.
const StackSignature = "{{first_frame .stacktrace | mask}} {{oneline .message | mask}}"

// failureEvents are the run events a failure route takes by default;
// result.* deliveries are taken too, as hints that a run changed.
var failureEvents = []string{"run.completed", "run.aborted"}

type failureDoc struct {
	CloseAfter     int        `yaml:"close_after"`
	FlakyWindow    int        `yaml:"flaky_window"`
	FileFlakyAfter int        `yaml:"file_flaky_after"`
	Outage         *outageDoc `yaml:"outage"`
	ReconcileRuns  int        `yaml:"reconcile_runs"`
	KeepRuns       int        `yaml:"keep_runs"`
}

type outageDoc struct {
	FailedPercent float64 `yaml:"failed_percent"`
	SameSignature int     `yaml:"same_signature"`
	MinFailed     int     `yaml:"min_failed"`
}

// compileFailure checks a route's signature and failure: keys.
func (m *Mapping) compileFailure(r *route, doc routeDoc, ix *yamlpos.Index, field string) yamlpos.Problems {
	var ps yamlpos.Problems
	at := func(k string) string { return field + "." + k }
	if r.kind != qsync.KindFailure {
		for _, k := range []string{"signature", "failure"} {
			if !yamlpos.IsNull(ix.Node(at(k))) {
				ps = append(ps, ix.Problem(at(k), "only failure routes take %s", k))
			}
		}
		return ps
	}
	src := doc.Signature
	if strings.TrimSpace(src) == "" {
		src = DefaultSignature
	}
	t, _, err := m.compileTemplate(src, MarkupPlain, m.vars)
	if err != nil {
		ps = append(ps, ix.Problem(at("signature"), "%v", err))
	}
	r.signature = t
	pol := qsync.FailurePolicy{}
	if f := doc.Failure; f != nil {
		nonNeg := func(k string, v int) {
			if v < 0 {
				ps = append(ps, ix.Problem(at("failure."+k), "must not be negative"))
			}
		}
		nonNeg("close_after", f.CloseAfter)
		nonNeg("flaky_window", f.FlakyWindow)
		nonNeg("file_flaky_after", f.FileFlakyAfter)
		nonNeg("reconcile_runs", f.ReconcileRuns)
		nonNeg("keep_runs", f.KeepRuns)
		pol = qsync.FailurePolicy{CloseAfter: f.CloseAfter, FlakyWindow: f.FlakyWindow, FileFlakyAfter: f.FileFlakyAfter,
			ReconcileRuns: f.ReconcileRuns, KeepRuns: f.KeepRuns}
		if o := f.Outage; o != nil {
			if o.FailedPercent < 0 || o.FailedPercent > 100 {
				ps = append(ps, ix.Problem(at("failure.outage.failed_percent"), "must be between 0 and 100"))
			}
			nonNeg("outage.same_signature", o.SameSignature)
			nonNeg("outage.min_failed", o.MinFailed)
			pol.OutagePercent, pol.OutageSignature, pol.OutageMinFailed = o.FailedPercent, o.SameSignature, o.MinFailed
		}
		if d := pol.WithDefaults(); pol.KeepRuns > 0 && d.KeepRuns < max(d.CloseAfter, d.FlakyWindow) {
			ps = append(ps, ix.Problem(at("failure.keep_runs"), "must be at least close_after and flaky_window (%d)", max(d.CloseAfter, d.FlakyWindow)))
		}
	}
	r.failure = pol.WithDefaults()
	return ps
}

// FailurePolicy implements qsync.FailureMapper.
func (m *Mapping) FailurePolicy(route string) (qsync.FailurePolicy, bool) {
	r, ok := m.byName[route]
	if !ok || r.kind != qsync.KindFailure {
		return qsync.FailurePolicy{}, false
	}
	return r.failure, true
}

// Signature renders the route's signature for a failed result. Templates
// see project, case_id, run_id, hash, status, message and stacktrace.
func (m *Mapping) Signature(route, project string, res qsync.FailureResult) (string, error) {
	r, ok := m.byName[route]
	if !ok || r.kind != qsync.KindFailure || r.signature == nil {
		return "", qsync.Permanentf("mapping: route %q does not file failures", route)
	}
	data := map[string]any{"project": project, "case_id": res.CaseID, "run_id": res.RunID, "hash": res.Hash,
		"status": res.Status, "message": res.Message, "stacktrace": res.Stacktrace, "vars": m.varData}
	s, err := r.signature.execute(data)
	if err != nil {
		return "", qsync.Permanent(fmt.Errorf("mapping: route %q: signature: %w", route, err))
	}
	return strings.Join(strings.Fields(s), " "), nil
}

// failureCreatable: a failure issue is filed only while the signature is
// open and, when it is flaky and the route holds flaky cases back, once
// it failed enough runs in a row; an environment issue while its outage
// lasts.
func failureCreatable(e qsync.Entity) bool {
	filable, _ := e.Attrs["filable"].(bool)
	return e.Attrs["status"] == qsync.FailureOpen && filable
}

// Masks, applied in order: what varies between occurrences of one root
// cause (ReportPortal's and Sentry's fingerprinting do the same).
var masks = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?`), "<ts>"},
	{regexp.MustCompile(`(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b`), "<uuid>"},
	{regexp.MustCompile(`(?i)\b0x[0-9a-f]+\b`), "<hex>"},
	{regexp.MustCompile(`(?i)\b[0-9a-f]*[0-9][0-9a-f]*[a-f][0-9a-f]*\b|\b[0-9a-f]*[a-f][0-9a-f]*[0-9][0-9a-f]*\b`), "<hex>"},
	// Numbers, but not digits inside a name (TestLogin2fa).
	{regexp.MustCompile(`(^|[^A-Za-z_\d])\d+`), "${1}<n>"},
}

// Mask replaces timestamps, UUIDs, hex ids and numbers with placeholders.
// A hex word needs at least 8 characters with both a digit and a letter
// a-f, so words like "face" or "added" survive.
func Mask(s string) string {
	for i, m := range masks {
		if i == 3 {
			s = m.re.ReplaceAllStringFunc(s, func(w string) string {
				if len(w) < 8 {
					return w
				}
				return m.with
			})
			continue
		}
		s = m.re.ReplaceAllString(s, m.with)
	}
	return s
}

var frameRE = regexp.MustCompile(`^\s*at\s+\S|^\s*File\s+"|\.(go|py|js|mjs|ts|tsx|java|kt|rb|cs|php|scala|swift|rs):\d+|\(\S+:\d+(:\d+)?\)`)

// FirstFrame returns the first line of a stack trace that looks like a
// stack frame (Java/JS "at ...", Python File "...", path:line), trimmed;
// without one, the first non-empty line.
func FirstFrame(stack string) string {
	first := ""
	for _, line := range strings.Split(stack, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if first == "" {
			first = line
		}
		if frameRE.MatchString(line) {
			return line
		}
	}
	return first
}

// FailureRoutes lists the failure routes, in declaration order.
func (m *Mapping) FailureRoutes() []string {
	var out []string
	for _, r := range m.routes {
		if r.kind == qsync.KindFailure {
			out = append(out, r.name)
		}
	}
	return out
}
