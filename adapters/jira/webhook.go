package jira

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// WebhookOptions configure the Jira webhook receiver (POST /webhooks/jira).
type WebhookOptions struct {
	Acceptor qsync.TrackerAcceptor
	// Tracker reads the issue a delivery names (payloads are hints; the
	// marker lives in an entity property webhooks do not carry): the
	// jira Tracker, paced or not.
	Tracker qsync.Tracker
	// SharedLabel is the label every managed issue carries (default
	// qase-sync); deliveries about issues without it are ignored unread.
	SharedLabel string
	// Secrets: a delivery must carry one in the X-Qase-Sync-Token header
	// or the token query parameter, or be signed with one in
	// X-Hub-Signature (sha256=…). Jira Cloud's dynamic webhooks cannot
	// sign, so the URL token is what they use.
	Secrets []string
	MaxBody int64 // default 1 MiB
	Logger  *logrus.Entry
	Clock   qsync.Clock
	// Observe is told each delivery's result (accepted, duplicate,
	// ignored, rejected, invalid, failed), for metrics; may be nil.
	Observe func(result string)
}

// WebhookHandler accepts Jira issue and comment deliveries for issues
// qase-sync manages, as durable hints that the key's issue changed.
type WebhookHandler struct{ o WebhookOptions }

// NewWebhookHandler builds the receiver.
func NewWebhookHandler(o WebhookOptions) *WebhookHandler {
	if o.MaxBody <= 0 {
		o.MaxBody = 1 << 20
	}
	if o.Clock == nil {
		o.Clock = qsync.SystemClock
	}
	if o.SharedLabel == "" {
		o.SharedLabel = defaultSharedLabel
	}
	o.SharedLabel = labelSafe(o.SharedLabel)
	if o.Logger == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		o.Logger = logrus.NewEntry(l)
	}
	return &WebhookHandler{o: o}
}

func (h *WebhookHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.answer(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.o.MaxBody))
	if err != nil {
		h.answer(w, http.StatusRequestEntityTooLarge, "body too large or unreadable")
		return
	}
	if !h.authorized(r, body) {
		h.o.Logger.Warn("jira webhook: missing or bad token or signature; nothing stored")
		h.answer(w, http.StatusUnauthorized, "unauthorized")
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
		h.answer(w, http.StatusBadRequest, "undecodable payload")
		return
	}
	// Only issues carrying the shared label can be qase-sync's; the rest
	// cost no read.
	if p.Issue.ID == "" || p.Event == "jira:issue_deleted" || !hasLabel(p.Issue.Fields.Labels, h.o.SharedLabel) {
		h.answer(w, http.StatusAccepted, "ignored")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	is, err := h.o.Tracker.Get(ctx, qsync.IssueRef{ID: p.Issue.ID, Key: p.Issue.Key})
	if errors.Is(err, qsync.ErrNotFound) {
		h.answer(w, http.StatusAccepted, "ignored")
		return
	}
	if err != nil {
		// Jira retries a failed delivery; the reconciler covers the rest.
		h.o.Logger.WithError(err).WithField("issue", p.Issue.Key).Warn("jira webhook: reading the issue failed")
		h.answer(w, http.StatusServiceUnavailable, "issue not readable now")
		return
	}
	k, ok := qsync.ParseMarkerID(is.MarkerID)
	if !ok {
		h.answer(w, http.StatusAccepted, "ignored")
		return
	}
	dedup := r.Header.Get("X-Atlassian-Webhook-Identifier")
	if dedup == "" {
		sum := sha256.Sum256(body)
		dedup = qsync.TrackerBodyKey + hex.EncodeToString(sum[:16])
	}
	at := time.UnixMilli(p.Timestamp)
	if p.Timestamp == 0 {
		at = h.o.Clock.Now()
	}
	ev := qsync.Event{DedupKey: "jira:" + dedup, Name: qsync.TrackerEventPrefix + "jira." + strings.TrimPrefix(p.Event, "jira:"),
		Ref: k.EntityRef, Timestamp: at, ReceivedAt: h.o.Clock.Now(), Payload: body}
	st, err := h.o.Acceptor.AcceptTracker(ctx, k, ev)
	switch {
	case errors.Is(err, qsync.ErrInboxClosed):
		h.answer(w, http.StatusServiceUnavailable, "shutting down")
	case err != nil:
		h.o.Logger.WithError(err).Error("jira webhook: storing the delivery failed")
		h.answer(w, http.StatusServiceUnavailable, "not stored")
	case st == qsync.StatusDuplicate:
		h.answer(w, http.StatusOK, string(st))
	default:
		h.answer(w, http.StatusAccepted, string(st))
	}
}

// authorized: a valid X-Hub-Signature when Jira sends one, else the shared
// token in the header or the URL. Compared in constant time.
func (h *WebhookHandler) authorized(r *http.Request, body []byte) bool {
	if sig := r.Header.Get("X-Hub-Signature"); sig != "" {
		hexSig, ok := strings.CutPrefix(sig, "sha256=")
		got, err := hex.DecodeString(hexSig)
		if !ok || err != nil {
			return false
		}
		for _, s := range h.o.Secrets {
			mac := hmac.New(sha256.New, []byte(s))
			mac.Write(body)
			if s != "" && hmac.Equal(got, mac.Sum(nil)) {
				return true
			}
		}
		return false
	}
	tok := r.Header.Get("X-Qase-Sync-Token")
	if tok == "" {
		tok = r.URL.Query().Get("token")
	}
	for _, s := range h.o.Secrets {
		if s != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(s)) == 1 {
			return true
		}
	}
	return false
}

func answer(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]string{"status": msg})
	_, _ = w.Write(append(b, '\n'))
}

// answer writes the reply and reports the delivery's result.
func (h *WebhookHandler) answer(w http.ResponseWriter, status int, msg string) {
	if h.o.Observe != nil {
		result := msg
		switch {
		case status == http.StatusUnauthorized:
			result = "rejected"
		case status >= 500:
			result = "failed"
		case status >= 400:
			result = "invalid"
		case msg != "accepted" && msg != "duplicate" && msg != "ignored":
			result = "ignored" // ping, events not served
		}
		h.o.Observe(result)
	}
	answer(w, status, msg)
}
