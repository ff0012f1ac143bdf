package qase

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"time"
)

// Lenient readers over JSON values decoded with UseNumber (webhooks) or
// plain float64 (never used here, but accepted). Each reports ok=false on a
// type surprise so the caller can skip that attribute instead of failing.

// toInt64 accepts an integer, a float with an integral value, or a numeric
// string ("25", " 25 ", "25.0").
func toInt64(v any) (int64, bool) {
	if s, ok := numberText(v); ok {
		return parseInt(s)
	}
	switch t := v.(type) {
	case float64:
		return floatToInt(t)
	case int:
		return int64(t), true
	case int64:
		return t, true
	case int32:
		return int64(t), true
	}
	return 0, false
}

func parseInt(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, false
	}
	return floatToInt(f)
}

func floatToInt(f float64) (int64, bool) {
	// 2^63 is the first float64 out of int64 range.
	if math.IsNaN(f) || math.IsInf(f, 0) || f != math.Trunc(f) || f >= 1<<63 || f < -(1<<63) {
		return 0, false
	}
	return int64(f), true
}

// toFloat accepts any JSON number or numeric string.
func toFloat(v any) (float64, bool) {
	switch t := v.(type) {
	case float64:
		return t, !math.IsNaN(t) && !math.IsInf(t, 0)
	case int64:
		return float64(t), true
	case int:
		return float64(t), true
	}
	s, ok := numberText(v)
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// numberText is the text of a JSON number or of a string (trimmed) that
// may hold one; false for any other value.
func numberText(v any) (string, bool) {
	switch t := v.(type) {
	case json.Number:
		return string(t), true
	case string:
		return strings.TrimSpace(t), true
	}
	return "", false
}

// toString accepts only strings: a number where text is expected is a type
// surprise, not something to stringify silently.
func toString(v any) (string, bool) {
	s, ok := v.(string)
	return s, ok
}

// toBool accepts booleans, 0/1 and "true"/"false".
func toBool(v any) (bool, bool) {
	switch t := v.(type) {
	case bool:
		return t, true
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(t))
		return b, err == nil
	}
	if n, ok := toInt64(v); ok && (n == 0 || n == 1) {
		return n == 1, true
	}
	return false, false
}

// user reads Qase's webhook user object {email, name}.
func user(v any) (name, email string, ok bool) {
	m, isMap := v.(map[string]any)
	if !isMap {
		return "", "", false
	}
	name, _ = toString(m["name"])
	email, _ = toString(m["email"])
	name, email = strings.TrimSpace(name), strings.TrimSpace(email)
	return name, email, name != "" || email != ""
}

// slug turns a title or slug into Qase's filter-slug form: "Request
// changes" -> "request_changes".
func slug(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '-' || r == '_' }), "_")
}

// normalizeApproval maps the webhook's and the API's reviewer statuses to
// one vocabulary: approved | unapproved | changes_requested.
func normalizeApproval(s string) string {
	switch v := slug(s); v {
	case "request_changes", "changes_requested", "requested_changes", "change_requested", "request_change":
		return "changes_requested"
	case "approve":
		return "approved"
	case "unapprove", "not_approved":
		return "unapproved"
	default:
		return v
	}
}

// timeLayouts are the shapes Qase uses for times: RFC 3339 with offset
// (API), ISO-8601 with microseconds (S21 webhooks), "YYYY-MM-DD HH:MM:SS"
// without a zone (newer webhooks, deprecated API fields).
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999Z0700",
	"2006-01-02 15:04:05",
	"2006-01-02T15:04:05",
	"2006-01-02 15:04:05Z07:00",
}

// normalizeTime rewrites a Qase time as RFC 3339 in UTC, so webhook and API
// values for the same instant compare equal. Zone-less values are taken as
// UTC (Qase does not say; its API examples are UTC). Unparseable text is
// returned unchanged.
func normalizeTime(s string) string {
	s = strings.TrimSpace(s)
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC().Format(time.RFC3339)
		}
	}
	return s
}
