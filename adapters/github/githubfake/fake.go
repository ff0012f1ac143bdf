// Package githubfake is a stateful, in-memory fake of the part of the
// GitHub REST API that qase-sync uses (issues, labels on issues, issue
// comments), served by httptest. It validates requests roughly as GitHub
// does (required title, length limits, enums), keeps per-repository issue
// numbers, pages lists with Link headers, and can inject faults: plain
// failures, primary/secondary rate limits, 429s and "committed but
// answered 502" creates.
package githubfake

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/qase-sync/qase-sync/internal/fault"
	"github.com/qase-sync/qase-sync/internal/trackerhook"
)

// IssueState is an issue as the fake stores it.
type IssueState struct {
	Repo        string
	Number      int
	Title       string
	Body        string
	Labels      []string
	Assignees   []string
	State       string // open | closed
	StateReason string // "", completed, not_planned, duplicate, reopened
	CreatedAt   time.Time
	UpdatedAt   time.Time
	ClosedAt    time.Time
	Comments    []CommentState
	PullRequest bool
	Deleted     bool
	// MovedTo is "owner/repo#N" once transferred.
	MovedTo string
}

// CommentState is a stored issue comment.
type CommentState struct {
	ID        int64
	Body      string
	CreatedAt time.Time
}

// Request is one request the fake received.
type Request struct {
	Method        string
	Path          string // unescaped path, e.g. /repos/o/r/issues/1
	Query         string
	Body          string
	Authorization string
	Accept        string
	Status        int
}

type repoState struct {
	next   int
	issues map[int]*IssueState
}

// Server is the fake. All methods are safe for concurrent use. Faults are
// injected through the embedded TrackerInjector (FailNext, Delay,
// CommitThenFail, CommitThenDrop) and the GitHub-shaped helpers below.
type Server struct {
	// URL is the API base with a trailing slash (go-github's BaseURL).
	URL string
	fault.TrackerInjector
	srv *httptest.Server

	mu            sync.Mutex
	now           time.Time
	repos         map[string]*repoState
	requests      []Request
	writes        int
	nextCommentID int64
	// Webhooks: SetWebhook (url, secret; "" disables), WaitWebhooks,
	// Deliveries; see webhook.go.
	trackerhook.Hooks[Subject]
}

