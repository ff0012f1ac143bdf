package github

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	gh "github.com/google/go-github/v60/github"

	qsync "github.com/qase-sync/qase-sync/sync"
)

type verdict int

const (
	retry     verdict = iota // plain retry with backoff
	wait                     // RetryAfter
	permanent                // qsync.Permanent
	notFound                 // qsync.ErrNotFound, not permanent
)

func verdictOf(err error) verdict {
	switch {
	case qsync.IsPermanent(err):
		return permanent
	case errors.Is(err, qsync.ErrNotFound):
		return notFound
	}
	if _, ok := qsync.RetryWait(err); ok {
		return wait
	}
	return retry
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// TestClassificationAgainstServer drives real go-github calls into injected
// answers, so the table covers the error types go-github actually builds.
func TestClassificationAgainstServer(t *testing.T) {
	reset := strconv.FormatInt(time.Now().Add(90*time.Second).Unix(), 10)
	cases := []struct {
		name     string
		op       string // create | get
		status   int
		header   http.Header
		body     string
		want     verdict
		wantWait time.Duration // checked ±3s when > 0
		wantText string
	}{
		{"primary limit 403", "create", 403, hdr("X-RateLimit-Remaining", "0", "X-RateLimit-Limit", "5000", "X-RateLimit-Reset", reset),
			`{"message":"API rate limit exceeded for user ID 1."}`, wait, 90 * time.Second, "rate limit"},
		{"secondary limit 403 with Retry-After", "create", 403, hdr("Retry-After", "42"),
			`{"message":"You have exceeded a secondary rate limit","documentation_url":"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"}`,
			wait, 42 * time.Second, "secondary rate limit"},
		{"secondary limit 403 without headers", "create", 403, nil,
			`{"message":"You have exceeded a secondary rate limit","documentation_url":"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#secondary-rate-limits"}`,
			wait, 60 * time.Second, "secondary"},
		{"429 with Retry-After", "create", 429, hdr("Retry-After", "17"), `{"message":"too many"}`, wait, 17 * time.Second, "429"},
		{"429 with reset header", "get", 429, hdr("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", reset), `{"message":"limit"}`, wait, 90 * time.Second, "429"},
		{"429 bare", "get", 429, nil, `{}`, wait, 60 * time.Second, "429"},
		{"500", "create", 500, nil, `{"message":"Server Error"}`, retry, 0, "500"},
		{"502 html", "get", 502, hdr("Content-Type", "text/html"), `<html>bad gateway</html>`, retry, 0, "502"},
		{"503 with Retry-After", "get", 503, hdr("Retry-After", "5"), `{}`, wait, 5 * time.Second, "503"},
		{"401", "create", 401, nil, `{"message":"Bad credentials"}`, permanent, 0, "Bad credentials"},
		{"403 permissions", "create", 403, nil, `{"message":"Resource not accessible by integration"}`, permanent, 0, "not accessible"},
		{"404 on create", "create", 404, nil, `{"message":"Not Found"}`, permanent, 0, "404"},
		{"404 on write", "edit", 404, nil, `{"message":"Not Found"}`, permanent, 0, "404"},
		{"404 on get", "get", 404, nil, `{"message":"Not Found"}`, notFound, 0, "not found"},
		{"410 on get", "get", 410, nil, `{"message":"This issue was deleted"}`, notFound, 0, "deleted"},
		{"410 on write", "edit", 410, nil, `{"message":"This issue was deleted"}`, permanent, 0, "deleted"},
		{"422", "create", 422, nil, `{"message":"Validation Failed","errors":[{"resource":"Issue","field":"title","code":"missing_field"}]}`,
			permanent, 0, "Validation Failed (Issue.title missing_field)"},
		{"422 custom", "create", 422, nil, `{"message":"Validation Failed","errors":[{"resource":"Issue","code":"custom","field":"assignees","message":"octo is not assignable"}]}`,
			permanent, 0, "octo is not assignable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := setup(t)
			if c.op != "create" {
				if _, err := h.tr.Create(ctx(t), spec("x"), marker(1)); err != nil {
					t.Fatal(err)
				}
			}
			h.fake.FailNext(1, c.status, c.header, c.body)
			ref := qsync.IssueRef{Project: repo, ID: "1"}
			var err error
			switch c.op {
			case "create":
				_, err = h.tr.Create(ctx(t), spec("x"), marker(1))
			case "get":
				_, err = h.tr.Get(ctx(t), ref)
			case "edit":
				s := "t"
				err = h.tr.Update(ctx(t), ref, qsync.Update{Title: &s})
			}
			if err == nil {
				t.Fatal("no error")
			}
			if got := verdictOf(err); got != c.want {
				t.Fatalf("verdict %d, want %d: %v", got, c.want, err)
			}
			if c.wantWait > 0 {
				w, _ := qsync.RetryWait(err)
				if d := w - c.wantWait; d < -3*time.Second || d > 3*time.Second {
					t.Fatalf("wait %s, want ~%s", w, c.wantWait)
				}
			}
			if !strings.Contains(err.Error(), c.wantText) {
				t.Fatalf("error %q lacks %q", err, c.wantText)
			}
			if strings.Contains(err.Error(), testToken) {
				t.Fatal("token in error")
			}
		})
	}
}

