package qase

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// DefaultBaseURL is Qase's REST API v1.
const DefaultBaseURL = "https://api.qase.io/v1"

// API paging limits (api-v1.yaml: limit max 100, offset max 100000).
const pageLimit = 100

// maxOffset is a variable only so tests can exercise the cap cheaply.
var maxOffset = 100000

// defaultRateLimitWait is Qase's documented lock-out after a 429.
const defaultRateLimitWait = 60 * time.Second

// maxResponse bounds a response body read (a page of 100 runs is ~100 KiB).
const maxResponse = 32 << 20

// ErrListTruncated is returned by List after it enumerated everything the
// API's offset cap lets it reach and some entities remained out of reach.
var ErrListTruncated = errors.New("qase: listing truncated by the API offset cap")

// ClientOptions configure NewClient.
type ClientOptions struct {
	BaseURL    string // default DefaultBaseURL
	Token      string
	HTTPClient *http.Client
	Logger     *logrus.Entry
	Observer   qsync.CallObserver // may be nil
	Timeout    time.Duration      // per request; default 30 s
	Clock      qsync.Clock        // for X-RateLimit-Reset; default system clock
}

// Client reads defects, runs and reviews from the Qase REST API. It
// implements qsync.EntitySource.
type Client struct {
	base    string
	token   string
	hc      *http.Client
	log     *logrus.Entry
	obs     qsync.CallObserver
	timeout time.Duration
	clock   qsync.Clock
}

var _ qsync.EntitySource = (*Client)(nil)

// NewClient returns a Qase API client.
func NewClient(opts ClientOptions) *Client {
	c := &Client{
		base:    strings.TrimRight(opts.BaseURL, "/"),
		token:   opts.Token,
		hc:      opts.HTTPClient,
		log:     opts.Logger,
		obs:     opts.Observer,
		timeout: opts.Timeout,
		clock:   opts.Clock,
	}
	if c.base == "" {
		c.base = DefaultBaseURL
	}
	if c.hc == nil {
		c.hc = &http.Client{}
	}
	if c.log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		c.log = logrus.NewEntry(l)
	}
	if c.timeout <= 0 {
		c.timeout = 30 * time.Second
	}
	if c.clock == nil {
		c.clock = qsync.SystemClock
	}
	return c
}

