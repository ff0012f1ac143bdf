package jira

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/qase-sync/qase-sync/adapters/jira/jirafake"
	qsync "github.com/qase-sync/qase-sync/sync"
)

const (
	testEmail = "bot@example.com"
	testToken = "s3cr3t-T0KEN-value"
)

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.Out = io.Discard
	return logrus.NewEntry(l)
}

func newTracker(t *testing.T, url string, mod func(*Options)) *Tracker {
	t.Helper()
	o := Options{
		BaseURL: url, Email: testEmail, Token: testToken,
		Settle: -1, Timeout: 5 * time.Second, Logger: quietLog(),
	}
	if mod != nil {
		mod(&o)
	}
	tr, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func setup(t *testing.T, mod func(*Options)) (*Tracker, *jirafake.Server) {
	t.Helper()
	f := jirafake.New()
	t.Cleanup(f.Close)
	return newTracker(t, f.URL, mod), f
}

// backFromWontDo moves a new issue to Won't Do (with reason) in the Won't
// Do workflow, then asks for To Do, with the request log cleared between.
func backFromWontDo(t *testing.T, tr *Tracker, f *jirafake.Server, reason string) (qsync.Issue, error) {
	t.Helper()
	f.SetWorkflow("To Do", jirafake.WontDoWorkflow())
	is := mustCreate(t, tr, baseSpec(), marker("defects", 7))
	if err := tr.SetStatus(context.Background(), is.Ref, "Won't Do", reason); err != nil {
		t.Fatal(err)
	}
	f.ResetRequests()
	return is, tr.SetStatus(context.Background(), is.Ref, "To Do", "")
}

// hungTracker is a tracker with a 50 ms timeout against a Jira that
// answers after 2 s.
func hungTracker(t *testing.T) *Tracker {
	f := jirafake.New()
	t.Cleanup(f.Close)
	f.Delay(2 * time.Second)
	return newTracker(t, f.URL, func(o *Options) { o.Timeout = 50 * time.Millisecond })
}

func marker(route string, id int64) qsync.Marker {
	return qsync.MarkerFor(qsync.Key{Route: route, EntityRef: qsync.EntityRef{Project: "QA", Kind: qsync.KindDefect, ID: id}})
}

func baseSpec() qsync.IssueSpec {
	return qsync.IssueSpec{
		Project: "OPS", Type: "Bug", IssueFields: qsync.IssueFields{
			Title: "Login fails\non Safari", Body: "h3. Steps\n* open {{/login}}",
			Labels: []string{"qase", "needs triage"}, Priority: "High",
			Assignees: []string{"acc-1"}, Components: []string{"web"},
			Fields: map[string]string{"customfield_10010": "plain text", "customfield_10020": `{"value":"red"}`},
		},
	}
}

func ptr[T any](v T) *T { return &v }

func mustCreate(t *testing.T, tr *Tracker, spec qsync.IssueSpec, m qsync.Marker) qsync.Issue {
	t.Helper()
	is, err := tr.Create(context.Background(), spec, m)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	return is
}

// closeThroughReview closes an issue in a workflow whose first transition
// leads astray, so exploration alone would fail: the configured path must
// be taken.
func closeThroughReview(t *testing.T, tr *Tracker, f *jirafake.Server) {
	f.SetWorkflow("Open", []jirafake.Transition{
		{ID: "1", Name: "Park", From: []string{"Open"}, To: "Parked"},
		{ID: "2", Name: "Review", From: []string{"Open"}, To: "In Review"},
		{ID: "3", Name: "Approve", From: []string{"In Review"}, To: "Approved"},
		{ID: "4", Name: "Close", From: []string{"Approved"}, To: "Closed", Resolution: true},
	})
	is := mustCreate(t, tr, baseSpec(), marker("defects", 7))
	if err := tr.SetStatus(context.Background(), is.Ref, "Closed", "Done"); err != nil {
		t.Fatal(err)
	}
	if st, _ := f.Issue(is.Ref.ID); st.Status != "Closed" || st.Resolution != "Done" {
		t.Fatalf("status = %q/%q", st.Status, st.Resolution)
	}
}

func TestAdapterBehaviours(t *testing.T) {
	ctx := context.Background()
	m := marker("defects", 7)
	tests := []struct {
		name string
		opts func(*Options)
		run  func(t *testing.T, tr *Tracker, f *jirafake.Server)
	}{
		{"create stores fields, labels and the marker property", nil, func(t *testing.T, tr *Tracker, f *jirafake.Server) {
			is := mustCreate(t, tr, baseSpec(), m)
			st, ok := f.Issue(is.Ref.ID)
			if !ok {
				t.Fatalf("issue %s not stored", is.Ref.ID)
			}
			if st.Summary != "Login fails on Safari" || st.Description != baseSpec().Body || st.Type != "Bug" {
				t.Errorf("summary/description/type = %q / %q / %q", st.Summary, st.Description, st.Type)
			}
			wantLabels := []string{"qase", "needs-triage", "qase-sync", m.Label}
			if !slices.Equal(st.Labels, wantLabels) {
				t.Errorf("labels = %v, want %v", st.Labels, wantLabels)
			}
			if st.Priority != "High" || st.Assignee != "acc-1" || !slices.Equal(st.Components, []string{"web"}) {
				t.Errorf("priority/assignee/components = %q %q %v", st.Priority, st.Assignee, st.Components)
			}
			if st.Fields["customfield_10010"] != "plain text" {
				t.Errorf("customfield_10010 = %#v", st.Fields["customfield_10010"])
			}
			if obj, ok := st.Fields["customfield_10020"].(map[string]any); !ok || obj["value"] != "red" {
				t.Errorf("customfield_10020 = %#v, want a JSON object", st.Fields["customfield_10020"])
			}
			var prop struct{ Marker string }
			if err := json.Unmarshal(st.Properties[PropertyKey], &prop); err != nil || prop.Marker != m.ID {
				t.Errorf("property = %s (%v), want marker %q", st.Properties[PropertyKey], err, m.ID)
			}
			if is.Ref.Key != st.Key || is.Ref.URL != f.URL+"/browse/"+st.Key || is.Ref.Project != "OPS" {
				t.Errorf("ref = %+v", is.Ref)
			}
			// Nothing is read back: the issue is what was sent, and its
			// status is not known (the workflow chose it).
			if is.Status != "" || is.MarkerID != m.ID || is.Title != "Login fails on Safari" || is.Priority != "High" {
				t.Errorf("returned = %+v", is)
			}
			if is.Fields["customfield_10010"] != "plain text" || is.Fields["customfield_10020"] != `{"value":"red"}` {
				t.Errorf("returned fields = %v", is.Fields)
			}
			if reqs := f.Requests(); len(reqs) != 1 || reqs[0].Method != "POST" || reqs[0].Path != "/rest/api/2/issue" {
				t.Errorf("create sent %d requests (%+v), want the one POST", len(reqs), reqs)
			}
			if !slices.Equal(is.Assignees, []string{"acc-1"}) || is.CreatedAt.IsZero() {
				t.Errorf("assignees/created = %v %v", is.Assignees, is.CreatedAt)
			}
		}},
		{"create truncates long titles", nil, func(t *testing.T, tr *Tracker, f *jirafake.Server) {
			spec := baseSpec()
			spec.Title = strings.Repeat("é", 400)
			is := mustCreate(t, tr, spec, m)
			if n := len([]rune(is.Title)); n != 255 || !strings.HasSuffix(is.Title, "…") {
				t.Errorf("title has %d runes: %q", n, is.Title)
			}
		}},
		{"create carries the marker property in its request", nil, func(t *testing.T, tr *Tracker, f *jirafake.Server) {
			is := mustCreate(t, tr, baseSpec(), m)
			reqs := f.Requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			var body struct {
				Properties []struct {
					Key   string
					Value struct{ Marker string }
				}
			}
			if err := json.Unmarshal([]byte(reqs[0].Body), &body); err != nil || len(body.Properties) != 1 ||
				body.Properties[0].Key != PropertyKey || body.Properties[0].Value.Marker != m.ID {
				t.Errorf("create body properties = %+v (%v), want %s = {marker: %s}", body.Properties, err, PropertyKey, m.ID)
			}
			// What the create reported is what a read reports.
			got, err := tr.Get(ctx, is.Ref)
			if err != nil || got.MarkerID != is.MarkerID || !slices.Equal(got.Labels, is.Labels) || got.Title != is.Title {
				t.Errorf("read = %+v, %v; create said %+v", got, err, is)
			}
		}},
		{"create reports no MarkerID when the request lacked a marker part", nil, func(t *testing.T, tr *Tracker, f *jirafake.Server) {
			// A marker whose label is not the one its id derives: the
			// request cannot carry the derived label, so the issue is
			// incompletely marked, as a read would judge it.
			odd := m
			odd.Label = "not-the-derived-label"
			is := mustCreate(t, tr, baseSpec(), odd)
			if is.MarkerID != "" {
				t.Errorf("MarkerID = %q, want none", is.MarkerID)
			}
			if got, err := tr.Get(ctx, is.Ref); err != nil || got.MarkerID != "" {
				t.Errorf("read MarkerID = %q, %v", got.MarkerID, err)
			}
			// Mark completes it: the missing label only.
			f.ResetRequests()
			if err := tr.Mark(ctx, is.Ref, m); err != nil {
				t.Fatal(err)
			}
			if n, p := f.WriteCount(), f.Count("PUT", "/rest/api/2/issue/"+is.Ref.ID+"/properties/"); n != 1 || p != 0 {
				t.Errorf("mark made %d writes (%d property PUTs), want the label edit only", n, p)
			}
			if got, err := tr.Get(ctx, is.Ref); err != nil || got.MarkerID != m.ID {
				t.Errorf("after mark: %q, %v", got.MarkerID, err)
			}
		}},
		{"create fails whole: a refused create stores nothing", nil, func(t *testing.T, tr *Tracker, f *jirafake.Server) {
			if _, err := createWithFault(f, baseSpec(), m, 1); err == nil {
				t.Fatal("create succeeded through a 500")
			}
			if n := len(f.Issues()); n != 0 {
				t.Errorf("%d issues stored", n)
			}
		}},
		{"find by marker across projects, oldest first", nil, func(t *testing.T, tr *Tracker, f *jirafake.Server) {
			a := mustCreate(t, tr, baseSpec(), m)
			b := mustCreate(t, tr, baseSpec(), m)
			mustCreate(t, tr, baseSpec(), marker("defects", 8))
			f.MoveIssue(a.Ref.ID, "MOVED")
			got, err := tr.Find(ctx, "OPS", m, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 || got[0].Ref.ID != a.Ref.ID || got[1].Ref.ID != b.Ref.ID {
				t.Fatalf("find = %+v", got)
			}
			if got[0].MarkerID != m.ID || got[0].Ref.Project != "MOVED" || got[1].Status != "To Do" {
				t.Errorf("hit = %+v", got[0])
			}
			req := lastRequest(f, "/rest/api/2/search/jql")
			if strings.Contains(req.Body, "project =") || !strings.Contains(req.Body, `"properties":["qase-sync"]`) {
				t.Errorf("search body = %s", req.Body)
			}
		}},
		{"find with since bounds the search coarsely", nil, func(t *testing.T, tr *Tracker, f *jirafake.Server) {
			f.SetNow(func() time.Time { return time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC) })
			old := mustCreate(t, tr, baseSpec(), m)
			f.SetNow(func() time.Time { return time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC) })
			fresh := mustCreate(t, tr, baseSpec(), m)
			got, err := tr.Find(ctx, "OPS", m, time.Date(2025, 3, 10, 12, 30, 0, 0, time.UTC))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].Ref.ID != fresh.Ref.ID || got[0].Ref.ID == old.Ref.ID {
				t.Fatalf("find since = %+v", got)
			}
			if body := lastRequest(f, "/rest/api/2/search/jql").Body; !strings.Contains(body, `created \u003e= \"2025/03/09 12:30\"`) {
				t.Errorf("search body = %s", body)
			}
		}},
		{"find reports a label-only hit without MarkerID", nil, func(t *testing.T, tr *Tracker, f *jirafake.Server) {
			f.AddIssue(jirafake.IssueState{Project: "OPS", Summary: "seeded", Labels: []string{m.Label}})
			got, err := tr.Find(ctx, "OPS", m, time.Time{})
			if err != nil || len(got) != 1 || got[0].MarkerID != "" {
				t.Fatalf("find = %+v, %v", got, err)
			}
		}},
		{"update sets fields and changes labels in one PUT", nil, func(t *testing.T, tr *Tracker, f *jirafake.Server) {
			is := mustCreate(t, tr, baseSpec(), m)
			f.Edit(is.Ref.ID, func(s *jirafake.IssueState) { s.Labels = append(s.Labels, "human") })
			f.ResetRequests()
			u := qsync.Update{
				Title: ptr("New title"), Body: ptr("new body"), Priority: ptr("Low"),
				Assignees: ptr([]string{}), Components: ptr([]string{"api", "db"}),
				Fields:    map[string]string{"customfield_10010": "changed", "customfield_10020": ""},
				AddLabels: []string{"flaky test"}, RemoveLabels: []string{"qase"},
			}
			if err := tr.Update(ctx, is.Ref, u); err != nil {
				t.Fatal(err)
			}
			if n := f.WriteCount(); n != 1 {
				t.Errorf("update made %d writes, want 1", n)
			}
			st, _ := f.Issue(is.Ref.ID)
			want := []string{"needs-triage", "qase-sync", m.Label, "human", "flaky-test"}
			if !slices.Equal(st.Labels, want) {
				t.Errorf("labels = %v, want %v", st.Labels, want)
			}
			if st.Summary != "New title" || st.Description != "new body" || st.Priority != "Low" || st.Assignee != "" {
				t.Errorf("state = %+v", st)
			}
			if !slices.Equal(st.Components, []string{"api", "db"}) || st.Fields["customfield_10010"] != "changed" {
				t.Errorf("components/fields = %v %v", st.Components, st.Fields)
			}
			if _, ok := st.Fields["customfield_10020"]; ok {
				t.Errorf("customfield_10020 not cleared: %v", st.Fields)
			}
			f.ResetRequests()
			if err := tr.Update(ctx, is.Ref, qsync.Update{}); err != nil || len(f.Requests()) != 0 {
				t.Errorf("empty update: err %v, %d requests", err, len(f.Requests()))
			}
		}},
		{"status: no-op, direct, multi-step, resolution", nil, func(t *testing.T, tr *Tracker, f *jirafake.Server) {
			is := mustCreate(t, tr, baseSpec(), m)
			f.ResetRequests()
			if err := tr.SetStatus(ctx, is.Ref, "to do", ""); err != nil || f.WriteCount() != 0 {
				t.Fatalf("already in status: err %v, writes %d", err, f.WriteCount())
			}
			if err := tr.SetStatus(ctx, is.Ref, "In Progress", ""); err != nil {
				t.Fatal(err)
			}
			if st, _ := f.Issue(is.Ref.ID); st.Status != "In Progress" {
				t.Fatalf("status = %q", st.Status)
			}
			if err := tr.SetStatus(ctx, is.Ref, "Done", "Fixed"); err != nil {
				t.Fatal(err)
			}
			if st, _ := f.Issue(is.Ref.ID); st.Status != "Done" || st.Resolution != "Fixed" {
				t.Fatalf("status/resolution = %q/%q", st.Status, st.Resolution)
			}
			// Done -> In Progress has no direct transition and no path is
			// configured: nothing moves.
			f.ResetRequests()
			var ue *qsync.UnreachableError
			if err := tr.SetStatus(ctx, is.Ref, "In Progress", ""); !errors.As(err, &ue) || ue.From != "Done" || !qsync.IsPermanent(err) {
				t.Fatalf("err = %v, want a permanent UnreachableError from Done", err)
			}
			if n := f.WriteCount(); n != 0 {
				t.Fatalf("unreachable status made %d writes", n)
			}
			// With a configured path via To Do: Reopen, then Start Progress.
			tr.via["in progress"] = []string{"To Do"}
			if err := tr.SetStatus(ctx, is.Ref, "In Progress", "ignored"); err != nil {
				t.Fatal(err)
			}
			if st, _ := f.Issue(is.Ref.ID); st.Status != "In Progress" || st.Resolution != "" {
				t.Fatalf("status/resolution = %q/%q", st.Status, st.Resolution)
			}
			if n := f.Count("POST", "/rest/api/2/issue/"+is.Ref.ID+"/transitions"); n != 2 {
				t.Errorf("%d transitions, want 2", n)
			}
			got, err := tr.Get(ctx, is.Ref)
			if err != nil || got.Status != "In Progress" || got.Reason != "" {
				t.Errorf("get = %+v, %v", got, err)
			}
		}},
		{"status via configured path", func(o *Options) {
			o.Transitions = map[string][]string{"closed": {"In Review", "Approved"}}
		}, closeThroughReview},
		{"status via a path of transition names", func(o *Options) {
			o.Transitions = map[string][]string{"Closed": {"review", "Approve"}}
		}, closeThroughReview},
		{"status unreachable is permanent, names the choices and moves nothing", nil, func(t *testing.T, tr *Tracker, f *jirafake.Server) {
			f.SetWorkflow("Open", []jirafake.Transition{
				{ID: "1", Name: "Start", From: []string{"Open"}, To: "Doing"},
				{ID: "2", Name: "Stop", From: []string{"Doing"}, To: "Open"},
			})
			is := mustCreate(t, tr, baseSpec(), m)
			f.ResetRequests()
			err := tr.SetStatus(ctx, is.Ref, "Shipped", "")
			var ue *qsync.UnreachableError
			if !qsync.IsPermanent(err) || !qsync.IsNotApplied(err) || !errors.As(err, &ue) {
				t.Fatalf("err = %v, want a permanent UnreachableError", err)
			}
			if ue.From != "Open" || ue.To != "Shipped" || !strings.Contains(ue.Detail, "Start → Doing") {
				t.Errorf("unreachable = %+v", ue)
			}
			if st, _ := f.Issue(is.Ref.ID); st.Status != "Open" || f.WriteCount() != 0 {
				t.Errorf("status %q after %d writes, want Open untouched", st.Status, f.WriteCount())
			}
		}},
		{"status: To Do from Won't Do is unreachable, nothing is walked", nil, func(t *testing.T, tr *Tracker, f *jirafake.Server) {
			is, err := backFromWontDo(t, tr, f, "Won't Do")
			var ue *qsync.UnreachableError
			if !errors.As(err, &ue) || !qsync.IsPermanent(err) {
				t.Fatalf("err = %v, want a permanent UnreachableError", err)
			}
			if ue.From != "Won't Do" || ue.To != "To Do" || !strings.Contains(ue.Detail, "available transitions: Start Progress → In Progress") {
				t.Errorf("unreachable = %+v", ue)
			}
			if n := f.Count("POST", "/rest/api/2/issue/"+is.Ref.ID+"/transitions"); n != 0 {
				t.Errorf("%d transitions POSTed, want none", n)
			}
			if st, _ := f.Issue(is.Ref.ID); st.Status != "Won't Do" || st.Resolution != "Won't Do" {
				t.Errorf("status/resolution = %q/%q, want Won't Do untouched", st.Status, st.Resolution)
			}
		}},
		{"status: a via-path whose first hop is unavailable is not taken", func(o *Options) {
			o.Transitions = map[string][]string{"to do": {"Done"}}
		}, func(t *testing.T, tr *Tracker, f *jirafake.Server) {
			_, err := backFromWontDo(t, tr, f, "")
			var ue *qsync.UnreachableError
			if !errors.As(err, &ue) || !strings.Contains(ue.Detail, `"Done"`) {
				t.Fatalf("err = %v, want UnreachableError naming the path", err)
			}
			if f.WriteCount() != 0 {
				t.Errorf("%d writes, want none", f.WriteCount())
			}
		}},
		{"comments are stamped and found, also past the embedded page", nil, func(t *testing.T, tr *Tracker, f *jirafake.Server) {
			f.SetCommentEmbedLimit(2)
			f.SetPageCap(3)
			is := mustCreate(t, tr, baseSpec(), m)
			ids := []string{"c-1", "review:9/comment_3 *bold*", "x:odd", "c-4", "c-5"}
			for _, id := range ids {
				if err := tr.AddComment(ctx, is.Ref, qsync.Comment{ID: id, Body: "said " + id}); err != nil {
					t.Fatal(err)
				}
			}
			f.AddHumanComment(is.Ref.ID, "a human remark")
			for _, id := range ids {
				if ok, err := tr.HasComment(ctx, is.Ref, id); err != nil || !ok {
					t.Errorf("HasComment(%q) = %v, %v", id, ok, err)
				}
			}
			if ok, err := tr.HasComment(ctx, is.Ref, "c-9"); err != nil || ok {
				t.Errorf("HasComment(c-9) = %v, %v", ok, err)
			}
			st, _ := f.Issue(is.Ref.ID)
			if want := "said c-1\n\n{color:#97a0af}qase-sync ref c-1{color}"; st.Comments[0].Body != want {
				t.Errorf("comment body = %q, want %q", st.Comments[0].Body, want)
			}
			got, err := tr.Get(ctx, is.Ref)
			if err != nil || !slices.Equal(got.CommentIDs, ids) {
				t.Errorf("Get comment ids = %v, %v; want %v", got.CommentIDs, err, ids)
			}
		}},
		{"get by id after a project move; 404 is ErrNotFound", nil, func(t *testing.T, tr *Tracker, f *jirafake.Server) {
			is := mustCreate(t, tr, baseSpec(), m)
			newKey, _ := f.MoveIssue(is.Ref.ID, "ARCH")
			got, err := tr.Get(ctx, is.Ref) // still the old key in the ref
			if err != nil {
				t.Fatal(err)
			}
			if got.Ref.ID != is.Ref.ID || got.Ref.Key != newKey || got.Ref.Project != "ARCH" || got.MarkerID != m.ID {
				t.Errorf("after move: %+v", got.Ref)
			}
			f.DeleteIssue(is.Ref.ID)
			_, err = tr.Get(ctx, is.Ref)
			if !errors.Is(err, qsync.ErrNotFound) || qsync.IsPermanent(err) {
				t.Errorf("get deleted: %v", err)
			}
			err = tr.Update(ctx, is.Ref, qsync.Update{Title: ptr("x")})
			if !errors.Is(err, qsync.ErrNotFound) || !qsync.IsPermanent(err) {
				t.Errorf("update deleted: %v", err)
			}
			err = tr.AddComment(ctx, is.Ref, qsync.Comment{ID: "c", Body: "b"})
			if !errors.Is(err, qsync.ErrNotFound) {
				t.Errorf("comment on deleted: %v", err)
			}
		}},
		{"a committed create whose answer is lost is found by marker", nil, func(t *testing.T, tr *Tracker, f *jirafake.Server) {
			f.CommitThenFail(1)
			_, err := tr.Create(ctx, baseSpec(), m)
			if err == nil || qsync.IsPermanent(err) {
				t.Fatalf("create err = %v, want retryable", err)
			}
			f.CommitThenDrop(1)
			_, err = tr.Create(ctx, baseSpec(), marker("defects", 9))
			if err == nil || qsync.IsPermanent(err) {
				t.Fatalf("dropped create err = %v, want retryable", err)
			}
			for _, mk := range []qsync.Marker{m, marker("defects", 9)} {
				got, err := tr.Find(ctx, "OPS", mk, time.Time{})
				if err != nil || len(got) != 1 {
					t.Errorf("find %s = %+v, %v", mk.Label, got, err)
				}
			}
		}},
		{"search lag: own creates are reconciled, a restart must settle", nil, func(t *testing.T, tr *Tracker, f *jirafake.Server) {
			f.SearchLag(true)
			is := mustCreate(t, tr, baseSpec(), m)
			got, err := tr.Find(ctx, "OPS", m, time.Time{})
			if err != nil || len(got) != 1 || got[0].Ref.ID != is.Ref.ID {
				t.Fatalf("find after own create = %+v, %v", got, err)
			}
			fresh := newTracker(t, f.URL, nil) // a restarted process knows nothing
			m2 := marker("defects", 10)
			f.CommitThenFail(1)
			if _, err := tr.Create(ctx, baseSpec(), m2); err == nil {
				t.Fatal("want an error")
			}
			if got, _ := fresh.Find(ctx, "OPS", m2, time.Time{}); len(got) != 0 {
				t.Fatalf("lagging index returned %+v", got)
			}
			if got, _ := fresh.Find(ctx, "OPS", m2, time.Time{}); len(got) != 1 {
				t.Fatalf("after settling: %+v", got)
			}
		}},
		{"list pages by 100 and reads markers", nil, func(t *testing.T, tr *Tracker, f *jirafake.Server) {
			for i := 0; i < 250; i++ {
				mk := marker("defects", int64(i))
				props := map[string]json.RawMessage{PropertyKey: json.RawMessage(fmt.Sprintf(`{"marker":%q}`, mk.ID))}
				f.AddIssue(jirafake.IssueState{Project: "OPS", Summary: fmt.Sprint(i), Labels: []string{"qase-sync", mk.Label}, Properties: props})
			}
			f.AddIssue(jirafake.IssueState{Project: "OPS", Summary: "unmanaged"})
			f.AddIssue(jirafake.IssueState{Project: "OTHER", Summary: "elsewhere", Labels: []string{"qase-sync"}})
			f.ResetRequests()
			got, err := tr.List(ctx, "OPS")
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 250 || got[0].Title != "0" || got[249].Title != "249" {
				t.Fatalf("list returned %d issues", len(got))
			}
			if got[17].MarkerID != marker("defects", 17).ID {
				t.Errorf("marker = %q", got[17].MarkerID)
			}
			if n := len(f.Requests()); n != 3 {
				t.Errorf("list cost %d calls, want 3", n)
			}
		}},
		{"data center: bearer token, startAt search, user names", func(o *Options) {
			o.Flavor, o.Email = FlavorDataCenter, ""
		}, func(t *testing.T, tr *Tracker, f *jirafake.Server) {
			for i := 0; i < 120; i++ {
				f.AddIssue(jirafake.IssueState{Project: "OPS", Summary: fmt.Sprint(i), Labels: []string{"qase-sync"}})
			}
			spec := baseSpec()
			spec.Assignees = []string{"jdoe"}
			is := mustCreate(t, tr, spec, m)
			if !slices.Equal(is.Assignees, []string{"jdoe"}) {
				t.Errorf("assignees = %v", is.Assignees)
			}
			f.ResetRequests()
			got, err := tr.List(ctx, "OPS")
			if err != nil || len(got) != 121 {
				t.Fatalf("list = %d, %v", len(got), err)
			}
			reqs := f.Requests()
			if len(reqs) != 2 || reqs[0].Path != "/rest/api/2/search" || !strings.Contains(reqs[1].Body, `"startAt":100`) {
				t.Errorf("requests = %+v", reqs)
			}
			if auth := reqs[0].Header.Get("Authorization"); auth != "Bearer "+testToken {
				t.Errorf("Authorization scheme = %q", strings.SplitN(auth, " ", 2)[0])
			}
			if st, _ := f.Issue(is.Ref.ID); st.Assignee != "jdoe" {
				t.Errorf("assignee = %q", st.Assignee)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, f := setup(t, tc.opts)
			tc.run(t, tr, f)
		})
	}
}

