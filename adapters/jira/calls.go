package jira

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	jira "github.com/andygrunwald/go-jira"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// How a 404 is read: the meaning depends on the call.
type notFoundMode int

const (
	nfGone   notFoundMode = iota // the issue is gone: Permanent, wrapping qsync.ErrNotFound
	nfGet                        // Get: plain qsync.ErrNotFound (the engine recreates)
	nfCreate                     // create/search: wrong project or endpoint: Permanent
)

// call runs one Jira request named op: it bounds it with the per-request
// timeout, reports it to the observer and classifies any failure. It is
// the only place where HTTP outcomes become errors. fn returns go-jira's
// *Response, which go-jira hands back even when the call failed.
func (t *Tracker) call(ctx context.Context, op string, nf notFoundMode, fn func(ctx context.Context) (*jira.Response, error)) error {
	cctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	start := time.Now()
	resp, err := fn(cctx)
	var hr *http.Response
	if resp != nil {
		hr = resp.Response
	}
	status := 0
	if hr != nil {
		status = hr.StatusCode
	}
	if t.observe != nil {
		t.observe("jira", op, status, time.Since(start))
	}
	if hr != nil && hr.Body != nil {
		// Some go-jira calls leave the body to the caller; drain it so the
		// connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(hr.Body, 1<<20))
		_ = hr.Body.Close()
	}
	if err == nil {
		return nil
	}
	return t.classify(ctx, op, hr, err, nf)
}

// classify turns a failed call into the engine's vocabulary:
// RetryAfter for rate limits, Permanent for what retrying cannot fix,
// qsync.ErrNotFound for a vanished issue, a plain (retryable) error otherwise.
// Failures that certainly did not apply the write are also NotApplied:
// every 4xx answer (429 included; Jira refused the request before acting
// on it) and connections that were never made (dial, DNS). Timeouts, 5xx
// and connections lost after sending stay ambiguous.
func (t *Tracker) classify(parent context.Context, op string, hr *http.Response, err error, nf notFoundMode) error {
	out := t.classifyFailure(parent, op, hr, err, nf)
	if (hr != nil && hr.StatusCode >= 400 && hr.StatusCode < 500) || (hr == nil && qsync.NeverConnected(err)) {
		return qsync.NotApplied(out)
	}
	return out
}

func (t *Tracker) classifyFailure(parent context.Context, op string, hr *http.Response, err error, nf notFoundMode) error {
	e := &CallError{Op: op}
	if hr != nil && hr.Request != nil {
		e.Method, e.Path = hr.Request.Method, hr.Request.URL.Path
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		if e.Method == "" {
			e.Method = strings.ToUpper(uerr.Op)
		}
		if u, perr := url.Parse(uerr.URL); perr == nil && e.Path == "" {
			e.Path = u.Path
		}
		err = uerr.Err // its message repeats the URL
	}
	if hr == nil || hr.StatusCode < 400 {
		// Transport failure, timeout, or an answer we could not decode.
		if hr != nil {
			e.Status = hr.StatusCode
		}
		if perr := parent.Err(); perr != nil {
			err = perr
		}
		e.Msg = t.redact(err.Error())
		e.cause = err
		return e
	}

	e.Status = hr.StatusCode
	e.Msg = t.redact(errorReason(hr))
	retryAfter := hr.Header.Get("Retry-After") != ""
	switch s := hr.StatusCode; {
	case s == http.StatusTooManyRequests,
		s == http.StatusServiceUnavailable && retryAfter,
		s == http.StatusForbidden && retryAfter: // some limiters answer 403 + Retry-After
		return qsync.RetryAfter(e, t.retryWait(hr.Header))
	case s >= 500, s == http.StatusRequestTimeout:
		return e
	case s == http.StatusNotFound:
		switch nf {
		case nfGet:
			e.extra = qsync.ErrNotFound
			return e
		case nfGone:
			e.extra = qsync.ErrNotFound
		}
		return qsync.Permanent(e)
	default: // 400, 401, 403, 405, 409, 410, 413, 422, ...
		return qsync.Permanent(e)
	}
}

// retryWait reads the server's requested wait: Retry-After (seconds or
// HTTP date), else X-RateLimit-Reset (ISO-8601), else a default.
func (t *Tracker) retryWait(h http.Header) time.Duration {
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
			return max(time.Duration(secs)*time.Second, time.Second)
		}
		if at, err := http.ParseTime(v); err == nil {
			return max(at.Sub(t.now()), time.Second)
		}
	}
	if v := strings.TrimSpace(h.Get("X-RateLimit-Reset")); v != "" {
		if at, ok := parseISOTime(v); ok {
			return max(at.Sub(t.now()), time.Second)
		}
	}
	return defaultRetryWait
}

