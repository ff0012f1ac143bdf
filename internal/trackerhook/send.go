package trackerhook

import (
	"bytes"
	"net/http"
	"sync"
)

// Hooks sends a fake tracker's webhook deliveries to one receiver in the
// background and remembers each one and its answer. D is what the fake
// records about a delivery (event, issue). The zero value sends nothing.
// A fake embeds it: SetWebhook, WaitWebhooks and Deliveries are the fake's
// API for tests; the rest is for the fake itself.
type Hooks[D any] struct {
	mu     sync.Mutex
	url    string
	secret string
	client *http.Client
	wg     sync.WaitGroup
	next   int
	sent   []Sent[D]
}

// Sent is one delivery sent.
type Sent[D any] struct {
	ID     string
	About  D
	Status int // the receiver's answer (0: transport failure)
}

// SetWebhook points deliveries at url, to be signed with secret; "" disables
// them. It forgets the deliveries sent so far.
func (h *Hooks[D]) SetWebhook(url, secret string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.url, h.secret, h.client, h.next, h.sent = url, secret, &http.Client{}, 0, nil
}

// Enabled reports whether deliveries are sent.
func (h *Hooks[D]) Enabled() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.url != ""
}

// WaitWebhooks waits until every delivery sent so far was answered.
func (h *Hooks[D]) WaitWebhooks() { h.wg.Wait() }

// Deliveries returns the deliveries sent so far.
func (h *Hooks[D]) Deliveries() []Sent[D] {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Sent[D](nil), h.sent...)
}

// Lookup returns what delivery id was about.
func (h *Hooks[D]) Lookup(id string) (D, bool) {
	for _, s := range h.Deliveries() {
		if s.ID == id {
			return s.About, true
		}
	}
	var zero D
	return zero, false
}

// Record records a new delivery about d, named by id from its sequence
// number (1, 2, …); false when deliveries are off.
func (h *Hooks[D]) Record(id func(seq int) string, d D) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.url == "" {
		return "", false
	}
	h.next++
	s := Sent[D]{ID: id(h.next), About: d}
	h.sent = append(h.sent, s)
	return s.ID, true
}

// Sign is the signature of body under the secret, "" without one.
func (h *Hooks[D]) Sign(body []byte) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.secret == "" {
		return ""
	}
	return Sign(h.secret, body)
}

// Post sends body as JSON with header in the background and records the
// answer under delivery id.
func (h *Hooks[D]) Post(id string, header http.Header, body []byte) {
	h.mu.Lock()
	url, client := h.url, h.client
	h.mu.Unlock()
	if url == "" {
		return
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if header != nil {
			req.Header = header.Clone()
		}
		req.Header.Set("Content-Type", "application/json")
		status := 0
		if resp, err := client.Do(req); err == nil {
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