// createWithFault runs Create with the nth request from now failing (500).
func createWithFault(f *jirafake.Server, spec qsync.IssueSpec, m qsync.Marker, nth int) (qsync.Issue, error) {
	ft := &faultTransport{base: http.DefaultTransport, failAt: nth}
	nt, err := New(Options{BaseURL: f.URL, Settle: -1, Logger: quietLog(), HTTPClient: &http.Client{Transport: ft}})
	if err != nil {
		return qsync.Issue{}, err
	}
	return nt.Create(context.Background(), spec, m)
}

// faultTransport fails the failAt-th request with a 500, without sending it.
type faultTransport struct {
	base   http.RoundTripper
	mu     sync.Mutex
	n      int
	failAt int
}

func (ft *faultTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	ft.mu.Lock()
	ft.n++
	n := ft.n
	ft.mu.Unlock()
	if n == ft.failAt {
		return &http.Response{StatusCode: 500, Status: "500 Internal Server Error", Header: http.Header{},
			Body: io.NopCloser(strings.NewReader("boom")), Request: r}, nil
	}
	return ft.base.RoundTrip(r)
}

func lastRequest(f *jirafake.Server, path string) jirafake.Request {
	var last jirafake.Request
	for _, r := range f.Requests() {
		if r.Path == path {
			last = r
		}
	}
	return last
}

