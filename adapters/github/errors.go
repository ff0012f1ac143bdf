package github

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	gh "github.com/google/go-github/v60/github"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// defaultLimitWait is GitHub's advice for a secondary limit that names no
// wait: at least a minute.
const defaultLimitWait = 60 * time.Second

// minLimitWait keeps a reset that has just passed (clock skew) from
// turning into an immediate hammering retry.
const minLimitWait = time.Second

// call describes one API call for errors, logs and metrics. It never holds
// credentials.
type call struct {
	op      string // observer op name, e.g. "create"
	project string // owner/repo
	number  int    // issue number, 0 for repository-level calls
	// notFound: 404/410 mean "the issue is gone" and are reported as
	// qsync.ErrNotFound (read calls: plain; writes: also Permanent).
	notFound bool
	read     bool
}

func (c call) String() string {
	if c.number > 0 {
		return fmt.Sprintf("github %s %s#%d", c.op, c.project, c.number)
	}
	return fmt.Sprintf("github %s %s", c.op, c.project)
}

// classify is the one place that turns a go-github failure into the
// engine's vocabulary: qsync.Permanent (do not retry), qsync.RetryAfter
// (wait this long) or a plain error (retry with backoff). Messages are
// built from the status, GitHub's message and field errors only — never
// from headers, so no credential can leak.
//
// Failures that certainly did not apply the write are also
// qsync.NotApplied: every 4xx answer (rate limits included, keeping their
// wait), go-github's local refusal during a known rate limit, an App
// installation token that could not be minted (the API request was never
// sent) and connections that were never made (dial, DNS). 5xx, timeouts
// and connections lost after sending stay ambiguous.
func classify(c call, err error) error {
	if err == nil {
		return nil
	}
	out := classifyFailure(c, err)
	if notApplied(err) {
		return qsync.NotApplied(out)
	}
	return out
}

// notApplied reports whether the failed call certainly changed nothing.
func notApplied(err error) bool {
	if is[*gh.RateLimitError](err) || is[*gh.AbuseRateLimitError](err) || is[*ghinstallation.HTTPError](err) {
		return true
	}
	var ere *gh.ErrorResponse
	if errors.As(err, &ere) {
		return ere.Response != nil && ere.Response.StatusCode >= 400 && ere.Response.StatusCode < 500
	}
	return qsync.NeverConnected(err)
}

// is reports whether err has an error of type T in its chain.
func is[T error](err error) bool {
	var t T
	return errors.As(err, &t)
}

func classifyFailure(c call, err error) error {
	var (
		rle *gh.RateLimitError
		are *gh.AbuseRateLimitError
		ere *gh.ErrorResponse
		ghi *ghinstallation.HTTPError
	)
	switch {
	case errors.As(err, &rle):
		// Also the synthetic error go-github returns without calling the
		// network while a known primary limit lasts.
		wait := defaultLimitWait
		if !rle.Rate.Reset.Time.IsZero() {
			wait = time.Until(rle.Rate.Reset.Time)
		}
		return qsync.RetryAfter(fmt.Errorf("%s: primary rate limit exhausted: %s", c, rle.Message), clampWait(wait))
	case errors.As(err, &are):
		wait := defaultLimitWait
		if are.RetryAfter != nil {
			wait = *are.RetryAfter
		}
		return qsync.RetryAfter(fmt.Errorf("%s: secondary rate limit: %s", c, are.Message), clampWait(wait))
	case errors.As(err, &ere):
		return classifyStatus(c, ere)
	case errors.As(err, &ghi):
		// The App installation token could not be minted.
		msg := fmt.Errorf("%s: github app installation token: %s", c, ghi.Message)
		if ghi.Response != nil {
			switch s := ghi.Response.StatusCode; {
			case s == http.StatusTooManyRequests || s == http.StatusForbidden && isLimited(ghi.Response):
				return qsync.RetryAfter(msg, limitWait(ghi.Response))
			case s >= 400 && s < 500:
				return qsync.Permanent(msg) // bad app id, key or installation
			}
		}
		return msg
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", c, err)
	default:
		// Transport failures, timeouts, undecodable answers: retry.
		return fmt.Errorf("%s: %w", c, err)
	}
}

