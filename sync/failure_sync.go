package sync

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// FailureMapper is the Mapper side of failure routes (package mapping
// implements it).
type FailureMapper interface {
	// FailurePolicy returns the route's lifecycle settings; ok=false when
	// the route does not serve failures.
	FailurePolicy(route string) (FailurePolicy, bool)
	// Signature renders the route's signature template for a failed result.
	Signature(route, project string, r FailureResult) (string, error)
}

// ResultSource reads test results from the Qase API (the Qase client
// implements it next to EntitySource).
type ResultSource interface {
	// RunResults calls fn for each of the run's results with the status,
	// paging through GET /result/{code}?run=&status=.
	RunResults(ctx context.Context, project string, run int64, status string, fn func(FailureResult) error) error
	// RunResultTotal counts the run's results of any status.
	RunResultTotal(ctx context.Context, project string, run int64) (int, error)
	// CaseTitle reads a case's title; found=false when the case is gone.
	CaseTitle(ctx context.Context, project string, id int64) (title string, found bool, err error)
	// RecentRuns lists the ids of the project's newest runs, newest first.
	RecentRuns(ctx context.Context, project string, limit int) ([]int64, error)
}

// failureRoute returns the route's policy when it serves failures.
func (e *Engine) failureRoute(route string) (FailureMapper, FailurePolicy, bool) {
	fm, ok := e.o.Mapper.(FailureMapper)
	if !ok {
		return nil, FailurePolicy{}, false
	}
	pol, ok := fm.FailurePolicy(route)
	return fm, pol.WithDefaults(), ok
}

// FailureRef is the entity of a route's signature.
func FailureRef(route, project, signature string) EntityRef {
	return EntityRef{Project: project, Kind: KindFailure, ID: SignatureID(route, signature)}
}

// caseIndexRef holds, per route and project, which signatures each case
// has failed with (so a passing result can count as a clean run of
// signatures that are not keyed by case).
func caseIndexRef(route, project string) EntityRef {
	return EntityRef{Project: project, Kind: KindFailure, ID: SignatureID(route, "\x00case-index")}
}

// ReadRun reads what ingest needs of a run from the Qase API: its failed
// and passed results and its result count.
func ReadRun(ctx context.Context, rs ResultSource, project string, run int64) (RunRecord, error) {
	rec := RunRecord{Project: project, RunID: run}
	for _, st := range []string{"failed", "passed"} {
		err := rs.RunResults(ctx, project, run, st, func(r FailureResult) error {
			rec.Results = append(rec.Results, r)
			return nil
		})
		if err != nil {
			return rec, fmt.Errorf("reading %s results of run %s/%d: %w", st, project, run, err)
		}
	}
	total, err := rs.RunResultTotal(ctx, project, run)
	if err != nil {
		return rec, fmt.Errorf("counting results of run %s/%d: %w", project, run, err)
	}
	rec.Total = total
	return rec, nil
}

// ingestRun is the sync of a run key on a failure route: read the run's
// results, record one observation per signature, enqueue the signatures'
// keys. It writes no tracker; its ledger entry says what it recorded.
func (e *Engine) ingestRun(ctx context.Context, k Key, o SyncOptions) (Result, error) {
	res := Result{Key: k, Outcome: OutcomeNoop}
	fm, pol, ok := e.failureRoute(k.Route)
	if !ok {
		return res, Permanentf("route %s does not serve failures", k.Route)
	}
	rs, ok := e.o.Source.(ResultSource)
	if !ok {
		return res, Permanentf("route %s files failed results: it reads them from the Qase API, so qase.api_token is required", k.Route)
	}
	// The run itself: its events are folded (so retention can prune them)
	// and its title read; a run Qase no longer has has no results.
	run, err := e.entity(ctx, k.EntityRef, !o.DryRun, o.Pass, nil)
	if err != nil {
		return res, err
	}
	if run.Deleted {
		res.Detail = "the run is deleted in Qase; nothing to read"
		return res, nil
	}
	rec, err := ReadRun(ctx, rs, k.Project, k.ID)
	if err != nil {
		return res, err
	}
	rec.Title, _ = run.Attrs["title"].(string)
	ing, err := e.IngestRun(ctx, k.Route, rec, fm, pol, rs, o.DryRun)
	res.Detail = ing
	return res, err
}