func TestErrorClassification(t *testing.T) {
	now := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	type want int
	const (
		retry want = iota
		permanent
		wait
		notFound
	)
	tests := []struct {
		name     string
		status   int
		headers  map[string]string
		body     string
		op       string // get | create | update
		want     want
		wantWait time.Duration
		wantMsg  string
	}{
		{"429 Retry-After", 429, map[string]string{"Retry-After": "17"}, "", "update", wait, 17 * time.Second, "429"},
		{"429 X-RateLimit-Reset", 429, map[string]string{"X-RateLimit-Reset": "2025-06-01T10:00:42Z"}, "", "update", wait, 42 * time.Second, ""},
		{"429 X-RateLimit-Reset minutes", 429, map[string]string{"X-RateLimit-Reset": "2025-06-01T10:02Z"}, "", "update", wait, 2 * time.Minute, ""},
		{"429 bare", 429, nil, "", "create", wait, defaultRetryWait, ""},
		{"503 Retry-After", 503, map[string]string{"Retry-After": "5"}, "", "get", wait, 5 * time.Second, "503"},
		{"503", 503, nil, "", "get", retry, 0, "503"},
		{"500", 500, nil, `{"errorMessages":["Internal server error"]}`, "update", retry, 0, "Internal server error"},
		{"400 errorMessages", 400, nil, `{"errorMessages":["Field 'foo' is bad"],"errors":{"summary":"You must specify a summary","labels":"no spaces"}}`,
			"create", permanent, 0, "Field 'foo' is bad; labels: no spaces; summary: You must specify a summary"},
		{"401", 401, nil, `{"errorMessages":["You are not authenticated"]}`, "get", permanent, 0, "You are not authenticated"},
		{"403", 403, nil, `{"errorMessages":["no permission"]}`, "update", permanent, 0, "no permission"},
		{"403 Retry-After", 403, map[string]string{"Retry-After": "3"}, "", "update", wait, 3 * time.Second, ""},
		{"404 create", 404, nil, `{"errorMessages":["project?"]}`, "create", permanent, 0, "project?"},
		{"404 get", 404, nil, `{"errorMessages":["Issue does not exist"]}`, "get", notFound, 0, "Issue does not exist"},
		{"409", 409, nil, "", "update", permanent, 0, "409"},
		{"410 removed search", 410, nil, `{"errorMessages":["The requested API has been removed."]}`, "find", permanent, 0, "removed"},
		{"422", 422, nil, "", "update", permanent, 0, "422"},
		{"html 502", 502, map[string]string{"Content-Type": "text/html"}, "<html>bad gateway</html>", "get", retry, 0, "502"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tc.headers {
					w.Header().Set(k, v)
				}
				if w.Header().Get("Content-Type") == "" {
					w.Header().Set("Content-Type", "application/json")
				}
				w.WriteHeader(tc.status)
				body := tc.body
				if body == "" {
					// A hostile server echoing our credentials must not leak them.
					body = fmt.Sprintf(`{"errorMessages":["echo %s token=%s"]}`, r.Header.Get("Authorization"), testToken)
				}
				_, _ = io.WriteString(w, body)
			}))
			defer srv.Close()
			var calls []string
			tr := newTracker(t, srv.URL, func(o *Options) {
				o.Observer = func(system, op string, status int, d time.Duration) {
					calls = append(calls, fmt.Sprintf("%s/%s/%d", system, op, status))
				}
			})
			tr.now = func() time.Time { return now }
			err := runOp(tr, tc.op)
			if err == nil {
				t.Fatal("no error")
			}
			assertNoSecret(t, err)
			w, hasWait := qsync.RetryWait(err)
			switch tc.want {
			case retry:
				if qsync.IsPermanent(err) || hasWait || errors.Is(err, qsync.ErrNotFound) {
					t.Errorf("want plain retryable, got %v (permanent %v, wait %v)", err, qsync.IsPermanent(err), hasWait)
				}
			case permanent:
				if !qsync.IsPermanent(err) || hasWait {
					t.Errorf("want permanent, got %v", err)
				}
			case wait:
				if qsync.IsPermanent(err) || !hasWait || w != tc.wantWait {
					t.Errorf("want wait %v, got %v (wait %v)", tc.wantWait, err, w)
				}
			case notFound:
				if !errors.Is(err, qsync.ErrNotFound) || qsync.IsPermanent(err) {
					t.Errorf("want ErrNotFound, got %v", err)
				}
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("err %q does not mention %q", err, tc.wantMsg)
			}
			var ce *CallError
			if !errors.As(err, &ce) || ce.Status != tc.status || !strings.HasPrefix(ce.Path, "/rest/api/2/") {
				t.Errorf("CallError = %+v", ce)
			}
			if len(calls) != 1 || calls[0] != fmt.Sprintf("jira/%s/%d", opName(tc.op), tc.status) {
				t.Errorf("observer saw %v", calls)
			}
		})
	}

	t.Run("timeout", func(t *testing.T) {
		tr := hungTracker(t)
		err := runOp(tr, "get")
		if err == nil || qsync.IsPermanent(err) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("timeout err = %v", err)
		}
		if _, ok := qsync.RetryWait(err); ok {
			t.Errorf("timeout carries a wait: %v", err)
		}
		assertNoSecret(t, err)
	})
	t.Run("connection refused", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		err := runOp(newTracker(t, url, nil), "update")
		if err == nil || qsync.IsPermanent(err) {
			t.Fatalf("err = %v", err)
		}
		if !strings.Contains(err.Error(), "PUT /rest/api/2/issue/10001") {
			t.Errorf("err lacks method and path: %v", err)
		}
		assertNoSecret(t, err)
	})
}

