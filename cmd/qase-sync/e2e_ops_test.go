package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/adapters/jira/jirafake"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// Operations tests: the real binary under signals, /metrics, dead letters
// through the CLI and the admin API, and a slow-loris client.
//
// "The real binary" is this test binary re-executed with
// opsChildEnv set: TestOpsChildProcess then runs the same run() that main
// calls, so the child is the production entry point (flags, signal
// handling, exit status) without depending on a Go toolchain at test time.

const (
	opsChildEnv   = "QASE_SYNC_E2E_CHILD"
	opsAdminToken = "test-admin-token"
)

// TestOpsChildProcess is not a test: it is the qase-sync process the
// binary-level tests start (args after "--").
func TestOpsChildProcess(t *testing.T) {
	if os.Getenv(opsChildEnv) != "1" {
		t.Skip("helper process for the binary-level tests")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Exit(run(args, os.Stdout, os.Stderr))
}

// opsConfig is the part of the configuration the binary-level tests vary.
type opsConfig struct {
	dir, listen     string
	jiraURL, ghURL  string
	concurrency     int
	lease           time.Duration
	jobTimeout      time.Duration
	maxAttempts     int
	shutdownTimeout time.Duration
	readHeader      time.Duration
	logLevel        string
}

// write writes config.yaml (SQLite in dir, trackers at the fakes, the
// shipped example routes) and returns its path.
func (c opsConfig) write(t *testing.T) string {
	t.Helper()
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.lease, 4*time.Second)
	def(&c.jobTimeout, time.Minute)
	def(&c.shutdownTimeout, 10*time.Second)
	def(&c.readHeader, 5*time.Second)
	if c.concurrency == 0 {
		c.concurrency = 4
	}
	if c.logLevel == "" {
		c.logLevel = "info"
	}
	if c.maxAttempts == 0 {
		c.maxAttempts = 20
	}
	cfg := fmt.Sprintf(`server:
  listen: %q
  webhook_path: /webhooks/qase
  max_body_bytes: 65536
  read_header_timeout: %s
  shutdown_timeout: %s
  admin_token: %s
qase:
  secrets: [%q]
store:
  driver: sqlite
  sqlite:
    path: %s
%sworker:
  concurrency: %d
  lease: %s
  max_attempts: %d
  backoff_base: 20ms
  backoff_max: 300ms
  late_commit: 1s
  job_timeout: %s
log:
  level: %s
  format: json
mapping:
%s
`, c.listen, c.readHeader, c.shutdownTimeout, opsAdminToken, testSecret, filepath.Join(c.dir, "qase-sync.db"),
		trackersYAML(c.jiraURL, c.ghURL, "    rate: {per_second: 500, burst: 100}\n"), c.concurrency, c.lease, c.maxAttempts, c.jobTimeout, c.logLevel, indent(exampleRoutes(t), "  "))
	path := filepath.Join(c.dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// opsProc is one running qase-sync process.
type opsProc struct {
	cmd    *exec.Cmd
	url    string
	logs   *syncBuffer
	exited chan struct{}
}

// startOps starts qase-sync on a free port against fresh fakes, configured
// by c with its directory, listen address and tracker URLs filled in.
func startOps(t *testing.T, c opsConfig) (p *opsProc, addr string, jira *jirafake.Server) {
	t.Helper()
	jira = jirafake.New()
	t.Cleanup(jira.Close)
	gh := newGitHubFake(t)
	addr = freeAddr(t)
	c.dir, c.listen, c.jiraURL, c.ghURL = t.TempDir(), addr, jira.URL, gh.URL
	return startBinary(t, c.write(t), "http://"+addr, &syncBuffer{}), addr, jira
}

// startBinary starts `qase-sync serve -c cfg` and waits until /readyz says
// ready. logs collects stdout and stderr across restarts.
func startBinary(t *testing.T, cfg, url string, logs *syncBuffer) *opsProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestOpsChildProcess$", "--", "serve", "-c", cfg)
	cmd.Env = append(os.Environ(), opsChildEnv+"=1")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &opsProc{cmd: cmd, url: url, logs: logs, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.kill() })
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			t.Fatalf("qase-sync exited during start-up (%v); logs:\n%s", cmd.ProcessState, tail(logs.String(), 40))
		default:
		}
		if code, _ := opsGet(url+"/readyz", ""); code == http.StatusOK {
			return p
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("qase-sync not ready; logs:\n%s", tail(logs.String(), 40))
	return nil
}

