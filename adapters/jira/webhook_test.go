package jira

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/qase-sync/qase-sync/adapters/jira/jirafake"
	"github.com/qase-sync/qase-sync/internal/trackerhook"
	qsync "github.com/qase-sync/qase-sync/sync"
)

type acceptLog struct{ keys []qsync.Key }

func (a *acceptLog) AcceptTracker(_ context.Context, k qsync.Key, ev qsync.Event) (qsync.AcceptStatus, error) {
	a.keys = append(a.keys, k)
	return qsync.StatusAccepted, nil
}

// TestWebhookHandler: the shared token (URL or header) or a valid
// X-Hub-Signature admits a delivery; the issue is read to find its key;
// issues without the shared label cost no read.
func TestWebhookHandler(t *testing.T) {
	tr, f := setup(t, nil)
	m := marker("defects", 3)
	is := f.AddIssue(jirafake.IssueState{Project: "QA", Type: "Bug", Summary: "x", Status: "To Do",
		Labels: []string{"qase-sync", m.Label}, Properties: markerProp(m)})
	plain := f.AddIssue(jirafake.IssueState{Project: "QA", Type: "Bug", Summary: "y", Status: "To Do"})
	acc := &acceptLog{}
	h := NewWebhookHandler(WebhookOptions{Options: trackerhook.Options{Acceptor: acc, Secrets: []string{"old-secret", "hook-secret"}}, Tracker: tr})
	body := func(id string, labels string) []byte {
		return []byte(`{"timestamp":1700000000000,"webhookEvent":"jira:issue_updated","issue":{"id":"` + id + `","key":"QA-1","fields":{"labels":` + labels + `}}}`)
	}
	send := func(url string, b []byte, hdr map[string]string) int {
		req := httptest.NewRequest(http.MethodPost, url, bytes.NewReader(b))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	marked := body(is.ID, `["qase-sync"]`)
	sign := func(secret string, b []byte) string {
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(b)
		return "sha256=" + hex.EncodeToString(mac.Sum(nil))
	}
	for _, c := range []struct {
		name string
		url  string
		hdr  map[string]string
		want int
	}{
		{"no token", "/webhooks/jira", nil, http.StatusUnauthorized},
		{"wrong token", "/webhooks/jira?token=nope", nil, http.StatusUnauthorized},
		{"bad signature beats a good token", "/webhooks/jira?token=hook-secret", map[string]string{"X-Hub-Signature": sign("nope", marked)}, http.StatusUnauthorized},
		{"url token", "/webhooks/jira?token=hook-secret", nil, http.StatusAccepted},
		{"header token (rotation)", "/webhooks/jira", map[string]string{"X-Qase-Sync-Token": "old-secret"}, http.StatusAccepted},
		{"signature", "/webhooks/jira", map[string]string{"X-Hub-Signature": sign("hook-secret", marked)}, http.StatusAccepted},
	} {
		if got := send(c.url, marked, c.hdr); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	want := qsync.Key{Route: "defects", EntityRef: qsync.EntityRef{Project: "QA", Kind: qsync.KindDefect, ID: 3}}
	if len(acc.keys) != 3 || acc.keys[0] != want {
		t.Fatalf("accepted %v, want 3× %v", acc.keys, want)
	}
	reads := f.Count(http.MethodGet, "/rest/api/2/issue/")
	if got := send("/webhooks/jira?token=hook-secret", body(plain.ID, `[]`), nil); got != http.StatusAccepted || f.Count(http.MethodGet, "/rest/api/2/issue/") != reads {
		t.Fatalf("unlabelled issue: %d and %d reads", got, f.Count(http.MethodGet, "/rest/api/2/issue/")-reads)
	}
	// Labelled but unmarked (a person copied the label): read, then ignored.
	if got := send("/webhooks/jira?token=hook-secret", body(plain.ID, `["qase-sync"]`), nil); got != http.StatusAccepted || len(acc.keys) != 3 {
		t.Fatalf("unmarked issue: %d, accepted %v", got, acc.keys)
	}
}