func opName(op string) string {
	if op == "find" {
		return "search"
	}
	return op
}

func runOp(tr *Tracker, op string) error {
	ctx := context.Background()
	ref := qsync.IssueRef{ID: "10001", Key: "OPS-1"}
	switch op {
	case "get":
		_, err := tr.Get(ctx, ref)
		return err
	case "create":
		_, err := tr.Create(ctx, baseSpec(), marker("r", 1))
		return err
	case "find":
		_, err := tr.Find(ctx, "OPS", marker("r", 1), time.Time{})
		return err
	default:
		return tr.Update(ctx, ref, qsync.Update{Title: ptr("t")})
	}
}

func assertNoSecret(t *testing.T, err error) {
	t.Helper()
	s := err.Error()
	if strings.Contains(s, testToken) || strings.Contains(s, basicCreds(testEmail, testToken)) {
		t.Errorf("error leaks a credential") // do not print it
	}
}

func TestNewValidates(t *testing.T) {
	for _, o := range []Options{
		{},
		{BaseURL: "ftp://x"},
		{BaseURL: "https://user:" + testToken + "@x.atlassian.net"},
		{BaseURL: "https://x", Flavor: "server"},
		{BaseURL: "https://x", UserField: "email"},
		{BaseURL: "https://x", Email: "a@b"},
	} {
		_, err := New(o)
		if err == nil {
			t.Errorf("New(%+v) accepted", o.BaseURL)
			continue
		}
		assertNoSecret(t, err)
	}
	tr, err := New(Options{BaseURL: "https://x.atlassian.net/"})
	if err != nil || tr.FindSettle() != defaultSettle || tr.timeout != defaultTimeout || tr.sharedLabel != "qase-sync" {
		t.Errorf("defaults: %v %+v", err, tr)
	}
	if tr.browseURL("A-1") != "https://x.atlassian.net/browse/A-1" {
		t.Errorf("browse url = %s", tr.browseURL("A-1"))
	}
}

