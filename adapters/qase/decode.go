// Package qase is the Qase side of qase-sync: the inbound webhook handler
// (decode, authenticate, hand to the inbox) and a reader for the Qase REST
// API (qsync.EntitySource).
//
// Webhook payloads are thin, hand-documented and have changed shape over
// the years (see ATTRIBUTES.md), so decoding is lenient: only the event
// name, the project and, for served kinds, the entity id are required.
package qase

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// DecodeOptions tune Decode.
type DecodeOptions struct {
	// DefaultProject is used when the body carries no project code (S21
	// envelopes): typically taken from the webhook URL or the config.
	DefaultProject string
}

// Sentinels behind every decode error; test with errors.Is. The handler
// answers 400 for all but ErrUnservedKind, which it acknowledges (202).
var (
	ErrMalformedJSON    = errors.New("malformed JSON")
	ErrNotObject        = errors.New("body is not a JSON object")
	ErrMissingEventName = errors.New("missing event name")
	ErrMissingProject   = errors.New("missing project code")
	ErrBadProject       = errors.New("invalid project code")
	ErrBadPayload       = errors.New("bad payload")
	ErrBadID            = errors.New("bad entity id")
	// ErrUnservedKind: the event is well-formed but of a kind qase-sync
	// does not mirror (case.*, suite.*, result.*, ...). Not a client error.
	ErrUnservedKind = errors.New("event kind not served")
)

// DecodeError is a decode failure with a precise reason that is safe to
// send back to the caller.
type DecodeError struct {
	Kind   error  // one of the Err* sentinels above
	Detail string // human-readable, precise reason
	Offset int64  // byte offset of a JSON syntax problem, -1 if none
	Err    error  // underlying cause, if any
}

func (e *DecodeError) Error() string { return e.Detail }

// Unwrap exposes the sentinel and the cause to errors.Is / errors.As.
func (e *DecodeError) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

func decodeErr(kind error, format string, args ...any) *DecodeError {
	return &DecodeError{Kind: kind, Detail: fmt.Sprintf(format, args...), Offset: -1}
}

// projectCode is what can safely live inside keys and markers
// ("route:PROJ/kind/id"); Qase codes are 2-10 letters and digits.
var projectCode = regexp.MustCompile(`^[A-Z0-9][A-Z0-9_-]{0,63}$`)

// Decode turns one webhook body into an event. It is pure: now is the
// receive time (and the fallback event time).
//
// On failure it still returns what it could read (name, project, kind,
// timestamp, dedup key), so the caller can authenticate per project and
// log. For kinds that are not served it returns the event with Ref.Kind set
// to the name's prefix and an error matching ErrUnservedKind.
func Decode(body []byte, opts DecodeOptions, now time.Time) (qsync.Event, error) {
	ev, _, err := decode(body, opts, now)
	return ev, err
}

// DecodeNotes is Decode plus what was tolerated or skipped, in words (the
// webhook logs them; plan prints them).
func DecodeNotes(body []byte, opts DecodeOptions, now time.Time) (qsync.Event, []string, error) {
	return decode(body, opts, now)
}

