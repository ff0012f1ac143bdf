package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/adapters/github/githubfake"
	"github.com/qase-sync/qase-sync/adapters/jira/jirafake"
	"github.com/qase-sync/qase-sync/adapters/qase/qasefake"
	"github.com/qase-sync/qase-sync/adapters/store/sqlite"
	"github.com/qase-sync/qase-sync/internal/testhttp"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// The end-to-end harness runs the real application (config loading,
// wiring, HTTP server, inbox, SQLite store, workers) against stateful fake
// trackers on httptest servers.

const testSecret = "s3cret-webhook-value"

type harnessOpts struct {
	qaseAPI   bool   // configure qase.api_token against a fake Qase API
	extraYAML string // appended to the config (e.g. reconcile:)
	routes    string // mapping routes; default: the shipped example routes
	store     string // "" = sqlite in a temp dir, or a postgres DSN
	wrapStore func(qsync.Store) qsync.Store
	// trackerYAML is appended to each tracker's settings (e.g. webhook_secrets).
	trackerYAML string
}

type harness struct {
	t      *testing.T
	jira   *jirafake.Server
	gh     *githubfake.Server
	qase   *qasefake.Server
	a      *app
	url    string
	dir    string
	cfg    string
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// syncBuffer is a goroutine-safe log sink, so tests can assert on logs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func exampleRoutes(t testing.TB) string {
	b, err := os.ReadFile(filepath.Join("..", "..", "mapping", "example-routes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func indent(s, pre string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = pre + l
		}
	}
	return strings.Join(lines, "\n")
}

// writeConfig writes a configuration pointing at the fakes.
func (h *harness) writeConfig(o harnessOpts, listen string) {
	routes := o.routes
	if routes == "" {
		routes = exampleRoutes(h.t)
	}
	store := fmt.Sprintf("store:\n  driver: sqlite\n  sqlite:\n    path: %s\n", filepath.Join(h.dir, "qase-sync.db"))
	if o.store != "" {
		store = fmt.Sprintf("store:\n  driver: postgres\n  postgres:\n    dsn: %q\n", o.store)
	}
	qaseAPI := ""
	if o.qaseAPI {
		qaseAPI = fmt.Sprintf("  api_token: test-qase-token\n  api_url: %s\n", h.qase.URL)
	}
	cfg := fmt.Sprintf(`server:
  listen: %q
  webhook_path: /webhooks/qase
  max_body_bytes: 65536
  shutdown_timeout: 10s
  admin_token: test-admin-token
qase:
  secrets: [%q, "previous-secret"]
  project_secrets:
    PSEC: ["project-only-secret"]
%s%s
%sworker:
  concurrency: 4
  lease: 30s
  max_attempts: 5
  backoff_base: 20ms
  backoff_max: 200ms
  late_commit: 1s
log:
  level: debug
  format: json
%s
mapping:
%s
`, listen, testSecret, qaseAPI, store, trackersYAML(h.jira.URL, h.gh.URL, o.trackerYAML), o.extraYAML, indent(routes, "  "))
	h.cfg = filepath.Join(h.dir, "config.yaml")
	if err := os.WriteFile(h.cfg, []byte(cfg), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// openStoreFile opens the SQLite store a stopped service left in dir; it is
// closed when the test ends.
func openStoreFile(t *testing.T, dir string) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: filepath.Join(dir, "qase-sync.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// trackersYAML is the trackers section for the Jira and GitHub fakes at
// jiraURL and ghURL; each tracker also gets the lines in extra.
func trackersYAML(jiraURL, ghURL, extra string) string {
	return fmt.Sprintf(`trackers:
  - name: jira
    type: jira
    url: %s
    email: bot@example.com
    token: jira-api-token-value
    settle: 1ms
%s  - name: github
    type: github
    base_url: %s
    token: github-token-value
%s`, jiraURL, extra, ghURL, extra)
}

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	h := &harness{t: t, jira: jirafake.New(), gh: githubfake.New(), dir: t.TempDir(), logs: &syncBuffer{}}
	t.Cleanup(h.jira.Close)
	t.Cleanup(h.gh.Close)
	if o.qaseAPI {
		h.qase = qasefake.New("test-qase-token")
		t.Cleanup(h.qase.Close)
	}
	addr := freeAddr(t)
	h.url = "http://" + addr
	h.writeConfig(o, addr)
	h.start(o)
	return h
}

// start wires and runs the application in the background.
func (h *harness) start(o harnessOpts) {
	h.t.Helper()
	a, err := wireApp(h.cfg, h.logs, appServe, func(string) (string, bool) { return "", false }, nil)
	if err != nil {
		h.t.Fatalf("wire: %v", err)
	}
	if o.wrapStore != nil {
		a.store = o.wrapStore(a.store)
		a.engine = rebuildEngine(a)
	}
	h.a = a
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- a.serve(ctx) }()
	h.t.Cleanup(h.stop)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(h.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatalf("service not ready; logs:\n%s", h.logs.String())
}

// stop shuts the application down (idempotent).
func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		h.t.Error("serve did not stop")
	}
	h.cancel = nil
	h.a.close()
}

