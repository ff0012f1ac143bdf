// Package trackerhook is what the two tracker webhook receivers
// (adapters/github, adapters/jira) and the webhook senders of their fake
// servers (githubfake, jirafake) share: reading and answering a delivery,
// checking an HMAC signature, storing the delivery, and sending signed
// deliveries in the background. Each adapter keeps its own payload rules.
package trackerhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/sirupsen/logrus"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// Options configure a tracker webhook receiver.
type Options struct {
	Acceptor qsync.TrackerAcceptor
	// Secrets authenticate deliveries (several allow rotation); how is the
	// adapter's rule.
	Secrets []string
	MaxBody int64 // default 1 MiB (GitHub caps payloads at 25 MB; issues are far smaller)
	Logger  *logrus.Entry
	Clock   qsync.Clock
	// Observe is told each delivery's result (accepted, duplicate,
	// ignored, rejected, invalid, failed), for metrics; may be nil.
	Observe func(result string)
}

// Receiver reads, answers and stores the deliveries of one tracker.
type Receiver struct {
	Options
	Name string // "github" or "jira": log messages and dedup keys
}

// NewReceiver fills the defaults.
func NewReceiver(name string, o Options) Receiver {
	if o.MaxBody <= 0 {
		o.MaxBody = 1 << 20
	}
	if o.Clock == nil {
		o.Clock = qsync.SystemClock
	}
	if o.Logger == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		o.Logger = logrus.NewEntry(l)
	}
	return Receiver{Options: o, Name: name}
}

// Read takes a POST's body within MaxBody; otherwise it answers and
// reports false.
func (rc Receiver) Read(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		rc.Answer(w, http.StatusMethodNotAllowed, "method not allowed")
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, rc.MaxBody))
	if err != nil {
		rc.Answer(w, http.StatusRequestEntityTooLarge, "body too large or unreadable")
		return nil, false
	}
	return body, true
}

// Answer writes the JSON reply {"status": msg} and reports the delivery's
// result.
func (rc Receiver) Answer(w http.ResponseWriter, status int, msg string) {
	if rc.Observe != nil {
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
		rc.Observe(result)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]string{"status": msg})
	_, _ = w.Write(append(b, '\n'))
}

// DedupKey is "<name>:<id>", the tracker's delivery id, or a hash of the
// body marked qsync.TrackerBodyKey when the tracker sent none.
func (rc Receiver) DedupKey(id string, body []byte) string {
	if id == "" {
		sum := sha256.Sum256(body)
		id = qsync.TrackerBodyKey + hex.EncodeToString(sum[:16])
	}
	return rc.Name + ":" + id
}

// Store hands the delivery to the inbox and answers: 202 once stored, 200
// for a duplicate, 503 when it could not be stored (the tracker retries).
func (rc Receiver) Store(ctx context.Context, w http.ResponseWriter, k qsync.Key, ev qsync.Event) {
	st, err := rc.Acceptor.AcceptTracker(ctx, k, ev)
	switch {
	case errors.Is(err, qsync.ErrInboxClosed):
		rc.Answer(w, http.StatusServiceUnavailable, "shutting down")
	case err != nil:
		rc.Logger.WithError(err).Error(rc.Name + " webhook: storing the delivery failed")
		rc.Answer(w, http.StatusServiceUnavailable, "not stored")
	case st == qsync.StatusDuplicate:
		rc.Answer(w, http.StatusOK, string(st))
	default:
		rc.Logger.WithFields(logrus.Fields{"key": k.String(), "event": ev.Name, "status": st}).Debug(rc.Name + " webhook")
		rc.Answer(w, http.StatusAccepted, string(st))
	}
}

// SignedBy reports whether sig ("sha256=<hex>") is the HMAC-SHA256 of body
// under one of the secrets (several allow rotation; empty ones never
// match). Compared in constant time.
func SignedBy(sig string, body []byte, secrets []string) bool {
	hexSig, ok := strings.CutPrefix(sig, "sha256=")
	got, err := hex.DecodeString(hexSig)
	if !ok || err != nil {
		return false
	}
	for _, s := range secrets {
		if s != "" && hmac.Equal(got, mac(s, body)) {
			return true
		}
	}
	return false
}

func mac(secret string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return m.Sum(nil)
}

// Sign is the signature SignedBy accepts for secret.
func Sign(secret string, body []byte) string {
	return "sha256=" + hex.EncodeToString(mac(secret, body))
}
