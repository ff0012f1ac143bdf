package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/qase-sync/qase-sync/adapters/qase"
	qsync "github.com/qase-sync/qase-sync/sync"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// planRequest is one HTTP request an adapter would send.
type planRequest struct {
	Method string          `json:"method"`
	Path   string          `json:"path"`
	Body   json.RawMessage `json:"body,omitempty"`
}

type planOp struct {
	Op       qsync.Op      `json:"op"`
	Requests []planRequest `json:"requests,omitempty"`
	Note     string        `json:"note,omitempty"`
}

type planRoute struct {
	Route   string   `json:"route"`
	Tracker string   `json:"tracker"`
	Type    string   `json:"tracker_type"`
	Verdict string   `json:"verdict"` // create, skip, no-create
	Spec    any      `json:"desired,omitempty"`
	Ops     []planOp `json:"ops,omitempty"`
	// TwoWay is the route's reverse mapping: once linked, tracker changes
	// flow back (reconcile --dry-run shows those operations).
	TwoWay *qsync.TwoWay `json:"two_way,omitempty"`
}

type planOutput struct {
	Event   string      `json:"event"`
	Entity  string      `json:"entity"`
	Dedup   string      `json:"dedup_key"`
	Routes  []planRoute `json:"routes"`
	Ignored string      `json:"ignored,omitempty"`
	Notes   []string    `json:"notes,omitempty"` // what decoding tolerated or skipped
}

func cmdPlan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c commonFlags
	var eventFile, project, runFile string
	fs := newFlagSet("plan", stderr, &c)
	fs.StringVar(&eventFile, "event", "", "Qase webhook body (JSON file, - for stdin)")
	fs.StringVar(&runFile, "run", "", "recorded run for failure routes: the run and its results as the Qase API returns them (JSON file, - for stdin)")
	fs.StringVar(&project, "project", "", "Qase project code for bodies without project_code (as the webhook URL /webhooks/qase/CODE gives it)")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if runFile != "" {
		if eventFile != "" {
			return fmt.Errorf("%w: plan takes --event FILE or --run FILE, not both", errUsage)
		}
		return planRun(ctx, c, runFile, stdout, stderr)
	}
	if eventFile == "" {
		return fmt.Errorf("%w: plan needs --event FILE (or --run FILE)", errUsage)
	}
	body, err := readInput(eventFile)
	if err != nil {
		return err
	}
	a, err := loadApp(c.config, stderr, appPlan)
	if err != nil {
		return err
	}
	def := strings.TrimSpace(project)
	if def == "" {
		def = a.cfg.Qase.DefaultProject
	}
	ev, notes, err := qase.DecodeNotes(body, qase.DecodeOptions{DefaultProject: def}, a.clock.Now())
	out := planOutput{Event: ev.Name, Entity: ev.Ref.String(), Dedup: ev.DedupKey, Notes: notes}
	var routes []string
	// The webhook's own order of judgement (adapters/qase handler, then
	// the inbox), so plan and the webhook agree on what is ignored.
	switch {
	case err != nil && errors.Is(err, qase.ErrUnservedKind):
		out.Entity, out.Ignored = "", "the webhook would answer 202 ignored: "+err.Error()
	case ev.Name != "" && ev.Ref.Kind.Valid() && !a.knownEvent(ev):
		out.Ignored = "the webhook would answer 202 ignored: " + qase.UnknownEventReason(ev.Name)
	case err != nil:
		hint := ""
		if errors.Is(err, qase.ErrMissingProject) {
			hint = " (a body without project_code: pass --project CODE, as POSTing to /webhooks/qase/CODE does)"
		}
		return fmt.Errorf("%s: the webhook would answer 400: %w%s", eventFile, err, hint)
	default:
		routes = a.mapper.Routes(ev.Name, ev.Ref.Project, ev.Ref.Kind)
		switch {
		case len(routes) > 0:
		case a.servesKind(ev.Ref.Project, ev.Ref.Kind):
			// As the inbox does: the event may describe the entity (only
			// run.started carries a run's title).
			out.Ignored = "no route triggers on this event; the webhook would answer 202 accepted and keep it as context for later syncs of this entity (no job)"
		default:
			out.Ignored = "no route takes this event; the webhook would answer 202 ignored"
		}
	}
	// The entity as the event alone describes it (no store, no API read).
	ev.Seq = 1
	var st qsync.State
	st.Fold(ev)
	ent := st.Entity(ev.Ref)
	for _, route := range routes {
		if _, ok := a.mapper.FailurePolicy(route); ok {
			// The event only says the run ended; its results are in Qase.
			out.Routes = append(out.Routes, planRoute{Route: route, Tracker: a.routeTracker(route), Type: a.trackerType(a.routeTracker(route)),
				Verdict: "ingest: the service reads this run's failed and passed results from the Qase API and files one issue per signature; see them with plan --run FILE"})
			continue
		}
		pr, err := a.planRoute(ctx, route, ent)
		if err != nil {
			return err
		}
		out.Routes = append(out.Routes, pr)
	}
	if c.output == "json" {
		return writeIndented(stdout, out)
	}
	printPlan(stdout, out)
	return nil
}