// decode is Decode plus notes about what was tolerated (for the log line).
func decode(body []byte, opts DecodeOptions, now time.Time) (qsync.Event, []string, error) {
	ev := qsync.Event{ReceivedAt: now, Payload: body}
	root, derr := parseObject(body)
	if derr != nil {
		return ev, nil, derr
	}
	var notes []string
	note := func(format string, args ...any) { notes = append(notes, fmt.Sprintf(format, args...)) }

	// Envelope: event_name (S22+), falling back to event (S21).
	name, nameErr := eventName(root)
	ev.Name = name
	kind, _, _ := strings.Cut(name, ".")
	ev.Ref.Kind = qsync.Kind(kind)

	payload, payloadErr := payloadObject(root, note)

	project, projErr := projectOf(root, payload, opts)
	ev.Ref.Project = project

	ev.Timestamp = timestampOf(root, now, note)
	if v, ok := root["team_member_id"]; ok && v != nil {
		if id, ok := toInt64(v); ok {
			ev.ActorID = id
		} else {
			note("team_member_id: %s, skipped", notInteger(v))
		}
	}

	id, idOK := toInt64(payload["id"])
	ev.DedupKey = dedupKey(project, name, entityKey(payload, id, idOK), ev.Timestamp.Unix(), payloadDigest(root["payload"], payload))

	if kind == "result" && nameErr == nil && projErr == nil && payloadErr == nil {
		return resultHint(ev, notes, payload)
	}
	switch {
	case nameErr != nil:
		return ev, notes, nameErr
	case !ev.Ref.Kind.Valid() || ev.Ref.Kind == qsync.KindFailure: // failures are derived, never sent
		return ev, notes, decodeErr(ErrUnservedKind, "event kind %q is not served (%s)", kind, name)
	case projErr != nil:
		return ev, notes, projErr
	case payloadErr != nil:
		return ev, notes, payloadErr
	}
	rawID, present := payload["id"]
	switch {
	case !present || rawID == nil:
		return ev, notes, decodeErr(ErrBadID, "payload.id is missing (required for %s)", name)
	case !idOK:
		return ev, notes, decodeErr(ErrBadID, "payload.id %s", notInteger(rawID))
	case id <= 0:
		return ev, notes, decodeErr(ErrBadID, "payload.id %d is not a positive integer", id)
	}
	ev.Ref.ID = id

	b := &builder{attrs: map[string]any{}, note: note}
	switch ev.Ref.Kind {
	case qsync.KindDefect:
		normalizeDefect(&ev, payload, b)
	case qsync.KindReview:
		normalizeReview(&ev, payload, b)
	case qsync.KindRun:
		normalizeRun(&ev, payload, b)
	}
	if len(b.attrs) > 0 {
		ev.Patch.Attrs = b.attrs
	}
	return ev, notes, nil
}

// parseObject decodes the body with UseNumber (ids and counters keep their
// exact text) and insists on exactly one JSON object.
func parseObject(body []byte) (map[string]any, *DecodeError) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, decodeErr(ErrMalformedJSON, "malformed JSON: empty body")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		e := decodeErr(ErrMalformedJSON, "malformed JSON: %v", err)
		e.Err = err
		var se *json.SyntaxError
		switch {
		case errors.As(err, &se):
			e.Offset = se.Offset
			e.Detail = fmt.Sprintf("malformed JSON at byte %d: %v", se.Offset, err)
		case errors.Is(err, io.ErrUnexpectedEOF):
			e.Offset = int64(len(body))
			e.Detail = fmt.Sprintf("malformed JSON: unexpected end of input at byte %d (truncated body?)", len(body))
		}
		return nil, e
	}
	if _, err := dec.Token(); err != io.EOF {
		e := decodeErr(ErrMalformedJSON, "malformed JSON at byte %d: unexpected data after the top-level value", dec.InputOffset())
		e.Offset = dec.InputOffset()
		return nil, e
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, decodeErr(ErrNotObject, "body must be a JSON object, got %s", jsonType(v))
	}
	return m, nil
}

func eventName(root map[string]any) (string, error) {
	for _, key := range []string{"event_name", "event"} {
		v, ok := root[key]
		if !ok || v == nil {
			continue
		}
		s, ok := v.(string)
		if !ok {
			return "", decodeErr(ErrMissingEventName, "%s must be a string, got %s", key, jsonType(v))
		}
		if s = strings.ToLower(strings.TrimSpace(s)); s != "" {
			return s, nil
		}
	}
	return "", decodeErr(ErrMissingEventName, "missing event name: neither event_name nor event is set")
}

// payloadObject returns the payload as an object; [] and a missing payload
// count as empty. Any other shape is an error for served kinds only.
func payloadObject(root map[string]any, note func(string, ...any)) (map[string]any, error) {
	switch p := root["payload"].(type) {
	case map[string]any:
		return p, nil
	case []any:
		if len(p) == 0 {
			return map[string]any{}, nil
		}
	case nil:
		note("payload missing")
		return map[string]any{}, nil
	}
	return map[string]any{}, decodeErr(ErrBadPayload, "payload must be an object, got %s", jsonType(root["payload"]))
}

// projectOf: project_code, else the payload's own project (S21 reviews
// carry one), else the default. Codes are upper-cased as Qase shows them.
func projectOf(root, payload map[string]any, opts DecodeOptions) (string, error) {
	var raw string
	from := ""
	for _, c := range []struct {
		v    any
		from string
	}{{root["project_code"], "project_code"}, {payload["project"], "payload.project"}, {opts.DefaultProject, "default project"}} {
		if s, ok := c.v.(string); ok && strings.TrimSpace(s) != "" {
			raw, from = strings.TrimSpace(s), c.from
			break
		}
	}
	if raw == "" {
		if v, ok := root["project_code"]; ok && v != nil {
			return "", decodeErr(ErrMissingProject, "project_code must be a string, got %s", jsonType(v))
		}
		return "", decodeErr(ErrMissingProject, "missing project code: project_code is not set and no default project is configured")
	}
	code := strings.ToUpper(raw)
	if !projectCode.MatchString(code) {
		return "", decodeErr(ErrBadProject, "%s %q is not a valid Qase project code", from, truncate(raw, 40))
	}
	return code, nil
}