func (p *opsProc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL (kill -9) and waits for the process to be gone.
func (p *opsProc) kill() {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// waitExit waits for the process to exit and returns its exit code
// (-1 if it did not exit within d).
func (p *opsProc) waitExit(d time.Duration) int {
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		return -1
	}
}

var opsClient = &http.Client{Timeout: 10 * time.Second}

func opsGet(url, token string) (int, string) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return opsDo(req)
}

// opsPost delivers a webhook body; code 0 means no answer (transport error).
func opsPost(url string, body []byte) (int, string) {
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Qase-Secret", testSecret)
	return opsDo(req)
}

// opsDo sends req and returns the status and body; code 0 means no answer
// (transport error), the body then says why.
func opsDo(req *http.Request) (int, string) {
	resp, err := opsClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// opsEvent builds a webhook body in the current (event_name) envelope.
func opsEvent(name, project string, ts int64, payload map[string]any) []byte {
	b, err := json.Marshal(map[string]any{"event_name": name, "timestamp": ts, "payload": payload, "team_member_id": 40, "project_code": project})
	if err != nil {
		panic(err)
	}
	return b
}

// adminEvents reads the event ledger summary through the admin API.
func adminEvents(t *testing.T, url string) qsync.EventStatus {
	t.Helper()
	code, body := opsGet(url+"/admin/events", opsAdminToken)
	if code != http.StatusOK {
		t.Fatalf("GET /admin/events: %d %s", code, body)
	}
	var st qsync.EventStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("GET /admin/events: %v: %s", err, body)
	}
	return st
}

// promSample is one parsed /metrics sample.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

// parseProm parses the Prometheus text exposition format (what promhttp
// writes without content negotiation).
func parseProm(t *testing.T, text string) []promSample {
	t.Helper()
	var out []promSample
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			t.Fatalf("metrics line %q", line)
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		s := promSample{labels: map[string]string{}, value: v}
		series := line[:sp]
		name, rest, hasLabels := strings.Cut(series, "{")
		s.name = name
		if hasLabels {
			rest = strings.TrimSuffix(rest, "}")
			for rest != "" {
				k, after, ok := strings.Cut(rest, `="`)
				if !ok {
					t.Fatalf("metrics labels in %q", line)
				}
				var val strings.Builder
				i := 0
				for ; i < len(after) && after[i] != '"'; i++ {
					if after[i] == '\\' && i+1 < len(after) {
						i++
					}
					val.WriteByte(after[i])
				}
				s.labels[strings.TrimPrefix(k, ",")] = val.String()
				rest = strings.TrimPrefix(after[min(i+1, len(after)):], ",")
			}
		}
		out = append(out, s)
	}
	return out
}

// promSum sums the samples of name whose labels include want; found says
// whether any sample matched.
func promSum(samples []promSample, name string, want map[string]string) (sum float64, found bool) {
	for _, s := range samples {
		if s.name != name {
			continue
		}
		match := true
		for k, v := range want {
			if s.labels[k] != v {
				match = false
			}
		}
		if match {
			sum += s.value
			found = true
		}
	}
	return sum, found
}

