package jira

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	jira "github.com/andygrunwald/go-jira"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// SetStatus moves the issue to status through workflow transitions. The
// route is chosen before anything moves, from what Jira offers in the
// issue's current status (one read brings both: the issue's status with
// its transitions expanded):
//  1. nothing if it is already there;
//  2. a transition available now whose target is status;
//  3. the configured via-path (Options.Transitions) towards status, when
//     its first remaining hop is available now; one transition per hop,
//     finishing early when status becomes directly reachable.
//
// Nothing else is tried: Jira cannot show the transitions of a status the
// issue is not in, so exploring would really move the issue, through
// closed states too. With no route, no transition is made and the error
// is a Permanent *qsync.UnreachableError naming the available transitions.
// reason is sent as the resolution when the final transition's screen has
// a resolution field; otherwise ignored.
func (t *Tracker) SetStatus(ctx context.Context, ref qsync.IssueRef, status, reason string) error {
	return t.setStatus(ctx, ref, status, reason, nil)
}

// SetStatusWithComment implements sync.StatusCommenter: SetStatus, and c
// posted as AddComment posts it (stamped), in the final transition's
// request (update.comment) when that transition's screen has the comment
// field; otherwise, or when the issue is in status already, as a separate
// comment after the transition. An UnreachableError means nothing was
// written, the comment included.
func (t *Tracker) SetStatusWithComment(ctx context.Context, ref qsync.IssueRef, status, reason string, c qsync.Comment) error {
	if c.ID == "" {
		return qsync.Permanentf("jira comment: comment has no id")
	}
	return t.setStatus(ctx, ref, status, reason, &c)
}

var _ qsync.StatusCommenter = (*Tracker)(nil)

func (t *Tracker) setStatus(ctx context.Context, ref qsync.IssueRef, status, reason string, c *qsync.Comment) error {
	status = strings.TrimSpace(status)
	if status == "" {
		if c != nil {
			return t.AddComment(ctx, ref, *c)
		}
		return nil
	}
	id := issueID(ref)
	if id == "" {
		return qsync.Permanentf("jira transition: issue ref has no id or key")
	}
	cur, trs, err := t.statusAndTransitions(ctx, id)
	if err != nil {
		return err
	}
	if strings.EqualFold(cur, status) {
		if c != nil {
			return t.AddComment(ctx, ref, *c)
		}
		return nil
	}
	if tr := findTo(trs, status); tr != nil {
		return t.finalTransition(ctx, ref, *tr, reason, c)
	}
	hops := t.viaPath(status, cur)
	if len(hops) == 0 || findHop(trs, hops[0]) == nil {
		detail := "available transitions: " + describe(trs)
		if len(hops) > 0 {
			detail = fmt.Sprintf("configured path starts with %q, not available here; %s", hops[0], detail)
		}
		return qsync.Permanent(&qsync.UnreachableError{From: cur, To: status, Detail: detail})
	}
	log := t.log.WithField("issue", ref.String())
	walked := []string{cur}
	for _, hop := range hops {
		tr := findHop(trs, hop)
		if tr == nil {
			// Only a misconfigured path gets here (its first hop was
			// available): the issue has moved, so this is no
			// UnreachableError.
			return qsync.Permanentf("jira transition: configured path to %q breaks at %q (walked %s); available transitions: %s",
				status, hop, strings.Join(walked, " → "), describe(trs))
		}
		log.WithField("via", tr.To.Name).Info("taking the configured path towards " + status)
		if err := t.transition(ctx, id, *tr, "", nil); err != nil {
			return err
		}
		walked = append(walked, tr.To.Name)
		if trs, err = t.transitions(ctx, id); err != nil {
			return err
		}
		if tr := findTo(trs, status); tr != nil {
			return t.finalTransition(ctx, ref, *tr, reason, c)
		}
	}
	return qsync.Permanentf("jira transition: configured path to %q ends at %q without reaching it (walked %s); available transitions: %s",
		status, walked[len(walked)-1], strings.Join(walked, " → "), describe(trs))
}

// finalTransition takes tr with the resolution and, when the transition's
// screen takes one, the comment; a comment the screen does not take is
// posted after the transition.
func (t *Tracker) finalTransition(ctx context.Context, ref qsync.IssueRef, tr jira.Transition, reason string, c *qsync.Comment) error {
	_, rides := tr.Fields["comment"]
	if c != nil && rides {
		return t.transition(ctx, issueID(ref), tr, reason, c)
	}
	if err := t.transition(ctx, issueID(ref), tr, reason, nil); err != nil {
		return err
	}
	if c != nil {
		return t.AddComment(ctx, ref, *c)
	}
	return nil
}

// statusAndTransitions reads the issue's status and the transitions
// available from it, with their screens' fields, in one request.
func (t *Tracker) statusAndTransitions(ctx context.Context, id string) (string, []jira.Transition, error) {
	var raw struct {
		Fields struct {
			Status named `json:"status"`
		} `json:"fields"`
		Transitions []jira.Transition `json:"transitions"`
	}
	path := "rest/api/2/issue/" + url.PathEscape(id) + "?fields=status&expand=transitions.fields"
	err := t.call(ctx, "get", nfGone, func(ctx context.Context) (*jira.Response, error) {
		return t.do(ctx, "GET", path, nil, &raw)
	})
	if err != nil {
		return "", nil, err
	}
	return raw.Fields.Status.Name, raw.Transitions, nil
}

func (t *Tracker) transitions(ctx context.Context, id string) ([]jira.Transition, error) {
	var trs []jira.Transition
	err := t.call(ctx, "transitions", nfGone, func(ctx context.Context) (*jira.Response, error) {
		var resp *jira.Response
		var err error
		trs, resp, err = t.client.Issue.GetTransitionsWithContext(ctx, url.PathEscape(id))
		return resp, err
	})
	return trs, err
}

// transition takes tr, setting the resolution when its screen has one
// and adding c (stamped) on the transition's request when c is not nil.
func (t *Tracker) transition(ctx context.Context, id string, tr jira.Transition, reason string, c *qsync.Comment) error {
	payload := map[string]any{"transition": map[string]string{"id": tr.ID}}
	if reason != "" {
		if _, ok := tr.Fields["resolution"]; ok {
			payload["fields"] = map[string]any{"resolution": map[string]string{"name": reason}}
		}
	}
	if c != nil {
		payload["update"] = map[string]any{"comment": []map[string]any{{"add": map[string]string{"body": StampedBody(*c)}}}}
	}
	return t.call(ctx, "transition", nfGone, func(ctx context.Context) (*jira.Response, error) {
		return t.client.Issue.DoTransitionWithPayloadWithContext(ctx, url.PathEscape(id), payload)
	})
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

// findHop finds the transition for one via-path hop, named by the status
// it leads to or, failing that, by the transition's own name (config
// files name either).
func findHop(trs []jira.Transition, hop string) *jira.Transition {
	if tr := findTo(trs, hop); tr != nil {
		return tr
	}
	for i := range trs {
		if strings.EqualFold(strings.TrimSpace(trs[i].Name), strings.TrimSpace(hop)) {
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