// New starts a fake GitHub API on a loopback port.
func New() *Server {
	s := &Server{
		now:           time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
		repos:         map[string]*repoState{},
		nextCommentID: 5000,
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL + "/"
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// Now returns the fake clock.
func (s *Server) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now
}

// Advance moves the fake clock forward.
func (s *Server) Advance(d time.Duration) {
	s.mu.Lock()
	s.now = s.now.Add(d)
	s.mu.Unlock()
}

// tick advances the clock one second per mutation so created_at is
// strictly increasing. Callers hold mu.
func (s *Server) tick() time.Time {
	s.now = s.now.Add(time.Second)
	return s.now
}

// Requests returns every request received, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// WriteCount counts the write requests (POST, PATCH, PUT, DELETE)
// received, including those answered with an injected fault.
func (s *Server) WriteCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

// ResetLog clears the request log and the write count.
func (s *Server) ResetLog() {
	s.mu.Lock()
	s.requests, s.writes = nil, 0
	s.mu.Unlock()
}

// SecondaryRateLimit answers the next n requests as GitHub does when a
// secondary rate limit is hit: 403 with Retry-After.
func (s *Server) SecondaryRateLimit(n int, retryAfter time.Duration) {
	h := http.Header{}
	h.Set("Retry-After", strconv.Itoa(int(retryAfter/time.Second)))
	h.Set("Content-Type", "application/json")
	s.FailNext(n, http.StatusForbidden, h,
		`{"message":"You have exceeded a secondary rate limit","documentation_url":"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"}`)
}

// TooManyRequests answers the next n requests with 429 and Retry-After.
func (s *Server) TooManyRequests(n int, retryAfter time.Duration) {
	h := http.Header{}
	h.Set("Retry-After", strconv.Itoa(int(retryAfter/time.Second)))
	h.Set("Content-Type", "application/json")
	s.FailNext(n, http.StatusTooManyRequests, h, `{"message":"API rate limit exceeded"}`)
}

// Issues returns copies of the repository's issues (deleted ones
// included, flagged), ordered by number.
func (s *Server) Issues(repo string) []IssueState {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[repo]
	if r == nil {
		return nil
	}
	out := make([]IssueState, 0, len(r.issues))
	for _, is := range r.issues {
		out = append(out, is.clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return out
}

// Issue returns a copy of one issue.
func (s *Server) Issue(repo string, number int) (IssueState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.repos[repo]; r != nil && r.issues[number] != nil {
		return r.issues[number].clone(), true
	}
	return IssueState{}, false
}

// AddIssue stores an issue directly (a human or another tool filed it)
// and returns its number. Zero State means open.
func (s *Server) AddIssue(repo string, is IssueState) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repo(repo)
	r.next++
	is.Repo, is.Number = repo, r.next
	if is.State == "" {
		is.State = "open"
	}
	if is.CreatedAt.IsZero() {
		is.CreatedAt = s.tick()
	}
	is.UpdatedAt = is.CreatedAt
	c := is.clone()
	r.issues[c.Number] = &c
	return c.Number
}

// EditIssue changes an issue as a human would in the UI.
func (s *Server) EditIssue(repo string, number int, fn func(*IssueState)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[repo]
	if r == nil || r.issues[number] == nil {
		return false
	}
	before := r.issues[number].clone()
	fn(r.issues[number])
	r.issues[number].UpdatedAt = s.tick()
	s.emit("issues", issueAction(&before, r.issues[number]), r.issues[number], nil)
	return true
}

// DeleteIssue deletes an issue: reads answer 410 from then on.
func (s *Server) DeleteIssue(repo string, number int) bool {
	return s.EditIssue(repo, number, func(is *IssueState) { is.Deleted = true })
}

// TransferIssue moves an issue to another repository; the old address
// answers 301 with the new one, as GitHub does. It returns the new number.
func (s *Server) TransferIssue(repo string, number int, toRepo string) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[repo]
	if r == nil || r.issues[number] == nil || r.issues[number].Deleted || r.issues[number].MovedTo != "" {
		return 0, false
	}
	old := r.issues[number]
	to := s.repo(toRepo)
	to.next++
	moved := old.clone()
	moved.Repo, moved.Number, moved.UpdatedAt = toRepo, to.next, s.tick()
	to.issues[moved.Number] = &moved
	old.MovedTo = fmt.Sprintf("%s#%d", toRepo, moved.Number)
	return moved.Number, true
}

func (s *Server) repo(name string) *repoState {
	r := s.repos[name]
	if r == nil {
		r = &repoState{issues: map[int]*IssueState{}}
		s.repos[name] = r
	}
	return r
}

func (is *IssueState) clone() IssueState {
	c := *is
	c.Labels = append([]string(nil), is.Labels...)
	c.Assignees = append([]string(nil), is.Assignees...)
	c.Comments = append([]CommentState(nil), is.Comments...)
	return c
}

// --- HTTP ---

type apiError struct {
	status  int
	message string
	errors  []map[string]string
}

// errHangup: close the connection without an answer.
var errHangup = errf(http.StatusBadGateway, "Server Error")

func errf(status int, format string, args ...any) *apiError {
	return &apiError{status: status, message: fmt.Sprintf(format, args...)}
}

func invalid(resource, field, code string) *apiError {
	return &apiError{status: http.StatusUnprocessableEntity, message: "Validation Failed",
		errors: []map[string]string{{"resource": resource, "field": field, "code": code}}}
}

type response struct {
	status int
	header http.Header
	body   any
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	if !s.Wait(r.Context()) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Body: string(raw),
		Authorization: r.Header.Get("Authorization"), Accept: r.Header.Get("Accept")}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		s.writes++
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	var before *IssueState
	if len(parts) >= 5 && parts[0] == "repos" {
		if rs := s.repos[parts[1]+"/"+parts[2]]; rs != nil {
			if n, err := strconv.Atoi(parts[4]); err == nil && rs.issues[n] != nil {
				c := rs.issues[n].clone()
				before = &c
			}
		}
	}
	status := s.handle(w, r, raw)
	s.emitAfterRequest(r.Method, parts, before, status)
	rec.Status = status
	s.requests = append(s.requests, rec)
}

