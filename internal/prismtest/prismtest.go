// Package prismtest runs Stoplight Prism in validating mock mode for
// contract tests: every request an adapter sends must be accepted by the
// vendor's published OpenAPI description (testdata/contracts).
//
// The Prism binary comes from $PRISM or <repo>/.tools/prism (installed by
// `make tools`). When it is absent the tests skip, unless
// QASE_SYNC_REQUIRE_PRISM=1 (set by `make test` and CI), where they fail.
package prismtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Server is a running Prism mock.
type Server struct {
	URL string // base URL, with trailing slash
	cmd *exec.Cmd
	log *bytes.Buffer
}

// RepoRoot finds the module root (the folder holding go.mod).
func RepoRoot() string {
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// Binary returns the prism executable path, or "" if none is installed.
func Binary() string {
	if p := os.Getenv("PRISM"); p != "" {
		return p
	}
	p := filepath.Join(RepoRoot(), ".tools", "prism", "node_modules", ".bin", "prism")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

// Spec returns the path of a contract spec in testdata/contracts.
func Spec(name string) string {
	return filepath.Join(RepoRoot(), "testdata", "contracts", name)
}

// Start launches prism serving spec on a free loopback port and stops it
// when the test ends. It skips the test when Prism is not installed, unless
// QASE_SYNC_REQUIRE_PRISM=1.
func Start(t testing.TB, spec string) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		if os.Getenv("QASE_SYNC_REQUIRE_PRISM") == "1" {
			t.Fatal("prism not installed (run `make tools`) and QASE_SYNC_REQUIRE_PRISM=1")
		}
		t.Skip("prism not installed; run `make tools` (make test does)")
	}
	port := freePort(t)
	s := &Server{URL: fmt.Sprintf("http://127.0.0.1:%d/", port), log: &bytes.Buffer{}}
	s.cmd = exec.Command(bin, "mock", "--errors", "-h", "127.0.0.1", "-p", fmt.Sprint(port), spec)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start prism: %v", err)
	}
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		_, _ = s.cmd.Process.Wait()
	})
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return s
		}
		time.Sleep(150 * time.Millisecond)
	}
	t.Fatalf("prism did not listen within 60s; log:\n%s", s.log.String())
	return nil
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Violation is one entry of Prism's sl-violations header.
type Violation struct {
	Location []string `json:"location"`
	Severity string   `json:"severity"`
	Code     any      `json:"code"`
	Message  string   `json:"message"`
}

// Exchange is one request seen by the Recorder.
type Exchange struct {
	Method, Path string
	Body         string
	Status       int
	Violations   []Violation // request-side only
}

// Recorder is an http.RoundTripper that records every exchange with Prism
// and the request-side contract violations Prism reported.
type Recorder struct {
	Base http.RoundTripper

	mu        sync.Mutex
	exchanges []Exchange
}

// RoundTrip implements http.RoundTripper.
func (r *Recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	base := r.Base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(req)
	ex := Exchange{Method: req.Method, Path: req.URL.RequestURI(), Body: string(body)}
	if resp != nil {
		ex.Status = resp.StatusCode
		if h := resp.Header.Get("sl-violations"); h != "" {
			var vs []Violation
			if json.Unmarshal([]byte(h), &vs) == nil {
				for _, v := range vs {
					if len(v.Location) > 0 && v.Location[0] == "request" {
						ex.Violations = append(ex.Violations, v)
					}
				}
			}
		}
	}
	r.mu.Lock()
	r.exchanges = append(r.exchanges, ex)
	r.mu.Unlock()
	return resp, err
}

// Exchanges returns what was recorded so far.
func (r *Recorder) Exchanges() []Exchange {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Exchange(nil), r.exchanges...)
}

// AssertClean fails the test for every request Prism flagged, and when
// nothing at all was sent (a contract test that sends nothing proves nothing).
func (r *Recorder) AssertClean(t testing.TB) {
	t.Helper()
	ex := r.Exchanges()
	if len(ex) == 0 {
		t.Fatal("no request reached the contract mock")
	}
	for _, e := range ex {
		if len(e.Violations) > 0 {
			t.Errorf("%s %s violates the contract: %+v\nbody: %s", e.Method, e.Path, e.Violations, e.Body)
		}
		if e.Status == http.StatusNotFound || e.Status == http.StatusMethodNotAllowed {
			t.Errorf("%s %s: %d — not an operation of the published API", e.Method, e.Path, e.Status)
		}
	}
}