// IngestRun records a read run for a failure route (see ingestRun) and
// enqueues the keys it touched; dryRun only describes what it would record.
func (e *Engine) IngestRun(ctx context.Context, route string, rec RunRecord, fm FailureMapper, pol FailurePolicy, rs ResultSource, dryRun bool) (string, error) {
	pol = pol.WithDefaults()
	idx, err := e.o.Store.Snapshot(ctx, caseIndexRef(route, rec.Project))
	if err != nil {
		return "", err
	}
	index := caseIndex(idx.State)
	sign := func(r FailureResult) (string, error) { return fm.Signature(route, rec.Project, r) }
	ing, err := PlanRunIngest(rec, pol, sign, index)
	if err != nil {
		return "", Permanent(fmt.Errorf("route %s: %w", route, err))
	}
	if ing.Outage != nil {
		ref := FailureRef(route, rec.Project, OutageSignature(rec.RunID))
		detail := fmt.Sprintf("run %d is an outage: %s; one environment issue", rec.RunID, ing.Outage.Reason)
		if dryRun {
			return detail, nil
		}
		if err := e.recordOutage(ctx, route, rec.Project, *ing.Outage); err != nil {
			return "", err
		}
		return detail, e.enqueueFailures(ctx, route, []EntityRef{ref})
	}
	var recovered []EntityRef
	if !dryRun {
		if recovered, err = e.recoverOutages(ctx, route, rec.Project, rec.RunID); err != nil {
			return "", err
		}
	}
	// Case titles for the failing signatures: one read per signature, and
	// none when this run was recorded before (a reconcile pass re-reads
	// recent runs every time).
	if rs != nil {
		for sig, ob := range ing.Observations {
			if ob.Failed == 0 || len(ob.Cases) == 0 || ob.CaseTitle != "" {
				continue
			}
			snap, err := e.o.Store.Snapshot(ctx, FailureRef(route, rec.Project, sig))
			if err != nil {
				return "", err
			}
			if a, ok := snap.State.Attrs["runs/"+strconv.FormatInt(rec.RunID, 10)]; ok {
				if m, _ := a.V.(map[string]any); m != nil {
					if t, _ := m["case_title"].(string); t != "" {
						ob.CaseTitle = t
						ing.Observations[sig] = ob
						continue
					}
				}
			}
			t, found, err := rs.CaseTitle(ctx, rec.Project, ob.Cases[0])
			if err != nil && !IsPermanent(err) {
				return "", fmt.Errorf("reading case %s-%d: %w", rec.Project, ob.Cases[0], err)
			}
			if found {
				ob.CaseTitle = t
				ing.Observations[sig] = ob
			}
		}
	}
	failing, clean := 0, 0
	for _, ob := range ing.Observations {
		if ob.Failed > 0 {
			failing++
		} else {
			clean++
		}
	}
	detail := fmt.Sprintf("run %d: %d failing signatures, %d clean", rec.RunID, failing, clean)
	if len(recovered) > 0 {
		detail += fmt.Sprintf("; %d environment issues recovered", len(recovered))
	}
	if dryRun {
		return detail, nil
	}
	refs := recovered
	var pairs []string
	for _, sig := range slices.Sorted(maps.Keys(ing.Observations)) {
		ob := ing.Observations[sig]
		ref := FailureRef(route, rec.Project, sig)
		refs = append(refs, ref)
		if ob.Failed > 0 {
			for _, c := range ob.Cases {
				pairs = append(pairs, strconv.FormatInt(c, 10)+":"+sig)
			}
		}
		err := e.updateSnapshot(ctx, ref, func(s *State) bool { return observe(s, ob, pol.KeepRuns) })
		if err != nil {
			return "", err
		}
	}
	if len(pairs) > 0 {
		err := e.updateSnapshot(ctx, caseIndexRef(route, rec.Project), func(s *State) bool {
			add := map[string]any{}
			for _, p := range pairs {
				if _, ok := s.Attrs["cases/"+p]; !ok {
					add["cases/"+p] = true
				}
			}
			return setAttrs(s, add)
		})
		if err != nil {
			return "", err
		}
	}
	return detail, e.enqueueFailures(ctx, route, refs)
}