func scrapeMetrics(t *testing.T, url string) (string, []promSample) {
	t.Helper()
	code, body := opsGet(url+"/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	return body, parseProm(t, body)
}

var opsSecrets = []string{testSecret, "previous-secret", "project-only-secret", "jira-api-token-value", "github-token-value", opsAdminToken, "test-qase-token"}

// TestOpsMetrics scrapes /metrics after traffic of every kind and checks
// the key series and their values, and that no secret is exported.
func TestOpsMetrics(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	created := mustRead(t, "defect.created.json")
	h.deliver("defect.created.json", http.StatusAccepted)
	h.deliver("defect.created.json", http.StatusOK) // duplicate
	// Let the create be filed first: a defect already resolved when the
	// first sync runs is not filed at all (create_when), and the job and
	// API-call counts below assume the create then the transition.
	h.drain()
	h.deliver("defect.resolved.json", http.StatusAccepted)
	h.deliver("case.created.json", http.StatusAccepted) // unserved kind: ignored
	if code, _ := h.post("/webhooks/qase", created, "wrong-secret"); code != http.StatusUnauthorized {
		t.Fatalf("wrong secret: %d", code)
	}
	if code, _ := h.post("/webhooks/qase", created, ""); code != http.StatusUnauthorized {
		t.Fatalf("missing secret: %d", code)
	}
	h.drain()
	// One permanent failure, so the dead-letter series have something to count.
	h.jira.FailNext(1, http.StatusBadRequest, nil, "")
	h.post("/webhooks/qase", opsEvent("defect.created", "ID", 1700000000, map[string]any{"id": 77, "title": "Rejected", "severity": "major"}), testSecret)
	h.drain()

	text, m := scrapeMetrics(t, h.url)
	want := func(name string, labels map[string]string, check func(float64) bool, what string) {
		t.Helper()
		v, ok := promSum(m, name, labels)
		if !ok {
			t.Errorf("series %s%v missing", name, labels)
			return
		}
		if !check(v) {
			t.Errorf("%s%v = %v, want %s", name, labels, v, what)
		}
	}
	eq := func(n float64) func(float64) bool { return func(v float64) bool { return v == n } }
	ge := func(n float64) func(float64) bool { return func(v float64) bool { return v >= n } }
	const events = "qase_sync_webhook_events_total"
	want(events, map[string]string{"result": "accepted"}, eq(3), "3")
	want(events, map[string]string{"result": "duplicate"}, eq(1), "1")
	want(events, map[string]string{"result": "ignored"}, eq(1), "1")
	want(events, map[string]string{"result": "unauthorized"}, eq(2), "2")
	// Every delivery that reached the inbox was acknowledged and timed.
	want("qase_sync_webhook_ack_seconds_count", nil, ge(4), ">= 4")
	want("qase_sync_webhook_ack_seconds_sum", nil, func(v float64) bool { return v > 0 && v < 10 }, "in (0, 10) s")
	want("qase_sync_queue_depth", nil, eq(0), "0 after draining")
	want("qase_sync_jobs_total", map[string]string{"outcome": "applied", "route": "defects-to-jira"}, ge(2), ">= 2 (create, resolve)")
	want("qase_sync_jobs_total", map[string]string{"outcome": "dead"}, eq(1), "1")
	want("qase_sync_api_calls_total", map[string]string{"system": "jira"}, ge(3), ">= 3")
	want("qase_sync_api_calls_total", map[string]string{"system": "jira", "status": "400"}, eq(1), "1 (the injected failure)")
	want("qase_sync_dead_letters", nil, eq(1), "1")
	want("qase_sync_events", map[string]string{"status": "applied"}, eq(2), "2")
	want("qase_sync_events", map[string]string{"status": "dead"}, eq(1), "1")
	want("qase_sync_events", map[string]string{"status": "pending"}, eq(0), "0")
	want("qase_sync_events", map[string]string{"status": "noop"}, eq(0), "0")
	for _, s := range m {
		if s.name == "qase_sync_webhook_events_total" && s.labels["result"] == "accepted" && s.value > 0 && s.labels["reason"] != "" {
			t.Errorf("accepted deliveries carry a reason label: %v", s.labels)
		}
	}
	for _, secret := range opsSecrets {
		if strings.Contains(text, secret) {
			t.Errorf("/metrics exposes a secret (%d chars)", len(secret))
		}
	}
}

// TestOpsDeadLetters: a permanent tracker failure lands in the dead-letter
// list; the CLI and the admin API show it; retry files the issue once the
// fault is gone, drop removes another.
func TestOpsDeadLetters(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ctx := context.Background()
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := run(append(args, "-c", h.cfg), &out, &errb)
		return code, out.String(), errb.String()
	}
	// Two defects, each rejected by Jira with a 400 on create (permanent).
	for _, id := range []int{41, 42} {
		h.jira.FailNext(1, http.StatusBadRequest, nil, "")
		body := opsEvent("defect.created", "ID", 1700000000+int64(id), map[string]any{"id": id, "title": fmt.Sprintf("Broken %d", id), "severity": "major"})
		if code, resp := h.post("/webhooks/qase", body, testSecret); code != http.StatusAccepted {
			t.Fatalf("deliver %d: %d %s", id, code, resp)
		}
		h.drain()
	}
	if n := len(h.jira.Issues()); n != 0 {
		t.Fatalf("jira has %d issues; the creates should have been rejected", n)
	}

	// CLI list, JSON.
	code, out, errOut := cli("deadletters", "list", "--output", "json")
	if code != 0 {
		t.Fatalf("deadletters list: exit %d: %s", code, errOut)
	}
	var dls []qsync.DeadLetter
	if err := json.Unmarshal([]byte(out), &dls); err != nil {
		t.Fatalf("list --output json: %v: %s", err, out)
	}
	if len(dls) != 2 {
		t.Fatalf("dead letters = %+v, want 2", dls)
	}
	byID := map[int64]qsync.DeadLetter{}
	for _, d := range dls {
		if d.Key.Route != "defects-to-jira" || d.Key.Kind != qsync.KindDefect || d.Attempts != 1 {
			t.Errorf("dead letter %+v: want route defects-to-jira, 1 attempt (permanent)", d)
		}
		if !strings.Contains(d.Reason, "400") {
			t.Errorf("dead letter reason %q does not name the 400", d.Reason)
		}
		if d.LastRequest == "" || strings.Contains(d.LastRequest, "jira-api-token-value") {
			t.Errorf("dead letter last request = %q, want the failed call without credentials", d.LastRequest)
		}
		byID[d.Key.ID] = d
	}
	retryDL, dropDL := byID[41], byID[42]
	if retryDL.ID == 0 || dropDL.ID == 0 {
		t.Fatalf("dead letters for 41 and 42 expected: %+v", dls)
	}
	// CLI list, text, and show.
	if code, out, _ := cli("deadletters", "list"); code != 0 || !strings.Contains(out, "defects-to-jira:ID/defect/41") || !strings.Contains(out, "ATTEMPTS") {
		t.Fatalf("deadletters list (text): exit %d:\n%s", code, out)
	}
	id41 := strconv.FormatInt(retryDL.ID, 10)
	if code, out, _ := cli("deadletters", "show", id41); code != 0 || !strings.Contains(out, "attempts: 1") || !strings.Contains(out, "400") || !strings.Contains(out, "ID/defect/41") {
		t.Fatalf("deadletters show: exit %d:\n%s", code, out)
	}
	if code, out, _ := cli("deadletters", "show", id41, "--output", "json"); code != 0 || !strings.Contains(out, `"reason"`) {
		t.Fatalf("deadletters show --output json: exit %d:\n%s", code, out)
	}
	if code, _, errOut := cli("deadletters", "show", "999999"); code == 0 || !strings.Contains(errOut, "not found") {
		t.Fatalf("show of a missing dead letter: exit %d: %s", code, errOut)
	}
	if code, _, _ := cli("deadletters", "show", "abc"); code != 2 {
		t.Fatalf("show with a non-numeric id: exit %d, want 2 (usage)", code)
	}

	// Admin API: 401 without (or with a wrong) token, the list with it.
	for _, tok := range []string{"", "wrong-token"} {
		if code, body := opsGet(h.url+"/admin/deadletters", tok); code != http.StatusUnauthorized || strings.Contains(body, "Broken") {
			t.Fatalf("admin without a valid token: %d %s", code, body)
		}
	}
	code, body := opsGet(h.url+"/admin/deadletters", opsAdminToken)
	var apiDLs []qsync.DeadLetter
	if code != http.StatusOK || json.Unmarshal([]byte(body), &apiDLs) != nil || len(apiDLs) != 2 {
		t.Fatalf("admin list: %d %s", code, body)
	}
	code, body = opsGet(h.url+"/admin/deadletters/"+id41, opsAdminToken)
	var one qsync.DeadLetter
	if code != http.StatusOK || json.Unmarshal([]byte(body), &one) != nil || one.Key.ID != 41 || one.Attempts != 1 || one.Reason == "" {
		t.Fatalf("admin show: %d %s", code, body)
	}
	if st := h.eventStatus(); st.Dead != 2 || st.Pending != 0 {
		t.Fatalf("ledger = %+v, want both events dead-lettered", st)
	}

	// The fault is gone (FailNext was used up): retry files the issue.
	if code, out, errOut := cli("deadletters", "retry", id41); code != 0 || !strings.Contains(out, "requeued") {
		t.Fatalf("deadletters retry: exit %d: %s %s", code, out, errOut)
	}
	h.drain()
	is := onlyIssue(t, h.jira)
	if is.Summary != "[ID-41] Broken 41" || is.Status != "To Do" {
		t.Fatalf("retried issue = %q / %q", is.Summary, is.Status)
	}
	// Drop the other one.
	if code, out, errOut := cli("deadletters", "drop", strconv.FormatInt(dropDL.ID, 10)); code != 0 || !strings.Contains(out, "dropped") {
		t.Fatalf("deadletters drop: exit %d: %s %s", code, out, errOut)
	}
	left, err := h.a.store.DeadLetters(ctx, 100)
	if err != nil || len(left) != 0 {
		t.Fatalf("dead letters after retry and drop = %+v (%v), want none", left, err)
	}
	if code, _ := opsGet(h.url+"/admin/deadletters/"+strconv.FormatInt(dropDL.ID, 10), opsAdminToken); code != http.StatusNotFound {
		t.Fatalf("admin show of a dropped dead letter: %d, want 404", code)
	}
	if n := len(h.jira.Issues()); n != 1 {
		t.Fatalf("jira has %d issues after drop, want 1 (drop must not sync)", n)
	}
	// Nothing left pending; the dropped key's event stays dead (dropped,
	// not silently forgotten). What the retried event counts as is
	// TestOpsDeadLetterRetryLedger's business.
	if st := h.eventStatus(); st.Pending != 0 || st.Dead < 1 || st.Applied+st.Noop+st.Dead != 2 {
		t.Fatalf("ledger after retry/drop = %+v", st)
	}
	// Admin API retry and drop of a third failure.
	h.jira.FailNext(1, http.StatusBadRequest, nil, "")
	h.post("/webhooks/qase", opsEvent("defect.created", "ID", 1700000043, map[string]any{"id": 43, "title": "Broken 43"}), testSecret)
	h.drain()
	dl, err := h.a.store.DeadLetters(ctx, 10)
	if err != nil || len(dl) != 1 || dl[0].Key.ID != 43 {
		t.Fatalf("dead letters = %+v (%v), want one for 43", dl, err)
	}
	req, _ := http.NewRequest(http.MethodPost, h.url+"/admin/deadletters/"+strconv.FormatInt(dl[0].ID, 10)+"/retry", nil)
	if resp, err := opsClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("admin retry without token: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	req.Header.Set("Authorization", "Bearer "+opsAdminToken)
	resp, err := opsClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("admin retry: %v %v", resp, err)
	}
	resp.Body.Close()
	h.drain()
	if got := h.jira.IssueByLabel(qsync.MarkerFor(qsync.Key{Route: "defects-to-jira", EntityRef: qsync.EntityRef{Project: "ID", Kind: qsync.KindDefect, ID: 43}}).Label); len(got) != 1 {
		t.Fatalf("issues for defect 43 after admin retry: %d, want 1", len(got))
	}
}

