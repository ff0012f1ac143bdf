package github

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/internal/prismtest"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// TestContractGitHub sends every request the adapter can make to Prism
// serving GitHub's published description: each must be accepted as valid.
// Prism answers with static examples, so decoding results are not judged
// here (the fake covers behaviour); request-side violations and unknown
// operations are.
func TestContractGitHub(t *testing.T) {
	srv := prismtest.Start(t, prismtest.Spec("github.trimmed.json"))
	rec := &prismtest.Recorder{Base: exampleFixer{}} // no Accept shim: the adapter sends the stable media type itself
	tr, err := New(Options{Token: testToken, BaseURL: srv.URL, HTTPClient: &http.Client{Transport: rec}, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c := ctx(t)
	ref := qsync.IssueRef{Project: "octocat/Hello-World", ID: "1347"}
	m := marker(1)
	logErr := func(what string, err error) {
		if err != nil {
			t.Logf("%s: %v (tolerated: static example)", what, err)
		}
	}

	s := spec("Found a bug")
	s.Project = "octocat/Hello-World"
	s.Assignees = []string{"octocat"}
	_, err = tr.Create(c, s, m)
	logErr("create", err)
	_, err = tr.Get(c, ref)
	logErr("get", err)
	title, body, as := "New title", "New body", []string{"octocat"}
	logErr("edit", tr.Update(c, ref, qsync.Update{Title: &title, Body: &body, Assignees: &as}))
	logErr("add labels", tr.Update(c, ref, qsync.Update{AddLabels: []string{"bug", "p1"}}))
	logErr("remove label", tr.Update(c, ref, qsync.Update{RemoveLabels: []string{"bug", "area/ui"}}))
	logErr("close completed", tr.SetStatus(c, ref, "closed", ""))
	logErr("close not planned", tr.SetStatus(c, ref, "closed", "not_planned"))
	logErr("reopen", tr.SetStatus(c, ref, "open", ""))
	logErr("mark", tr.Mark(c, ref, marker(2)))
	logErr("comment", tr.AddComment(c, ref, qsync.Comment{ID: "c-1", Body: "hello"}))
	_, err = tr.HasComment(c, ref, "c-1")
	logErr("list comments", err)
	_, err = tr.Find(c, "octocat/Hello-World", m, time.Now())
	logErr("find", err)
	_, err = tr.List(c, "octocat/Hello-World")
	logErr("list", err)
	_, err = tr.Query(c, "octocat/Hello-World", "legacy bugs") // links adopt --label
	logErr("query", err)

	rec.AssertClean(t)
	seen := map[string]bool{}
	for _, e := range rec.Exchanges() {
		path, _, _ := strings.Cut(e.Path, "?")
		seen[e.Method+" "+path] = true
		if e.Method == http.MethodPost && strings.HasSuffix(path, "/labels") && !strings.HasPrefix(strings.TrimSpace(e.Body), "{") {
			t.Errorf("add labels sent %s, want the object form", e.Body)
		}
	}
	var patchedBody bool
	for _, e := range rec.Exchanges() {
		if e.Method == http.MethodPatch && strings.Contains(e.Body, "New body") && strings.Contains(e.Body, "qase-sync:marker") {
			patchedBody = true
		}
	}
	if !patchedBody {
		t.Error("no body PATCH (with the kept marker) reached the mock")
	}
	var marked bool
	for _, e := range rec.Exchanges() {
		if e.Method == http.MethodPatch && strings.Contains(e.Body, markerComment(marker(2).ID)) && strings.Contains(e.Body, marker(2).Label) {
			marked = true
		}
	}
	if !marked {
		t.Error("no marking PATCH (stamp and labels) reached the mock")
	}
	var queried bool
	for _, e := range rec.Exchanges() {
		queried = queried || e.Method == http.MethodGet && strings.HasSuffix(strings.Split(e.Path, "?")[0], "/issues") && strings.Contains(e.Path, "labels=legacy")
	}
	if !queried {
		t.Error("no label query (links adopt --label) reached the mock")
	}
	for _, want := range []string{
		"POST /repos/octocat/Hello-World/issues",
		"GET /repos/octocat/Hello-World/issues/1347",
		"PATCH /repos/octocat/Hello-World/issues/1347",
		"POST /repos/octocat/Hello-World/issues/1347/labels",
		"DELETE /repos/octocat/Hello-World/issues/1347/labels/bug",
		"DELETE /repos/octocat/Hello-World/issues/1347/labels/area%2Fui",
		"POST /repos/octocat/Hello-World/issues/1347/comments",
		"GET /repos/octocat/Hello-World/issues/1347/comments",
		"GET /repos/octocat/Hello-World/issues",
	} {
		if !seen[want] {
			t.Errorf("never sent %s (sent %v)", want, seen)
		}
	}
}

var singleIssue = regexp.MustCompile(`^/repos/[^/]+/[^/]+/issues/\d+$`)

// exampleFixer forwards to Prism; when Prism answers a single-issue GET
// with 500 only because GitHub's own example breaks GitHub's schema
// (response-side violations only), it substitutes a valid issue so the
// adapter can go on to send the request that follows (the body PATCH).
// The request itself was still validated by Prism.
type exampleFixer struct{}

func (exampleFixer) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || !singleIssue.MatchString(req.URL.Path) || resp.StatusCode != 500 {
		return resp, err
	}
	var vs []prismtest.Violation
	if json.Unmarshal([]byte(resp.Header.Get("sl-violations")), &vs) != nil || len(vs) == 0 {
		return resp, nil
	}
	for _, v := range vs {
		if len(v.Location) == 0 || v.Location[0] != "response" {
			return resp, nil
		}
	}
	resp.Body.Close()
	body := `{"id":1,"number":1347,"state":"open","title":"Found a bug","body":"old\n\n` +
		markerComment(marker(1).ID) + `","labels":[{"name":"bug"}],"assignees":[],` +
		`"created_at":"2011-04-22T13:33:48Z","html_url":"https://github.com/octocat/Hello-World/issues/1347",` +
		`"repository_url":"https://api.github.com/repos/octocat/Hello-World"}`
	resp.StatusCode, resp.Status = 200, "200 OK"
	resp.Body = io.NopCloser(strings.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Del("Content-Length")
	return resp, nil
}
