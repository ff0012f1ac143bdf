package jira

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/internal/prismtest"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// TestContract sends every request the adapter can make to Prism serving
// Atlassian's published description (testdata/contracts/jira.trimmed.json)
// and asserts Prism accepted each one. Prism's static examples do not match
// what we created (and some break their own schema), so answers are not
// checked here: only that no request violated the contract or missed an
// operation (404/405).
func TestContract(t *testing.T) {
	srv := prismtest.Start(t, prismtest.Spec("jira.trimmed.json"))
	ctx := context.Background()
	m := marker("defects", 1)

	for _, flavor := range []string{FlavorCloud, FlavorDataCenter} {
		t.Run(flavor, func(t *testing.T) {
			rec := &prismtest.Recorder{Base: transitionsFixer{}}
			tr := newTracker(t, srv.URL, func(o *Options) {
				o.Flavor = flavor
				o.HTTPClient = &http.Client{Transport: rec}
				o.Transitions = map[string][]string{"done": {"In Progress"}}
				if flavor == FlavorDataCenter {
					o.Email = ""
				}
			})
			ref := qsync.IssueRef{Project: "ED", ID: "10002", Key: "ED-24"}

			is, err := tr.Create(ctx, baseSpec(), m)
			logTolerated(t, "create", err)
			if is.Ref.ID != "" {
				ref = is.Ref
			}
			_, err = tr.Find(ctx, "ED", m, time.Now())
			logTolerated(t, "find", err)
			_, err = tr.List(ctx, "ED")
			logTolerated(t, "list", err)
			_, err = tr.Query(ctx, "ED", `labels = "from-qase"`) // links adopt --jql
			logTolerated(t, "query", err)
			_, err = tr.Get(ctx, ref)
			logTolerated(t, "get", err)
			err = tr.Update(ctx, ref, qsync.Update{
				Title: ptr("t"), Body: ptr("b"), Priority: ptr("High"), Assignees: ptr([]string{"acc"}),
				Components: ptr([]string{"web"}), Fields: map[string]string{"customfield_10000": `{"value":"red"}`},
				AddLabels: []string{"a b"}, RemoveLabels: []string{"c"},
			})
			logTolerated(t, "update", err)
			err = tr.Mark(ctx, ref, marker("defects", 2))
			logTolerated(t, "mark", err)
			err = tr.SetStatus(ctx, ref, "Closed", "Fixed")
			logTolerated(t, "set status", err)
			err = tr.SetStatusWithComment(ctx, ref, "Closed", "Fixed", qsync.Comment{ID: "c-0", Body: "closing"})
			logTolerated(t, "set status with comment", err)
			// A via-path hop, then a look at the transitions from there.
			err = tr.SetStatus(ctx, ref, "Done", "")
			logTolerated(t, "set status via a path", err)
			err = tr.AddComment(ctx, ref, qsync.Comment{ID: "c-1", Body: "*hello*"})
			logTolerated(t, "comment", err)
			_, err = tr.HasComment(ctx, ref, "c-1")
			logTolerated(t, "has comment", err)

			for _, ex := range rec.Exchanges() {
				t.Logf("%s %s -> %d %s", ex.Method, ex.Path, ex.Status, ex.Body)
			}
			rec.AssertClean(t)
			seen := map[string]bool{}
			for _, ex := range rec.Exchanges() {
				path, _, _ := strings.Cut(ex.Path, "?")
				seen[ex.Method+" "+normalize(path)] = true
			}
			want := []string{
				"POST /rest/api/2/issue", "PUT /rest/api/2/issue/{id}/properties/qase-sync",
				"GET /rest/api/2/issue/{id}", "PUT /rest/api/2/issue/{id}",
				"GET /rest/api/2/issue/{id}/transitions", "POST /rest/api/2/issue/{id}/transitions",
				"POST /rest/api/2/issue/{id}/comment", "GET /rest/api/2/issue/{id}/comment",
			}
			if flavor == FlavorCloud {
				want = append(want, "POST /rest/api/2/search/jql")
			} else {
				want = append(want, "POST /rest/api/2/search")
			}
			for _, w := range want {
				if !seen[w] {
					t.Errorf("contract test never sent %s (sent %v)", w, seen)
				}
			}
			var rode bool
			for _, ex := range rec.Exchanges() {
				if ex.Method == "POST" && strings.HasSuffix(ex.Path, "/transitions") && strings.Contains(ex.Body, `"update":{"comment":[{"add":{"body":"closing`) {
					rode = true
				}
			}
			if !rode {
				t.Error("no transition carrying a comment reached the mock")
			}
			var queried bool
			for _, ex := range rec.Exchanges() {
				queried = queried || strings.Contains(ex.Path, "/search") && strings.Contains(ex.Body, `(labels = \"from-qase\")`)
			}
			if !queried {
				t.Error("no JQL query (links adopt --jql) reached the mock")
			}
		})
	}
}

// normalize replaces the issue id segment so requests can be compared.
func normalize(path string) string {
	parts := strings.Split(path, "/")
	if len(parts) > 5 && parts[4] == "issue" {
		parts[5] = "{id}"
	}
	return strings.Join(parts, "/")
}

// logTolerated logs decode failures caused by Prism's static examples;
// request-side problems are caught by AssertClean.
func logTolerated(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Logf("%s: %v (tolerated: Prism answers with static examples)", what, err)
	}
}

// transitionsFixer forwards to Prism. Prism keeps no state, and its
// example of an issue read has no transitions: for the read SetStatus
// makes (the status with transitions expanded), after Prism has validated
// the request, it answers with Prism's own transitions example for the
// issue, adding the comment field to the transitions that have a screen
// (as Jira's transition screens do), and the status "To Do".
type transitionsFixer struct{}

func (transitionsFixer) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || !strings.Contains(req.URL.RawQuery, "expand=transitions") ||
		strings.HasSuffix(req.URL.Path, "/transitions") || resp.StatusCode >= 300 {
		return resp, err
	}
	resp.Body.Close()
	treq := req.Clone(req.Context())
	treq.URL.Path += "/transitions"
	treq.URL.RawQuery = "expand=transitions.fields"
	tresp, err := http.DefaultTransport.RoundTrip(treq)
	if err != nil {
		return nil, err
	}
	defer tresp.Body.Close()
	var trs struct {
		Transitions []map[string]any `json:"transitions"`
	}
	if err := json.NewDecoder(tresp.Body).Decode(&trs); err != nil {
		return nil, err
	}
	for _, tr := range trs.Transitions {
		if screen, _ := tr["hasScreen"].(bool); screen {
			fields, _ := tr["fields"].(map[string]any)
			if fields == nil {
				fields = map[string]any{}
			}
			fields["comment"] = map[string]any{"required": false, "name": "Comment", "operations": []string{"add"}}
			tr["fields"] = fields
		}
	}
	body, _ := json.Marshal(map[string]any{"id": "10000", "key": "ED-24",
		"fields": map[string]any{"status": map[string]string{"name": "To Do"}}, "transitions": trs.Transitions})
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Del("Content-Length")
	return resp, nil
}
