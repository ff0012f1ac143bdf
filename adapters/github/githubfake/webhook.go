package githubfake

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// Webhooks: like a repository webhook, the fake sends an "issues" or
// "issue_comment" delivery for every change to an issue, whether made
// through the API (qase-sync's own writes) or by a person (EditIssue,
// AddComment), signed with X-Hub-Signature-256 and numbered with
// X-GitHub-Delivery. Deliveries are sent in the background; WaitWebhooks
// waits for those in flight.

type hook struct {
	url, secret string
	wg          sync.WaitGroup
	next        int
	sent        []Delivery
	mu          sync.Mutex
	client      *http.Client
}

// Delivery is one webhook the fake sent.
type Delivery struct {
	ID     string
	Event  string // issues | issue_comment
	Action string
	Repo   string
	Number int
	Status int // the receiver's answer (0: transport failure)
}

// SetWebhook makes the fake deliver webhooks to url, signed with secret
// ("" disables them).
func (s *Server) SetWebhook(url, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if url == "" {
		s.hook = nil
		return
	}
	s.hook = &hook{url: url, secret: secret, client: &http.Client{}}
}

// WaitWebhooks waits until every delivery sent so far was answered.
func (s *Server) WaitWebhooks() {
	s.mu.Lock()
	h := s.hook
	s.mu.Unlock()
	if h != nil {
		h.wg.Wait()
	}
}

// Deliveries returns the webhooks sent so far.
func (s *Server) Deliveries() []Delivery {
	s.mu.Lock()
	h := s.hook
	s.mu.Unlock()
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Delivery(nil), h.sent...)
}

// Redeliver sends delivery id again, with the same X-GitHub-Delivery, as
// GitHub's "Redeliver" button does.
func (s *Server) Redeliver(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hook == nil {
		return false
	}
	for _, d := range s.hook.sentCopy() {
		if d.ID == id {
			is := s.repos[d.Repo].issues[d.Number]
			s.hook.send(d.ID, d.Event, d.Action, s.payload(is, d.Action, nil))
			return true
		}
	}
	return false
}

func (h *hook) sentCopy() []Delivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Delivery(nil), h.sent...)
}

// emit sends a delivery about is; the caller holds s.mu.
func (s *Server) emit(event, action string, is *IssueState, comment *CommentState) {
	if s.hook == nil || is == nil {
		return
	}
	s.hook.next++
	id := fmt.Sprintf("00000000-0000-4000-8000-%012d", s.hook.next)
	d := Delivery{ID: id, Event: event, Action: action, Repo: is.Repo, Number: is.Number}
	s.hook.mu.Lock()
	s.hook.sent = append(s.hook.sent, d)
	s.hook.mu.Unlock()
	s.hook.send(id, event, action, s.payload(is, action, comment))
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

func (h *hook) send(id, event, action string, body []byte) {
	mac := hmac.New(sha256.New, []byte(h.secret))
	mac.Write(body)
	sig := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		req, _ := http.NewRequest(http.MethodPost, h.url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-GitHub-Event", event)
		req.Header.Set("X-GitHub-Delivery", id)
		req.Header.Set("X-Hub-Signature-256", sig)
		status := 0
		if resp, err := h.client.Do(req); err == nil {
			status = resp.StatusCode
			resp.Body.Close()
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		for i := len(h.sent) - 1; i >= 0; i-- {
			if h.sent[i].ID == id {
				h.sent[i].Status = status
				break
			}
		}
	}()
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
	if s.hook == nil || status < 200 || status > 299 || method == http.MethodGet || len(parts) < 4 {
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