func (e *Engine) enqueueFailures(ctx context.Context, route string, refs []EntityRef) error {
	if len(refs) == 0 {
		return nil
	}
	keys := make([]Key, len(refs))
	for i, r := range refs {
		keys[i] = Key{Route: route, EntityRef: r}
	}
	if err := e.o.Store.Enqueue(ctx, keys, false, e.o.Clock.Now()); err != nil {
		return err
	}
	e.Wake()
	return nil
}

// updateSnapshot applies f to the stored state of a failure entity and
// saves it with compare-and-set. Failure entities have no events, so
// LastSeq serves as the version that makes concurrent ingests of
// different runs both land.
func (e *Engine) updateSnapshot(ctx context.Context, ref EntityRef, f func(*State) bool) error {
	for range 20 {
		snap, err := e.o.Store.Snapshot(ctx, ref)
		if err != nil {
			return err
		}
		prev := snap.LastSeq
		if !f(&snap.State) {
			return nil // nothing new
		}
		snap.Ref, snap.LastSeq = ref, prev+1
		ok, err := e.o.Store.SaveSnapshot(ctx, snap, prev)
		if err != nil || ok {
			return err
		}
	}
	return fmt.Errorf("saving %s: too many concurrent writers", ref)
}

// setAttrs sets plain attributes; false when nothing changed.
func setAttrs(s *State, attrs map[string]any) bool {
	changed := false
	if s.Attrs == nil {
		s.Attrs = map[string]Attr{}
	}
	for k, v := range attrs {
		nv := jsonRound(v)
		if cur, ok := s.Attrs[k]; ok && jsonEqual(cur.V, nv) {
			continue
		}
		s.Attrs[k] = Attr{V: nv}
		changed = true
	}
	if changed {
		s.Read = true
	}
	return changed
}

// observe stores one run's observation ("runs/<id>"), keeps the newest
// keep runs, and keeps text only on the newest three failing runs.
func observe(s *State, ob FailureRun, keep int) bool {
	if keep <= 0 {
		keep = DefaultKeepRuns
	}
	changed := setAttrs(s, map[string]any{"runs/" + strconv.FormatInt(ob.Run, 10): ob})
	runs := failureRuns(*s)
	if len(runs) > keep {
		for _, r := range runs[:len(runs)-keep] {
			delete(s.Attrs, "runs/"+strconv.FormatInt(r.Run, 10))
			changed = true
		}
		runs = runs[len(runs)-keep:]
	}
	texts := 0
	for i := len(runs) - 1; i >= 0; i-- {
		r := runs[i]
		if r.Failed == 0 || (r.Message == "" && r.Stack == "" && r.FailedStep == "") {
			continue
		}
		if texts++; texts > 3 {
			r.Message, r.Stack, r.FailedStep = "", "", ""
			s.Attrs["runs/"+strconv.FormatInt(r.Run, 10)] = Attr{V: jsonRound(r)}
			changed = true
		}
	}
	return changed
}

// failureRuns decodes a signature's observations, oldest first.
func failureRuns(s State) []FailureRun {
	var runs []FailureRun
	for k, a := range s.Attrs {
		if !strings.HasPrefix(k, "runs/") || a.V == nil {
			continue
		}
		var r FailureRun
		if b, err := json.Marshal(a.V); err == nil && json.Unmarshal(b, &r) == nil {
			runs = append(runs, r)
		}
	}
	slices.SortFunc(runs, func(a, b FailureRun) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		return int(a.Run - b.Run)
	})
	return runs
}

// caseIndex reads the case → signatures index.
func caseIndex(s State) map[int64][]string {
	out := map[int64][]string{}
	for k := range s.Attrs {
		rest, ok := strings.CutPrefix(k, "cases/")
		if !ok {
			continue
		}
		c, sig, ok := strings.Cut(rest, ":")
		id, err := strconv.ParseInt(c, 10, 64)
		if ok && err == nil {
			out[id] = append(out[id], sig)
		}
	}
	for _, v := range out {
		slices.Sort(v)
	}
	return out
}

// failureEntity turns a signature's stored state into what the mapping
// sees: the summarized lifecycle, complete (nothing about it is unknown).
func (e *Engine) failureEntity(k Key, st State) (Entity, error) {
	_, pol, ok := e.failureRoute(k.Route)
	if !ok {
		return Entity{}, Permanentf("route %s does not serve failures", k.Route)
	}
	return FailureEntity(k.EntityRef, st, pol), nil
}