func TestTextHelpers(t *testing.T) {
	if got := Title("  a\tb\r\nc  "); got != "a b c" {
		t.Errorf("Title = %q", got)
	}
	if got := Title(strings.Repeat("x", 255)); len(got) != 255 || strings.HasSuffix(got, "…") {
		t.Errorf("255 chars must stay untouched")
	}
	if got := labelSafe(" needs  triage "); got != "needs-triage" {
		t.Errorf("labelSafe = %q", got)
	}
	for _, id := range []string{"c-1", "x:abc", "a_b", "with space", "ü{color}", ""} {
		got, ok := commentStamp("text\n\n" + stampLine(id))
		if !ok || got != id {
			t.Errorf("stamp round trip %q -> %q %v", id, got, ok)
		}
	}
	if _, ok := commentStamp("no stamp here"); ok {
		t.Error("found a stamp in plain text")
	}
	if got := jqlQuote(`a"b\c`); got != `"a\"b\\c"` {
		t.Errorf("jqlQuote = %s", got)
	}
}

// TestNotApplied: failures that certainly left Jira untouched are
// NotApplied (every 4xx answer, 429 included, and connections never made);
// 5xx, timeouts and connections lost after sending stay ambiguous. The
// wrappers compose: a 429 keeps its wait, a 400 stays permanent.
func TestNotApplied(t *testing.T) {
	for _, tc := range []struct {
		status     int
		retryAfter string
		notApplied bool
	}{
		{429, "9", true},
		{403, "3", true},
		{400, "", true},
		{401, "", true},
		{404, "", true},
		{408, "", true},
		{409, "", true},
		{422, "", true},
		{500, "", false},
		{502, "", false},
		{503, "5", false},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			f := jirafake.New()
			defer f.Close()
			tr := newTracker(t, f.URL, nil)
			var h http.Header
			if tc.retryAfter != "" {
				h = http.Header{"Retry-After": {tc.retryAfter}}
			}
			f.FailNext(1, tc.status, h, "")
			err := runOp(tr, "update")
			if err == nil {
				t.Fatal("no error")
			}
			if got := qsync.IsNotApplied(err); got != tc.notApplied {
				t.Errorf("IsNotApplied = %v, want %v (%v)", got, tc.notApplied, err)
			}
			if tc.retryAfter != "" {
				if w, ok := qsync.RetryWait(err); !ok || w <= 0 || qsync.IsPermanent(err) {
					t.Errorf("lost the wait: %v", err)
				}
			}
			if tc.status == 400 && !qsync.IsPermanent(err) {
				t.Errorf("400 not permanent: %v", err)
			}
			var ce *CallError
			if !errors.As(err, &ce) || ce.Status != tc.status {
				t.Errorf("CallError = %+v", ce)
			}
		})
	}

	tr := newTracker(t, "https://jira.example", nil)
	dial := &url.Error{Op: "Put", URL: "https://jira.example/rest/api/2/issue/1",
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	dns := &url.Error{Op: "Post", URL: "https://jira.example/rest/api/2/issue",
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "jira.example", IsNotFound: true}}}
	bareDNS := &url.Error{Op: "Post", URL: "https://jira.example/rest/api/2/issue", Err: &net.DNSError{Err: "server misbehaving", Name: "jira.example"}}
	reset := &url.Error{Op: "Post", URL: "https://jira.example/rest/api/2/issue",
		Err: &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}}
	eof := &url.Error{Op: "Post", URL: "https://jira.example/rest/api/2/issue", Err: io.EOF}
	timeout := &url.Error{Op: "Post", URL: "https://jira.example/rest/api/2/issue", Err: context.DeadlineExceeded}
	createReq, _ := http.NewRequest("POST", "https://jira.example/rest/api/2/issue", nil)
	okStatus := &http.Response{StatusCode: 201, Header: http.Header{}, Request: createReq}
	for _, tc := range []struct {
		name       string
		hr         *http.Response
		err        error
		notApplied bool
	}{
		{"connection refused", nil, dial, true},
		{"dns failure", nil, dns, true},
		{"dns failure unwrapped", nil, bareDNS, true},
		{"reset after sending", nil, reset, false},
		{"eof after sending", nil, eof, false},
		{"timeout", nil, timeout, false},
		{"undecodable 201", okStatus, errors.New("invalid character"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tr.classify(context.Background(), "create", tc.hr, tc.err, nfCreate)
			if got := qsync.IsNotApplied(err); got != tc.notApplied {
				t.Errorf("IsNotApplied = %v, want %v (%v)", got, tc.notApplied, err)
			}
			if qsync.IsPermanent(err) {
				t.Errorf("transport failure is permanent: %v", err)
			}
			var ce *CallError
			if !errors.As(err, &ce) || ce.Path == "" {
				t.Errorf("CallError = %+v", ce)
			}
		})
	}

	t.Run("real refused connection", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		u := srv.URL
		srv.Close()
		if err := runOp(newTracker(t, u, nil), "create"); !qsync.IsNotApplied(err) || qsync.IsPermanent(err) {
			t.Fatalf("err = %v, want retryable and not applied", err)
		}
	})
	t.Run("real timeout", func(t *testing.T) {
		tr := hungTracker(t)
		if err := runOp(tr, "create"); err == nil || qsync.IsNotApplied(err) {
			t.Fatalf("err = %v, want ambiguous", err)
		}
	})
}