// timestampOf reads the event time: integer seconds, also a float, a
// numeric string, milliseconds (detected by size) or an ISO time. Missing
// or unreadable times fall back to now.
func timestampOf(root map[string]any, now time.Time, note func(string, ...any)) time.Time {
	v, ok := root["timestamp"]
	if !ok || v == nil {
		note("timestamp missing; used receive time")
		return now
	}
	if f, ok := toFloat(v); ok && f > 0 {
		if f > 1e11 { // 1e11 s is the year 5138: this is milliseconds
			note("timestamp in milliseconds")
			f /= 1000
		}
		if f < 1<<40 {
			sec := int64(f)
			return time.Unix(sec, int64((f-float64(sec))*1e9)).UTC()
		}
	}
	if s, ok := v.(string); ok {
		if t, err := time.Parse(time.RFC3339Nano, normalizeTime(s)); err == nil {
			return t
		}
	}
	note("timestamp %s unreadable; used receive time", describe(v))
	return now
}

// entityKey identifies the entity in the dedup key, for every kind
// (shared steps are keyed by hash).
func entityKey(payload map[string]any, id int64, idOK bool) string {
	if idOK {
		return fmt.Sprint(id)
	}
	if h, ok := payload["hash"].(string); ok {
		return h
	}
	if v, ok := payload["id"]; ok {
		return describe(v)
	}
	return ""
}

// payloadDigest hashes the payload re-marshalled (map keys sorted, no
// whitespace), so formatting and key order do not change the dedup key.
func payloadDigest(raw any, obj map[string]any) [32]byte {
	v := raw
	if _, isArr := raw.([]any); isArr && len(obj) == 0 {
		v = obj // [] and {} are the same empty payload
	}
	if raw == nil {
		v = obj
	}
	b, err := json.Marshal(v)
	if err != nil { // cannot happen for decoded JSON; keep the key defined anyway
		b = []byte(fmt.Sprint(v))
	}
	return sha256.Sum256(b)
}

// dedupKey is stable across re-deliveries of the same event (Qase sends no
// delivery id) and differs for different content in the same second.
func dedupKey(project, name, entity string, sec int64, payload [32]byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "qase\x00%s\x00%s\x00%s\x00%d\x00", project, name, entity, sec)
	h.Write(payload[:])
	return hex.EncodeToString(h.Sum(nil))
}

// builder collects attributes, skipping values of an unexpected type.
type builder struct {
	attrs map[string]any
	note  func(string, ...any)
}

func (b *builder) str(key string, v any) { put(b, key, v, toString, unexpected) }

func (b *builder) int(key string, v any) { put(b, key, v, toInt64, notInteger) }

// put stores conv(v) under key; a nil v is absent, and a value conv
// refuses is noted, with why(v), and skipped.
func put[T any](b *builder, key string, v any, conv func(any) (T, bool), why func(any) string) {
	if v == nil {
		return
	}
	if x, ok := conv(v); ok {
		b.attrs[key] = x
		return
	}
	b.note("%s: %s, skipped", key, why(v))
}

// unexpected names the JSON type of a value of the wrong type.
func unexpected(v any) string { return "unexpected " + jsonType(v) }

// notInteger says precisely why a value is not a 64-bit integer: out of
// range (an overflowing counter), fractional, or not a number at all.
func notInteger(v any) string {
	s, ok := numberText(v)
	if f, isFloat := v.(float64); isFloat {
		s, ok = strconv.FormatFloat(f, 'g', -1, 64), true
	}
	if !ok {
		return fmt.Sprintf("%s is not an integer", describe(v))
	}
	f, err := strconv.ParseFloat(s, 64)
	switch {
	case errors.Is(err, strconv.ErrRange), err == nil && (f >= 1<<63 || f < -(1<<63)):
		return fmt.Sprintf("%s is out of range for a 64-bit integer", describe(v))
	case err != nil:
		return fmt.Sprintf("%s is not an integer", describe(v))
	case f != math.Trunc(f):
		return fmt.Sprintf("%s is not an integer (a fraction)", describe(v))
	}
	return fmt.Sprintf("%s is not an integer", describe(v))
}

