package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// explain answers "why does this issue say what it says": for a tracker
// issue (its key) or a Qase entity (PROJECT/KIND/ID), every sync of each
// route's key, newest first: the tracker changes, the request each one
// sends, the route's rule behind it, and the Qase events that caused it.
// Built from the ledger, the stored events and their deliveries, and the
// links; nothing is read from a tracker or Qase.

type explanation struct {
	Query string       `json:"query"`
	Keys  []explainKey `json:"keys"`
}

type explainKey struct {
	Key         string          `json:"key"`
	Route       string          `json:"route"`
	Entity      string          `json:"entity"`
	Tracker     string          `json:"tracker,omitempty"`
	TrackerType string          `json:"tracker_type,omitempty"`
	DryRun      bool            `json:"dry_run,omitempty"`
	Issue       *qsync.IssueRef `json:"issue,omitempty"`
	LinkState   string          `json:"link_state,omitempty"`
	Pending     []explainEvent  `json:"pending,omitempty"` // accepted, not yet synced
	Syncs       []explainChange `json:"syncs"`             // newest first
}

type explainChange struct {
	At            time.Time      `json:"at"`
	Outcome       string         `json:"outcome"`
	Issue         string         `json:"issue,omitempty"`
	Ops           []explainOp    `json:"ops,omitempty"`
	Detail        string         `json:"detail,omitempty"`
	FailedRequest string         `json:"failed_request,omitempty"`
	Cause         string         `json:"cause"`
	Events        []explainEvent `json:"events,omitempty"` // newest first
}

type explainOp struct {
	Op      string `json:"op"`
	Rule    string `json:"rule"`
	Request string `json:"request"`
}

type explainEvent struct {
	Seq        int64     `json:"seq"`
	Name       string    `json:"name"`
	Timestamp  time.Time `json:"timestamp"`
	ReceivedAt time.Time `json:"received_at"`
	Actor      int64     `json:"actor_id,omitempty"`
	Dedup      string    `json:"dedup_key"`
	Outcome    string    `json:"outcome"`
}

// errExplainQuery is a query that names nothing explain can read.
var errExplainQuery = errors.New("want an issue key (QA-1, owner/repo#12) or PROJECT/KIND/ID (ID/defect/1)")

// explain builds the explanation for q.
func (a *app) explain(ctx context.Context, q string) (explanation, error) {
	q = strings.TrimSpace(q)
	out := explanation{Query: q}
	if q == "" {
		return out, fmt.Errorf("%w", errExplainQuery)
	}
	var keys []qsync.Key
	links := map[qsync.Key]qsync.Link{}
	if ref, ok := parseEntityRef(q); ok {
		for _, name := range a.mapper.RouteNames() {
			if ri, ok := a.mapper.RouteInfo(name); ok && ri.Kind == ref.Kind {
				keys = append(keys, qsync.Key{Route: name, EntityRef: ref})
			}
		}
	} else {
		ls, err := a.linksOfIssue(ctx, q)
		if err != nil {
			return out, err
		}
		if len(ls) == 0 {
			return out, fmt.Errorf("no issue %q is linked to a Qase entity: %w", q, qsync.ErrNotFound)
		}
		for _, l := range ls {
			keys = append(keys, l.Key)
			links[l.Key] = l
		}
	}
	for _, k := range keys {
		ek, err := a.explainKey(ctx, k, links)
		if err != nil {
			return out, err
		}
		if ek.Issue != nil || len(ek.Syncs) > 0 || len(ek.Pending) > 0 {
			out.Keys = append(out.Keys, ek)
		}
	}
	if len(out.Keys) == 0 {
		return out, fmt.Errorf("nothing recorded for %s: %w", q, qsync.ErrNotFound)
	}
	return out, nil
}

func parseEntityRef(q string) (qsync.EntityRef, bool) {
	parts := strings.Split(q, "/")
	if len(parts) != 3 {
		return qsync.EntityRef{}, false
	}
	id, err := strconv.ParseInt(parts[2], 10, 64)
	kind := qsync.Kind(strings.ToLower(parts[1]))
	if err != nil || id <= 0 || !kind.Valid() || parts[0] == "" {
		return qsync.EntityRef{}, false
	}
	return qsync.EntityRef{Project: strings.ToUpper(parts[0]), Kind: kind, ID: id}, true
}

// linksOfIssue finds the links whose issue has this key (any case), or
// "project#id" / "project/id". Links are few next to events; a scan keeps
// the store port small.
func (a *app) linksOfIssue(ctx context.Context, q string) ([]qsync.Link, error) {
	var out []qsync.Link
	var after qsync.Key
	for {
		page, err := a.store.Links(ctx, "", after, 500)
		if err != nil {
			return nil, err
		}
		for _, l := range page {
			is := l.Issue
			if strings.EqualFold(is.Key, q) || strings.EqualFold(is.Project+"#"+is.ID, q) || strings.EqualFold(is.Project+"/"+is.ID, q) {
				out = append(out, l)
			}
		}
		if len(page) < 500 {
			return out, nil
		}
		after = page[len(page)-1].Key
	}
}