// handle answers one request; the caller holds mu.
func (s *Server) handle(w http.ResponseWriter, r *http.Request, raw []byte) int {
	if f, ok := s.Next(); ok {
		maps.Copy(w.Header(), f.Header)
		if w.Header().Get("Content-Type") == "" {
			w.Header().Set("Content-Type", "application/json")
		}
		if f.Body == "" {
			f.Body = `{"message":"` + http.StatusText(f.Status) + `"}`
		}
		w.WriteHeader(f.Status)
		_, _ = io.WriteString(w, f.Body)
		return f.Status
	}
	resp, aerr := s.route(r, raw)
	if aerr == errHangup && fault.Hangup(w) {
		return 0 // no answer
	}
	if aerr != nil {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(aerr.status)
		body := map[string]any{"message": aerr.message, "documentation_url": "https://docs.github.com/rest"}
		if len(aerr.errors) > 0 {
			body["errors"] = aerr.errors
		}
		_ = json.NewEncoder(w).Encode(body)
		return aerr.status
	}
	for k, vs := range resp.header {
		w.Header()[k] = vs
	}
	if resp.body == nil {
		w.WriteHeader(resp.status)
		return resp.status
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(resp.status)
	_ = json.NewEncoder(w).Encode(resp.body)
	return resp.status
}

func (s *Server) route(r *http.Request, raw []byte) (*response, *apiError) {
	if !acceptable(r.Header.Get("Accept")) {
		return nil, errf(http.StatusNotAcceptable, "Unsupported 'Accept' header: %q. Must accept 'application/json'.", r.Header.Get("Accept"))
	}
	// Split the escaped path so label names may contain "/".
	var parts []string
	for _, p := range strings.Split(strings.Trim(r.URL.EscapedPath(), "/"), "/") {
		u, err := url.PathUnescape(p)
		if err != nil {
			return nil, errf(http.StatusBadRequest, "bad path")
		}
		parts = append(parts, u)
	}
	if len(parts) < 4 || parts[0] != "repos" || parts[3] != "issues" {
		return nil, errf(http.StatusNotFound, "Not Found")
	}
	repo := parts[1] + "/" + parts[2]
	rest := parts[4:]
	if len(rest) == 0 {
		switch r.Method {
		case http.MethodPost:
			return s.createIssue(repo, raw)
		case http.MethodGet:
			return s.listIssues(r, repo)
		}
		return nil, errf(http.StatusMethodNotAllowed, "Method Not Allowed")
	}
	n, err := strconv.Atoi(rest[0])
	if err != nil || n <= 0 {
		return nil, errf(http.StatusNotFound, "Not Found")
	}
	is, moved, aerr := s.lookup(repo, n)
	if aerr != nil {
		return nil, aerr
	}
	if moved != "" {
		to, num, _ := strings.Cut(moved, "#")
		loc := s.URL + "repos/" + to + "/issues/" + num
		if len(rest) > 1 {
			loc += "/" + strings.Join(rest[1:], "/")
		}
		h := http.Header{}
		h.Set("Location", loc)
		return &response{status: http.StatusMovedPermanently, header: h, body: map[string]any{"message": "Moved Permanently", "url": loc}}, nil
	}
	switch {
	case len(rest) == 1 && r.Method == http.MethodGet:
		return &response{status: http.StatusOK, body: s.issueJSON(is)}, nil
	case len(rest) == 1 && r.Method == http.MethodPatch:
		return s.editIssue(is, raw)
	case len(rest) == 2 && rest[1] == "labels" && (r.Method == http.MethodPost || r.Method == http.MethodPut):
		return s.setLabels(is, raw, r.Method == http.MethodPut)
	case len(rest) == 3 && rest[1] == "labels" && r.Method == http.MethodDelete:
		return s.removeLabel(is, rest[2])
	case len(rest) == 2 && rest[1] == "comments" && r.Method == http.MethodGet:
		return s.listComments(r, is)
	case len(rest) == 2 && rest[1] == "comments" && r.Method == http.MethodPost:
		return s.createComment(is, raw)
	}
	return nil, errf(http.StatusNotFound, "Not Found")
}

func (s *Server) lookup(repo string, n int) (*IssueState, string, *apiError) {
	r := s.repos[repo]
	if r == nil || r.issues[n] == nil {
		return nil, "", errf(http.StatusNotFound, "Not Found")
	}
	is := r.issues[n]
	if is.Deleted {
		return nil, "", errf(http.StatusGone, "This issue was deleted")
	}
	return is, is.MovedTo, nil
}

type issueRequest struct {
	Title       *json.RawMessage `json:"title"`
	Body        *string          `json:"body"`
	State       *string          `json:"state"`
	StateReason *string          `json:"state_reason"`
	Labels      *[]any           `json:"labels"`
	Assignees   *[]string        `json:"assignees"`
	Assignee    *string          `json:"assignee"`
}

func decodeIssueRequest(raw []byte) (issueRequest, *apiError) {
	var req issueRequest
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &req); err != nil {
			return req, errf(http.StatusBadRequest, "Problems parsing JSON")
		}
	}
	return req, nil
}