// FailureEntity is the entity of a failure key: an environment issue's
// stored attributes, or a signature's lifecycle summarized from its runs.
// A signature with no stored run (a new or restored store whose links were
// rebuilt from the trackers) is not known: its entity is incomplete, so
// nothing is written over its issue until ingest (or the reconciler's
// re-read of recent runs) records a run again (invariant I7).
func FailureEntity(ref EntityRef, st State, pol FailurePolicy) Entity {
	ent := Entity{Ref: ref, Attrs: map[string]any{}, Complete: true}
	if env, _ := st.Attrs["environment"].V.(bool); env {
		for k, a := range st.Attrs {
			ent.Attrs[k] = jsonClone(a.V)
		}
		if r := attrInt(ent.Attrs["recovered_run"]); r > 0 && ent.Attrs["status"] == FailureClosed {
			ent.Attrs["recovered_run"] = r
			ent.Comments = []Comment{{ID: "failure-recovered", Body: fmt.Sprintf("Run %d was not an outage; closing.", r)}}
		}
	} else if runs := failureRuns(st); len(runs) > 0 {
		sum := SummarizeFailure(runs[len(runs)-1].Signature, runs, pol)
		ent.Attrs, ent.Comments = sum.Attrs, sum.Comments
	} else {
		ent.Complete = false
	}
	ent.Attrs["id"], ent.Attrs["project"] = ref.ID, ref.Project
	return ent
}

func jsonRound(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var out any
	if json.Unmarshal(b, &out) != nil {
		return v
	}
	return out
}

func jsonEqual(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}

// ingests reports whether k is a run key on a failure route.
func (e *Engine) ingests(k Key) bool {
	if k.Kind != KindRun {
		return false
	}
	ri, ok := e.o.Mapper.RouteInfo(k.Route)
	return ok && ri.Kind == KindFailure
}

// keyEntity is the entity a key's sync maps: failure keys summarize their
// stored runs (there is nothing to read from Qase for them).
func (e *Engine) keyEntity(ctx context.Context, k Key, o SyncOptions) (Entity, error) {
	if k.Kind != KindFailure {
		return e.entity(ctx, k.EntityRef, !o.DryRun, o.Pass, o.later)
	}
	snap, err := e.o.Store.Snapshot(ctx, k.EntityRef)
	if err != nil {
		return Entity{}, err
	}
	return e.failureEntity(k, snap.State)
}

// recentRunKeys are the run keys a reconcile pass ingests again for a
// failure route: the project's newest ReconcileRuns runs.
func (e *Engine) recentRunKeys(ctx context.Context, ri RouteInfo, project string) ([]Key, error) {
	_, pol, ok := e.failureRoute(ri.Name)
	rs, has := e.o.Source.(ResultSource)
	if !ok || !has {
		return nil, nil
	}
	ids, err := rs.RecentRuns(ctx, project, pol.ReconcileRuns)
	if err != nil {
		return nil, fmt.Errorf("listing recent runs of %s: %w", project, err)
	}
	keys := make([]Key, 0, len(ids))
	for _, id := range ids {
		keys = append(keys, Key{Route: ri.Name, EntityRef: EntityRef{Project: project, Kind: KindRun, ID: id}})
	}
	return keys, nil
}

// IngestEntities are the entities one ingested run gives a route when no
// earlier run was seen (plan --run): one per signature in signature order,
// or the environment entity of an outage.
func IngestEntities(route, project string, ing RunIngest, pol FailurePolicy) []Entity {
	if ing.Outage != nil {
		var st State
		setAttrs(&st, OutageAttrs(*ing.Outage))
		return []Entity{FailureEntity(FailureRef(route, project, OutageSignature(ing.Outage.Run)), st, pol)}
	}
	var out []Entity
	for _, sig := range slices.Sorted(maps.Keys(ing.Observations)) {
		var st State
		observe(&st, ing.Observations[sig], pol.WithDefaults().KeepRuns)
		out = append(out, FailureEntity(FailureRef(route, project, sig), st, pol))
	}
	return out
}

