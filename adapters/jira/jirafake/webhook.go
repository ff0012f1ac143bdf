package jirafake

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
)

// Webhooks: like a Jira Cloud webhook, the fake sends jira:issue_created,
// jira:issue_updated and comment_created deliveries for every change to an
// issue, whether made through the API (qase-sync's own writes) or by a
// person (Edit, AddHumanComment). Entity property writes send none, as in
// Jira. The URL carries the shared token the receiver checks; with a
// secret the body is also signed in X-Hub-Signature (sha256=…), as Jira
// Cloud does for admin webhooks with a secret. Deliveries are sent in the
// background; WaitWebhooks waits for those in flight.

type hook struct {
	url, secret string
	wg          sync.WaitGroup
	mu          sync.Mutex
	next        int
	sent        []Delivery
	client      *http.Client
}

// Delivery is one webhook the fake sent.
type Delivery struct {
	ID      string // X-Atlassian-Webhook-Identifier
	Event   string // webhookEvent
	IssueID string
	Status  int // the receiver's answer (0: transport failure)
}

// SetWebhook makes the fake deliver webhooks to url (with any token in its
// query), signing them with secret when it is not empty. "" disables them.
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

// Redeliver sends delivery id again with the same identifier (Jira retries
// a delivery that failed).
func (s *Server) Redeliver(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hook == nil {
		return false
	}
	s.hook.mu.Lock()
	sent := append([]Delivery(nil), s.hook.sent...)
	s.hook.mu.Unlock()
	for _, d := range sent {
		if d.ID == id {
			if is := s.find(d.IssueID); is != nil {
				s.hook.send(d.ID, s.payload(d.Event, is, nil))
				return true
			}
		}
	}
	return false
}

// emit sends a delivery about is; the caller holds s.mu.
func (s *Server) emit(event string, is *IssueState, c *CommentState) {
	if s.hook == nil || is == nil {
		return
	}
	s.hook.next++
	id := fmt.Sprintf("wh-%d", s.hook.next)
	s.hook.mu.Lock()
	s.hook.sent = append(s.hook.sent, Delivery{ID: id, Event: event, IssueID: is.ID})
	s.hook.mu.Unlock()
	s.hook.send(id, s.payload(event, is, c))
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

func (h *hook) send(id string, body []byte) {
	var sig string
	if h.secret != "" {
		mac := hmac.New(sha256.New, []byte(h.secret))
		mac.Write(body)
		sig = "sha256=" + hex.EncodeToString(mac.Sum(nil))
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		req, _ := http.NewRequest(http.MethodPost, h.url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Atlassian-Webhook-Identifier", id)
		if sig != "" {
			req.Header.Set("X-Hub-Signature", sig)
		}
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

// emitAfterRequest sends the delivery an API write caused; the caller
// holds s.mu.
func (s *Server) emitAfterRequest(method, path string, status int) {
	if s.hook == nil || status < 200 || status > 299 || method == http.MethodGet {
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