// applyTo writes the fields the request sets (title, body, labels,
// assignees) over is, as a create or an edit does, and validates the
// result.
func (req issueRequest) applyTo(is *IssueState) *apiError {
	var aerr *apiError
	if req.Title != nil {
		if is.Title, aerr = titleOf(req.Title); aerr != nil {
			return aerr
		}
	}
	if req.Body != nil {
		is.Body = *req.Body
	}
	if req.Labels != nil {
		names, aerr := labelNames(*req.Labels)
		if aerr != nil {
			return aerr
		}
		is.Labels = addUnique(nil, names)
	}
	if req.Assignees != nil {
		is.Assignees = addUnique(nil, *req.Assignees)
	} else if req.Assignee != nil && *req.Assignee != "" {
		is.Assignees = []string{*req.Assignee}
	}
	return validText(is)
}

func titleOf(raw *json.RawMessage) (string, *apiError) {
	var v any
	if err := json.Unmarshal(*raw, &v); err != nil {
		return "", invalid("Issue", "title", "invalid")
	}
	switch t := v.(type) {
	case string:
		return t, nil
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64), nil
	}
	return "", invalid("Issue", "title", "invalid")
}

// labelNames accepts names or {"name": ...} objects, as GitHub does.
func labelNames(items []any) ([]string, *apiError) {
	var out []string
	for _, it := range items {
		switch v := it.(type) {
		case string:
			out = append(out, v)
		case map[string]any:
			n, _ := v["name"].(string)
			out = append(out, n)
		default:
			return nil, invalid("Label", "name", "invalid")
		}
	}
	for _, l := range out {
		if strings.TrimSpace(l) == "" {
			return nil, invalid("Label", "name", "missing_field")
		}
		if utf8.RuneCountInString(l) > 50 {
			return nil, &apiError{status: 422, message: "Validation Failed",
				errors: []map[string]string{{"resource": "Label", "field": "name", "code": "invalid", "message": "name is too long (maximum is 50 characters)"}}}
		}
	}
	return out, nil
}

func validText(is *IssueState) *apiError {
	if strings.TrimSpace(is.Title) == "" {
		return invalid("Issue", "title", "missing_field")
	}
	if utf8.RuneCountInString(is.Title) > 256 {
		return invalid("Issue", "title", "too_long")
	}
	if utf8.RuneCountInString(is.Body) > 65536 {
		return &apiError{status: 422, message: "Validation Failed",
			errors: []map[string]string{{"resource": "Issue", "field": "body", "code": "custom", "message": "body is too long (maximum is 65536 characters)"}}}
	}
	if len(is.Labels) > 100 {
		return invalid("Issue", "labels", "too_many")
	}
	if len(is.Assignees) > 10 {
		return invalid("Issue", "assignees", "too_many")
	}
	return nil
}