func TestSecondaryRateLimitUsesServerRetryAfter(t *testing.T) {
	h := setup(t)
	h.fake.SecondaryRateLimit(1, 7*time.Second)
	_, err := h.tr.Create(ctx(t), spec("x"), marker(1))
	if w, ok := qsync.RetryWait(err); !ok || w != 7*time.Second || qsync.IsPermanent(err) {
		t.Fatalf("want RetryAfter 7s, got %v (%s)", err, w)
	}
	// go-github now refuses locally until the wait is over; that synthetic
	// error must classify the same way, and nothing reaches GitHub.
	before := len(h.fake.Requests())
	_, err = h.tr.Get(ctx(t), qsync.IssueRef{Project: repo, ID: "1"})
	if w, ok := qsync.RetryWait(err); !ok || w <= 0 || w > 7*time.Second {
		t.Fatalf("local refusal: %v", err)
	}
	if len(h.fake.Requests()) != before {
		t.Fatal("a request was sent during the secondary limit")
	}
}

func TestPrimaryRateLimitLocalRefusal(t *testing.T) {
	h := setup(t)
	reset := time.Now().Add(2 * time.Minute)
	h.fake.FailNext(1, 403, hdr("X-RateLimit-Remaining", "0", "X-RateLimit-Limit", "5000",
		"X-RateLimit-Reset", strconv.FormatInt(reset.Unix(), 10)), `{"message":"API rate limit exceeded"}`)
	if _, err := h.tr.Create(ctx(t), spec("x"), marker(1)); verdictOf(err) != wait {
		t.Fatalf("first: %v", err)
	}
	before := len(h.fake.Requests())
	_, err := h.tr.List(ctx(t), repo)
	w, ok := qsync.RetryWait(err)
	if !ok || w < 100*time.Second || w > 121*time.Second {
		t.Fatalf("synthetic refusal: %v", err)
	}
	if len(h.fake.Requests()) != before {
		t.Fatal("request sent while the primary limit is known to be exhausted")
	}
	if h.count("list") != 1 {
		t.Fatal("the refused call is still reported to the observer")
	}
}

