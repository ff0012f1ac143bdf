package qase

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// SecretHeader carries the webhook's shared secret, verbatim (not an HMAC).
const SecretHeader = "X-Qase-Secret"

// DefaultMaxBody bounds a delivery; the largest documented payload is ~2 KiB.
const DefaultMaxBody int64 = 1 << 20

// DefaultAcceptTimeout keeps the answer well inside Qase's 15 s limit.
const DefaultAcceptTimeout = 10 * time.Second

// Observer receives webhook metrics. result is the outcome (accepted,
// duplicate, ignored, unauthorized, bad_request, too_large,
// method_not_allowed, unavailable); reason is a short, bounded code.
type Observer interface {
	Received(result, reason string)
	AckLatency(d time.Duration)
}

// HandlerOptions configure NewHandler.
type HandlerOptions struct {
	Acceptor qsync.Acceptor
	// Secrets are accepted for every project (several at once for rotation).
	Secrets []string
	// ProjectSecrets are accepted for deliveries of that project code.
	ProjectSecrets map[string][]string
	// AllowUnsigned accepts deliveries for which no secret is configured
	// (no global secret and none for the delivery's project). Off by
	// default: without any secret every delivery is refused.
	AllowUnsigned bool
	// MaxBody bounds the request body (default DefaultMaxBody).
	MaxBody int64
	// DefaultProject is used when neither the body nor the URL names one.
	DefaultProject string
	// AcceptTimeout bounds Acceptor.Accept (default DefaultAcceptTimeout).
	AcceptTimeout time.Duration
	// KnownEvent tells whether an event of a served kind is one qase-sync
	// acts on (a known Qase event, or one a route names). Others, such as
	// an unknown verb or a name that is not valid UTF-8, are acknowledged
	// 202 ignored and never stored. nil: every event of a served kind is.
	KnownEvent func(ev qsync.Event) bool
	// BodyTimeout bounds reading the request body, counted from the
	// handler's start; a body that stalls longer is answered 408. Set it
	// below the server's write timeout, or the answer cannot be written
	// (0: the server's read timeout alone applies).
	BodyTimeout time.Duration
	Logger      *logrus.Entry
	Clock       qsync.Clock
	Metrics     Observer // may be nil
}

type handler struct {
	opts           HandlerOptions
	global         [][32]byte
	project        map[string][][32]byte
	log            *logrus.Entry
	clock          qsync.Clock
	metrics        Observer
	anyProjectKeys bool
}

// NewHandler returns the webhook endpoint. Mount it on a pattern with a
// {project} wildcard (e.g. "POST /webhooks/qase/{project}") and/or a plain
// path; ?project=CODE works too. The URL project is used only when the
// body carries none (S21 envelopes).
func NewHandler(opts HandlerOptions) http.Handler {
	if opts.Acceptor == nil {
		panic("qase.NewHandler: Acceptor is required")
	}
	h := &handler{opts: opts, project: map[string][][32]byte{}, log: opts.Logger, clock: opts.Clock, metrics: opts.Metrics}
	if h.opts.MaxBody <= 0 {
		h.opts.MaxBody = DefaultMaxBody
	}
	if h.opts.AcceptTimeout <= 0 {
		h.opts.AcceptTimeout = DefaultAcceptTimeout
	}
	if h.log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		h.log = logrus.NewEntry(l)
	}
	if h.clock == nil {
		h.clock = qsync.SystemClock
	}
	// Secrets are kept only as digests: equal-length values for the
	// constant-time compare, and nothing printable lingers in the handler.
	h.global = digests(opts.Secrets)
	for code, ss := range opts.ProjectSecrets {
		if d := digests(ss); len(d) > 0 {
			h.project[strings.ToUpper(strings.TrimSpace(code))] = d
			h.anyProjectKeys = true
		}
	}
	if len(h.global) == 0 && !h.anyProjectKeys && !opts.AllowUnsigned {
		h.log.Warn("qase webhook: no secret configured and unsigned deliveries not allowed; every delivery will be refused")
	}
	return h
}

func digests(ss []string) [][32]byte {
	var out [][32]byte
	for _, s := range ss {
		if s != "" { // an empty secret would accept a missing header
			out = append(out, sha256.Sum256([]byte(s)))
		}
	}
	return out
}

// delivery collects what the log line and metrics report.
type delivery struct {
	result, reason string
	status         int
	ev             qsync.Event
	notes          []string
	err            error
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := h.clock.Now()
	d := h.serve(w, r, start)
	latency := h.clock.Now().Sub(start)
	// Answer before logging: net/http would otherwise hold the response
	// until the handler returns, and a log write may block.
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	if h.metrics != nil {
		h.metrics.Received(d.result, d.reason)
		h.metrics.AckLatency(latency)
	}
	fields := logrus.Fields{
		"event":   truncate(d.ev.Name, 100), // unauthenticated input: bound it
		"project": d.ev.Ref.Project,
		"id":      d.ev.Ref.ID,
		"status":  d.status,
		"result":  d.result,
		"latency": latency.String(),
	}
	if d.reason != "" {
		fields["reason"] = d.reason
	}
	if d.ev.DedupKey != "" {
		fields["dedup"] = d.ev.DedupKey[:16]
	}
	if len(d.notes) > 0 {
		fields["notes"] = strings.Join(d.notes, "; ")
	}
	entry := h.log.WithFields(fields)
	if d.err != nil {
		entry = entry.WithError(d.err)
	}
	switch {
	case d.status >= 500:
		entry.Error("qase webhook")
	case d.status >= 400:
		entry.Warn("qase webhook")
	default:
		entry.Info("qase webhook")
	}
}

