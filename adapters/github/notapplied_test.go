package github

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"

	gh "github.com/google/go-github/v60/github"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// TestNotApplied: failures that certainly left GitHub untouched are
// qsync.NotApplied (4xx answers, rate limits with their wait kept, local
// refusals, connections never made); 5xx, timeouts and connections lost
// after sending stay ambiguous.
func TestNotApplied(t *testing.T) {
	resp := responder("PATCH")
	urlErr := func(err error) error {
		return &url.Error{Op: "Patch", URL: "https://api.github.com/repos/a/b/issues/1", Err: err}
	}
	c := call{op: "edit", project: "a/b", number: 1, notFound: true}
	cases := []struct {
		name       string
		err        error
		notApplied bool
		wait       bool
	}{
		{"429", &gh.ErrorResponse{Response: resp(429, hdr("Retry-After", "9"))}, true, true},
		{"primary limit", &gh.RateLimitError{Response: resp(403, nil), Message: "x"}, true, true},
		{"secondary limit", &gh.AbuseRateLimitError{Response: resp(403, nil), Message: "x"}, true, true},
		{"400", &gh.ErrorResponse{Response: resp(400, nil)}, true, false},
		{"404", &gh.ErrorResponse{Response: resp(404, nil)}, true, false},
		{"408", &gh.ErrorResponse{Response: resp(408, nil)}, true, false},
		{"409", &gh.ErrorResponse{Response: resp(409, nil)}, true, false},
		{"422", &gh.ErrorResponse{Response: resp(422, nil)}, true, false},
		{"500", &gh.ErrorResponse{Response: resp(500, nil)}, false, false},
		{"502", &gh.ErrorResponse{Response: resp(502, nil)}, false, false},
		{"503 Retry-After", &gh.ErrorResponse{Response: resp(503, hdr("Retry-After", "5"))}, false, true},
		{"connection refused", urlErr(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), true, false},
		{"dns failure", urlErr(&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "api.github.com", IsNotFound: true}}), true, false},
		{"dns failure unwrapped", urlErr(&net.DNSError{Err: "server misbehaving", Name: "api.github.com"}), true, false},
		{"reset after sending", urlErr(&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), false, false},
		{"eof after sending", urlErr(io.EOF), false, false},
		{"timeout", urlErr(context.DeadlineExceeded), false, false},
	}
	for _, tc := range cases {
		err := classify(c, tc.err)
		if got := qsync.IsNotApplied(err); got != tc.notApplied {
			t.Errorf("%s: IsNotApplied = %v, want %v (%v)", tc.name, got, tc.notApplied, err)
		}
		if _, ok := qsync.RetryWait(err); ok != tc.wait {
			t.Errorf("%s: RetryWait %v, want %v (%v)", tc.name, ok, tc.wait, err)
		}
	}

	// Against servers: a 429 answer, a refused connection, a timeout.
	h := setup(t)
	h.fake.TooManyRequests(1, 4*time.Second)
	_, err := h.tr.Create(ctx(t), spec("x"), marker(1))
	if w, ok := qsync.RetryWait(err); !ok || w != 4*time.Second || !qsync.IsNotApplied(err) || qsync.IsPermanent(err) {
		t.Fatalf("429: %v (wait %s)", err, w)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	tr, _ := New(Options{Token: testToken, BaseURL: "http://" + addr + "/"})
	if _, err := tr.Create(ctx(t), spec("x"), marker(1)); !qsync.IsNotApplied(err) || qsync.IsPermanent(err) {
		t.Fatalf("refused: %v", err)
	}
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(3 * time.Second):
		}
	}))
	defer slow.Close()
	tr, _ = New(Options{Token: testToken, BaseURL: slow.URL + "/", Timeout: 100 * time.Millisecond})
	if _, err := tr.Create(ctx(t), spec("x"), marker(1)); err == nil || qsync.IsNotApplied(err) {
		t.Fatalf("timeout: %v", err)
	}
}
