package github

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	gh "github.com/google/go-github/v60/github"

	"github.com/qase-sync/qase-sync/internal/trackerhook"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// WebhookOptions configure the GitHub webhook receiver (POST
// /webhooks/github): a delivery must be signed (X-Hub-Signature-256) with
// one of the Secrets.
type WebhookOptions = trackerhook.Options

// WebhookHandler accepts GitHub "issues" and "issue_comment" deliveries for
// issues that carry a qase-sync marker: each is a durable hint that the
// key's issue changed. The body stamp names the key, so no API call is made
// before answering.
type WebhookHandler struct{ rc trackerhook.Receiver }

// NewWebhookHandler builds the receiver.
func NewWebhookHandler(o WebhookOptions) *WebhookHandler {
	return &WebhookHandler{rc: trackerhook.NewReceiver("github", o)}
}

func (h *WebhookHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, ok := h.rc.Read(w, r)
	if !ok {
		return
	}
	// go-github's ValidateSignature would also take sha1=; only sha256= is
	// accepted.
	if !trackerhook.SignedBy(r.Header.Get("X-Hub-Signature-256"), body, h.rc.Secrets) {
		h.rc.Logger.Warn("github webhook: missing or bad X-Hub-Signature-256; nothing stored")
		h.rc.Answer(w, http.StatusUnauthorized, "bad signature")
		return
	}
	event := gh.WebHookType(r)
	switch event {
	case "ping":
		h.rc.Answer(w, http.StatusOK, "pong")
		return
	case "issues", "issue_comment":
	default:
		h.rc.Answer(w, http.StatusAccepted, "ignored")
		return
	}
	var p struct {
		Action string `json:"action"`
		Issue  struct {
			Body        string    `json:"body"`
			UpdatedAt   time.Time `json:"updated_at"`
			PullRequest any       `json:"pull_request"`
		} `json:"issue"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		h.rc.Answer(w, http.StatusBadRequest, "undecodable payload")
		return
	}
	_, id := splitBody(p.Issue.Body)
	k, ok := qsync.ParseMarkerID(id)
	if !ok || p.Issue.PullRequest != nil {
		h.rc.Answer(w, http.StatusAccepted, "ignored")
		return
	}
	ev := qsync.Event{
		DedupKey: h.rc.DedupKey(gh.DeliveryID(r), body), Name: qsync.TrackerEventPrefix + "github." + event + "." + p.Action, Ref: k.EntityRef,
		Timestamp: p.Issue.UpdatedAt, ReceivedAt: h.rc.Clock.Now(), Payload: body,
	}
	if ev.Timestamp.IsZero() {
		ev.Timestamp = ev.ReceivedAt
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	h.rc.Store(ctx, w, k, ev)
}
