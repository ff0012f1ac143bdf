package trackerhook

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	qsync "github.com/qase-sync/qase-sync/sync"
)

func TestSignedBy(t *testing.T) {
	body := []byte(`{"a":1}`)
	for _, tc := range []struct {
		name    string
		sig     string
		secrets []string
		want    bool
	}{
		{"signed by the second of two (rotation)", Sign("new", body), []string{"old", "new"}, true},
		{"wrong secret", Sign("nope", body), []string{"old", "new"}, false},
		{"empty secret never matches", Sign("", body), []string{""}, false},
		{"no sha256= prefix", strings.TrimPrefix(Sign("old", body), "sha256="), []string{"old"}, false},
		{"sha1", "sha1=abcd", []string{"old"}, false},
		{"not hex", "sha256=zz", []string{"old"}, false},
	} {
		if got := SignedBy(tc.sig, body, tc.secrets); got != tc.want {
			t.Errorf("%s: SignedBy = %v, want %v", tc.name, got, tc.want)
		}
	}
}

type acceptFunc func(qsync.Key, qsync.Event) (qsync.AcceptStatus, error)

func (f acceptFunc) AcceptTracker(_ context.Context, k qsync.Key, ev qsync.Event) (qsync.AcceptStatus, error) {
	return f(k, ev)
}

// Store answers by the inbox's verdict and reports one result for metrics.
func TestStoreAnswers(t *testing.T) {
	for _, tc := range []struct {
		st         qsync.AcceptStatus
		err        error
		code       int
		body, seen string
	}{
		{qsync.StatusAccepted, nil, http.StatusAccepted, `{"status":"accepted"}`, "accepted"},
		{qsync.StatusDuplicate, nil, http.StatusOK, `{"status":"duplicate"}`, "duplicate"},
		{"", qsync.ErrInboxClosed, http.StatusServiceUnavailable, `{"status":"shutting down"}`, "failed"},
		{"", errors.New("disk full"), http.StatusServiceUnavailable, `{"status":"not stored"}`, "failed"},
	} {
		var seen []string
		rc := NewReceiver("x", Options{
			Acceptor: acceptFunc(func(qsync.Key, qsync.Event) (qsync.AcceptStatus, error) { return tc.st, tc.err }),
			Observe:  func(r string) { seen = append(seen, r) },
		})
		w := httptest.NewRecorder()
		rc.Store(context.Background(), w, qsync.Key{}, qsync.Event{})
		if w.Code != tc.code || strings.TrimSpace(w.Body.String()) != tc.body || len(seen) != 1 || seen[0] != tc.seen {
			t.Errorf("%q/%v: %d %s, observed %v; want %d %s, [%s]", tc.st, tc.err, w.Code, w.Body, seen, tc.code, tc.body, tc.seen)
		}
	}
}

func TestDedupKey(t *testing.T) {
	rc := NewReceiver("jira", Options{})
	if got := rc.DedupKey("wh-1", []byte("a")); got != "jira:wh-1" {
		t.Errorf("with an id: %q", got)
	}
	a, b := rc.DedupKey("", []byte("a")), rc.DedupKey("", []byte("b"))
	if a == b || !strings.HasPrefix(a, "jira:"+qsync.TrackerBodyKey) || len(a) != len("jira:"+qsync.TrackerBodyKey)+32 {
		t.Errorf("body hashes: %q, %q", a, b)
	}
}
