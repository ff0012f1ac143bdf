package main

import (
	"context"
	"fmt"
	"io"

	"github.com/qase-sync/qase-sync/adapters/qase"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// planRunOutput is what `plan --run` prints: per failure route, the
// operations of each signature the recorded run gives.
type planRunOutput struct {
	Run    string         `json:"run"`
	Total  int            `json:"total"`
	Failed int            `json:"failed"`
	Routes []planRunRoute `json:"routes"`
	Ignore string         `json:"ignored,omitempty"`
}

type planRunRoute struct {
	Route      string             `json:"route"`
	Outage     string             `json:"outage,omitempty"`
	Signatures []planRunSignature `json:"signatures"`
}

type planRunSignature struct {
	Signature string    `json:"signature"`
	Key       string    `json:"key"`
	Plan      planRoute `json:"plan"`
}

// planRun plans a recorded run for every failure route that takes its
// project, as if nothing had been filed before: the same ingest, mapping
// and planner the service runs, with no store and no Qase API.
func planRun(ctx context.Context, c commonFlags, file string, stdout, stderr io.Writer) error {
	body, err := readInput(file)
	if err != nil {
		return err
	}
	rec, err := qase.RecordedRun(body)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	a, err := loadApp(c.config, stderr, appPlan)
	if err != nil {
		return err
	}
	out := planRunOutput{Run: qsync.EntityRef{Project: rec.Project, Kind: qsync.KindRun, ID: rec.RunID}.String(), Total: rec.Total}
	for _, r := range rec.Results {
		if r.Status == "failed" {
			out.Failed++
		}
	}
	routes := a.mapper.Routes("run.completed", rec.Project, qsync.KindRun)
	for _, route := range routes {
		pol, ok := a.mapper.FailurePolicy(route)
		if !ok {
			continue
		}
		sign := func(r qsync.FailureResult) (string, error) { return a.mapper.Signature(route, rec.Project, r) }
		ing, err := qsync.PlanRunIngest(rec, pol, sign, nil)
		if err != nil {
			return fmt.Errorf("route %s: %w", route, err)
		}
		pr := planRunRoute{Route: route}
		if ing.Outage != nil {
			pr.Outage = ing.Outage.Reason
		}
		for _, ent := range qsync.IngestEntities(route, rec.Project, ing, pol) {
			p, err := a.planRoute(ctx, route, ent)
			if err != nil {
				return err
			}
			sig, _ := ent.Attrs["signature"].(string)
			pr.Signatures = append(pr.Signatures, planRunSignature{Signature: sig, Key: qsync.Key{Route: route, EntityRef: ent.Ref}.String(), Plan: p})
		}
		out.Routes = append(out.Routes, pr)
	}
	if len(out.Routes) == 0 {
		out.Ignore = "no failure route takes project " + rec.Project
	}
	if c.output == "json" {
		return writeIndented(stdout, out)
	}
	printRunPlan(stdout, out)
	return nil
}

func printRunPlan(w io.Writer, out planRunOutput) {
	fmt.Fprintf(w, "recorded run %s: %d results, %d failed\n", out.Run, out.Total, out.Failed)
	if out.Ignore != "" {
		fmt.Fprintf(w, "  %s\n", out.Ignore)
	}
	for _, r := range out.Routes {
		fmt.Fprintf(w, "\nroute %s: %d signatures\n", r.Route, len(r.Signatures))
		if r.Outage != "" {
			fmt.Fprintf(w, "  outage: %s; one environment issue instead of one per signature\n", r.Outage)
		}
		for _, s := range r.Signatures {
			fmt.Fprintf(w, "\n  signature %q (%s) → tracker %s (%s): %s\n", s.Signature, s.Key, s.Plan.Tracker, s.Plan.Type, s.Plan.Verdict)
			for i, op := range s.Plan.Ops {
				fmt.Fprintf(w, "    %d. %s\n", i+1, describeOp(op.Op))
				for _, rq := range op.Requests {
					fmt.Fprintf(w, "       %s %s\n", rq.Method, rq.Path)
				}
				if op.Note != "" {
					fmt.Fprintf(w, "       (%s)\n", op.Note)
				}
			}
		}
	}
}

// routeTracker is the tracker a route targets ("" if unknown).
func (a *app) routeTracker(route string) string {
	ri, _ := a.mapper.RouteInfo(route)
	return ri.Tracker
}
