package qase

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
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/qase-sync/qase-sync/internal/testhttp"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// fakeInbox is a stateful Acceptor: it dedupes by key like the real inbox.
type fakeInbox struct {
	mu     sync.Mutex
	events []qsync.Event
	seen   map[string]bool
	ignore bool
	err    error
}

func (f *fakeInbox) Accept(_ context.Context, ev qsync.Event) (qsync.AcceptStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return "", f.err
	}
	if f.seen == nil {
		f.seen = map[string]bool{}
	}
	if f.seen[ev.DedupKey] {
		return qsync.StatusDuplicate, nil
	}
	f.seen[ev.DedupKey] = true
	f.events = append(f.events, ev)
	if f.ignore {
		return qsync.StatusIgnored, nil
	}
	return qsync.StatusAccepted, nil
}

func (f *fakeInbox) stored() []qsync.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]qsync.Event(nil), f.events...)
}

type metricsRec struct {
	mu      sync.Mutex
	results []string
	acks    int
}

func (m *metricsRec) Received(result, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.results = append(m.results, result+"/"+reason)
}

func (m *metricsRec) AckLatency(time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.acks++
}

const (
	secretA = "s3cret-alpha-0001"
	secretB = "s3cret-bravo-0002"
	secretP = "s3cret-proj-0003"
)

type harness struct {
	inbox   *fakeInbox
	metrics *metricsRec
	logs    *bytes.Buffer
	mux     *http.ServeMux
}

func newHarness(t *testing.T, mod func(*HandlerOptions)) *harness {
	t.Helper()
	h := &harness{inbox: &fakeInbox{}, metrics: &metricsRec{}, logs: &bytes.Buffer{}}
	l := logrus.New()
	l.SetOutput(h.logs)
	l.SetFormatter(&logrus.JSONFormatter{})
	opts := HandlerOptions{
		Acceptor:       h.inbox,
		Secrets:        []string{secretA, secretB},
		ProjectSecrets: map[string][]string{"id": {secretP}},
		MaxBody:        4096,
		Logger:         logrus.NewEntry(l),
		Clock:          qsync.ClockFunc(func() time.Time { return testNow }),
		Metrics:        h.metrics,
	}
	if mod != nil {
		mod(&opts)
	}
	hd := NewHandler(opts)
	h.mux = http.NewServeMux()
	h.mux.Handle("/hook", hd)
	h.mux.Handle("/hook/{project}", hd)
	return h
}

func (h *harness) do(method, target, secret, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	if secret != "" {
		req.Header.Set(SecretHeader, secret)
	}
	rec := httptest.NewRecorder()
	h.mux.ServeHTTP(rec, req)
	return rec
}

func examplePayload(t *testing.T, name string) string {
	return string(readFile(t, filepath.Join(payloadDir, name)))
}