func (b *builder) time(key string, v any) {
	if s, ok := toString(v); ok && s != "" {
		b.attrs[key] = normalizeTime(s)
	} else if v != nil {
		b.note("%s: unexpected %s, skipped", key, jsonType(v))
	}
}

// actor sets key to the user's name (e-mail when the name is empty).
func (b *builder) actor(key string, v any) {
	if name, email, ok := user(v); ok {
		b.attrs[key] = firstNonEmpty(name, email)
	}
}

func normalizeDefect(ev *qsync.Event, p map[string]any, b *builder) {
	switch ev.Action() {
	case "created":
		b.str("title", p["title"])
		b.str("actual_result", p["actual_result"])
		if v, ok := p["severity"]; ok && v != nil {
			if s := severity(v); s != "" {
				b.attrs["severity"] = s
			} else {
				b.note("severity: unexpected %s, skipped", jsonType(v))
			}
		}
		b.int("case_id", p["case_id"])
		b.int("step", p["step"])
		b.attrs["status"] = "open" // a new defect is open; the payload never says
		if a, ok := p["attachments"].([]any); ok {
			b.attrs["attachments_count"] = int64(len(a))
		}
	case "resolved":
		b.attrs["status"] = "resolved"
	case "deleted":
		ev.Patch.Deleted = true
	}
	// defect.updated and unknown actions carry only the id: a hint to re-read.
}

// severity accepts the slug string (webhook, API) or a system-field object
// {slug|title} (case events, possibly future defect events).
func severity(v any) string {
	switch t := v.(type) {
	case string:
		return slug(t)
	case map[string]any:
		if s, ok := t["slug"].(string); ok && slug(s) != "" {
			return slug(s)
		}
		if s, ok := t["title"].(string); ok {
			return slug(s)
		}
	}
	return ""
}

func normalizeReview(ev *qsync.Event, p map[string]any, b *builder) {
	switch ev.Action() {
	case "created":
		b.str("title", p["title"])
		b.int("case_id", p["case_id"])
		b.attrs["status"] = "open"
		if s, ok := p["type"].(string); ok && s != "" {
			b.attrs["type"] = slug(s)
		}
		if name, email, ok := user(p["created_by"]); ok {
			if name != "" {
				b.attrs["author"] = name
			}
			if email != "" {
				b.attrs["author_email"] = email
			}
		}
		b.time("created_at", p["created"])
	case "updated":
		b.str("title", p["title"])
		b.int("case_id", p["case_id"])
		b.actor("updated_by", p["updated_by"])
	case "reopened":
		b.attrs["status"] = "open"
		b.str("title", p["title"])
		b.int("case_id", p["case_id"])
		b.actor("reopened_by", p["updated_by"])
	case "approval_status_changed":
		s, _ := toString(p["status"])
		status := normalizeApproval(s)
		if status == "" {
			b.note("approval status missing")
			return
		}
		b.attrs["approval"] = status
		b.actor("approval_by", p["updated_by"])
		if name, email, ok := user(p["updated_by"]); ok && email != "" {
			b.attrs[reviewerKey(email)] = map[string]any{"name": name, "status": status}
		}
	case "reviewer_added":
		if name, email, ok := user(p["reviewer"]); ok && email != "" {
			b.attrs[reviewerKey(email)] = map[string]any{"name": name, "status": "unapproved"}
		}
	case "reviewer_removed":
		if _, email, ok := user(p["reviewer"]); ok && email != "" {
			b.attrs[reviewerKey(email)] = nil // folds to "member removed"
		}
	case "merged":
		b.attrs["status"] = "merged"
		b.actor("merged_by", p["merged_by"])
	case "declined":
		b.attrs["status"] = "declined"
		b.actor("declined_by", p["declined_by"])
	case "deleted":
		b.attrs["status"] = "deleted"
		b.actor("deleted_by", p["deleted_by"])
		ev.Patch.Deleted = true
	case "commented":
		text, ok := toString(p["comment"])
		if !ok || strings.TrimSpace(text) == "" {
			b.note("comment text missing")
			return
		}
		name, email, _ := user(p["commented_by"])
		ev.Patch.Comment = &qsync.Comment{
			ID:     CommentID(ev.DedupKey),
			Author: firstNonEmpty(name, email),
			Body:   text,
			At:     ev.Timestamp,
		}
	}
}