func parseISOTime(v string) (time.Time, bool) {
	for _, layout := range []string{
		time.RFC3339Nano, "2006-01-02T15:04Z07:00", "2006-01-02T15:04:05.000Z0700",
		"2006-01-02T15:04:05Z0700", "2006-01-02T15:04Z0700", "2006-01-02T15:04:05", "2006-01-02T15:04",
	} {
		if at, err := time.Parse(layout, v); err == nil {
			return at, true
		}
	}
	return time.Time{}, false
}

// errorReason joins Jira's errorMessages and errors into one line.
func errorReason(hr *http.Response) string {
	kb, ok := hr.Body.(*keptBody)
	if !ok || len(kb.data) == 0 {
		return ""
	}
	var body struct {
		ErrorMessages []string       `json:"errorMessages"`
		Errors        map[string]any `json:"errors"`
		Message       string         `json:"message"`
	}
	if json.Unmarshal(kb.data, &body) == nil {
		var parts []string
		for _, m := range body.ErrorMessages {
			if m = strings.TrimSpace(m); m != "" {
				parts = append(parts, m)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(body.Errors)) {
			parts = append(parts, fmt.Sprintf("%s: %v", k, body.Errors[k]))
		}
		if body.Message != "" {
			parts = append(parts, body.Message)
		}
		if len(parts) > 0 {
			return oneLine(strings.Join(parts, "; "), 500)
		}
	}
	if strings.Contains(hr.Header.Get("Content-Type"), "html") {
		return "" // an error page says nothing the status does not
	}
	return oneLine(string(kb.data), 200)
}

func oneLine(s string, limit int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > limit {
		s = string(r[:limit]) + "…"
	}
	return s
}

// redact removes credentials from text bound for errors and logs.
func (t *Tracker) redact(s string) string {
	for _, sec := range t.secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	return s
}

func basicCreds(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}

// CallError describes a failed Jira call: the operation, method, path and
// status and Jira's own reason; never credentials or headers.
type CallError struct {
	Op     string
	Method string
	Path   string
	Status int // 0: no answer
	Msg    string
	cause  error // transport or context error
	extra  error // e.g. qsync.ErrNotFound
}

func (e *CallError) Error() string {
	var b strings.Builder
	b.WriteString("jira " + e.Op)
	if e.Method != "" || e.Path != "" {
		b.WriteString(": " + e.Method + " " + e.Path)
	}
	if e.Status != 0 {
		fmt.Fprintf(&b, ": %d %s", e.Status, http.StatusText(e.Status))
	}
	if e.Msg != "" {
		b.WriteString(": " + e.Msg)
	}
	return b.String()
}

// Unwrap exposes the transport cause and qsync.ErrNotFound to errors.Is.
func (e *CallError) Unwrap() []error {
	var errs []error
	if e.cause != nil {
		errs = append(errs, e.cause)
	}
	if e.extra != nil {
		errs = append(errs, e.extra)
	}
	return errs
}

// Request describes the request for dead letters ("POST /rest/api/2/issue -> 400").
func (e *CallError) Request() string {
	s := strings.TrimSpace(e.Method + " " + e.Path)
	if e.Status != 0 {
		s += " -> " + strconv.Itoa(e.Status)
	}
	return s
}

// bodyKeeper buffers error bodies so the classifier can read Jira's
// errorMessages even after go-jira consumed and closed the body.
type bodyKeeper struct{ base http.RoundTripper }

type keptBody struct {
	*bytes.Reader
	data []byte
}

func (*keptBody) Close() error { return nil }

func (k bodyKeeper) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := k.base.RoundTrip(req)
	if err != nil || resp.StatusCode < 400 {
		return resp, err
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	resp.Body = &keptBody{Reader: bytes.NewReader(data), data: data}
	return resp, nil
}

// do sends a request go-jira has no method for (or decodes too strictly)
// through go-jira's client, decoding the answer into v.
func (t *Tracker) do(ctx context.Context, method, path string, body, v any) (*jira.Response, error) {
	req, err := t.client.NewRequestWithContext(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	return t.client.Do(req, v)
}