func (s *Server) createIssue(repo string, raw []byte) (*response, *apiError) {
	req, aerr := decodeIssueRequest(raw)
	if aerr != nil {
		return nil, aerr
	}
	if req.Title == nil {
		return nil, invalid("Issue", "title", "missing_field")
	}
	is := &IssueState{Repo: repo, State: "open"}
	if aerr := req.applyTo(is); aerr != nil {
		return nil, aerr
	}
	r := s.repo(repo)
	r.next++
	is.Number = r.next
	is.CreatedAt = s.tick()
	is.UpdatedAt = is.CreatedAt
	r.issues[is.Number] = is
	switch s.AfterCommit() {
	case fault.Fail: // a gateway timing out after GitHub committed
		return nil, errf(http.StatusBadGateway, "Server Error")
	case fault.Drop:
		return nil, errHangup
	}
	return &response{status: http.StatusCreated, body: s.issueJSON(is)}, nil
}

func (s *Server) editIssue(is *IssueState, raw []byte) (*response, *apiError) {
	req, aerr := decodeIssueRequest(raw)
	if aerr != nil {
		return nil, aerr
	}
	next := is.clone()
	if aerr := req.applyTo(&next); aerr != nil {
		return nil, aerr
	}
	if req.State != nil {
		switch *req.State {
		case "open", "closed":
		default:
			return nil, invalid("Issue", "state", "invalid")
		}
	}
	if req.StateReason != nil {
		switch *req.StateReason {
		case "completed", "not_planned", "duplicate", "reopened":
		default:
			return nil, invalid("Issue", "state_reason", "invalid")
		}
	}
	now := s.tick()
	if req.State != nil {
		switch {
		case *req.State == "closed":
			if next.State != "closed" {
				next.ClosedAt = now
			}
			next.State, next.StateReason = "closed", "completed"
			if req.StateReason != nil && *req.StateReason != "reopened" {
				next.StateReason = *req.StateReason
			}
		case *req.State == "open" && next.State == "closed":
			next.State, next.StateReason, next.ClosedAt = "open", "reopened", time.Time{}
		}
	} else if req.StateReason != nil && next.State == "closed" && *req.StateReason != "reopened" {
		next.StateReason = *req.StateReason
	}
	next.UpdatedAt = now
	*is = next
	return &response{status: http.StatusOK, body: s.issueJSON(is)}, nil
}

func (s *Server) setLabels(is *IssueState, raw []byte, replace bool) (*response, *apiError) {
	// GitHub takes {"labels": [...]} and, for compatibility, a bare array.
	var items []any
	var obj struct {
		Labels *[]any `json:"labels"`
	}
	trimmed := strings.TrimSpace(string(raw))
	switch {
	case strings.HasPrefix(trimmed, "["):
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, errf(http.StatusBadRequest, "Problems parsing JSON")
		}
	case strings.HasPrefix(trimmed, "{"):
		if err := json.Unmarshal(raw, &obj); err != nil {
			return nil, errf(http.StatusBadRequest, "Problems parsing JSON")
		}
		if obj.Labels == nil {
			return nil, invalid("Label", "labels", "missing_field")
		}
		items = *obj.Labels
	case trimmed == "":
		if !replace {
			return nil, invalid("Label", "labels", "missing_field")
		}
	default:
		return nil, errf(http.StatusBadRequest, "Problems parsing JSON")
	}
	names, aerr := labelNames(items)
	if aerr != nil {
		return nil, aerr
	}
	next := is.clone()
	if replace {
		next.Labels = nil
	}
	next.Labels = addUnique(next.Labels, names)
	if aerr := validText(&next); aerr != nil {
		return nil, aerr
	}
	next.UpdatedAt = s.tick()
	*is = next
	return &response{status: http.StatusOK, body: s.labelsJSON(is)}, nil
}

func (s *Server) removeLabel(is *IssueState, name string) (*response, *apiError) {
	for i, l := range is.Labels {
		if strings.EqualFold(l, name) {
			is.Labels = append(is.Labels[:i:i], is.Labels[i+1:]...)
			is.UpdatedAt = s.tick()
			return &response{status: http.StatusOK, body: s.labelsJSON(is)}, nil
		}
	}
	return nil, errf(http.StatusNotFound, "Label does not exist")
}