func (a *app) explainKey(ctx context.Context, k qsync.Key, links map[qsync.Key]qsync.Link) (explainKey, error) {
	ek := explainKey{Key: k.String(), Route: k.Route, Entity: k.EntityRef.String()}
	if ri, ok := a.mapper.RouteInfo(k.Route); ok {
		ek.Tracker = ri.Tracker
		ek.TrackerType = a.trackerType(ri.Tracker)
		for _, tc := range a.cfg.Trackers {
			if tc.Name == ri.Tracker {
				ek.DryRun = tc.DryRun || tc.Type == "dryrun"
			}
		}
	}
	l, found := links[k]
	if !found {
		var err error
		if l, found, err = a.store.Link(ctx, k); err != nil {
			return ek, err
		}
	}
	if found {
		is := l.Issue
		ek.Issue, ek.LinkState = &is, string(l.State)
	}
	ledger, err := a.store.Ledger(ctx, k, 0)
	if err != nil {
		return ek, err
	}
	dels, err := a.store.Deliveries(ctx, k, 0)
	if err != nil {
		return ek, err
	}
	evs, err := a.store.EventsAfter(ctx, k.EntityRef, 0, 0)
	if err != nil {
		return ek, err
	}
	bySeq := make(map[int64]qsync.Event, len(evs))
	for _, ev := range evs {
		bySeq[ev.Seq] = ev
	}
	// Attribute each delivered event to the first sync (oldest first) that
	// finished after it arrived and covered its generation: what the store
	// did when it completed the job (events up to job.Gen get its outcome).
	sort.Slice(dels, func(i, j int) bool { return dels[i].EventSeq < dels[j].EventSeq })
	used := make([]bool, len(dels))
	changes := make([]explainChange, len(ledger))
	for i := len(ledger) - 1; i >= 0; i-- {
		e := ledger[i]
		ch := explainChange{At: e.At, Outcome: string(e.Outcome), Issue: e.Issue, Detail: e.Detail, FailedRequest: e.Request}
		for _, op := range e.Ops {
			ch.Ops = append(ch.Ops, a.explainOp(k, ek, op))
		}
		for j, d := range dels {
			ev, ok := bySeq[d.EventSeq]
			if used[j] || !ok || d.Gen > e.Gen || ev.ReceivedAt.After(e.At) {
				continue
			}
			used[j] = true
			ch.Events = append([]explainEvent{toExplainEvent(ev, d.Status)}, ch.Events...)
		}
		switch {
		case len(ch.Events) > 0:
			ch.Cause = "qase events"
		default:
			ch.Cause = "no new event: a reconcile pass, a retried dead letter or a restart"
		}
		changes[i] = ch
	}
	ek.Syncs = changes
	for j := len(dels) - 1; j >= 0; j-- {
		if ev, ok := bySeq[dels[j].EventSeq]; ok && !used[j] && dels[j].Status == "pending" {
			ek.Pending = append(ek.Pending, toExplainEvent(ev, dels[j].Status))
		}
	}
	return ek, nil
}

func toExplainEvent(ev qsync.Event, status string) explainEvent {
	return explainEvent{Seq: ev.Seq, Name: ev.Name, Timestamp: ev.Timestamp, ReceivedAt: ev.ReceivedAt, Actor: ev.ActorID, Dedup: ev.DedupKey, Outcome: status}
}

// explainOp names the rule behind a ledger op and the request it sends.
func (a *app) explainOp(k qsync.Key, ek explainKey, op string) explainOp {
	kind, arg, _ := strings.Cut(op, ":")
	r := explainOp{Op: op}
	switch qsync.OpKind(kind) {
	case qsync.OpCreate:
		r.Rule = "route " + k.Route + ": when and create_when held; title, body, labels and the other fields as mapped"
	case qsync.OpUpdate:
		r.Rule = "route " + k.Route + ": mapped field(s) " + strings.ReplaceAll(arg, ",", ", ") + " differed from the last applied values"
	case qsync.OpSetStatus:
		r.Rule = "route " + k.Route + ": status (wants " + strconv.Quote(arg) + ")"
	case qsync.OpComment:
		id := strings.TrimPrefix(arg, k.Route+":")
		r.Rule = "route " + k.Route + ": comments[" + id + "] (its when held; posted once)"
	case qsync.OpQaseStatus, qsync.OpQaseUpdate:
		r.Rule = "route " + k.Route + ": two_way: the tracker changed since the baseline; written back to Qase"
	case qsync.OpQaseLink:
		r.Rule = "route " + k.Route + ": write_back: the issue's link written to Qase"
	default:
		r.Rule = "route " + k.Route
	}
	r.Request = requestOf(ek, qsync.OpKind(kind))
	switch qsync.OpKind(kind) {
	case qsync.OpQaseStatus:
		r.Request = "PATCH /v1/defect/" + k.Project + "/status/" + strconv.FormatInt(k.ID, 10)
	case qsync.OpQaseUpdate:
		r.Request = "PATCH /v1/defect/" + k.Project + "/" + strconv.FormatInt(k.ID, 10)
	case qsync.OpQaseLink:
		r.Request = "POST /v1/run/" + k.Project + "/external-issue or /v1/case/" + k.Project + "/external-issue/attach"
	}
	return r
}

