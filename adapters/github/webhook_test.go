package github

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"testing"

	qsync "github.com/qase-sync/qase-sync/sync"
)

type acceptLog struct {
	keys []qsync.Key
	evs  []qsync.Event
}

func (a *acceptLog) AcceptTracker(_ context.Context, k qsync.Key, ev qsync.Event) (qsync.AcceptStatus, error) {
	a.keys, a.evs = append(a.keys, k), append(a.evs, ev)
	return qsync.StatusAccepted, nil
}

// TestWebhookHandler: only deliveries signed with a configured secret
// (X-Hub-Signature-256) are stored; the body stamp names the key.
func TestWebhookHandler(t *testing.T) {
	acc := &acceptLog{}
	h := NewWebhookHandler(WebhookOptions{Acceptor: acc, Secrets: []string{"s1", "s2"}})
	k := qsync.Key{Route: "defects", EntityRef: qsync.EntityRef{Project: "QA", Kind: qsync.KindDefect, ID: 9}}
	body := []byte(`{"action":"closed","issue":{"number":4,"body":"text\n\n` + markerComment(qsync.MarkerFor(k).ID) + `","updated_at":"2026-01-01T00:00:00Z"}}`)
	sign := func(secret string, b []byte) string {
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(b)
		return "sha256=" + hex.EncodeToString(mac.Sum(nil))
	}
	send := func(event, sig string, b []byte) int {
		req := httptest.NewRequest(http.MethodPost, "/webhooks/github", bytes.NewReader(b))
		req.Header.Set("X-GitHub-Event", event)
		req.Header.Set("X-GitHub-Delivery", "d-1")
		if sig != "" {
			req.Header.Set("X-Hub-Signature-256", sig)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	for _, c := range []struct {
		name, event, sig string
		want             int
	}{
		{"missing signature", "issues", "", http.StatusUnauthorized},
		{"wrong secret", "issues", sign("nope", body), http.StatusUnauthorized},
		{"sha1 only", "issues", "sha1=abcd", http.StatusUnauthorized},
		{"ping", "ping", sign("s1", body), http.StatusOK},
		{"other event", "push", sign("s1", body), http.StatusAccepted},
		{"issues, second secret", "issues", sign("s2", body), http.StatusAccepted},
	} {
		if got := send(c.event, c.sig, body); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	if len(acc.keys) != 1 || acc.keys[0] != k || acc.evs[0].DedupKey != "github:d-1" || acc.evs[0].Name != "tracker.github.issues.closed" {
		t.Fatalf("accepted %v %+v", acc.keys, acc.evs)
	}
	unmarked := []byte(`{"action":"closed","issue":{"number":5,"body":"no stamp"}}`)
	if got := send("issues", sign("s1", unmarked), unmarked); got != http.StatusAccepted || len(acc.keys) != 1 {
		t.Fatalf("unmarked issue: %d, %d accepted", got, len(acc.keys))
	}
}