func (h *handler) serve(w http.ResponseWriter, r *http.Request, now time.Time) delivery {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed; use POST"})
		return delivery{result: "method_not_allowed", status: http.StatusMethodNotAllowed}
	}
	if h.opts.BodyTimeout > 0 {
		// Only ever earlier than the server's read deadline; an error
		// (a writer that cannot set deadlines) leaves the server's.
		_ = http.NewResponseController(w).SetReadDeadline(now.Add(h.opts.BodyTimeout))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": fmt.Sprintf("request body larger than %d bytes", tooBig.Limit)})
			return delivery{result: "too_large", status: http.StatusRequestEntityTooLarge}
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The connection is unusable after a partial body.
			w.Header().Set("Connection", "close")
			writeJSON(w, http.StatusRequestTimeout, map[string]string{"error": "request body not received in time"})
			return delivery{result: "bad_request", reason: "body_timeout", status: http.StatusRequestTimeout}
		}
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "could not read request body"})
		return delivery{result: "bad_request", reason: "read_error", status: http.StatusBadRequest}
	}

	defProject := urlProject(r)
	if defProject == "" {
		defProject = h.opts.DefaultProject
	}
	ev, notes, derr := decode(body, DecodeOptions{DefaultProject: defProject}, now)
	d := delivery{ev: ev, notes: notes}

	// Authenticate before saying anything about the body. Project secrets
	// need the project, hence decode first (it is pure and bounded).
	if !h.authorized(r.Header.Get(SecretHeader), ev.Ref.Project) {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized"})
		d.result, d.status = "unauthorized", http.StatusUnauthorized
		d.ev.Ref.ID = 0 // unauthenticated content is not worth logging as fact
		return d
	}
	if derr == nil || !errors.Is(derr, ErrUnservedKind) {
		if ev.Name != "" && ev.Ref.Kind.Valid() && h.opts.KnownEvent != nil && !h.opts.KnownEvent(ev) {
			writeJSON(w, http.StatusAccepted, map[string]string{"status": "ignored", "reason": UnknownEventReason(ev.Name)})
			d.result, d.reason, d.status = "ignored", "unknown_event", http.StatusAccepted
			return d
		}
	}
	if derr != nil {
		if errors.Is(derr, ErrUnservedKind) {
			writeJSON(w, http.StatusAccepted, map[string]string{"status": "ignored", "reason": derr.Error()})
			d.result, d.reason, d.status = "ignored", "unserved_kind", http.StatusAccepted
			return d
		}
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": derr.Error()})
		d.result, d.reason, d.status = "bad_request", reasonCode(derr), http.StatusBadRequest
		return d
	}

	ctx, cancel := context.WithTimeout(r.Context(), h.opts.AcceptTimeout)
	defer cancel()
	st, err := h.opts.Acceptor.Accept(ctx, ev)
	switch {
	case err != nil:
		// Not acknowledged: Qase may redeliver, and the reconciler covers a loss.
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily unable to store the event"})
		d.result, d.reason, d.status, d.err = "unavailable", "store_error", http.StatusServiceUnavailable, err
	case st == qsync.StatusDuplicate:
		writeBody(w, http.StatusOK, bodyDuplicate)
		d.result, d.status = "duplicate", http.StatusOK
	case st == qsync.StatusIgnored:
		writeBody(w, http.StatusAccepted, bodyIgnored)
		d.result, d.reason, d.status = "ignored", "no_route", http.StatusAccepted
	default:
		writeBody(w, http.StatusAccepted, bodyAccepted)
		d.result, d.status = "accepted", http.StatusAccepted
	}
	return d
}

// UnknownEventReason is the ignored answer's reason for an event name
// qase-sync does not act on (printable even when the name is not UTF-8).
func UnknownEventReason(name string) string {
	return fmt.Sprintf("event %s is not one qase-sync acts on and no route names it", strconv.Quote(truncate(name, 100)))
}

// authorized compares the presented secret with every candidate in
// constant time (no early exit, equal-length digests).
func (h *handler) authorized(presented, project string) bool {
	candidates := h.global
	projectKeys := h.project[project]
	if len(candidates) == 0 && len(projectKeys) == 0 {
		return h.opts.AllowUnsigned
	}
	if presented == "" {
		return false
	}
	got := sha256.Sum256([]byte(presented))
	match := 0
	for _, c := range candidates {
		match |= subtle.ConstantTimeCompare(got[:], c[:])
	}
	for _, c := range projectKeys {
		match |= subtle.ConstantTimeCompare(got[:], c[:])
	}
	return match == 1
}

// urlProject reads the project from a {project} path wildcard or the
// ?project= query parameter.
func urlProject(r *http.Request) string {
	if p := strings.TrimSpace(r.PathValue("project")); p != "" {
		return p
	}
	return strings.TrimSpace(r.URL.Query().Get("project"))
}

func reasonCode(err error) string {
	for _, c := range []struct {
		err  error
		code string
	}{
		{ErrMalformedJSON, "malformed_json"},
		{ErrNotObject, "not_object"},
		{ErrMissingEventName, "missing_event_name"},
		{ErrMissingProject, "missing_project"},
		{ErrBadProject, "bad_project"},
		{ErrBadPayload, "bad_payload"},
		{ErrBadID, "bad_id"},
	} {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "other"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{"error":"internal error"}`)
	}
	writeBody(w, status, append(b, '\n'))
}

// The answers of the hot path, encoded once.
var (
	bodyAccepted  = []byte(`{"status":"accepted"}` + "\n")
	bodyDuplicate = []byte(`{"status":"duplicate"}` + "\n")
	bodyIgnored   = []byte(`{"status":"ignored"}` + "\n")
)

func writeBody(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(body))) // so a flush does not switch to chunked
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