func readInput(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(path)
}

// planRoute runs the route's operations through the real tracker adapter
// over a recording transport that never leaves the process, so the
// request bodies shown are exactly the ones that would be sent.
func (a *app) planRoute(ctx context.Context, route string, ent qsync.Entity) (planRoute, error) {
	d, err := a.mapper.Desired(route, ent)
	if err != nil {
		return planRoute{}, fmt.Errorf("route %s: %w", route, err)
	}
	pr := planRoute{Route: route, Tracker: d.Tracker, Type: a.trackerType(d.Tracker)}
	if tw, ok := a.mapper.TwoWay(route); ok {
		pr.TwoWay = &tw
	}
	switch {
	case d.Skip:
		pr.Verdict = "skip: the route's `when` condition is false for this entity"
		return pr, nil
	case !d.Create:
		pr.Verdict = "no-create: no issue would be filed (create_when is false or the entity is deleted); a linked issue would be updated"
	default:
		pr.Verdict = "create"
	}
	pr.Spec = d.Spec
	rec := &recorder{kind: pr.Type}
	tr, err := a.buildTracker(d.Tracker, &http.Client{Transport: rec}, true)
	if err != nil {
		return pr, err
	}
	// The engine's own planner decides: for a new entity, what filing it
	// takes (the store vouches: nothing was filed before); otherwise what
	// an issue linked earlier, with nothing applied yet, would get.
	k := qsync.Key{Route: route, EntityRef: ent.Ref}
	ref := qsync.IssueRef{Project: d.Spec.Project, ID: "1", Key: "LINKED-1"}
	in := qsync.PlanInput{Key: k, Desired: d, Vouched: true, Now: a.clock.Now()}
	if !d.Create {
		in.Linked, in.Link = true, qsync.Link{Key: k, State: qsync.LinkLinked, Tracker: d.Tracker, Marker: qsync.MarkerFor(k), Issue: ref}
	}
	_, commenter := tr.(qsync.StatusCommenter)
	ops := qsync.Decide(in).Ops
	for i, op := range ops {
		rec.reset()
		// A status change directly followed by a comment is executed as one
		// call where the tracker can carry both (sync.StatusCommenter).
		paired := commenter && ((op.Kind == qsync.OpSetStatus && i+1 < len(ops) && ops[i+1].Kind == qsync.OpComment) ||
			(op.Kind == qsync.OpComment && i > 0 && ops[i-1].Kind == qsync.OpSetStatus))
		var err error
		switch op.Kind {
		case qsync.OpCreate:
			var is qsync.Issue
			is, err = tr.Create(ctx, *op.Spec, qsync.MarkerFor(k))
			if is.Ref.ID != "" {
				ref = is.Ref
			}
		case qsync.OpUpdate:
			u := *op.Update
			u.Marker = qsync.MarkerFor(k) // as the engine executes it
			err = tr.Update(ctx, ref, u)
		case qsync.OpSetStatus:
			err = tr.SetStatus(ctx, ref, op.Status, op.Reason)
		case qsync.OpComment:
			err = tr.AddComment(ctx, ref, *op.Comment)
		}
		po := planOp{Op: op, Requests: rec.requests()}
		if op.Kind == qsync.OpSetStatus {
			po.Note = "skipped at run time when the issue already has this status"
		}
		if err != nil {
			note := "further requests depend on the tracker's live state (e.g. the workflow's transitions)"
			if op.Kind == qsync.OpCreate {
				note = "the tracker's answer decides what follows"
			}
			po.Note = strings.TrimPrefix(po.Note+"; "+note, "; ")
		}
		if paired {
			note := "the comment below rides on the transition's request where its screen takes a comment"
			if op.Kind == qsync.OpComment {
				note = "sent with the transition above where its screen takes a comment; as shown here otherwise"
			}
			po.Note = strings.TrimPrefix(po.Note+"; "+note, "; ")
		}
		pr.Ops = append(pr.Ops, po)
	}
	return pr, nil
}

