package github

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	gh "github.com/google/go-github/v60/github"
	"github.com/sirupsen/logrus"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// WebhookOptions configure the GitHub webhook receiver (POST /webhooks/github).
type WebhookOptions struct {
	Acceptor qsync.TrackerAcceptor
	// Secrets are the webhook secrets; a delivery must be signed with one
	// of them (several allow rotation).
	Secrets []string
	MaxBody int64 // default 1 MiB (GitHub caps payloads at 25 MB; issues are far smaller)
	Logger  *logrus.Entry
	Clock   qsync.Clock
	// Observe is told each delivery's result (accepted, duplicate,
	// ignored, rejected, invalid, failed), for metrics; may be nil.
	Observe func(result string)
}

// WebhookHandler accepts GitHub "issues" and "issue_comment" deliveries for
// issues that carry a qase-sync marker: each is a durable hint that the
// key's issue changed. The body stamp names the key, so no API call is made
// before answering.
type WebhookHandler struct{ o WebhookOptions }

// NewWebhookHandler builds the receiver.
func NewWebhookHandler(o WebhookOptions) *WebhookHandler {
	if o.MaxBody <= 0 {
		o.MaxBody = 1 << 20
	}
	if o.Clock == nil {
		o.Clock = qsync.SystemClock
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
	if !h.verify(r.Header.Get("X-Hub-Signature-256"), body) {
		h.log().Warn("github webhook: missing or bad X-Hub-Signature-256; nothing stored")
		h.answer(w, http.StatusUnauthorized, "bad signature")
		return
	}
	event := gh.WebHookType(r)
	switch event {
	case "ping":
		h.answer(w, http.StatusOK, "pong")
		return
	case "issues", "issue_comment":
	default:
		h.answer(w, http.StatusAccepted, "ignored")
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
		h.answer(w, http.StatusBadRequest, "undecodable payload")
		return
	}
	_, id := splitBody(p.Issue.Body)
	k, ok := qsync.ParseMarkerID(id)
	if !ok || p.Issue.PullRequest != nil {
		h.answer(w, http.StatusAccepted, "ignored")
		return
	}
	dedup := gh.DeliveryID(r)
	if dedup == "" {
		sum := sha256.Sum256(body)
		dedup = qsync.TrackerBodyKey + hex.EncodeToString(sum[:16])
	}
	ev := qsync.Event{
		DedupKey: "github:" + dedup, Name: qsync.TrackerEventPrefix + "github." + event + "." + p.Action, Ref: k.EntityRef,
		Timestamp: p.Issue.UpdatedAt, ReceivedAt: h.o.Clock.Now(), Payload: body,
	}
	if ev.Timestamp.IsZero() {
		ev.Timestamp = ev.ReceivedAt
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	st, err := h.o.Acceptor.AcceptTracker(ctx, k, ev)
	switch {
	case errors.Is(err, qsync.ErrInboxClosed):
		h.answer(w, http.StatusServiceUnavailable, "shutting down")
	case err != nil:
		h.log().WithError(err).Error("github webhook: storing the delivery failed")
		h.answer(w, http.StatusServiceUnavailable, "not stored")
	case st == qsync.StatusDuplicate:
		h.answer(w, http.StatusOK, string(st))
	default:
		h.log().WithFields(logrus.Fields{"key": k.String(), "event": ev.Name, "status": st}).Debug("github webhook")
		h.answer(w, http.StatusAccepted, string(st))
	}
}

// verify checks the HMAC-SHA256 signature against every secret; go-github
// compares in constant time.
func (h *WebhookHandler) verify(sig string, body []byte) bool {
	if !strings.HasPrefix(sig, "sha256=") {
		return false
	}
	for _, s := range h.o.Secrets {
		if s != "" && gh.ValidateSignature(sig, body, []byte(s)) == nil {
			return true
		}
	}
	return false
}

func (h *WebhookHandler) log() *logrus.Entry {
	if h.o.Logger == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		return logrus.NewEntry(l)
	}
	return h.o.Logger
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
