package githubfake

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/qase-sync/qase-sync/internal/trackerhook"
)

// Webhooks: like a repository webhook, the fake sends an "issues" or
// "issue_comment" delivery for every change to an issue, whether made
// through the API (qase-sync's own writes) or by a person (EditIssue,
// AddComment), signed with X-Hub-Signature-256 and numbered with
// X-GitHub-Delivery. Deliveries are sent in the background; WaitWebhooks
// waits for those in flight.

// Delivery is one webhook the fake sent: its X-GitHub-Delivery, what it
// was about and the receiver's answer (0: transport failure).
type Delivery = trackerhook.Sent[Subject]

// Subject is what a delivery was about.
type Subject struct {
	Event  string // issues | issue_comment
	Action string
	Repo   string
	Number int
}

// Redeliver sends delivery id again, with the same X-GitHub-Delivery, as
// GitHub's "Redeliver" button does.
func (s *Server) Redeliver(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.Lookup(id)
	if ok {
		s.send(id, d.Event, s.payload(s.repos[d.Repo].issues[d.Number], d.Action, nil))
	}
	return ok
}

// emit sends a delivery about is; the caller holds s.mu.
func (s *Server) emit(event, action string, is *IssueState, comment *CommentState) {
	if is == nil {
		return
	}
	d := Subject{Event: event, Action: action, Repo: is.Repo, Number: is.Number}
	if id, ok := s.Record(func(n int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", n) }, d); ok {
		s.send(id, event, s.payload(is, action, comment))
	}
}

func (s *Server) send(id, event string, body []byte) {
	h := http.Header{"X-Github-Event": {event}, "X-Github-Delivery": {id}}
	if sig := s.Sign(body); sig != "" {
		h.Set("X-Hub-Signature-256", sig)
	}
	s.Post(id, h, body)
}

func (s *Server) payload(is *IssueState, action string, comment *CommentState) []byte {
	owner, name, _ := strings.Cut(is.Repo, "/")
	p := map[string]any{
		"action":     action,
		"issue":      s.issueJSON(is),
		"repository": map[string]any{"full_name": is.Repo, "name": name, "owner": map[string]any{"login": owner}},
		"sender":     map[string]any{"login": "someone"},
	}
	if comment != nil {
		p["comment"] = s.commentJSON(is, *comment)
	}
	b, _ := json.Marshal(p)
	return b
}

// issueAction names the "issues" action a change from before to after is.
func issueAction(before *IssueState, after *IssueState) string {
	switch {
	case before == nil:
		return "opened"
	case before.State != after.State && after.State == "closed":
		return "closed"
	case before.State != after.State:
		return "reopened"
	case len(before.Labels) != len(after.Labels):
		return "labeled"
	}
	return "edited"
}

// emitAfterRequest sends the delivery an API write caused; the caller
// holds s.mu.
func (s *Server) emitAfterRequest(method string, parts []string, before *IssueState, status int) {
	if !s.Enabled() || status < 200 || status > 299 || method == http.MethodGet || len(parts) < 4 {
		return
	}
	repo := parts[1] + "/" + parts[2]
	r := s.repos[repo]
	if r == nil {
		return
	}
	if len(parts) == 4 { // create
		s.emit("issues", "opened", r.issues[r.next], nil)
		return
	}
	n, _ := strconv.Atoi(parts[4])
	is := r.issues[n]
	if is == nil {
		return
	}
	if len(parts) == 6 && parts[5] == "comments" && method == http.MethodPost && len(is.Comments) > 0 {
		c := is.Comments[len(is.Comments)-1]
		s.emit("issue_comment", "created", is, &c)
		return
	}
	s.emit("issues", issueAction(before, is), is, nil)
}