// APIError is a non-2xx answer from Qase. It never carries the token.
type APIError struct {
	Method  string
	Path    string // without query
	Status  int
	Message string // Qase's errorMessage, if any
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("qase: %s %s: %d %s", e.Method, e.Path, e.Status, http.StatusText(e.Status))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is makes a 404 match qsync.ErrNotFound.
func (e *APIError) Is(target error) bool {
	return target == qsync.ErrNotFound && e.Status == http.StatusNotFound
}

func kindPath(kind qsync.Kind) (string, bool) {
	switch kind {
	case qsync.KindDefect:
		return "defect", true
	case qsync.KindRun:
		return "run", true
	case qsync.KindReview:
		return "review", true
	}
	return "", false
}

// Fetch reads one entity; found=false when Qase answers 404.
func (c *Client) Fetch(ctx context.Context, ref qsync.EntityRef) (map[string]any, bool, error) {
	seg, ok := kindPath(ref.Kind)
	if !ok {
		return nil, false, qsync.Permanentf("qase: cannot fetch kind %q", ref.Kind)
	}
	path := "/" + seg + "/" + url.PathEscape(ref.Project) + "/" + strconv.FormatInt(ref.ID, 10)
	var m map[string]any
	err := c.get(ctx, "get_"+seg, path, nil, &m)
	if errors.Is(err, qsync.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if m == nil {
		return nil, false, fmt.Errorf("qase: GET %s: empty result", path)
	}
	return entityAttrs(ref.Kind, m), true, nil
}

// listStatuses split a scan whose total exceeds the offset cap.
var listStatuses = map[qsync.Kind][]string{
	qsync.KindDefect: {"open", "in_progress", "resolved", "invalid"},
	qsync.KindRun:    {"in_progress", "passed", "failed", "aborted"},
	qsync.KindReview: {"open", "merged", "declined"},
}

// List calls fn for every entity of the kind in the project, paging with
// limit=100 and offset. When the project holds more than the offset cap
// lets one scan reach, it scans per status instead; what still cannot be
// reached is reported as ErrListTruncated after the rest was listed.
func (c *Client) List(ctx context.Context, project string, kind qsync.Kind, fn func(qsync.EntityRef, map[string]any) error) error {
	if _, ok := kindPath(kind); !ok {
		return qsync.Permanentf("qase: cannot list kind %q", kind)
	}
	truncated, err := c.scan(ctx, project, kind, "", fn)
	if err != nil {
		return err
	}
	if truncated {
		return fmt.Errorf("%w (%s %s)", ErrListTruncated, project, kind)
	}
	return nil
}

func (c *Client) scan(ctx context.Context, project string, kind qsync.Kind, status string, fn func(qsync.EntityRef, map[string]any) error) (truncated bool, err error) {
	seg, _ := kindPath(kind)
	path := "/" + seg + "/" + url.PathEscape(project)
	for offset := 0; ; {
		q := url.Values{"limit": {strconv.Itoa(pageLimit)}, "offset": {strconv.Itoa(offset)}}
		if status != "" {
			q.Set("status", status)
		}
		var page struct {
			Total    int64            `json:"total"`
			Filtered int64            `json:"filtered"`
			Count    int64            `json:"count"`
			Entities []map[string]any `json:"entities"`
		}
		if err := c.get(ctx, "list_"+seg, path, q, &page); err != nil {
			return false, err
		}
		filtered := page.Filtered
		if filtered == 0 && page.Total > 0 && status == "" {
			filtered = page.Total
		}
		if offset == 0 && status == "" && filtered > int64(maxOffset+pageLimit) && len(listStatuses[kind]) > 0 {
			c.log.WithFields(logrus.Fields{"project": project, "kind": kind, "filtered": filtered}).
				Info("qase list: more entities than one scan can reach; scanning per status")
			return c.scanByStatus(ctx, project, kind, fn)
		}
		for _, e := range page.Entities {
			id, ok := toInt64(e["id"])
			if !ok || id <= 0 {
				c.log.WithFields(logrus.Fields{"project": project, "kind": kind}).Warn("qase list: entity without a usable id skipped")
				continue
			}
			ref := qsync.EntityRef{Project: project, Kind: kind, ID: id}
			if err := fn(ref, entityAttrs(kind, e)); err != nil {
				return false, err
			}
		}
		count := page.Count
		if count == 0 {
			count = int64(len(page.Entities))
		}
		offset += int(count)
		switch {
		case count < pageLimit, filtered > 0 && int64(offset) >= filtered:
			return false, nil
		case offset > maxOffset:
			c.log.WithFields(logrus.Fields{"project": project, "kind": kind, "status": status, "filtered": filtered}).
				Warn("qase list: offset cap reached; the rest cannot be listed")
			return true, nil
		}
	}
}

func (c *Client) scanByStatus(ctx context.Context, project string, kind qsync.Kind, fn func(qsync.EntityRef, map[string]any) error) (bool, error) {
	truncated := false
	for _, st := range listStatuses[kind] {
		t, err := c.scan(ctx, project, kind, st, fn)
		if err != nil {
			return false, err
		}
		truncated = truncated || t
	}
	return truncated, nil
}

// get performs one GET, classifies failures and unwraps the
// {status, result} envelope into out.
func (c *Client) get(ctx context.Context, op, path string, q url.Values, out any) error {
	return c.do(ctx, op, http.MethodGet, path, q, nil, out)
}

// do performs one request (a JSON body when body is non-nil), classifies
// failures and unwraps the {status, result} envelope into out (nil: the
// result is not needed). A request the token's budget never let out
// (its context ended while it waited) is qsync.ErrRateWait.
func (c *Client) do(ctx context.Context, op, method, path string, q url.Values, body any, out any) error {
	ctx, done := qsync.WatchRateWait(ctx, false)
	return done(c.send(ctx, op, method, path, q, body, out))
}

// send is do without the rate-wait translation.
func (c *Client) send(ctx context.Context, op, method, path string, q url.Values, body any, out any) error {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return qsync.Permanentf("qase: %s %s: %v", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return qsync.Permanentf("qase: %s %s: %v", method, path, err)
	}
	req.Header.Set("Token", c.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "qase-sync")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}

	start := c.clock.Now()
	resp, err := c.hc.Do(req)
	elapsed := c.clock.Now().Sub(start)
	if err != nil {
		c.observe(op, 0, elapsed)
		// Transport failures are retryable. url.Error prints the URL, which
		// holds no credentials (the token travels in a header).
		return fmt.Errorf("qase: %s %s: %w", method, path, c.redact(err))
	}
	defer resp.Body.Close()
	raw, readErr := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	c.observe(op, resp.StatusCode, elapsed)
	c.log.WithFields(logrus.Fields{"op": op, "method": method, "path": path, "status": resp.StatusCode, "took": elapsed.String()}).Debug("qase api")
	if readErr != nil {
		return fmt.Errorf("qase: %s %s: reading response: %w", method, path, c.redact(readErr))
	}

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return c.classify(resp, method, path, raw)
	}
	var env struct {
		Status       bool            `json:"status"`
		Result       json.RawMessage `json:"result"`
		ErrorMessage string          `json:"errorMessage"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return fmt.Errorf("qase: %s %s: undecodable response: %v", method, path, err)
	}
	if !env.Status {
		return fmt.Errorf("qase: %s %s: status false: %s", method, path, c.scrub(env.ErrorMessage))
	}
	if out == nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(env.Result))
	dec.UseNumber()
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("qase: %s %s: undecodable result: %v", method, path, err)
	}
	return nil
}

// classify maps an HTTP failure to the engine's retry vocabulary.
func (c *Client) classify(resp *http.Response, method, path string, body []byte) error {
	apiErr := &APIError{Method: method, Path: path, Status: resp.StatusCode, Message: c.scrub(errorMessage(body))}
	switch s := resp.StatusCode; {
	case s == http.StatusNotFound:
		return apiErr // matches qsync.ErrNotFound
	case s == http.StatusTooManyRequests:
		return qsync.RetryAfter(apiErr, c.rateLimitWait(resp.Header))
	case s == http.StatusBadRequest, s == http.StatusUnauthorized, s == http.StatusPaymentRequired,
		s == http.StatusForbidden, s == http.StatusUnprocessableEntity, s == http.StatusRequestEntityTooLarge,
		s == http.StatusMethodNotAllowed, s == http.StatusGone:
		return qsync.Permanent(apiErr)
	case s == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
		return qsync.RetryAfter(apiErr, c.rateLimitWait(resp.Header))
	}
	return apiErr // 5xx and the rest: retry with backoff
}

// rateLimitWait: Retry-After (seconds or HTTP date), else X-RateLimit-Reset
// (Unix time), else Qase's documented 60 s lock-out.
func (c *Client) rateLimitWait(h http.Header) time.Duration {
	now := c.clock.Now()
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if n, err := strconv.ParseFloat(v, 64); err == nil && n >= 0 {
			return time.Duration(n * float64(time.Second))
		}
		if t, err := http.ParseTime(v); err == nil {
			return max(t.Sub(now), 0)
		}
	}
	if v := strings.TrimSpace(h.Get("X-RateLimit-Reset")); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
			return max(time.Unix(n, 0).Sub(now), 0)
		}
	}
	return defaultRateLimitWait
}

// errorMessage extracts Qase's error text from the (loosely specified)
// error body shapes.
func errorMessage(body []byte) string {
	var e struct {
		ErrorMessage string `json:"errorMessage"`
		Message      string `json:"message"`
		ErrorFields  []struct {
			Field string `json:"field"`
			Error string `json:"error"`
		} `json:"errorFields"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	msg := firstNonEmpty(e.ErrorMessage, e.Message)
	for _, f := range e.ErrorFields {
		msg += fmt.Sprintf(" [%s: %s]", f.Field, f.Error)
	}
	return truncate(strings.TrimSpace(msg), 300)
}

// scrub removes the token from text that came from elsewhere (a server
// echoing the request, say) before it can reach an error or a log.
func (c *Client) scrub(s string) string {
	if c.token == "" {
		return s
	}
	return strings.ReplaceAll(s, c.token, "[redacted]")
}

func (c *Client) redact(err error) error {
	if c.token == "" || !strings.Contains(err.Error(), c.token) {
		return err
	}
	return errors.New(c.scrub(err.Error()))
}

func (c *Client) observe(op string, status int, d time.Duration) {
	if c.obs != nil {
		c.obs("qase", op, status, d)
	}
}

// entityAttrs converts an API record into the attribute vocabulary of
// webhook patches (ATTRIBUTES.md).
func entityAttrs(kind qsync.Kind, m map[string]any) map[string]any {
	a := attrSetter{m: m, out: map[string]any{}}
	switch kind {
	case qsync.KindDefect:
		a.str("title", "title")
		a.str("actual_result", "actual_result")
		if v, ok := m["severity"]; ok && v != nil {
			if s := severity(v); s != "" {
				a.out["severity"] = s
			}
		}
		if s, ok := m["status"].(string); ok && s != "" {
			a.out["status"] = slug(s)
		}
		a.nullableInt("milestone_id", "milestone_id")
		if tags, ok := m["tags"].([]any); ok {
			a.out["tags"] = tagTitles(tags)
		}
		if !a.int("author_id", "author_id") {
			a.int("author_id", "member_id") // deprecated name
		}
		if !a.time("created_at", "created_at") {
			a.time("created_at", "created")
		}
		if !a.time("updated_at", "updated_at") {
			a.time("updated_at", "updated")
		}
		a.time("resolved_at", "resolved_at")
		a.nullableInt("case_id", "case_id")
		if att, ok := m["attachments"].([]any); ok {
			a.out["attachments_count"] = int64(len(att))
		}
	case qsync.KindRun:
		a.str("title", "title")
		a.str("description", "description")
		stats, _ := m["stats"].(map[string]any)
		statuses, _ := stats["statuses"].(map[string]any)
		for _, k := range []string{"passed", "failed", "blocked", "skipped", "untested", "invalid"} {
			if n, ok := toInt64(statuses[k]); ok {
				a.out[k] = n
			} else if n, ok := toInt64(stats[k]); ok {
				a.out[k] = n
			} else if statuses != nil {
				a.out[k] = int64(0) // the map lists only statuses that occur
			}
		}
		if n, ok := toInt64(stats["total"]); ok {
			a.out["cases"] = n
		}
		if st := runStatus(m["status_text"], a.out["failed"]); st != "" {
			a.out["status"] = st
			a.out["completed"] = st == "passed" || st == "failed"
		}
		if v, ok := m["environment"]; ok {
			if env := environment(v); env != "" {
				a.out["environment"] = env
			} else if v == nil {
				a.out["environment"] = nil
			}
		}
		a.int("duration", "elapsed_time")
		a.time("start_time", "start_time")
		a.time("end_time", "end_time")
		a.nullableInt("plan_id", "plan_id")
		if b, ok := m["public"].(bool); ok {
			a.out["public"] = b
		}
	case qsync.KindReview:
		a.str("title", "title")
		a.nullableInt("case_id", "case_id")
		if s, ok := m["status"].(string); ok && s != "" {
			a.out["status"] = slug(s)
		}
		if s, ok := m["type"].(string); ok && s != "" {
			a.out["type"] = slug(s)
		}
		a.str("author_uuid", "author_uuid")
		if rs, ok := m["reviewers"].([]any); ok {
			for _, r := range rs {
				rm, _ := r.(map[string]any)
				uuid, _ := rm["author_uuid"].(string)
				st, _ := rm["status"].(string)
				if uuid == "" {
					continue
				}
				a.out[reviewerKey(uuid)] = map[string]any{"status": normalizeApproval(st)}
			}
		}
		a.time("created_at", "created_at")
		a.time("updated_at", "updated_at")
	}
	return a.out
}

// runStatus maps status_text, including the pre-2025 vocabulary
// (active/complete/abort), to in_progress|passed|failed|aborted.
func runStatus(v any, failed any) string {
	s, _ := v.(string)
	switch s = slug(s); s {
	case "":
		return ""
	case "active":
		return "in_progress"
	case "abort":
		return "aborted"
	case "complete", "completed", "done":
		if n, _ := failed.(int64); n > 0 {
			return "failed"
		}
		return "passed"
	}
	return s
}

func tagTitles(tags []any) []any {
	out := make([]any, 0, len(tags))
	for _, t := range tags {
		switch v := t.(type) {
		case string:
			out = append(out, v)
		case map[string]any:
			if s, ok := v["title"].(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// attrSetter copies API fields into attributes. API reads are the truth,
// so a JSON null becomes an explicit nil (the value was cleared) while an
// absent field is left out.
type attrSetter struct {
	m, out map[string]any
}

func (a attrSetter) str(dst, src string) bool {
	return a.set(dst, src, func(v any) (any, bool) { s, ok := v.(string); return s, ok })
}

func (a attrSetter) int(dst, src string) bool {
	if n, ok := toInt64(a.m[src]); ok {
		a.out[dst] = n
		return true
	}
	return false
}

func (a attrSetter) nullableInt(dst, src string) {
	a.set(dst, src, func(v any) (any, bool) { return toInt64(v) })
}

func (a attrSetter) time(dst, src string) bool {
	return a.set(dst, src, func(v any) (any, bool) {
		s, ok := v.(string)
		if !ok || s == "" {
			return nil, false
		}
		return normalizeTime(s), true
	})
}

// set copies field src to attribute dst through conv: null becomes an
// explicit nil, an absent field or a value conv refuses is left out. It
// reports whether dst was set.
func (a attrSetter) set(dst, src string, conv func(any) (any, bool)) bool {
	v, ok := a.m[src]
	if !ok {
		return false
	}
	if v == nil {
		a.out[dst] = nil
		return true
	}
	if x, ok := conv(v); ok {
		a.out[dst] = x
		return true
	}
	return false
}