func classifyStatus(c call, e *gh.ErrorResponse) error {
	status := 0
	var hdr http.Header
	if e.Response != nil {
		status, hdr = e.Response.StatusCode, e.Response.Header
	}
	base := fmt.Errorf("%s: %d %s", c, status, describe(e))
	switch {
	case status == http.StatusTooManyRequests:
		// go-github v60 does not recognise 429 as a rate limit.
		return qsync.RetryAfter(base, limitWait(e.Response))
	case status == http.StatusForbidden && (isLimited(e.Response) ||
		strings.Contains(strings.ToLower(e.Message), "rate limit")):
		return qsync.RetryAfter(base, limitWait(e.Response))
	case status >= 300 && status < 400:
		// Redirects of writes are not followed (the client would turn
		// them into GETs): the issue was transferred or the repo moved.
		loc := ""
		if hdr != nil {
			loc = hdr.Get("Location")
		}
		err := fmt.Errorf("%s: %d moved to %q: %w", c, status, loc, qsync.ErrNotFound)
		if c.notFound && c.read {
			return err
		}
		return qsync.Permanent(err)
	case (status == http.StatusNotFound || status == http.StatusGone) && c.notFound:
		err := fmt.Errorf("%s: %w", base, qsync.ErrNotFound)
		if c.read {
			return err
		}
		return qsync.Permanent(err)
	case status == http.StatusRequestTimeout, status == http.StatusConflict:
		return base
	case status >= 500:
		if hdr != nil && hdr.Get("Retry-After") != "" {
			return qsync.RetryAfter(base, limitWait(e.Response))
		}
		return base
	case status >= 400:
		// 400, 401, 403, 404, 410, 422 ...: retrying cannot fix these.
		return qsync.Permanent(base)
	default:
		return base
	}
}

// describe renders GitHub's message and field errors.
func describe(e *gh.ErrorResponse) string {
	msg := e.Message
	if msg == "" && e.Response != nil {
		msg = http.StatusText(e.Response.StatusCode)
	}
	var parts []string
	for _, fe := range e.Errors {
		p := strings.TrimPrefix(strings.Join(nonEmpty(fe.Resource, fe.Field), "."), ".")
		d := strings.Join(nonEmpty(fe.Code, fe.Message), ": ")
		parts = append(parts, strings.TrimSpace(p+" "+d))
	}
	if len(parts) > 0 {
		msg += " (" + strings.Join(parts, "; ") + ")"
	}
	return msg
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func isLimited(r *http.Response) bool {
	return r != nil && (r.Header.Get("Retry-After") != "" || r.Header.Get("X-RateLimit-Remaining") == "0")
}

// limitWait follows GitHub's advice: Retry-After if present; else the
// reset time when the quota is spent; else at least a minute.
func limitWait(r *http.Response) time.Duration {
	if r == nil {
		return defaultLimitWait
	}
	if v := strings.TrimSpace(r.Header.Get("Retry-After")); v != "" {
		if s, err := strconv.ParseInt(v, 10, 64); err == nil {
			return clampWait(time.Duration(s) * time.Second)
		}
		if t, err := http.ParseTime(v); err == nil {
			return clampWait(time.Until(t))
		}
	}
	if r.Header.Get("X-RateLimit-Remaining") == "0" {
		if s, err := strconv.ParseInt(r.Header.Get("X-RateLimit-Reset"), 10, 64); err == nil && s > 0 {
			return clampWait(time.Until(time.Unix(s, 0)))
		}
	}
	return defaultLimitWait
}

func clampWait(d time.Duration) time.Duration {
	if d < minLimitWait {
		return minLimitWait
	}
	return d
}