// TestOpsGracefulShutdown: SIGTERM while a job is busy in Jira. The
// listener closes, the in-flight job finishes and is recorded, the process
// exits 0 within the shutdown timeout, and no lease is left behind: the
// remaining work runs at once after a restart (the lease is 60 s).
func TestOpsGracefulShutdown(t *testing.T) {
	jira := jirafake.New()
	t.Cleanup(jira.Close)
	gh := newGitHubFake(t)
	var creates atomic.Int32
	// Counts create requests as they arrive (the fake logs them only
	// after its delay).
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.TrimSuffix(r.URL.Path, "/") == "/rest/api/2/issue" {
			creates.Add(1)
		}
		jira.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	dir := t.TempDir()
	addr := freeAddr(t)
	url := "http://" + addr
	cfg := opsConfig{dir: dir, listen: addr, jiraURL: front.URL, ghURL: gh.URL, concurrency: 1, lease: time.Minute, shutdownTimeout: 20 * time.Second}.write(t)
	logs := &syncBuffer{}
	p := startBinary(t, cfg, url, logs)

	jira.Delay(1500 * time.Millisecond)
	const n = 3
	for id := 1; id <= n; id++ {
		body := opsEvent("defect.created", "ID", 1700000000+int64(id), map[string]any{"id": id, "title": fmt.Sprintf("Shutdown %d", id), "severity": "normal"})
		if code, resp := opsPost(url+"/webhooks/qase", body); code != http.StatusAccepted {
			t.Fatalf("deliver %d: %d %s", id, code, resp)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for creates.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if creates.Load() == 0 {
		t.Fatalf("no create reached jira; logs:\n%s", tail(logs.String(), 30))
	}

	sigAt := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Shortly after SIGTERM the listener is closed (readiness itself is
	// TestOpsReadyzFailsBeforeExit's business).
	seen := pollReadyz(addr, 5*time.Second)
	t.Logf("readyz after SIGTERM: %v", seen)
	if len(seen) == 0 || seen[len(seen)-1] != "refused" {
		t.Fatalf("listener still accepting 5 s after SIGTERM (readyz answers %v)", seen)
	}

	code := p.waitExit(25 * time.Second)
	if code != 0 {
		t.Fatalf("exit status %d after SIGTERM (-1 = still running after 25 s); logs:\n%s", code, tail(logs.String(), 30))
	}
	if took := time.Since(sigAt); took > 20*time.Second {
		t.Fatalf("shutdown took %s, beyond the 20 s shutdown timeout", took)
	}
	if !strings.Contains(logs.String(), "stopped cleanly") {
		t.Errorf("no clean-stop log line; logs:\n%s", tail(logs.String(), 20))
	}

	// Every create that reached Jira before the signal finished: one issue
	// per started create, each recorded as applied with a linked link.
	started := int(creates.Load())
	issues := jira.Issues()
	if len(issues) == 0 || len(issues) != started {
		t.Fatalf("%d creates reached jira but %d issues exist", started, len(issues))
	}
	ctx := context.Background()
	st := openStoreFile(t, dir)
	done := 0
	for id := 1; id <= n; id++ {
		k := qsync.Key{Route: "defects-to-jira", EntityRef: qsync.EntityRef{Project: "ID", Kind: qsync.KindDefect, ID: int64(id)}}
		found := jira.IssueByLabel(qsync.MarkerFor(k).Label)
		if len(found) > 1 {
			t.Fatalf("defect %d has %d issues", id, len(found))
		}
		if len(found) == 0 {
			continue
		}
		done++
		link, ok, err := st.Link(ctx, k)
		if err != nil || !ok || link.State != qsync.LinkLinked || link.Issue.ID != found[0].ID {
			t.Fatalf("defect %d: link %+v found=%v err=%v, want linked to %s", id, link, ok, err, found[0].ID)
		}
		led, err := st.Ledger(ctx, k, 10)
		if err != nil || len(led) == 0 || led[0].Outcome != qsync.OutcomeApplied {
			t.Fatalf("defect %d: ledger %+v (%v), want applied", id, led, err)
		}
	}
	depth, err := st.QueueDepth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if depth != n-done {
		t.Fatalf("queue depth %d after shutdown, want %d", depth, n-done)
	}
	// No lease left: everything still queued can be leased right now.
	if depth > 0 {
		jobs, err := st.Lease(ctx, "probe", n, time.Now(), time.Second)
		if err != nil || len(jobs) != depth {
			t.Fatalf("leasable jobs after shutdown = %d (%v), want %d: a lease was left behind", len(jobs), err, depth)
		}
		if err := st.Release(ctx, "probe"); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()

	// Restart: the remaining work is done at once, long before the 60 s
	// lease could have expired.
	jira.Delay(0)
	p = startBinary(t, cfg, url, logs)
	deadline = time.Now().Add(15 * time.Second)
	for len(jira.Issues()) < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := len(jira.Issues()); got != n {
		t.Fatalf("%d issues 15 s after restart, want %d (a job lease survived shutdown?)", got, n)
	}
	waitLedger(t, url, func(s qsync.EventStatus) bool { return s.Pending == 0 }, 10*time.Second)
	if ev := adminEvents(t, url); ev.Applied != n || ev.Dead != 0 || ev.Noop != 0 {
		t.Fatalf("ledger after restart = %+v, want %d applied", ev, n)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.waitExit(20 * time.Second); code != 0 {
		t.Fatalf("second SIGTERM: exit status %d", code)
	}
	for _, secret := range opsSecrets {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("a secret (%d chars) reached the logs", len(secret))
		}
	}
	if strings.Contains(logs.String(), "DATA RACE") {
		t.Error("the race detector fired in the service process")
	}
}

// pollReadyz probes /readyz on fresh connections until the connection is
// refused or d passes, returning what it saw ("200", "503", "refused",
// "error").
func pollReadyz(addr string, d time.Duration) []string {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var seen []string
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		resp, err := c.Get("http://" + addr + "/readyz")
		if errors.Is(err, syscall.ECONNREFUSED) {
			return append(seen, "refused")
		}
		s := "error"
		if err == nil {
			s = strconv.Itoa(resp.StatusCode)
			resp.Body.Close()
		}
		if len(seen) == 0 || seen[len(seen)-1] != s {
			seen = append(seen, s)
		}
	}
	return seen
}

// TestOpsReadyzFailsBeforeExit: after SIGTERM, /readyz answers 503 for a
// while before the listener goes away, so a load balancer stops routing
// to the instance before its connections are refused.
func TestOpsReadyzFailsBeforeExit(t *testing.T) {
	p, addr, _ := startOps(t, opsConfig{})
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	seen := pollReadyz(addr, 5*time.Second)
	if code := p.waitExit(15 * time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM", code)
	}
	if i := slices.Index(seen, "503"); i >= 0 && slices.Contains(seen[i:], "200") {
		t.Fatalf("readyz healthy again after answering 503: %v", seen)
	}
	if !slices.Contains(seen, "503") {
		t.Fatalf("/readyz never answered 503 after SIGTERM (saw %v): serve.go flips readiness and closes the listener in the same instant, "+
			"and net/http drops requests read after Shutdown began, so probes only ever see a refused connection", seen)
	}
}

// waitLedger polls the admin ledger summary until ok or the timeout.
func waitLedger(t *testing.T, url string, ok func(qsync.EventStatus) bool, d time.Duration) qsync.EventStatus {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		st := adminEvents(t, url)
		if ok(st) || time.Now().After(deadline) {
			return st
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestOpsSlowLoris: a client that trickles its headers is cut off by
// server.read_header_timeout, and the service keeps answering.
func TestOpsSlowLoris(t *testing.T) {
	p, addr, _ := startOps(t, opsConfig{readHeader: time.Second})
	url := p.url
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := io.WriteString(conn, "POST /webhooks/qase HTTP/1.1\r\nHost: qase-sync\r\n"); err != nil {
		t.Fatal(err)
	}
	// Trickle one header byte every 200 ms, never finishing the headers.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		hdr := "X-Qase-Secret: " + strings.Repeat("a", 200)
		for i := 0; i < len(hdr); i++ {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if _, err := conn.Write([]byte{hdr[i]}); err != nil {
				return
			}
		}
	}()
	_ = conn.SetReadDeadline(time.Now().Add(8 * time.Second))
	_, err = io.ReadAll(conn) // returns when the server closes the connection
	took := time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("slow client still connected after %s: read_header_timeout not enforced", took)
	}
	if took > 5*time.Second {
		t.Fatalf("slow client cut off only after %s, want about 1 s", took)
	}
	t.Logf("slow client cut off after %s", took.Round(10*time.Millisecond))

	// The service still answers.
	if code, _ := opsGet(url+"/healthz", ""); code != http.StatusOK {
		t.Fatalf("healthz after slow-loris: %d", code)
	}
	if code, body := opsPost(url+"/webhooks/qase", mustRead(t, "defect.created.json")); code != http.StatusAccepted {
		t.Fatalf("webhook after slow-loris: %d %s", code, body)
	}
}

// TestOpsDeadLetterRetryLedger: once an operator retries a dead letter and
// the retry applies, the event behind it is applied in the ledger (and in
// qase_sync_events), not dead forever.
func TestOpsDeadLetterRetryLedger(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	id := h.deadLetter()
	var out, errb bytes.Buffer
	if code := run([]string{"deadletters", "retry", id, "-c", h.cfg}, &out, &errb); code != 0 {
		t.Fatalf("retry: exit %d: %s", code, errb.String())
	}
	h.drain()
	onlyIssue(t, h.jira)
	_, m := scrapeMetrics(t, h.url)
	dead, _ := promSum(m, "qase_sync_events", map[string]string{"status": "dead"})
	letters, _ := promSum(m, "qase_sync_dead_letters", nil)
	st := h.eventStatus()
	if st.Applied != 1 || st.Dead != 0 || dead != 0 {
		t.Fatalf("after a successful dead-letter retry the event stays dead: ledger %+v, qase_sync_events{status=dead}=%v while qase_sync_dead_letters=%v "+
			"(RetryDeadLetter re-enqueues the key but leaves its deliveries 'dead', and Complete only finishes 'pending' ones)", st, dead, letters)
	}
}

// TestOpsJobOverLeaseDeadLetters: a job whose tracker calls outlive the
// lease keeps its key (the lease is renewed while it runs: no second
// worker), a hang is cut at job_timeout and counts as an attempt, and the
// job ends dead-lettered after max_attempts instead of looping.
func TestOpsJobOverLeaseDeadLetters(t *testing.T) {
	p, _, jira := startOps(t, opsConfig{lease: time.Second, jobTimeout: 1500 * time.Millisecond, maxAttempts: 2})
	url, logs := p.url, p.logs
	jira.Delay(3 * time.Second) // every Jira call hangs past the 1 s lease and the 1.5 s job timeout
	if code, body := opsPost(url+"/webhooks/qase", mustRead(t, "defect.created.json")); code != http.StatusAccepted {
		t.Fatalf("deliver: %d %s", code, body)
	}
	var dls []qsync.DeadLetter
	for deadline := time.Now().Add(6 * time.Second); time.Now().Before(deadline) && len(dls) == 0; time.Sleep(100 * time.Millisecond) {
		_, body := opsGet(url+"/admin/deadletters", opsAdminToken)
		_ = json.Unmarshal([]byte(body), &dls)
	}
	if len(dls) == 0 {
		if strings.Contains(logs.String(), "context deadline exceeded") && strings.Contains(logs.String(), "scheduling retry") {
			t.Fatal("a job that outlives its lease never records its attempt nor dead-letters: Engine.Process calls Store.Retry/Complete " +
				"with the job's own context, which the lease timeout has already cancelled, so the bookkeeping fails, attempts stay 0 " +
				"and the job is re-leased forever after each expiry")
		}
		t.Fatalf("no dead letter 6 s after a hanging job with lease 1 s and max_attempts 2; logs:\n%s", tail(logs.String(), 30))
	}
	if dls[0].Attempts != 2 || dls[0].Key.ID != 1 {
		t.Fatalf("dead letter %+v, want defect 1 after 2 attempts", dls[0])
	}
	if strings.Contains(logs.String(), "job lease lost") {
		t.Fatalf("a second worker took the key while the first still ran:\n%s", tail(logs.String(), 30))
	}
	if st := adminEvents(t, url); st.Dead != 1 || st.Pending != 0 {
		t.Fatalf("ledger %+v, want the event dead-lettered", st)
	}
}