// restart stops the application and starts it again on the same store.
func (h *harness) restart(o harnessOpts) {
	h.stop()
	h.start(o)
}

func (h *harness) post(path string, body []byte, secret string) (int, string) {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.url+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if secret != "" {
		req.Header.Set("X-Qase-Secret", secret)
	}
	resp, b := testhttp.Do(h.t, nil, req)
	return resp.StatusCode, string(b)
}

// deliver posts a payload file from testdata/qase and checks the status.
func (h *harness) deliver(file string, want int) string {
	h.t.Helper()
	return h.deliverTo("/webhooks/qase", file, want)
}

func (h *harness) deliverTo(path, file string, want int) string {
	h.t.Helper()
	body, err := os.ReadFile(filepath.Join("..", "..", "testdata", "qase", file))
	if err != nil {
		h.t.Fatal(err)
	}
	code, resp := h.post(path, body, testSecret)
	if code != want {
		h.t.Fatalf("POST %s (%s): %d %s, want %d", path, file, code, resp, want)
	}
	return resp
}

// drain waits until every accepted event reached its outcome and no job is
// left, failing the test after a timeout.
func (h *harness) drain() {
	h.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		depth, err := h.a.store.QueueDepth(ctx)
		if err != nil {
			h.t.Fatal(err)
		}
		st, err := h.a.store.EventStatus(ctx)
		if err != nil {
			h.t.Fatal(err)
		}
		if depth == 0 && st.Pending == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatalf("queue did not drain; logs:\n%s", tail(h.logs.String(), 60))
}

func (h *harness) eventStatus() qsync.EventStatus {
	h.t.Helper()
	st, err := h.a.store.EventStatus(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// rebuildEngine re-creates the engine after a test swapped the store.
func rebuildEngine(a *app) *qsync.Engine {
	w := a.cfg.Worker
	return qsync.NewEngine(qsync.EngineOptions{
		Store: a.store, Mapper: a.mapper, Trackers: a.trackers, Source: a.source, Writer: a.entityWriter(), LinkTypes: linkTypes(a.cfg), Clock: a.clock,
		Logger: a.log, Metrics: a.metrics, Concurrency: w.Concurrency, Lease: w.Lease,
		MaxAttempts: w.MaxAttempts, MaxAge: w.MaxAge, BackoffBase: w.BackoffBase, BackoffMax: w.BackoffMax,
	})
}

// waitVouched waits until the service has listed its routes' marked
// issues after start (late_commit after the store was created), so that
// creates no longer look for their marker first.
func (h *harness) waitVouched() {
	h.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(h.logs.String(), "the store vouches for its keys") {
			return
		}
	}
	h.t.Fatalf("the store never vouched for its keys; logs:\n%s", tail(h.logs.String(), 30))
}
