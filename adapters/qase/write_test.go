package qase

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/qase-sync/qase-sync/adapters/qase/qasefake"
	qsync "github.com/qase-sync/qase-sync/sync"
)

func TestDefectWrites(t *testing.T) {
	f := qasefake.New("tok-secret-123")
	defer f.Close()
	f.PutDefect("QA", map[string]any{"id": 7, "title": "old", "severity": "normal", "status": "open"})
	c := NewClient(ClientOptions{BaseURL: f.URL, Token: "tok-secret-123"})
	ctx := context.Background()
	ref := qsync.EntityRef{Project: "QA", Kind: qsync.KindDefect, ID: 7}

	if err := c.SetDefectStatus(ctx, ref, "resolved"); err != nil {
		t.Fatal(err)
	}
	title, sev, tags := "new title", "blocker", []string{"smoke", "ui"}
	if err := c.UpdateDefect(ctx, ref, qsync.DefectUpdate{Title: &title, Severity: &sev, Tags: &tags}); err != nil {
		t.Fatal(err)
	}
	rec, _ := f.Defect("QA", 7)
	if attrs, _, _ := c.Fetch(ctx, ref); len(attrs["tags"].([]any)) != 2 {
		t.Fatalf("tags after update = %v", attrs["tags"])
	}
	if rec["status"] != "resolved" || rec["title"] != "new title" || rec["severity"] != "blocker" {
		t.Fatalf("defect after writes = %v", rec)
	}
	w := f.Writes()
	if len(w) != 2 || w[0].Method != http.MethodPatch || w[0].Path != "/v1/defect/QA/status/7" || !strings.Contains(w[0].Body, `"resolved"`) ||
		w[1].Path != "/v1/defect/QA/7" || !strings.Contains(w[1].Body, `"severity":1`) || !strings.Contains(w[1].Body, `"tags":["smoke","ui"]`) {
		t.Fatalf("writes = %+v", w)
	}
	// Open cannot be set through the API: refused before any request.
	if err := c.SetDefectStatus(ctx, ref, "open"); !qsync.IsPermanent(err) {
		t.Fatalf("open: %v, want permanent", err)
	}
	if len(f.Writes()) != 2 {
		t.Fatal("setting open sent a request")
	}
	// A missing defect is permanent for a write (404 → not found), a 429 asks for a wait.
	err := c.SetDefectStatus(ctx, qsync.EntityRef{Project: "QA", Kind: qsync.KindDefect, ID: 99}, "resolved")
	if !errors.Is(err, qsync.ErrNotFound) {
		t.Fatalf("missing defect: %v", err)
	}
	f.RateLimitNext(1, 0)
	err = c.SetDefectStatus(ctx, ref, "invalid")
	if _, ok := qsync.RetryWait(err); !ok || strings.Contains(err.Error(), "tok-secret-123") {
		t.Fatalf("429: %v", err)
	}
	// Run and case link write-back.
	f.PutRun("QA", map[string]any{"id": 3, "title": "nightly"})
	if err := c.LinkRunIssue(ctx, qsync.EntityRef{Project: "QA", Kind: qsync.KindRun, ID: 3}, "jira-cloud", "QA-12"); err != nil {
		t.Fatal(err)
	}
	run, _ := f.Get("QA", qsync.KindRun, 3)
	if ext, _ := run["external_issue"].(map[string]any); ext["id"] != "QA-12" {
		t.Fatalf("run external issue = %v", run["external_issue"])
	}
	if err := c.AttachCaseIssue(ctx, "QA", 44, "jira-cloud", "QA-12"); err != nil {
		t.Fatal(err)
	}
	if got := f.CaseIssues("QA", 44); len(got) != 1 || got[0] != "QA-12" {
		t.Fatalf("case issues = %v", got)
	}
}

// TestWritePacing: writes share one token bucket under Qase's ~200
// requests a minute; reads are not paced here; negative turns it off.

// cutLimiter stands for the request budget's transport when a request's
// context ends while it waits for a token: it reports the cut and never
// sends the request.
type cutLimiter struct{}

func (l *cutLimiter) RoundTrip(r *http.Request) (*http.Response, error) {
	qsync.NoteRateWaitCut(r.Context())
	return nil, errors.New("ratelimit: wait ended: context canceled")
}

// A Qase write the token's budget never let out is a rate wait (the
// engine retries it without charging an attempt), not a failure of Qase,
// and nothing reaches Qase.
func TestWriteCutWhileWaitingIsRateWait(t *testing.T) {
	f := qasefake.New("x")
	defer f.Close()
	f.PutDefect("QA", map[string]any{"id": 1, "status": "open"})
	c := NewClient(ClientOptions{BaseURL: f.URL, Token: "x", HTTPClient: &http.Client{Transport: &cutLimiter{}}})
	ref := qsync.EntityRef{Project: "QA", Kind: qsync.KindDefect, ID: 1}
	err := c.SetDefectStatus(context.Background(), ref, "resolved")
	if !errors.Is(err, qsync.ErrRateWait) {
		t.Fatalf("write cut while waiting for a token: %v, want ErrRateWait", err)
	}
	if n := len(f.Writes()); n != 0 {
		t.Fatalf("%d writes reached Qase, want 0", n)
	}
	// Any other transport failure stays what it is.
	c = NewClient(ClientOptions{BaseURL: "http://127.0.0.1:1", Token: "x"})
	if err := c.SetDefectStatus(context.Background(), ref, "resolved"); err == nil || errors.Is(err, qsync.ErrRateWait) {
		t.Fatalf("refused connection: %v, want a plain transport error", err)
	}
}