// unknownFailure says why a failure key has nothing to sync ("" if it
// has): no run of its signature is stored (a lost or restored store, a
// signature older than the reconciler's window), so nothing about its
// issue is known (invariant I7); the issue is adopted once a run is.
func unknownFailure(k Key, ent Entity) string {
	if k.Kind != KindFailure || ent.Complete {
		return ""
	}
	return "no run of this signature is recorded (yet); its issue is left as it is"
}

// outageIndexRef holds, per route and project, the newest run that was not
// an outage ("healthy_run") and the outage runs whose environment issue is
// open ("outages/<run>").
func outageIndexRef(route, project string) EntityRef {
	return EntityRef{Project: project, Kind: KindFailure, ID: SignatureID(route, "\x00outages")}
}

// recordOutage stores a run's environment issue, then notes it open in the
// outage index; a healthy run newer than it, seen before or concurrently,
// closes it at once. The issue is written before the index, so a healthy
// run that finds the index entry finds the issue too.
func (e *Engine) recordOutage(ctx context.Context, route, project string, o Outage) error {
	ref := FailureRef(route, project, OutageSignature(o.Run))
	attrs := OutageAttrs(o)
	err := e.updateSnapshot(ctx, ref, func(s *State) bool {
		a := maps.Clone(attrs)
		if s.Attrs["status"].V == FailureClosed {
			delete(a, "status") // recovered already: never reopened by a repeat
		}
		return setAttrs(s, a)
	})
	if err != nil {
		return err
	}
	var healthy int64
	key := "outages/" + strconv.FormatInt(o.Run, 10)
	err = e.updateSnapshot(ctx, outageIndexRef(route, project), func(s *State) bool {
		healthy = attrInt(s.Attrs["healthy_run"].V)
		if _, ok := s.Attrs[key]; ok || healthy > o.Run {
			return false
		}
		return setAttrs(s, map[string]any{key: true})
	})
	if err != nil || healthy <= o.Run {
		return err
	}
	_, err = e.recoverOutages(ctx, route, project, healthy)
	if err == nil {
		err = e.closeOutage(ctx, ref, healthy)
	}
	return err
}

// recoverOutages closes the environment issues of the outage runs older
// than run (a run that was not an outage) and records run as the newest
// healthy one. Issues are closed before their index entries are dropped,
// so a retry after a crash closes what is left.
func (e *Engine) recoverOutages(ctx context.Context, route, project string, run int64) ([]EntityRef, error) {
	idx, err := e.o.Store.Snapshot(ctx, outageIndexRef(route, project))
	if err != nil {
		return nil, err
	}
	var closed []string
	var refs []EntityRef
	for _, k := range slices.Sorted(maps.Keys(idx.State.Attrs)) {
		r, err := strconv.ParseInt(strings.TrimPrefix(k, "outages/"), 10, 64)
		if !strings.HasPrefix(k, "outages/") || err != nil || r >= run {
			continue
		}
		ref := FailureRef(route, project, OutageSignature(r))
		if err := e.closeOutage(ctx, ref, run); err != nil {
			return nil, err
		}
		closed, refs = append(closed, k), append(refs, ref)
	}
	err = e.updateSnapshot(ctx, outageIndexRef(route, project), func(s *State) bool {
		changed := false
		for _, k := range closed {
			if _, ok := s.Attrs[k]; ok {
				delete(s.Attrs, k)
				changed = true
			}
		}
		if attrInt(s.Attrs["healthy_run"].V) < run {
			changed = setAttrs(s, map[string]any{"healthy_run": run}) || changed
		}
		return changed
	})
	return refs, err
}

// closeOutage marks an environment issue recovered by run (once: the first
// recovery stands).
func (e *Engine) closeOutage(ctx context.Context, ref EntityRef, run int64) error {
	return e.updateSnapshot(ctx, ref, func(s *State) bool {
		if env, _ := s.Attrs["environment"].V.(bool); !env || s.Attrs["status"].V == FailureClosed {
			return false
		}
		return setAttrs(s, map[string]any{"status": FailureClosed, "recovered_run": run})
	})
}

// attrInt reads a stored number (JSON numbers decode as float64).
func attrInt(v any) int64 {
	switch n := v.(type) {
	case float64:
		return int64(n)
	case int64:
		return n
	case int:
		return int64(n)
	}
	return 0
}