func TestTimeoutsAndConnectionErrorsRetry(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(3 * time.Second):
		}
	}))
	defer slow.Close()
	tr, err := New(Options{Token: testToken, BaseURL: slow.URL + "/", Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tr.Get(ctx(t), qsync.IssueRef{Project: repo, ID: "1"})
	if err == nil || verdictOf(err) != retry || strings.Contains(err.Error(), testToken) {
		t.Fatalf("timeout: %v", err)
	}

	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	tr, _ = New(Options{Token: testToken, BaseURL: "http://" + addr + "/"})
	if _, err = tr.List(ctx(t), repo); err == nil || verdictOf(err) != retry {
		t.Fatalf("refused: %v", err)
	}
}

// responder makes answers to a request (method) for issue a/b#1, as
// go-github hands them to the classification.
func responder(method string) func(status int, h http.Header) *http.Response {
	req, _ := http.NewRequest(method, "https://api.github.com/repos/a/b/issues/1", nil)
	return func(status int, h http.Header) *http.Response {
		if h == nil {
			h = http.Header{}
		}
		return &http.Response{StatusCode: status, Header: h, Request: req}
	}
}

// TestClassifyDirect covers inputs a server cannot easily produce.
func TestClassifyDirect(t *testing.T) {
	resp := responder("GET")
	c := call{op: "get", project: "a/b", number: 1}
	cases := []struct {
		name string
		err  error
		want verdict
		wait time.Duration
	}{
		{"rate limit without reset", &gh.RateLimitError{Response: resp(403, nil), Message: "x"}, wait, 60 * time.Second},
		{"rate limit reset passed", &gh.RateLimitError{Response: resp(403, nil), Rate: gh.Rate{Reset: gh.Timestamp{Time: time.Now().Add(-time.Hour)}}}, wait, time.Second},
		{"abuse without retry-after", &gh.AbuseRateLimitError{Response: resp(403, nil), Message: "x"}, wait, 60 * time.Second},
		{"429 http-date", &gh.ErrorResponse{Response: resp(429, hdr("Retry-After", time.Now().Add(30*time.Second).UTC().Format(http.TimeFormat)))}, wait, 30 * time.Second},
		{"403 says rate limit", &gh.ErrorResponse{Response: resp(403, nil), Message: "API rate limit exceeded"}, wait, 60 * time.Second},
		{"408", &gh.ErrorResponse{Response: resp(408, nil)}, retry, 0},
		{"409", &gh.ErrorResponse{Response: resp(409, nil)}, retry, 0},
		{"400", &gh.ErrorResponse{Response: resp(400, nil), Message: "Problems parsing JSON"}, permanent, 0},
		{"app token 401", &url.Error{Op: "Get", URL: "u", Err: &ghinstallation.HTTPError{Message: "received non 2xx", Response: resp(401, nil)}}, permanent, 0},
		{"app token 500", &url.Error{Op: "Get", URL: "u", Err: &ghinstallation.HTTPError{Message: "received non 2xx", Response: resp(500, nil)}}, retry, 0},
		{"app token 429", &ghinstallation.HTTPError{Message: "x", Response: resp(429, hdr("Retry-After", "11"))}, wait, 11 * time.Second},
		{"decode", &json.SyntaxError{}, retry, 0},
	}
	for _, tc := range cases {
		err := classify(c, tc.err)
		if got := verdictOf(err); got != tc.want {
			t.Errorf("%s: verdict %d want %d (%v)", tc.name, got, tc.want, err)
			continue
		}
		if tc.wait > 0 {
			w, _ := qsync.RetryWait(err)
			if d := w - tc.wait; d < -2*time.Second || d > 2*time.Second {
				t.Errorf("%s: wait %s want %s", tc.name, w, tc.wait)
			}
		}
	}
	if classify(c, nil) != nil {
		t.Error("nil must stay nil")
	}
}

// TestAppInstallationAuth runs the App flow against a GHES-style base path:
// the installation token is minted at <base>/app/installations/<id>/
// access_tokens and then sent on API calls; no key material leaks.
func TestAppInstallationAuth(t *testing.T) {
	h := setup(t) // the fake GitHub behind a GHES-like prefix
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	target, _ := url.Parse(h.fake.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var minted atomic.Int32
	ghes := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := strings.TrimPrefix(r.URL.Path, "/api/v3")
		switch {
		case path == "/app/installations/77/access_tokens" && r.Method == http.MethodPost:
			if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
				http.Error(w, `{"message":"A JSON web token could not be decoded"}`, 401)
				return
			}
			minted.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(201)
			fmt.Fprintf(w, `{"token":"ghs_installationtoken","expires_at":%q}`, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
		case strings.HasPrefix(path, "/app/"):
			http.Error(w, `{"message":"Not Found"}`, 404)
		default:
			r.URL.Path = path
			r.URL.RawPath = ""
			proxy.ServeHTTP(w, r)
		}
	}))
	defer ghes.Close()

	tr, err := New(Options{App: &AppAuth{AppID: 5, InstallationID: 77, PrivateKey: pemKey}, BaseURL: ghes.URL + "/api/v3"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Create(ctx(t), spec("via app"), marker(1)); err != nil {
		t.Fatal(err)
	}
	if minted.Load() != 1 {
		t.Fatalf("minted %d tokens", minted.Load())
	}
	if r := h.fake.Requests(); len(r) != 1 || r[0].Authorization != "token ghs_installationtoken" {
		t.Fatalf("requests = %+v", r)
	}

	// A wrong installation id cannot be fixed by retrying.
	bad, _ := New(Options{App: &AppAuth{AppID: 5, InstallationID: 78, PrivateKey: pemKey}, BaseURL: ghes.URL + "/api/v3/"})
	_, err = bad.Get(ctx(t), qsync.IssueRef{Project: repo, ID: "1"})
	if !qsync.IsPermanent(err) {
		t.Fatalf("bad installation: %v", err)
	}
	if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(err.Error(), "ghs_") {
		t.Fatalf("secret in error: %v", err)
	}
}