func printPlan(w io.Writer, out planOutput) {
	if out.Entity != "" {
		fmt.Fprintf(w, "event %s for %s (dedup key %s)\n", out.Event, out.Entity, short(out.Dedup))
	} else {
		fmt.Fprintf(w, "event %s (dedup key %s)\n", strconv.Quote(out.Event), short(out.Dedup))
	}
	for _, n := range out.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	if out.Ignored != "" {
		fmt.Fprintf(w, "  %s\n", out.Ignored)
	}
	for _, r := range out.Routes {
		fmt.Fprintf(w, "\nroute %s → tracker %s (%s): %s\n", r.Route, r.Tracker, r.Type, r.Verdict)
		if r.TwoWay != nil {
			var dirs []string
			for _, f := range qsync.TwoWayFields {
				if d := r.TwoWay.Dir(f); d != qsync.DirOut {
					dirs = append(dirs, f+" "+string(d))
				}
			}
			fmt.Fprintf(w, "  two-way (%s; conflicts: %s): once linked, tracker changes flow back to Qase; `reconcile --dry-run` lists them\n", strings.Join(dirs, ", "), r.TwoWay.Conflict)
		}
		for i, op := range r.Ops {
			fmt.Fprintf(w, "  %d. %s\n", i+1, describeOp(op.Op))
			for _, rq := range op.Requests {
				fmt.Fprintf(w, "     %s %s\n", rq.Method, rq.Path)
				if len(rq.Body) > 0 {
					var buf bytes.Buffer
					if json.Indent(&buf, rq.Body, "       ", "  ") == nil {
						fmt.Fprintf(w, "       %s\n", buf.String())
					}
				}
			}
			if op.Note != "" {
				fmt.Fprintf(w, "     (%s)\n", op.Note)
			}
		}
	}
}

func describeOp(op qsync.Op) string {
	switch op.Kind {
	case qsync.OpCreate:
		return fmt.Sprintf("create issue in %s: %q", op.Spec.Project, op.Spec.Title)
	case qsync.OpSetStatus:
		if op.Reason != "" {
			return fmt.Sprintf("set status %q (reason %s)", op.Status, op.Reason)
		}
		return fmt.Sprintf("set status %q", op.Status)
	case qsync.OpComment:
		return fmt.Sprintf("comment %s", op.Comment.ID)
	case qsync.OpQaseStatus:
		return fmt.Sprintf("qase: set defect status %q (from the tracker)", op.Status)
	case qsync.OpQaseUpdate:
		return "qase: update defect " + strings.TrimPrefix(op.String(), string(op.Kind)+":") + " (from the tracker)"
	case qsync.OpQaseLink:
		return "qase: write the issue link back (write_back)"
	}
	return op.String()
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12] + "…"
	}
	return s
}

// recorder is an http.RoundTripper that records requests and answers with
// canned successes, so adapters run their real code path offline. Request
// headers (credentials) are never recorded.
type recorder struct {
	kind string // tracker type: canned answers decode in its SDK
	mu   sync.Mutex
	got  []planRequest
}

// Canned answers: a created issue, read back as such.
var planAnswers = map[string]string{
	"jira":   `{"id":"10000","key":"PLAN-1","self":"https://plan.invalid/rest/api/2/issue/10000","fields":{"summary":"","status":{"name":""}}}`,
	"github": `{"id":1,"number":1,"html_url":"https://plan.invalid/issues/1","state":"open","title":""}`,
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
	}
	pr := planRequest{Method: req.Method, Path: req.URL.RequestURI()}
	if len(bytes.TrimSpace(body)) > 0 {
		if json.Valid(body) {
			pr.Body = body
		} else {
			pr.Body, _ = json.Marshal(string(body))
		}
	}
	r.mu.Lock()
	r.got = append(r.got, pr)
	r.mu.Unlock()
	status, resp := http.StatusOK, planAnswers[r.kind]
	if resp == "" {
		resp = `{}`
	}
	switch {
	case req.Method == http.MethodPost:
		status = http.StatusCreated
	case req.Method == http.MethodPut || req.Method == http.MethodDelete:
		status, resp = http.StatusNoContent, ``
	case strings.HasSuffix(req.URL.Path, "/transitions"):
		resp = `{"transitions":[]}` // the workflow is only known live
	}
	return &http.Response{StatusCode: status, Status: http.StatusText(status), Request: req, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(resp)), ContentLength: int64(len(resp))}, nil
}

func (r *recorder) reset() {
	r.mu.Lock()
	r.got = nil
	r.mu.Unlock()
}

func (r *recorder) requests() []planRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]planRequest(nil), r.got...)
}

// servesKind mirrors the inbox: whether any route takes entities of this
// kind and project, whatever its event list.
func (a *app) servesKind(project string, kind qsync.Kind) bool {
	for _, name := range a.mapper.RouteNames() {
		ri, ok := a.mapper.RouteInfo(name)
		if ok && ri.Kind == kind && (len(ri.Projects) == 0 || slices.Contains(ri.Projects, project)) {
			return true
		}
	}
	return false
}
