package jira

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/qase-sync/qase-sync/internal/trackerhook"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// WebhookOptions configure the Jira webhook receiver (POST /webhooks/jira).
// A delivery must carry one of the Secrets in the X-Qase-Sync-Token header
// or the token query parameter, or be signed with one in X-Hub-Signature
// (sha256=…). Jira Cloud's dynamic webhooks cannot sign, so the URL token
// is what they use.
type WebhookOptions struct {
	trackerhook.Options
	// Tracker reads the issue a delivery names (payloads are hints; the
	// marker lives in an entity property webhooks do not carry): the
	// jira Tracker, paced or not.
	Tracker qsync.Tracker
	// SharedLabel is the label every managed issue carries (default
	// qase-sync); deliveries about issues without it are ignored unread.
	SharedLabel string
}

// WebhookHandler accepts Jira issue and comment deliveries for issues
// qase-sync manages, as durable hints that the key's issue changed.
type WebhookHandler struct {
	o  WebhookOptions
	rc trackerhook.Receiver
}

// NewWebhookHandler builds the receiver.
func NewWebhookHandler(o WebhookOptions) *WebhookHandler {
	if o.SharedLabel == "" {
		o.SharedLabel = defaultSharedLabel
	}
	o.SharedLabel = labelSafe(o.SharedLabel)
	return &WebhookHandler{o: o, rc: trackerhook.NewReceiver("jira", o.Options)}
}

func (h *WebhookHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, ok := h.rc.Read(w, r)
	if !ok {
		return
	}
	if !h.authorized(r, body) {
		h.rc.Logger.Warn("jira webhook: missing or bad token or signature; nothing stored")
		h.rc.Answer(w, http.StatusUnauthorized, "unauthorized")
		return
	}
	var p struct {
		Timestamp int64  `json:"timestamp"`
		Event     string `json:"webhookEvent"`
		Issue     struct {
			ID     string `json:"id"`
			Key    string `json:"key"`
			Fields struct {
				Labels []string `json:"labels"`
			} `json:"fields"`
		} `json:"issue"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		h.rc.Answer(w, http.StatusBadRequest, "undecodable payload")
		return
	}
	// Only issues carrying the shared label can be qase-sync's; the rest
	// cost no read.
	if p.Issue.ID == "" || p.Event == "jira:issue_deleted" || !hasLabel(p.Issue.Fields.Labels, h.o.SharedLabel) {
		h.rc.Answer(w, http.StatusAccepted, "ignored")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	is, err := h.o.Tracker.Get(ctx, qsync.IssueRef{ID: p.Issue.ID, Key: p.Issue.Key})
	if errors.Is(err, qsync.ErrNotFound) {
		h.rc.Answer(w, http.StatusAccepted, "ignored")
		return
	}
	if err != nil {
		// Jira retries a failed delivery; the reconciler covers the rest.
		h.rc.Logger.WithError(err).WithField("issue", p.Issue.Key).Warn("jira webhook: reading the issue failed")
		h.rc.Answer(w, http.StatusServiceUnavailable, "issue not readable now")
		return
	}
	k, ok := qsync.ParseMarkerID(is.MarkerID)
	if !ok {
		h.rc.Answer(w, http.StatusAccepted, "ignored")
		return
	}
	at := time.UnixMilli(p.Timestamp)
	if p.Timestamp == 0 {
		at = h.rc.Clock.Now()
	}
	ev := qsync.Event{DedupKey: h.rc.DedupKey(r.Header.Get("X-Atlassian-Webhook-Identifier"), body), Name: qsync.TrackerEventPrefix + "jira." + strings.TrimPrefix(p.Event, "jira:"),
		Ref: k.EntityRef, Timestamp: at, ReceivedAt: h.rc.Clock.Now(), Payload: body}
	h.rc.Store(ctx, w, k, ev)
}

// authorized: a valid X-Hub-Signature when Jira sends one, else the shared
// token in the header or the URL. Compared in constant time.
func (h *WebhookHandler) authorized(r *http.Request, body []byte) bool {
	if sig := r.Header.Get("X-Hub-Signature"); sig != "" {
		return trackerhook.SignedBy(sig, body, h.rc.Secrets)
	}
	tok := r.Header.Get("X-Qase-Sync-Token")
	if tok == "" {
		tok = r.URL.Query().Get("token")
	}
	for _, s := range h.rc.Secrets {
		if s != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(s)) == 1 {
			return true
		}
	}
	return false
}
