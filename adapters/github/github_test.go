package github

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	"github.com/qase-sync/qase-sync/adapters/github/githubfake"
	qsync "github.com/qase-sync/qase-sync/sync"
)

const (
	testToken = "ghp_TESTSECRETtoken0123456789"
	repo      = "acme/widgets"
)

type observed struct {
	op     string
	status int
}

type harness struct {
	tr   *Tracker
	fake *githubfake.Server
	logs *bytes.Buffer

	mu    sync.Mutex
	calls []observed
}

func (h *harness) observe(system, op string, status int, d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if system != "github" || d < 0 {
		panic("bad observation")
	}
	h.calls = append(h.calls, observed{op, status})
}

func (h *harness) count(op string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, c := range h.calls {
		if c.op == op {
			n++
		}
	}
	return n
}

func (h *harness) resetCalls() {
	h.mu.Lock()
	h.calls = nil
	h.mu.Unlock()
}

// create files an issue through the tracker, failing the test if it
// cannot.
func (h *harness) create(t *testing.T, s qsync.IssueSpec, m qsync.Marker) qsync.Issue {
	t.Helper()
	is, err := h.tr.Create(ctx(t), s, m)
	if err != nil {
		t.Fatal(err)
	}
	return is
}

func setup(t *testing.T, mods ...func(*Options)) *harness {
	t.Helper()
	h := &harness{fake: githubfake.New(), logs: &bytes.Buffer{}}
	t.Cleanup(h.fake.Close)
	l := logrus.New()
	l.SetLevel(logrus.DebugLevel)
	l.SetOutput(&lockedWriter{w: h.logs})
	opts := Options{Token: testToken, BaseURL: h.fake.URL, Logger: logrus.NewEntry(l), Observer: h.observe, Timeout: 5 * time.Second}
	for _, m := range mods {
		m(&opts)
	}
	tr, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.tr = tr
	t.Cleanup(func() {
		if strings.Contains(h.logs.String(), testToken) {
			t.Error("token appears in the logs")
		}
	})
	return h
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func marker(id int64) qsync.Marker {
	return qsync.MarkerFor(qsync.Key{Route: "bugs", EntityRef: qsync.EntityRef{Project: "QA", Kind: qsync.KindDefect, ID: id}})
}

func spec(title string) qsync.IssueSpec {
	return qsync.IssueSpec{Project: repo, IssueFields: qsync.IssueFields{Title: title, Body: "Steps:\n1. open\n2. crash", Labels: []string{"bug", "severity:major"}}}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestCreateStampsMarkerAndLabel(t *testing.T) {
	h := setup(t)
	m := marker(1)
	s := spec("Login fails")
	s.Assignees = []string{"alice", "@bob", "alice"}
	s.Status = "closed" // Create must not close; SetStatus does.
	is, err := h.tr.Create(ctx(t), s, m)
	if err != nil {
		t.Fatal(err)
	}
	if is.Ref.ID != "1" || is.Ref.Key != repo+"#1" || is.Ref.Project != repo || !strings.HasSuffix(is.Ref.URL, "/acme/widgets/issues/1") {
		t.Fatalf("ref = %+v", is.Ref)
	}
	if is.MarkerID != m.ID || is.Body != s.Body || is.Status != "open" {
		t.Fatalf("issue = %+v", is)
	}
	stored := h.fake.Issues(repo)
	if len(stored) != 1 {
		t.Fatalf("stored %d issues", len(stored))
	}
	got := stored[0]
	if want := s.Body + "\n\n<!-- qase-sync:marker " + m.ID + " -->"; got.Body != want {
		t.Fatalf("body = %q, want %q", got.Body, want)
	}
	if strings.Join(got.Labels, ",") != "qase-sync,"+m.Label+",bug,severity:major" {
		t.Fatalf("labels = %v", got.Labels)
	}
	if strings.Join(got.Assignees, ",") != "alice,bob" || got.State != "open" {
		t.Fatalf("assignees/state = %v %s", got.Assignees, got.State)
	}
	if r := h.fake.Requests()[0]; r.Authorization != "Bearer "+testToken {
		t.Fatalf("authorization header not sent as bearer token")
	}
	if h.count("create") != 1 {
		t.Fatalf("observer saw %v", h.calls)
	}
}

func TestFindAdoptsAfterCommitThenFail(t *testing.T) {
	h := setup(t)
	m, other := marker(1), marker(2)
	since := h.fake.Now()
	if _, err := h.tr.Create(ctx(t), spec("other"), other); err != nil {
		t.Fatal(err)
	}
	h.fake.CommitThenFail(1)
	_, err := h.tr.Create(ctx(t), spec("Login fails"), m)
	if err == nil || qsync.IsPermanent(err) {
		t.Fatalf("502 after commit must be retryable, got %v", err)
	}
	if _, ok := qsync.RetryWait(err); ok {
		t.Fatalf("502 carries no wait: %v", err)
	}
	found, err := h.tr.Find(ctx(t), repo, m, since)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].Ref.ID != "2" || found[0].MarkerID != m.ID || found[0].Title != "Login fails" {
		t.Fatalf("found = %+v", found)
	}
	// A duplicate slipped through: both come back, oldest first.
	if _, err := h.tr.Create(ctx(t), spec("Login fails"), m); err != nil {
		t.Fatal(err)
	}
	found, err = h.tr.Find(ctx(t), repo, m, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 2 || found[0].Ref.ID != "2" || found[1].Ref.ID != "3" {
		t.Fatalf("want #2 then #3, got %+v", found)
	}
	// Markers must match exactly, not by prefix (…/defect/1 vs …/defect/10).
	if found, _ := h.tr.Find(ctx(t), repo, marker(10), time.Time{}); len(found) != 0 {
		t.Fatalf("marker 10 matched %+v", found)
	}
	// The list request uses the label filter, never search.
	for _, r := range h.fake.Requests() {
		if r.Method == http.MethodGet && r.Path == "/repos/acme/widgets/issues" &&
			(!strings.Contains(r.Query, "labels=qase-sync") || !strings.Contains(r.Query, "state=all")) {
			t.Fatalf("list query %q", r.Query)
		}
		if strings.Contains(r.Path, "search") {
			t.Fatalf("search API used: %s", r.Path)
		}
	}
}

func TestFindStopsAtSinceAndSkipsPullRequests(t *testing.T) {
	h := setup(t)
	m := marker(7)
	for i := 0; i < 150; i++ {
		h.fake.AddIssue(repo, githubfake.IssueState{Title: fmt.Sprint("old ", i), Labels: []string{"qase-sync"}})
	}
	h.fake.Advance(2 * time.Hour)
	// A pull request carrying the label and the marker is not an issue.
	h.fake.AddIssue(repo, githubfake.IssueState{Title: "pr", Body: "x\n\n" + markerComment(m.ID), Labels: []string{"qase-sync"}, PullRequest: true})
	// Same marker without the shared label: not listable, not found.
	h.fake.AddIssue(repo, githubfake.IssueState{Title: "unlabelled", Body: markerComment(m.ID)})
	since := h.fake.Now()
	if _, err := h.tr.Create(ctx(t), spec("target"), m); err != nil {
		t.Fatal(err)
	}
	h.resetCalls()
	found, err := h.tr.Find(ctx(t), repo, m, since)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].Title != "target" {
		t.Fatalf("found = %+v", found)
	}
	if n := h.count("find"); n != 1 {
		t.Fatalf("bounded Find made %d list calls, want 1 (older issues stop the scan)", n)
	}
	h.resetCalls()
	found, err = h.tr.Find(ctx(t), repo, m, time.Time{})
	if err != nil || len(found) != 1 {
		t.Fatalf("unbounded: %v %+v", err, found)
	}
	if n := h.count("find"); n != 2 {
		t.Fatalf("unbounded Find over 152 issues made %d calls, want 2", n)
	}
}

func TestUpdateKeepsMarkerAndManagesLabels(t *testing.T) {
	h := setup(t)
	m := marker(3)
	is := h.create(t, spec("old title"), m)
	title, body, as := "new title", "new body", []string{"carol"}
	if err := h.tr.Update(ctx(t), is.Ref, qsync.Update{Title: &title, Body: &body, Assignees: &as}); err != nil {
		t.Fatal(err)
	}
	if n := h.count("edit"); n != 1 {
		t.Fatalf("want one PATCH, got %d", n)
	}
	got, err := h.tr.Get(ctx(t), is.Ref)
	if err != nil {
		t.Fatal(err)
	}
	if got.Title != title || got.Body != body || got.MarkerID != m.ID || strings.Join(got.Assignees, ",") != "carol" {
		t.Fatalf("after update: %+v", got)
	}
	if st, _ := h.fake.Issue(repo, 1); !strings.HasSuffix(st.Body, markerComment(m.ID)) {
		t.Fatalf("marker lost: %q", st.Body)
	}

	h.fake.ResetLog()
	if err := h.tr.Update(ctx(t), is.Ref, qsync.Update{AddLabels: []string{"p1", "bug", "P1"}}); err != nil {
		t.Fatal(err)
	}
	reqs := h.fake.Requests()
	if len(reqs) != 1 || reqs[0].Method != http.MethodPost || reqs[0].Path != "/repos/acme/widgets/issues/1/labels" {
		t.Fatalf("requests = %+v", reqs)
	}
	var obj struct{ Labels []string }
	if err := json.Unmarshal([]byte(reqs[0].Body), &obj); err != nil || strings.Join(obj.Labels, ",") != "p1,bug" {
		t.Fatalf("add-labels body must be the object form, got %s", reqs[0].Body)
	}

	h.fake.ResetLog()
	// A label that is not there is fine; the shared label is never removed;
	// names with a slash are escaped.
	if err := h.tr.Update(ctx(t), is.Ref, qsync.Update{AddLabels: []string{"area/ui"}}); err != nil {
		t.Fatal(err)
	}
	if err := h.tr.Update(ctx(t), is.Ref, qsync.Update{RemoveLabels: []string{"bug", "absent", "qase-sync", "area/ui"}}); err != nil {
		t.Fatal(err)
	}
	st, _ := h.fake.Issue(repo, 1)
	if strings.Join(st.Labels, ",") != "qase-sync,"+m.Label+",severity:major,p1" {
		t.Fatalf("labels = %v", st.Labels)
	}
	deletes := 0
	for _, r := range h.fake.Requests() {
		if r.Method == http.MethodDelete {
			deletes++
		}
	}
	if deletes != 3 {
		t.Fatalf("want 3 DELETEs (bug, absent, area/ui), got %d", deletes)
	}

	// Priority, components and fields are no GitHub concepts: no call.
	h.fake.ResetLog()
	prio, comps := "High", []string{"api"}
	if err := h.tr.Update(ctx(t), is.Ref, qsync.Update{Priority: &prio, Components: &comps, Fields: map[string]string{"x": "y"}}); err != nil {
		t.Fatal(err)
	}
	if h.fake.WriteCount() != 0 || len(h.fake.Requests()) != 0 {
		t.Fatalf("ignored fields caused requests: %+v", h.fake.Requests())
	}

	empty := "  "
	if err := h.tr.Update(ctx(t), is.Ref, qsync.Update{Title: &empty}); !qsync.IsPermanent(err) {
		t.Fatalf("empty title must be permanent, got %v", err)
	}
}

func TestUpdateBodyWithoutMarkerStillWrites(t *testing.T) {
	h := setup(t)
	is := h.create(t, spec("t"), marker(4))
	h.fake.EditIssue(repo, 1, func(s *githubfake.IssueState) { s.Body = "a human rewrote this" })
	body := "desired"
	if err := h.tr.Update(ctx(t), is.Ref, qsync.Update{Body: &body}); err != nil {
		t.Fatal(err)
	}
	if st, _ := h.fake.Issue(repo, 1); st.Body != "desired" {
		t.Fatalf("body = %q", st.Body)
	}
}

func TestSetStatus(t *testing.T) {
	h := setup(t)
	is := h.create(t, spec("t"), marker(5))
	steps := []struct {
		status, reason  string
		wantSt, wantWhy string
	}{
		{"closed", "", "closed", "completed"},
		{"closed", "not_planned", "closed", "not_planned"},
		{"closed", "not_planned", "closed", "not_planned"}, // idempotent
		{"open", "", "open", "reopened"},
		{"open", "", "open", "reopened"},
		{"Closed", "completed", "closed", "completed"},
	}
	for i, s := range steps {
		if err := h.tr.SetStatus(ctx(t), is.Ref, s.status, s.reason); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		got, err := h.tr.Get(ctx(t), is.Ref)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != s.wantSt || got.Reason != s.wantWhy {
			t.Fatalf("step %d: %s/%s, want %s/%s", i, got.Status, got.Reason, s.wantSt, s.wantWhy)
		}
	}
	if err := h.tr.SetStatus(ctx(t), is.Ref, "done", ""); !qsync.IsPermanent(err) {
		t.Fatalf("unknown status: %v", err)
	}
	if err := h.tr.SetStatus(ctx(t), is.Ref, "closed", "wontfix"); !qsync.IsPermanent(err) {
		t.Fatalf("unknown reason: %v", err)
	}
}

func TestCommentsAreStampedAndFoundAcrossPages(t *testing.T) {
	h := setup(t)
	is := h.create(t, spec("t"), marker(6))
	h.fake.EditIssue(repo, 1, func(s *githubfake.IssueState) {
		for i := 0; i < 120; i++ {
			s.Comments = append(s.Comments, githubfake.CommentState{ID: int64(i + 1), Body: "human chatter"})
		}
	})
	if err := h.tr.AddComment(ctx(t), is.Ref, qsync.Comment{ID: "qase-comment-42", Body: "Retested: still failing"}); err != nil {
		t.Fatal(err)
	}
	st, _ := h.fake.Issue(repo, 1)
	last := st.Comments[len(st.Comments)-1].Body
	if last != "Retested: still failing\n\n<!-- qase-sync:comment qase-comment-42 -->" {
		t.Fatalf("comment body = %q", last)
	}
	h.resetCalls()
	ok, err := h.tr.HasComment(ctx(t), is.Ref, "qase-comment-42")
	if err != nil || !ok {
		t.Fatalf("HasComment = %v, %v", ok, err)
	}
	if n := h.count("list_comments"); n != 2 {
		t.Fatalf("comment 121 needs page 2: %d calls", n)
	}
	if ok, err := h.tr.HasComment(ctx(t), is.Ref, "qase-comment-4"); err != nil || ok {
		t.Fatalf("prefix id matched: %v %v", ok, err)
	}
	if err := h.tr.AddComment(ctx(t), is.Ref, qsync.Comment{Body: "no id"}); !qsync.IsPermanent(err) {
		t.Fatalf("comment without id: %v", err)
	}
}

func TestListPagesOverManyIssues(t *testing.T) {
	h := setup(t)
	for i := 1; i <= 250; i++ {
		body, labels := "plain", []string{"qase-sync"}
		switch {
		case i%2 == 0: // completely marked
			body = "text\n\n" + markerComment(marker(int64(i)).ID)
			labels = append(labels, marker(int64(i)).Label)
		case i%3 == 0: // the stamp without its label: incompletely marked
			body = "text\n\n" + markerComment(marker(int64(i)).ID)
		}
		h.fake.AddIssue(repo, githubfake.IssueState{Title: fmt.Sprint("issue ", i), Body: body, Labels: labels})
	}
	h.fake.AddIssue(repo, githubfake.IssueState{Title: "not ours"})
	h.fake.AddIssue(repo, githubfake.IssueState{Title: "closed", Labels: []string{"qase-sync"}, State: "closed", StateReason: "completed"})
	h.fake.AddIssue(repo, githubfake.IssueState{Title: "pr", Labels: []string{"qase-sync"}, PullRequest: true})
	h.resetCalls()
	list, err := h.tr.List(ctx(t), repo)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 251 {
		t.Fatalf("listed %d, want 251 (250 + closed one)", len(list))
	}
	if n := h.count("list"); n != 3 {
		t.Fatalf("%d list calls for 252 labelled items, want 3", n)
	}
	for i, is := range list[:250] {
		if is.Title != fmt.Sprint("issue ", i+1) {
			t.Fatalf("order: #%d is %q", i, is.Title)
		}
		wantMarker := ""
		if (i+1)%2 == 0 {
			wantMarker = marker(int64(i + 1)).ID
		}
		if is.MarkerID != wantMarker {
			t.Fatalf("%s: marker %q want %q", is.Title, is.MarkerID, wantMarker)
		}
	}
	if last := list[250]; last.Status != "closed" || last.Reason != "completed" {
		t.Fatalf("closed issue: %+v", last)
	}
}

func TestTruncation(t *testing.T) {
	h := setup(t)
	m := marker(8)
	s := spec(strings.Repeat("é", 300))
	s.Body = strings.Repeat("日本語テキスト ", 10000) // 80,000 characters
	for i := 0; i < 120; i++ {
		s.Labels = append(s.Labels, fmt.Sprintf("label-%03d", i))
	}
	long := strings.Repeat("x", 80)
	s.Labels = append([]string{long, " ", "BUG"}, s.Labels...)
	for i := 0; i < 15; i++ {
		s.Assignees = append(s.Assignees, fmt.Sprint("user", i))
	}
	is, err := h.tr.Create(ctx(t), s, m)
	if err != nil {
		t.Fatalf("create must fit GitHub's limits instead of failing: %v", err)
	}
	st, _ := h.fake.Issue(repo, 1)
	if n := utf8.RuneCountInString(st.Title); n != 256 || !strings.HasSuffix(st.Title, "…") {
		t.Fatalf("title: %d runes", n)
	}
	if n := utf8.RuneCountInString(st.Body); n > 65536 || n < 65000 {
		t.Fatalf("body: %d runes", n)
	}
	if !strings.Contains(st.Body, "…(truncated by qase-sync)") || !strings.HasSuffix(st.Body, markerComment(m.ID)) {
		t.Fatal("body lost the notice or the marker")
	}
	if is.MarkerID != m.ID {
		t.Fatalf("marker = %q", is.MarkerID)
	}
	if len(st.Labels) != 100 || st.Labels[0] != "qase-sync" || st.Labels[1] != m.Label || st.Labels[2] != strings.Repeat("x", 50) {
		t.Fatalf("labels: %d, first %v", len(st.Labels), st.Labels[:3])
	}
	for _, l := range st.Labels {
		if utf8.RuneCountInString(l) > 50 || strings.TrimSpace(l) == "" {
			t.Fatalf("bad label %q", l)
		}
	}
	if len(st.Assignees) != 10 {
		t.Fatalf("assignees: %d", len(st.Assignees))
	}
	// A huge edit keeps the marker too.
	huge := strings.Repeat("z", 70000)
	if err := h.tr.Update(ctx(t), is.Ref, qsync.Update{Body: &huge}); err != nil {
		t.Fatal(err)
	}
	got, err := h.tr.Get(ctx(t), is.Ref)
	if err != nil || got.MarkerID != m.ID || !strings.HasSuffix(got.Body, "…(truncated by qase-sync)") {
		t.Fatalf("after huge edit: %v marker=%q", err, got.MarkerID)
	}
	if _, err := h.tr.Create(ctx(t), spec(" \t"), marker(9)); !qsync.IsPermanent(err) {
		t.Fatalf("blank title: %v", err)
	}
}

func TestDeletedAndTransferredIssues(t *testing.T) {
	h := setup(t)
	a, _ := h.tr.Create(ctx(t), spec("a"), marker(11))
	b, _ := h.tr.Create(ctx(t), spec("b"), marker(12))
	h.fake.DeleteIssue(repo, 1)
	_, err := h.tr.Get(ctx(t), a.Ref)
	if !errors.Is(err, qsync.ErrNotFound) || qsync.IsPermanent(err) {
		t.Fatalf("deleted (410): %v", err)
	}
	_, err = h.tr.Get(ctx(t), qsync.IssueRef{Project: repo, ID: "99"})
	if !errors.Is(err, qsync.ErrNotFound) {
		t.Fatalf("missing (404): %v", err)
	}
	title := "x"
	err = h.tr.Update(ctx(t), a.Ref, qsync.Update{Title: &title})
	if !errors.Is(err, qsync.ErrNotFound) || !qsync.IsPermanent(err) {
		t.Fatalf("write to deleted: %v", err)
	}
	if _, err := h.tr.HasComment(ctx(t), a.Ref, "c"); !qsync.IsPermanent(err) {
		t.Fatalf("comments of deleted: %v", err)
	}

	n, _ := h.fake.TransferIssue(repo, 2, "acme/other")
	got, err := h.tr.Get(ctx(t), b.Ref)
	if err != nil {
		t.Fatal(err)
	}
	if got.Ref.Project != "acme/other" || got.Ref.ID != fmt.Sprint(n) || got.Title != "b" {
		t.Fatalf("transferred issue read as %+v", got.Ref)
	}
	// A write to the old address must not be silently turned into a GET.
	err = h.tr.SetStatus(ctx(t), b.Ref, "closed", "")
	if !qsync.IsPermanent(err) || !errors.Is(err, qsync.ErrNotFound) {
		t.Fatalf("write to transferred issue: %v", err)
	}
	if st, _ := h.fake.Issue("acme/other", n); st.State != "open" {
		t.Fatal("state changed behind a redirect")
	}
	// The ref is resolvable from its Key alone.
	if _, err := h.tr.Get(ctx(t), qsync.IssueRef{Key: "acme/other#1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.tr.Get(ctx(t), qsync.IssueRef{Project: "nonsense"}); !qsync.IsPermanent(err) {
		t.Fatalf("bad ref: %v", err)
	}
}

func TestNewValidatesOptions(t *testing.T) {
	cases := []Options{
		{},
		{Token: "t", App: &AppAuth{AppID: 1, InstallationID: 2, PrivateKey: []byte("k")}},
		{Token: "t", SharedLabel: "a,b"},
		{Token: "t", SharedLabel: strings.Repeat("l", 51)},
		{Token: "t", BaseURL: "not a url"},
		{App: &AppAuth{AppID: 1, InstallationID: 2, PrivateKey: []byte("not a pem")}},
	}
	for i, o := range cases {
		if _, err := New(o); err == nil {
			t.Errorf("case %d: want error", i)
		}
	}
	tr, err := New(Options{Token: "t", BaseURL: "https://ghe.example.com/api/v3"})
	if err != nil || tr.client.BaseURL.String() != "https://ghe.example.com/api/v3/" || tr.label != "qase-sync" {
		t.Fatalf("GHES base: %v %v", err, tr)
	}
}

// GitHub (and a validating mock of its API) answers 406 to a request that
// accepts only a preview media type; go-github v60's Issues.Get sends
// exactly that, so the adapter reads issues with the stable type.
func TestIssueReadSendsStableMediaType(t *testing.T) {
	h := setup(t)
	a, err := h.tr.Create(ctx(t), spec("a"), marker(21))
	if err != nil {
		t.Fatal(err)
	}
	got, err := h.tr.Get(ctx(t), a.Ref)
	if err != nil {
		t.Fatalf("issue read refused: %v", err)
	}
	if got.Title != "a" {
		t.Fatalf("read %+v", got)
	}
	reads := 0
	for _, rq := range h.fake.Requests() {
		if rq.Method == http.MethodGet && rq.Path == "/repos/"+repo+"/issues/"+a.Ref.ID {
			reads++
			if rq.Accept != "application/vnd.github+json" || rq.Status != http.StatusOK {
				t.Errorf("issue read: Accept %q, status %d", rq.Accept, rq.Status)
			}
		}
	}
	if reads == 0 {
		t.Fatal("no issue read reached the fake")
	}
}
