package jira

import (
	"context"
	"net/url"
	"strings"

	jira "github.com/andygrunwald/go-jira"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// SetStatus moves the issue to status through workflow transitions:
//  1. nothing if it is already there;
//  2. a transition whose target is status;
//  3. the configured via-path (Options.Transitions), one transition per hop;
//  4. otherwise an exploration of at most 3 transitions that never revisits
//     a status. Jira cannot show transitions of a status the issue is not
//     in, so exploring really moves the issue; configure via-paths for
//     workflows where the first available transition leads astray.
//
// An unreachable status is Permanent, naming the current status and the
// transitions available there. reason is sent as the resolution when the
// final transition's screen has a resolution field; otherwise ignored.
func (t *Tracker) SetStatus(ctx context.Context, ref qsync.IssueRef, status, reason string) error {
	status = strings.TrimSpace(status)
	if status == "" {
		return nil
	}
	id := issueID(ref)
	if id == "" {
		return qsync.Permanentf("jira transition: issue ref has no id or key")
	}
	cur, err := t.currentStatus(ctx, id)
	if err != nil {
		return err
	}
	if strings.EqualFold(cur, status) {
		return nil
	}
	w := &walk{t: t, id: id, target: status, reason: reason, path: []string{cur}, visited: map[string]bool{strings.ToLower(cur): true}}
	log := t.log.WithField("issue", ref.String())

	if err := w.refresh(ctx); err != nil {
		return err
	}
	if done, err := w.finish(ctx); done || err != nil {
		return err
	}
	for _, hop := range t.viaPath(status, cur) {
		tr := findTo(w.trs, hop)
		if tr == nil {
			log.WithField("hop", hop).Info("via-path hop not available here; exploring instead")
			break
		}
		if err := w.step(ctx, *tr); err != nil {
			return err
		}
		if done, err := w.finish(ctx); done || err != nil {
			return err
		}
	}
	for hops := 0; hops < maxHops-1; hops++ {
		tr := w.pick()
		if tr == nil {
			break
		}
		log.WithField("via", tr.To.Name).Info("exploring the workflow towards " + status)
		if err := w.step(ctx, *tr); err != nil {
			return err
		}
		if done, err := w.finish(ctx); done || err != nil {
			return err
		}
	}
	return qsync.Permanentf("jira transition: status %q is unreachable from %q (walked %s); available transitions: %s",
		status, w.path[len(w.path)-1], strings.Join(w.path, " → "), describe(w.trs))
}

// walk is one SetStatus run: where the issue is and what it may do next.
type walk struct {
	t       *Tracker
	id      string
	target  string
	reason  string
	path    []string
	visited map[string]bool
	trs     []jira.Transition
}

func (w *walk) refresh(ctx context.Context) error {
	return w.t.call(ctx, "transitions", nfGone, func(ctx context.Context) (*jira.Response, error) {
		var resp *jira.Response
		var err error
		w.trs, resp, err = w.t.client.Issue.GetTransitionsWithContext(ctx, url.PathEscape(w.id))
		return resp, err
	})
}

// finish takes a transition straight to the target, if there is one.
func (w *walk) finish(ctx context.Context) (bool, error) {
	tr := findTo(w.trs, w.target)
	if tr == nil {
		return false, nil
	}
	return true, w.t.transition(ctx, w.id, *tr, w.reason)
}

// step takes an intermediate transition and reads the next choices.
func (w *walk) step(ctx context.Context, tr jira.Transition) error {
	if err := w.t.transition(ctx, w.id, tr, ""); err != nil {
		return err
	}
	w.path = append(w.path, tr.To.Name)
	w.visited[strings.ToLower(tr.To.Name)] = true
	return w.refresh(ctx)
}

// pick chooses the first transition (in Jira's order) to a status not yet
// visited, so the walk cannot cycle.
func (w *walk) pick() *jira.Transition {
	for i := range w.trs {
		if n := strings.ToLower(strings.TrimSpace(w.trs[i].To.Name)); n != "" && !w.visited[n] {
			return &w.trs[i]
		}
	}
	return nil
}

func (t *Tracker) transition(ctx context.Context, id string, tr jira.Transition, reason string) error {
	payload := map[string]any{"transition": map[string]string{"id": tr.ID}}
	if reason != "" {
		if _, ok := tr.Fields["resolution"]; ok {
			payload["fields"] = map[string]any{"resolution": map[string]string{"name": reason}}
		}
	}
	return t.call(ctx, "transition", nfGone, func(ctx context.Context) (*jira.Response, error) {
		return t.client.Issue.DoTransitionWithPayloadWithContext(ctx, url.PathEscape(id), payload)
	})
}

func (t *Tracker) currentStatus(ctx context.Context, id string) (string, error) {
	var raw rawIssue
	path := "rest/api/2/issue/" + url.PathEscape(id) + "?fields=status"
	err := t.call(ctx, "get", nfGone, func(ctx context.Context) (*jira.Response, error) {
		return t.do(ctx, "GET", path, nil, &raw)
	})
	if err != nil {
		return "", err
	}
	var st named
	decode(raw.Fields["status"], &st)
	return st.Name, nil
}

// viaPath returns the configured hops towards status that still lie ahead
// of cur.
func (t *Tracker) viaPath(status, cur string) []string {
	hops := t.via[strings.ToLower(status)]
	for i, h := range hops {
		if strings.EqualFold(h, cur) {
			return hops[i+1:]
		}
	}
	return hops
}

func findTo(trs []jira.Transition, status string) *jira.Transition {
	for i := range trs {
		if strings.EqualFold(strings.TrimSpace(trs[i].To.Name), strings.TrimSpace(status)) {
			return &trs[i]
		}
	}
	return nil
}

func describe(trs []jira.Transition) string {
	if len(trs) == 0 {
		return "none"
	}
	parts := make([]string, len(trs))
	for i, tr := range trs {
		parts[i] = tr.Name + " → " + tr.To.Name
	}
	return strings.Join(parts, ", ")
}
