package jirafake

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/qase-sync/qase-sync/internal/trackerhook"
)

// Webhooks: like a Jira Cloud webhook, the fake sends jira:issue_created,
// jira:issue_updated and comment_created deliveries for every change to an
// issue, whether made through the API (qase-sync's own writes) or by a
// person (Edit, AddHumanComment). Entity property writes send none, as in
// Jira. The URL carries the shared token the receiver checks; with a
// secret the body is also signed in X-Hub-Signature (sha256=…), as Jira
// Cloud does for admin webhooks with a secret. Deliveries are sent in the
// background; WaitWebhooks waits for those in flight.

// Delivery is one webhook the fake sent: its
// X-Atlassian-Webhook-Identifier, what it was about and the receiver's
// answer (0: transport failure).
type Delivery = trackerhook.Sent[Subject]

// Subject is what a delivery was about.
type Subject struct {
	Event   string // webhookEvent
	IssueID string
}

// Redeliver sends delivery id again with the same identifier (Jira retries
// a delivery that failed).
func (s *Server) Redeliver(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.Lookup(id)
	if is := s.find(d.IssueID); ok && is != nil {
		s.send(id, s.payload(d.Event, is, nil))
		return true
	}
	return false
}

// emit sends a delivery about is; the caller holds s.mu.
func (s *Server) emit(event string, is *IssueState, c *CommentState) {
	if is == nil {
		return
	}
	if id, ok := s.Record(func(n int) string { return fmt.Sprintf("wh-%d", n) }, Subject{Event: event, IssueID: is.ID}); ok {
		s.send(id, s.payload(event, is, c))
	}
}

// send signs the body in X-Hub-Signature when there is a secret, as Jira
// Cloud does for admin webhooks.
func (s *Server) send(id string, body []byte) {
	h := http.Header{"X-Atlassian-Webhook-Identifier": {id}}
	if sig := s.Sign(body); sig != "" {
		h.Set("X-Hub-Signature", sig)
	}
	s.Post(id, h, body)
}

func (s *Server) payload(event string, is *IssueState, c *CommentState) []byte {
	p := map[string]any{
		"timestamp":    s.now().UnixMilli(),
		"webhookEvent": event,
		"issue":        s.issueJSON(is, nil),
		"user":         map[string]any{"accountId": "someone"},
	}
	if c != nil {
		p["comment"] = map[string]any{"id": c.ID, "body": c.Body}
	}
	b, _ := json.Marshal(p)
	return b
}

// emitAfterRequest sends the delivery an API write caused; the caller
// holds s.mu.
func (s *Server) emitAfterRequest(method, path string, status int) {
	if !s.Enabled() || status < 200 || status > 299 || method == http.MethodGet {
		return
	}
	rest, ok := strings.CutPrefix(path, "/rest/api/2/issue")
	if !ok {
		return // searches
	}
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	switch {
	case parts[0] == "" && method == http.MethodPost:
		if len(s.issues) > 0 {
			s.emit("jira:issue_created", s.issues[len(s.issues)-1], nil)
		}
	case len(parts) == 1 && method == http.MethodPut:
		s.emit("jira:issue_updated", s.find(parts[0]), nil)
	case len(parts) == 2 && parts[1] == "transitions":
		s.emit("jira:issue_updated", s.find(parts[0]), nil)
	case len(parts) == 2 && parts[1] == "comment":
		if is := s.find(parts[0]); is != nil && len(is.Comments) > 0 {
			c := is.Comments[len(is.Comments)-1]
			s.emit("comment_created", is, &c)
		}
	}
}