// CommentID is the stable id of the comment carried by a review.commented
// event: re-deliveries share the dedup key, hence the id.
func CommentID(dedupKey string) string {
	if len(dedupKey) > 16 {
		dedupKey = dedupKey[:16]
	}
	return "qase-" + dedupKey
}

// reviewerKey is the per-reviewer attribute; webhooks identify people only
// by e-mail (the API by author uuid).
func reviewerKey(member string) string {
	return "reviewers/" + strings.ToLower(strings.TrimSpace(member))
}

var runCounters = []string{"cases", "passed", "failed", "blocked", "skipped", "untested", "duration"}

func normalizeRun(ev *qsync.Event, p map[string]any, b *builder) {
	switch ev.Action() {
	case "started":
		b.str("title", p["title"])
		b.str("description", p["description"])
		switch plan := p["plan"].(type) {
		case map[string]any:
			id, idOK := toInt64(plan["id"])
			if idOK {
				b.attrs["plan_id"] = id
			}
			if t, ok := plan["title"].(string); ok && t != "" {
				b.attrs["plan"] = t
			} else if idOK {
				b.attrs["plan"] = id
			}
		case nil:
		default:
			if id, ok := toInt64(plan); ok { // S21: a bare id
				b.attrs["plan"], b.attrs["plan_id"] = id, id
			} else {
				b.note("plan: unexpected %s, skipped", jsonType(plan))
			}
		}
		b.int("cases", p["cases_count"])
		if env := environment(p["environment"]); env != "" {
			b.attrs["environment"] = env
		}
		b.attrs["status"] = "in_progress"
	case "updated":
		switch v := p["cases_added"].(type) {
		case []any: // S21 typed it as an array of case ids
			b.attrs["cases_added"] = int64(len(v))
		case nil:
			b.int("cases_added", p["cases_count"]) // S22 table's name
		default:
			b.int("cases_added", v)
		}
	case "aborted":
		b.attrs["status"] = "aborted"
		counters(p, b)
	case "completed":
		counters(p, b)
		failed, _ := b.attrs["failed"].(int64)
		b.attrs["status"] = "passed"
		if failed > 0 {
			b.attrs["status"] = "failed"
		}
		b.attrs["completed"] = true
	case "deleted":
		ev.Patch.Deleted = true
	case "report_changed":
		v, ok := p["visible"]
		if !ok {
			v = p["public"]
		}
		if pub, ok := toBool(v); ok {
			b.attrs["public"] = pub
		} else if v != nil {
			b.note("visible: unexpected %s, skipped", jsonType(v))
		}
	}
}

func counters(p map[string]any, b *builder) {
	for _, k := range runCounters {
		b.int(k, p[k])
	}
}

// environment accepts the slug string (webhook) or an object {slug, title}.
func environment(v any) string {
	switch t := v.(type) {
	case string:
		return strings.TrimSpace(t)
	case map[string]any:
		s, _ := t["slug"].(string)
		if s == "" {
			s, _ = t["title"].(string)
		}
		return strings.TrimSpace(s)
	}
	return ""
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number, float64, int64, int:
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}

// describe renders a scalar for an error message, bounded in size.
func describe(v any) string {
	switch t := v.(type) {
	case string:
		return fmt.Sprintf("%q", truncate(t, 40))
	case json.Number:
		return truncate(string(t), 40)
	case nil, map[string]any, []any, bool:
		return "(" + jsonType(v) + ")"
	}
	return truncate(fmt.Sprint(v), 40)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// cut on a rune boundary so the message stays valid UTF-8
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

// resultHint turns a result.* delivery into a hint that its run changed.
// Qase documents no payload for these events, so nothing else is read
// from them: a run id under run_id, run.id or run is all that is used,
// and without one the event is acknowledged and ignored.
func resultHint(ev qsync.Event, notes []string, p map[string]any) (qsync.Event, []string, error) {
	var run any = p["run_id"]
	if run == nil {
		switch r := p["run"].(type) {
		case map[string]any:
			run = r["id"]
		default:
			run = r
		}
	}
	id, ok := toInt64(run)
	if !ok || id <= 0 {
		return ev, notes, decodeErr(ErrUnservedKind, "%s carries no run id; result events are only hints that a run changed", ev.Name)
	}
	ev.Ref.Kind, ev.Ref.ID = qsync.KindRun, id
	return ev, notes, nil
}
