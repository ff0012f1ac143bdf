package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// deadLetter makes Jira refuse the create of defect.created.json once, so
// the event ends as the only dead letter, and returns that letter's id.
func (h *harness) deadLetter() string {
	h.t.Helper()
	h.jira.FailNext(1, http.StatusBadRequest, nil, "")
	h.deliver("defect.created.json", http.StatusAccepted)
	h.drain()
	dls, err := h.a.store.DeadLetters(context.Background(), 10)
	if err != nil || len(dls) != 1 {
		h.t.Fatalf("dead letters = %+v (%v), want 1", dls, err)
	}
	return strconv.FormatInt(dls[0].ID, 10)
}

// uiClient is a browser-like client: a cookie jar, no redirects followed
// automatically when asked.
type uiClient struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newUIClient(t *testing.T, base string) *uiClient {
	jar, _ := cookiejar.New(nil)
	return &uiClient{t: t, base: base, c: &http.Client{Jar: jar}}
}

func (u *uiClient) do(method, path string, form url.Values) (int, string, *http.Response) {
	u.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, u.base+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := u.c.Do(req)
	if err != nil {
		u.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp
}

func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF field in page:\n%s", page)
	}
	return m[1]
}

// TestStatusPageHTTP: login (cookie attributes, CSRF on the form), pages
// behind the session, CSRF enforced on actions, retry of a dead letter.
// The browser test (status_browser_test.go) clicks through the same.
func TestStatusPageHTTP(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	id := h.deadLetter()
	u := newUIClient(t, h.url)

	// Not logged in: pages redirect to the login form, actions are refused.
	if code, body, _ := u.do(http.MethodGet, "/admin/ui/", nil); code != http.StatusOK || !strings.Contains(body, "Admin token") {
		t.Fatalf("anonymous overview: %d", code)
	}
	if code, _, _ := u.do(http.MethodPost, "/admin/ui/deadletters/1/retry", url.Values{"csrf": {"x"}}); code != http.StatusForbidden {
		t.Errorf("anonymous retry: %d", code)
	}
	_, login, resp := u.do(http.MethodGet, "/admin/ui/login", nil)
	if resp.Header.Get("Content-Security-Policy") == "" || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("security headers: %v", resp.Header)
	}
	// A login without the form's CSRF token is refused, a wrong token fails.
	if code, _, _ := u.do(http.MethodPost, "/admin/ui/login", url.Values{"token": {"test-admin-token"}}); code != http.StatusForbidden {
		t.Errorf("login without CSRF: %d", code)
	}
	_, login, _ = u.do(http.MethodGet, "/admin/ui/login", nil)
	if _, body, _ := u.do(http.MethodPost, "/admin/ui/login", url.Values{"token": {"wrong"}, "csrf": {csrfOf(t, login)}}); !strings.Contains(body, "not the admin token") {
		t.Errorf("wrong token: %s", body)
	}
	_, login, _ = u.do(http.MethodGet, "/admin/ui/login", nil)
	noRedirect := *u.c
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, _ := http.NewRequest(http.MethodPost, h.url+"/admin/ui/login", strings.NewReader(url.Values{"token": {"test-admin-token"}, "csrf": {csrfOf(t, login)}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie && c.Value != "" {
			session = c
		}
	}
	if resp.StatusCode != http.StatusSeeOther || session == nil || !session.Secure || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode {
		t.Fatalf("login: %d, session cookie %+v", resp.StatusCode, session)
	}
	// The jar will not send a Secure cookie over http; as a browser on
	// localhost does, send it.
	u.c.Jar.SetCookies(mustURL(h.url+"/admin/ui/"), []*http.Cookie{{Name: sessionCookie, Value: session.Value, Path: "/admin/ui/"}})

	code, overview, _ := u.do(http.MethodGet, "/admin/ui/", nil)
	for _, w := range []string{"Queue depth", "Oldest pending job", "Syncs, last hour", "Dead letters", "Last delivery per Qase project", "<td>ID</td>", "Last reconcile"} {
		if !strings.Contains(overview, w) {
			t.Errorf("overview (%d) lacks %q", code, w)
		}
	}
	_, list, _ := u.do(http.MethodGet, "/admin/ui/deadletters", nil)
	if !strings.Contains(list, "defects-to-jira:ID/defect/1") || !strings.Contains(list, ">Retry<") {
		t.Fatalf("dead letter list:\n%s", list)
	}
	_, detail, _ := u.do(http.MethodGet, "/admin/ui/deadletters/"+id, nil)
	for _, secret := range []string{"jira-api-token-value", "test-admin-token", testSecret} {
		if strings.Contains(overview+list+detail, secret) {
			t.Error("a page shows a secret")
		}
	}
	if code, _, _ := u.do(http.MethodPost, "/admin/ui/deadletters/"+id+"/retry", url.Values{"csrf": {"forged"}}); code != http.StatusForbidden {
		t.Errorf("retry with a forged CSRF token: %d", code)
	}
	code, after, _ := u.do(http.MethodPost, "/admin/ui/deadletters/"+id+"/retry", url.Values{"csrf": {csrfOf(t, detail)}})
	if code != http.StatusOK || !strings.Contains(after, "requeued") || !strings.Contains(after, "No dead letters") {
		t.Fatalf("retry: %d\n%s", code, after)
	}
	h.drain()
	onlyIssue(t, h.jira)
	// The overview as JSON, for scripts; a reconcile pass shows in it.
	req, _ = http.NewRequest(http.MethodPost, h.url+"/admin/reconcile", nil)
	req.Header.Set("Authorization", "Bearer test-admin-token")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("reconcile: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	code, st := adminGet(t, h, "/admin/status")
	var rep struct {
		QueueDepth    *int                     `json:"queue_depth"`
		DeadLetters   int                      `json:"dead_letters"`
		LastDelivery  map[string]string        `json:"last_delivery"`
		Outcomes      map[string]int           `json:"outcomes"`
		LastReconcile *struct{ Finished bool } `json:"last_reconcile"`
	}
	if code != http.StatusOK || json.Unmarshal(st, &rep) != nil || rep.QueueDepth == nil || rep.DeadLetters != 0 || rep.LastDelivery["ID"] == "" ||
		rep.Outcomes["dead"] != 1 || rep.LastReconcile == nil || !rep.LastReconcile.Finished {
		t.Errorf("GET /admin/status: %d %s", code, st)
	}
	_, overview2, _ := u.do(http.MethodGet, "/admin/ui/", nil)
	if !strings.Contains(overview2, "keys,") || strings.Contains(overview2, "No reconcile pass has run") {
		t.Errorf("overview after a reconcile pass lacks it:\n%s", overview2)
	}
	_, ex, _ := u.do(http.MethodGet, "/admin/ui/explain?q=ID/defect/1", nil)
	defer func() {
		// Guessing the token is rate-limited (10/min, burst 5; two
		// attempts were made above).
		limited := false
		for range 6 {
			_, lp, _ := u.do(http.MethodGet, "/admin/ui/login", nil)
			if code, _, _ := u.do(http.MethodPost, "/admin/ui/login", url.Values{"token": {"guess"}, "csrf": {csrfOf(t, lp)}}); code == http.StatusTooManyRequests {
				limited = true
				break
			}
		}
		if !limited {
			t.Error("login attempts are not rate-limited")
		}
	}()
	if !strings.Contains(ex, "defect.created") || !strings.Contains(ex, "create") {
		t.Errorf("entity page lacks its provenance:\n%s", ex)
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