func TestHandler(t *testing.T) {
	created := examplePayload(t, "defect.created.json")
	legacy := examplePayload(t, "defect.created.legacy.json")
	otherProject := strings.Replace(created, `"project_code": "ID"`, `"project_code": "OTHER"`, 1)
	tests := []struct {
		name       string
		mod        func(*HandlerOptions)
		method     string
		target     string
		secret     string
		body       string
		status     int
		wantBody   map[string]string
		stored     int
		wantResult string
	}{
		{"accepted", nil, "POST", "/hook", secretA, created, 202, map[string]string{"status": "accepted"}, 1, "accepted/"},
		{"rotation: second secret", nil, "POST", "/hook", secretB, created, 202, map[string]string{"status": "accepted"}, 1, "accepted/"},
		{"project secret for its project", nil, "POST", "/hook", secretP, created, 202, map[string]string{"status": "accepted"}, 1, "accepted/"},
		{"project secret for another project", nil, "POST", "/hook", secretP, otherProject, 401, map[string]string{"error": "unauthorized"}, 0, "unauthorized/"},
		{"project secret, project from URL", nil, "POST", "/hook/id", secretP, legacy, 202, map[string]string{"status": "accepted"}, 1, "accepted/"},
		{"project secret, project from query", nil, "POST", "/hook?project=ID", secretP, legacy, 202, map[string]string{"status": "accepted"}, 1, "accepted/"},
		{"wrong secret", nil, "POST", "/hook", "nope", created, 401, map[string]string{"error": "unauthorized"}, 0, "unauthorized/"},
		{"missing secret", nil, "POST", "/hook", "", created, 401, map[string]string{"error": "unauthorized"}, 0, "unauthorized/"},
		{"secret prefix is not enough", nil, "POST", "/hook", secretA[:5], created, 401, map[string]string{"error": "unauthorized"}, 0, "unauthorized/"},
		{"bad body still 401 without a secret", nil, "POST", "/hook", "", `{oops`, 401, map[string]string{"error": "unauthorized"}, 0, "unauthorized/"},
		{"no secret configured, not allowed", func(o *HandlerOptions) { o.Secrets, o.ProjectSecrets = nil, nil }, "POST", "/hook", "", created, 401, map[string]string{"error": "unauthorized"}, 0, "unauthorized/"},
		{"no secret configured, unsigned allowed", func(o *HandlerOptions) { o.Secrets, o.ProjectSecrets, o.AllowUnsigned = nil, nil, true }, "POST", "/hook", "", created, 202, map[string]string{"status": "accepted"}, 1, "accepted/"},
		{"unsigned allowed does not bypass a project's secret", func(o *HandlerOptions) { o.Secrets, o.AllowUnsigned = nil, true }, "POST", "/hook", "", created, 401, map[string]string{"error": "unauthorized"}, 0, "unauthorized/"},
		{"oversized", nil, "POST", "/hook", secretA, `{"event_name":"defect.created","pad":"` + strings.Repeat("x", 5000) + `"}`, 413, nil, 0, "too_large/"},
		{"malformed JSON", nil, "POST", "/hook", secretA, `{"event_name":"defect.created",}`, 400, nil, 0, "bad_request/malformed_json"},
		{"missing event_name", nil, "POST", "/hook", secretA, `{"timestamp":1,"project_code":"ID","payload":{"id":1}}`, 400, nil, 0, "bad_request/missing_event_name"},
		{"missing project_code", nil, "POST", "/hook", secretA, legacy, 400, nil, 0, "bad_request/missing_project"},
		{"missing project_code, default configured", func(o *HandlerOptions) { o.DefaultProject = "DEMO" }, "POST", "/hook", secretA, legacy, 202, map[string]string{"status": "accepted"}, 1, "accepted/"},
		{"unknown event", nil, "POST", "/hook", secretA, `{"event_name":"result.created","timestamp":1,"project_code":"ID","payload":{"hash":"x"}}`, 202, nil, 0, "ignored/unserved_kind"},
		{"no route", func(o *HandlerOptions) { o.Acceptor = &fakeInbox{ignore: true} }, "POST", "/hook", secretA, created, 202, map[string]string{"status": "ignored"}, 0, "ignored/no_route"},
		{"store down", func(o *HandlerOptions) { o.Acceptor = &fakeInbox{err: errors.New("disk on fire")} }, "POST", "/hook", secretA, created, 503, map[string]string{"error": "temporarily unable to store the event"}, 0, "unavailable/store_error"},
		{"GET", nil, "GET", "/hook", secretA, "", 405, nil, 0, "method_not_allowed/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.mod)
			rec := h.do(tt.method, tt.target, tt.secret, tt.body)
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d (body %s)", rec.Code, tt.status, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			var got map[string]string
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("body %q is not a JSON object of strings: %v", rec.Body, err)
			}
			if tt.wantBody != nil {
				if len(got) != len(tt.wantBody) {
					t.Errorf("body = %v, want %v", got, tt.wantBody)
				}
				for k, v := range tt.wantBody {
					if got[k] != v {
						t.Errorf("body[%s] = %q, want %q", k, got[k], v)
					}
				}
			}
			if tt.status == 400 && (got["error"] == "" || got["error"] == "bad request") {
				t.Errorf("400 without a precise reason: %v", got)
			}
			if n := len(h.inbox.stored()); n != tt.stored {
				t.Errorf("stored %d events, want %d", n, tt.stored)
			}
			if len(h.metrics.results) != 1 || h.metrics.results[0] != tt.wantResult || h.metrics.acks != 1 {
				t.Errorf("metrics = %v (acks %d), want [%s]", h.metrics.results, h.metrics.acks, tt.wantResult)
			}
			logs := h.logs.String()
			for _, s := range []string{secretA, secretB, secretP} {
				if strings.Contains(logs, s) || strings.Contains(rec.Body.String(), s) {
					t.Error("a secret leaked into the logs or the response")
				}
			}
			if n := strings.Count(logs, `"msg":"qase webhook"`); n != 1 {
				t.Errorf("want one delivery log line, got:\n%s", logs)
			}
		})
	}
}