// requestOf is the tracker API request an op sends (the adapters' paths).
func requestOf(ek explainKey, kind qsync.OpKind) string {
	issue, project := "{issue}", "{project}"
	if ek.Issue != nil {
		issue, project = ek.Issue.ID, ek.Issue.Project
	}
	var req string
	switch ek.TrackerType {
	case "jira":
		req = map[qsync.OpKind]string{
			qsync.OpCreate:    "POST /rest/api/2/issue (+ PUT /rest/api/2/issue/" + issue + "/properties/qase-sync)",
			qsync.OpUpdate:    "PUT /rest/api/2/issue/" + issue,
			qsync.OpSetStatus: "POST /rest/api/2/issue/" + issue + "/transitions",
			qsync.OpComment:   "POST /rest/api/2/issue/" + issue + "/comment",
		}[kind]
	case "github":
		req = map[qsync.OpKind]string{
			qsync.OpCreate:    "POST /repos/" + project + "/issues",
			qsync.OpUpdate:    "PATCH /repos/" + project + "/issues/" + issue + " (labels: POST/DELETE …/labels)",
			qsync.OpSetStatus: "PATCH /repos/" + project + "/issues/" + issue + " (state)",
			qsync.OpComment:   "POST /repos/" + project + "/issues/" + issue + "/comments",
		}[kind]
	}
	if req == "" {
		req = string(kind)
	}
	if ek.DryRun {
		req += " — dry run: logged, not sent"
	}
	return req
}

func printExplanation(w io.Writer, x explanation) {
	for i, k := range x.Keys {
		if i > 0 {
			fmt.Fprintln(w)
		}
		issue := "no issue linked"
		if k.Issue != nil {
			issue = fmt.Sprintf("%s (tracker %s: %s, id %s", k.Issue.String(), k.Tracker, k.TrackerType, k.Issue.ID)
			if k.Issue.URL != "" {
				issue += ", " + k.Issue.URL
			}
			issue += ")"
		}
		fmt.Fprintf(w, "%s ← route %s, Qase %s", issue, k.Route, k.Entity)
		if k.LinkState != "" {
			fmt.Fprintf(w, " [link %s]", k.LinkState)
		}
		fmt.Fprintln(w)
		for _, ev := range k.Pending {
			fmt.Fprintf(w, "  pending: %s\n", describeEvent(ev))
		}
		for _, ch := range k.Syncs {
			fmt.Fprintf(w, "  %s  %s", ch.At.UTC().Format(time.RFC3339), ch.Outcome)
			if len(ch.Ops) == 0 && ch.Outcome != string(qsync.OutcomeDead) {
				fmt.Fprint(w, " (no tracker change)")
			}
			fmt.Fprintln(w)
			for _, op := range ch.Ops {
				fmt.Fprintf(w, "    %s\n      rule:    %s\n      request: %s\n", op.Op, op.Rule, op.Request)
			}
			if ch.Detail != "" {
				fmt.Fprintf(w, "    detail: %s\n", oneLine(ch.Detail, 300))
			}
			if ch.FailedRequest != "" {
				fmt.Fprintf(w, "    failed request: %s\n", ch.FailedRequest)
			}
			if len(ch.Events) == 0 {
				fmt.Fprintf(w, "    cause: %s\n", ch.Cause)
			}
			for _, ev := range ch.Events {
				fmt.Fprintf(w, "    ← %s\n", describeEvent(ev))
			}
		}
	}
}

func describeEvent(ev explainEvent) string {
	s := fmt.Sprintf("event #%d %s (in Qase %s, received %s, dedup %s", ev.Seq, ev.Name,
		ev.Timestamp.UTC().Format(time.RFC3339), ev.ReceivedAt.UTC().Format(time.RFC3339), short(ev.Dedup))
	if ev.Actor != 0 {
		s += fmt.Sprintf(", team member %d", ev.Actor)
	}
	return s + ")"
}

func cmdExplain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a, c, pos, err := storeCommand("explain", args, 1, "explain ISSUE-KEY | PROJECT/KIND/ID -c FILE", stderr)
	if err != nil {
		return err
	}
	defer a.close()
	x, err := a.explain(ctx, pos[0])
	if err != nil {
		return err
	}
	if c.output == "json" {
		return writeIndented(stdout, x)
	}
	printExplanation(stdout, x)
	return nil
}