func (s *Server) createComment(is *IssueState, raw []byte) (*response, *apiError) {
	var req struct {
		Body *string `json:"body"`
	}
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, errf(http.StatusBadRequest, "Problems parsing JSON")
	}
	if req.Body == nil || strings.TrimSpace(*req.Body) == "" {
		return nil, invalid("IssueComment", "body", "missing_field")
	}
	if utf8.RuneCountInString(*req.Body) > 65536 {
		return nil, invalid("IssueComment", "body", "too_long")
	}
	s.nextCommentID++
	c := CommentState{ID: s.nextCommentID, Body: *req.Body, CreatedAt: s.tick()}
	is.Comments = append(is.Comments, c)
	is.UpdatedAt = c.CreatedAt
	return &response{status: http.StatusCreated, body: s.commentJSON(is, c)}, nil
}

func (s *Server) listComments(r *http.Request, is *IssueState) (*response, *apiError) {
	q := r.URL.Query()
	var items []any
	for _, c := range is.Comments {
		if since, ok := parseTime(q.Get("since")); ok && c.CreatedAt.Before(since) {
			continue
		}
		items = append(items, s.commentJSON(is, c))
	}
	return s.page(r, items)
}

func (s *Server) listIssues(r *http.Request, repo string) (*response, *apiError) {
	q := r.URL.Query()
	state := q.Get("state")
	if state == "" {
		state = "open"
	}
	if state != "open" && state != "closed" && state != "all" {
		return nil, invalid("Issue", "state", "invalid")
	}
	var want []string
	if l := q.Get("labels"); l != "" {
		for _, x := range strings.Split(l, ",") {
			if x = strings.TrimSpace(x); x != "" {
				want = append(want, x)
			}
		}
	}
	since, hasSince := parseTime(q.Get("since"))
	var list []*IssueState
	if rs := s.repos[repo]; rs != nil {
		for _, is := range rs.issues {
			if is.Deleted || is.MovedTo != "" || (state != "all" && is.State != state) {
				continue
			}
			if hasSince && is.UpdatedAt.Before(since) {
				continue
			}
			if !hasAll(is.Labels, want) {
				continue
			}
			list = append(list, is)
		}
	}
	byUpdated := q.Get("sort") == "updated"
	asc := q.Get("direction") == "asc"
	sort.Slice(list, func(i, j int) bool {
		a, b := list[i], list[j]
		ka, kb := a.CreatedAt, b.CreatedAt
		if byUpdated {
			ka, kb = a.UpdatedAt, b.UpdatedAt
		}
		if !ka.Equal(kb) {
			if asc {
				return ka.Before(kb)
			}
			return ka.After(kb)
		}
		if asc {
			return a.Number < b.Number
		}
		return a.Number > b.Number
	})
	items := make([]any, len(list))
	for i, is := range list {
		items[i] = s.issueJSON(is)
	}
	return s.page(r, items)
}

// page slices items by per_page/page and sets GitHub's Link header.
func (s *Server) page(r *http.Request, items []any) (*response, *apiError) {
	q := r.URL.Query()
	per := 30
	if v, err := strconv.Atoi(q.Get("per_page")); err == nil && v > 0 {
		per = min(v, 100)
	}
	pg := 1
	if v, err := strconv.Atoi(q.Get("page")); err == nil && v > 0 {
		pg = v
	}
	lo := min((pg-1)*per, len(items))
	hi := min(lo+per, len(items))
	out := append([]any{}, items[lo:hi]...)
	last := (len(items) + per - 1) / per
	h := http.Header{}
	link := func(p int, rel string) string {
		q2 := r.URL.Query()
		q2.Set("page", strconv.Itoa(p))
		return fmt.Sprintf(`<%s%s?%s>; rel="%s"`, s.srv.URL, r.URL.Path, q2.Encode(), rel)
	}
	var links []string
	if pg < last {
		links = append(links, link(pg+1, "next"), link(last, "last"))
	}
	if pg > 1 {
		links = append(links, link(1, "first"), link(pg-1, "prev"))
	}
	if len(links) > 0 {
		h.Set("Link", strings.Join(links, ", "))
	}
	return &response{status: http.StatusOK, header: h, body: out}, nil
}