func TestHandlerSpecifics(t *testing.T) {
	created := examplePayload(t, "defect.created.json")

	t.Run("405 sends Allow", func(t *testing.T) {
		rec := newHarness(t, nil).do("GET", "/hook", "", "")
		if rec.Header().Get("Allow") != "POST" {
			t.Errorf("Allow = %q", rec.Header().Get("Allow"))
		}
	})
	t.Run("503 sends Retry-After", func(t *testing.T) {
		h := newHarness(t, func(o *HandlerOptions) { o.Acceptor = &fakeInbox{err: errors.New("x")} })
		if rec := h.do("POST", "/hook", secretA, created); rec.Header().Get("Retry-After") != "5" {
			t.Errorf("Retry-After = %q", rec.Header().Get("Retry-After"))
		}
		if !strings.Contains(h.logs.String(), `"error":"x"`) {
			t.Errorf("the store error is not in the delivery log line: %s", h.logs)
		}
	})
	t.Run("duplicate delivery answers 200", func(t *testing.T) {
		h := newHarness(t, nil)
		if rec := h.do("POST", "/hook", secretA, created); rec.Code != 202 {
			t.Fatalf("first: %d", rec.Code)
		}
		rec := h.do("POST", "/hook", secretA, strings.ReplaceAll(created, "\n", "\r\n  "))
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"duplicate"`) {
			t.Errorf("second: %d %s", rec.Code, rec.Body)
		}
		if n := len(h.inbox.stored()); n != 1 {
			t.Errorf("stored %d", n)
		}
	})
	t.Run("event carries the raw body and the decoded ref", func(t *testing.T) {
		h := newHarness(t, nil)
		h.do("POST", "/hook", secretA, created)
		evs := h.inbox.stored()
		if len(evs) != 1 {
			t.Fatalf("stored %d", len(evs))
		}
		ev := evs[0]
		if string(ev.Payload) != created || ev.Ref != (qsync.EntityRef{Project: "ID", Kind: qsync.KindDefect, ID: 1}) || !ev.ReceivedAt.Equal(testNow) {
			t.Errorf("event = %+v", ev)
		}
	})
	t.Run("body project wins over the URL", func(t *testing.T) {
		h := newHarness(t, nil)
		h.do("POST", "/hook/OTHER", secretA, created)
		if evs := h.inbox.stored(); len(evs) != 1 || evs[0].Ref.Project != "ID" {
			t.Errorf("stored %+v", evs)
		}
	})
	t.Run("400 names the problem", func(t *testing.T) {
		rec := newHarness(t, nil).do("POST", "/hook", secretA, `{"event_name":"run.started","project_code":"ID","payload":{"id":"seven"}}`)
		if rec.Code != 400 || !strings.Contains(rec.Body.String(), `payload.id \"seven\" is not an integer`) {
			t.Errorf("%d %s", rec.Code, rec.Body)
		}
	})
	t.Run("413 at the limit boundary", func(t *testing.T) {
		h := newHarness(t, func(o *HandlerOptions) { o.MaxBody = int64(len(created)) })
		if rec := h.do("POST", "/hook", secretA, created); rec.Code != 202 {
			t.Errorf("exactly MaxBody: %d", rec.Code)
		}
		if rec := h.do("POST", "/hook", secretA, created+" "); rec.Code != 413 {
			t.Errorf("MaxBody+1: %d", rec.Code)
		}
	})
	t.Run("log line fields", func(t *testing.T) {
		h := newHarness(t, nil)
		h.do("POST", "/hook", secretA, created)
		var line map[string]any
		if err := json.Unmarshal(bytes.TrimSpace(h.logs.Bytes()), &line); err != nil {
			t.Fatalf("log %q: %v", h.logs, err)
		}
		for k, v := range map[string]any{"event": "defect.created", "project": "ID", "id": float64(1), "status": float64(202), "result": "accepted"} {
			if line[k] != v {
				t.Errorf("log %s = %v, want %v", k, line[k], v)
			}
		}
		if _, ok := line["latency"]; !ok {
			t.Error("log lacks latency")
		}
	})
	t.Run("accept is bounded by a deadline", func(t *testing.T) {
		var deadline time.Time
		acc := acceptorFunc(func(ctx context.Context, ev qsync.Event) (qsync.AcceptStatus, error) {
			deadline, _ = ctx.Deadline()
			return qsync.StatusAccepted, nil
		})
		h := newHarness(t, func(o *HandlerOptions) { o.Acceptor = acc; o.AcceptTimeout = time.Second })
		h.do("POST", "/hook", secretA, created)
		if deadline.IsZero() {
			t.Error("Accept got no deadline")
		}
	})
}

type acceptorFunc func(context.Context, qsync.Event) (qsync.AcceptStatus, error)

func (f acceptorFunc) Accept(ctx context.Context, ev qsync.Event) (qsync.AcceptStatus, error) {
	return f(ctx, ev)
}

func TestHandlerEveryExampleIsAcknowledged(t *testing.T) {
	// Every documented delivery, old or new, gets a 2xx from a configured
	// endpoint: Qase disables webhooks that keep failing.
	h := newHarness(t, func(o *HandlerOptions) { o.DefaultProject = "LEG" })
	for _, path := range payloadFiles(t) {
		rec := h.do("POST", "/hook", secretA, string(readFile(t, path)))
		if rec.Code != 202 && rec.Code != 200 {
			t.Errorf("%s: %d %s", filepath.Base(path), rec.Code, rec.Body)
		}
	}
}

// blockingWriter holds every write until release is closed.
type blockingWriter struct{ release chan struct{} }

func (b blockingWriter) Write(p []byte) (int, error) { <-b.release; return len(p), nil }

// The answer goes out before the log line is written: a slow or stuck log
// sink must not hold Qase's delivery (its timeout would make it retry).
func TestHandlerAnswersBeforeLogging(t *testing.T) {
	release := make(chan struct{})
	l := logrus.New()
	l.SetOutput(blockingWriter{release})
	srv := httptest.NewServer(NewHandler(HandlerOptions{Acceptor: &fakeInbox{}, Secrets: []string{secretA}, Logger: logrus.NewEntry(l)}))
	defer func() { close(release); srv.Close() }() // let the handler finish logging first
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(examplePayload(t, "defect.created.json")))
	req.Header.Set(SecretHeader, secretA)
	type answer struct {
		resp *http.Response
		body []byte
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			got <- answer{err: err}
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- answer{resp, body, err}
	}()
	select {
	case a := <-got:
		if a.err != nil {
			t.Fatal(a.err)
		}
		if a.resp.StatusCode != http.StatusAccepted || !strings.Contains(string(a.body), "accepted") {
			t.Errorf("answer %d %s, want 202 accepted", a.resp.StatusCode, a.body)
		}
		if a.resp.ContentLength != int64(len(a.body)) || len(a.resp.TransferEncoding) > 0 {
			t.Errorf("Content-Length %d, Transfer-Encoding %v for a %d-byte body; want a plain length", a.resp.ContentLength, a.resp.TransferEncoding, len(a.body))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer while the log sink is blocked")
	}
}

// A body that stalls is answered 408 before the server's write deadline
// (with equal read and write timeouts the client would get nothing).
func TestHandlerStalledBodyGets408(t *testing.T) {
	inbox := &fakeInbox{}
	srv := httptest.NewUnstartedServer(NewHandler(HandlerOptions{Acceptor: inbox, Secrets: []string{secretA}, BodyTimeout: 300 * time.Millisecond}))
	srv.Config.ReadTimeout = 2 * time.Second
	srv.Config.WriteTimeout = 2 * time.Second
	srv.Start()
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s: %s\r\nContent-Length: 500\r\n\r\n{\"event_name\":", SecretHeader, secretA)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body after %v: %v", time.Since(start), err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), "not received in time") {
		t.Fatalf("stalled body: %d %s, want 408", resp.StatusCode, body)
	}
	if d := time.Since(start); d > 1900*time.Millisecond {
		t.Errorf("answered after %v, past the write deadline", d)
	}
	if len(inbox.stored()) != 0 {
		t.Error("a partial body reached the inbox")
	}
}

// An event of a served kind that KnownEvent refuses (an unknown verb) is
// acknowledged as ignored and never stored, even when its payload would
// not decode (no id); a known one is stored.
func TestHandlerIgnoresUnknownEvents(t *testing.T) {
	inbox := &fakeInbox{}
	known := func(ev qsync.Event) bool { return ev.Name == "defect.created" }
	srv := httptest.NewServer(NewHandler(HandlerOptions{Acceptor: inbox, Secrets: []string{secretA}, KnownEvent: known}))
	defer srv.Close()
	post := func(body string, secret string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(body))
		req.Header.Set(SecretHeader, secret)
		resp, b := testhttp.Do(t, nil, req)
		return resp.StatusCode, string(b)
	}
	for _, body := range []string{
		`{"event_name":"defect.exploded","project_code":"P","payload":{"id":1}}`,
		`{"event_name":"defect.exploded","project_code":"P","payload":{}}`,
		"{\"event_name\":\"defect.cr\xffated\",\"project_code\":\"P\",\"payload\":{\"id\":1}}",
	} {
		code, resp := post(body, secretA)
		if code != http.StatusAccepted || !strings.Contains(resp, `"ignored"`) || !strings.Contains(resp, "no route names it") {
			t.Errorf("%q: %d %s", body, code, resp)
		}
	}
	if code, _ := post(`{"event_name":"defect.exploded","project_code":"P","payload":{"id":1}}`, "wrong"); code != http.StatusUnauthorized {
		t.Errorf("unauthenticated unknown event: %d (authentication comes first)", code)
	}
	if code, resp := post(`{"event_name":"defect.created","project_code":"P","payload":{"id":1}}`, secretA); code != http.StatusAccepted || !strings.Contains(resp, "accepted") {
		t.Errorf("known event: %d %s", code, resp)
	}
	if got := inbox.stored(); len(got) != 1 || got[0].Name != "defect.created" {
		t.Errorf("stored %+v, want only the known event", got)
	}
}