func parseTime(v string) (time.Time, bool) {
	if v == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, v)
	return t, err == nil
}

func hasAll(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if strings.EqualFold(h, w) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func addUnique(dst, add []string) []string {
	for _, a := range add {
		if !hasAll(dst, []string{a}) {
			dst = append(dst, a)
		}
	}
	return dst
}

func ts(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(time.RFC3339)
}

func (s *Server) issueJSON(is *IssueState) map[string]any {
	api := fmt.Sprintf("%srepos/%s/issues/%d", s.URL, is.Repo, is.Number)
	labels := []any{}
	for i, l := range is.Labels {
		labels = append(labels, map[string]any{"id": i + 1, "name": l, "color": "ededed", "default": false})
	}
	assignees := []any{}
	for i, a := range is.Assignees {
		assignees = append(assignees, map[string]any{"login": a, "id": i + 1, "type": "User"})
	}
	var assignee any
	if len(assignees) > 0 {
		assignee = assignees[0]
	}
	var reason any
	if is.StateReason != "" {
		reason = is.StateReason
	}
	m := map[string]any{
		"id":             int64(is.Number) + 100000,
		"node_id":        fmt.Sprintf("I_fake%d", is.Number),
		"number":         is.Number,
		"title":          is.Title,
		"body":           is.Body,
		"state":          is.State,
		"state_reason":   reason,
		"locked":         false,
		"labels":         labels,
		"assignee":       assignee,
		"assignees":      assignees,
		"comments":       len(is.Comments),
		"created_at":     ts(is.CreatedAt),
		"updated_at":     ts(is.UpdatedAt),
		"closed_at":      ts(is.ClosedAt),
		"user":           map[string]any{"login": "qase-sync-bot", "id": 1, "type": "Bot"},
		"url":            api,
		"repository_url": s.URL + "repos/" + is.Repo,
		"comments_url":   api + "/comments",
		"labels_url":     api + "/labels{/name}",
		"html_url":       fmt.Sprintf("https://github.example/%s/issues/%d", is.Repo, is.Number),
	}
	if is.PullRequest {
		m["pull_request"] = map[string]any{"url": fmt.Sprintf("%srepos/%s/pulls/%d", s.URL, is.Repo, is.Number)}
	}
	return m
}

func (s *Server) labelsJSON(is *IssueState) []any {
	out := []any{}
	for i, l := range is.Labels {
		out = append(out, map[string]any{"id": i + 1, "name": l, "color": "ededed", "default": false})
	}
	return out
}

func (s *Server) commentJSON(is *IssueState, c CommentState) map[string]any {
	return map[string]any{
		"id":         c.ID,
		"body":       c.Body,
		"created_at": ts(c.CreatedAt),
		"updated_at": ts(c.CreatedAt),
		"user":       map[string]any{"login": "qase-sync-bot", "id": 1, "type": "Bot"},
		"html_url":   fmt.Sprintf("https://github.example/%s/issues/%d#issuecomment-%d", is.Repo, is.Number, c.ID),
		"issue_url":  fmt.Sprintf("%srepos/%s/issues/%d", s.URL, is.Repo, is.Number),
	}
}

// acceptable is GitHub's content negotiation as a validating mock applies
// it: a request must accept a stable JSON type (a preview type alone, as
// go-github v60's Issues.Get sends, is refused with 406).
func acceptable(accept string) bool {
	if accept == "" {
		return true
	}
	for _, t := range strings.Split(accept, ",") {
		t, _, _ = strings.Cut(strings.TrimSpace(t), ";")
		switch strings.ToLower(strings.TrimSpace(t)) {
		case "application/json", "application/vnd.github+json", "application/vnd.github.v3+json", "*/*", "application/*":
			return true
		}
	}
	return false
}
