// Package jirafake is a stateful, in-memory Jira (REST v2, wiki markup) on
// httptest, for tests of the Jira adapter and of the engine above it.
//
// It serves issues (create/get/edit/delete), workflow transitions,
// comments, issue properties, the Cloud search (POST /rest/api/2/search/jql
// with nextPageToken) and the Data Center search (POST /rest/api/2/search
// with startAt), with the JQL subset qase-sync generates. Tests inspect and
// edit the state directly (Issues, IssueByLabel, Edit, MoveIssue, ...) and
// inject faults (FailNext, CommitThenFail, CommitThenDrop, Delay,
// SearchLag). All methods are safe for concurrent use.
package jirafake

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/qase-sync/qase-sync/internal/fault"
	"github.com/qase-sync/qase-sync/internal/trackerhook"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// Transition is one workflow transition.
type Transition struct {
	ID   string
	Name string
	// From lists the statuses it starts from; empty means any status
	// other than To (a global transition).
	From []string
	To   string
	// Resolution: the transition has a screen with a resolution field
	// (and, as every Jira transition screen, the comment field); taking
	// the transition sets the resolution (to the one sent, default
	// "Done"). A transition without a screen takes neither.
	Resolution bool
	// ClearResolution: taking the transition clears the resolution.
	ClearResolution bool
}

// DefaultWorkflow: "To Do" → "In Progress" → "Done", any → "Done",
// "Done" → "To Do" via "Reopen".
func DefaultWorkflow() []Transition {
	return []Transition{
		{ID: "11", Name: "Start Progress", From: []string{"To Do"}, To: "In Progress"},
		{ID: "21", Name: "Done", To: "Done", Resolution: true},
		{ID: "31", Name: "Reopen", From: []string{"Done"}, To: "To Do", ClearResolution: true},
	}
}

// WontDoWorkflow is a workflow with two closed states, as Jira Cloud
// projects often have: "To Do" → "In Progress" → "Done", "Won't Do" from
// any open or done state, "Done" → "To Do" via "Reopen", and from
// "Won't Do" only "Start Progress" back to "In Progress". "To Do" is not
// directly reachable from "Won't Do": a client that explores instead of
// planning walks the issue through "In Progress" and "Done".
func WontDoWorkflow() []Transition {
	return []Transition{
		{ID: "11", Name: "Start Progress", From: []string{"To Do", "Won't Do"}, To: "In Progress", ClearResolution: true},
		{ID: "21", Name: "Done", From: []string{"To Do", "In Progress"}, To: "Done", Resolution: true},
		{ID: "31", Name: "Reopen", From: []string{"Done"}, To: "To Do", ClearResolution: true},
		{ID: "41", Name: "Won't Do", From: []string{"To Do", "In Progress", "Done"}, To: "Won't Do", Resolution: true},
	}
}

// CommentState is a stored comment.
type CommentState struct {
	ID      string
	Body    string
	Created time.Time
}

// IssueState is a stored issue. Values returned by the Server are copies.
type IssueState struct {
	ID          string
	Key         string
	Project     string
	Type        string
	Summary     string
	Description string
	Labels      []string
	Priority    string
	Assignee    string // accountId or name, as sent
	Components  []string
	Fields      map[string]any // custom fields by id
	Status      string
	Resolution  string
	Comments    []CommentState
	Properties  map[string]json.RawMessage
	Created     time.Time
	Updated     time.Time
	Seq         int      // creation order, from 1
	OldKeys     []string // keys before project moves (still resolve)

	createdReq int // request number of the create, for SearchLag
}

// Request is one logged request.
type Request struct {
	Method string
	Path   string
	Query  string
	Body   string
	Header http.Header
	Status int
}

// Server is the fake Jira. Faults are injected through the embedded
// TrackerInjector (FailNext, Delay, CommitThenFail, CommitThenDrop).
type Server struct {
	URL string
	fault.TrackerInjector

	srv *httptest.Server
	mux *http.ServeMux

	mu          sync.Mutex
	issues      []*IssueState
	byID        map[string]*IssueState
	byKey       map[string]*IssueState
	nextID      int
	nextComment int
	seq         int
	counters    map[string]int
	initial     string
	workflow    []Transition
	requests    []Request
	reqNo       int // requests served, never reset (SearchLag)
	lag         bool
	lagWindow   int
	pageCap     int
	embedCap    int
	now         func() time.Time
	// Webhooks: SetWebhook (url, secret; "" disables), WaitWebhooks,
	// Deliveries; see webhook.go.
	trackerhook.Hooks[Subject]
}

// New starts a fake Jira with the default workflow. Close it when done.
func New() *Server {
	s := &Server{
		byID:      map[string]*IssueState{},
		byKey:     map[string]*IssueState{},
		nextID:    10000,
		counters:  map[string]int{},
		initial:   "To Do",
		workflow:  DefaultWorkflow(),
		lagWindow: 1,
		pageCap:   100,
		embedCap:  20,
		now:       time.Now,
	}
	s.mux = http.NewServeMux()
	s.routes()
	s.srv = httptest.NewServer(s)
	s.URL = s.srv.URL
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

func (s *Server) locked(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

// SetWorkflow replaces the workflow; new issues start in initial.
func (s *Server) SetWorkflow(initial string, trs []Transition) {
	s.locked(func() {
		s.initial = initial
		s.workflow = append([]Transition(nil), trs...)
	})
}

// SetNow sets the clock used for created/updated times.
func (s *Server) SetNow(now func() time.Time) { s.locked(func() { s.now = now }) }

// SetPageCap caps maxResults of searches and comment lists (default 100).
func (s *Server) SetPageCap(n int) { s.locked(func() { s.pageCap = max(n, 1) }) }

// SetCommentEmbedLimit caps the comments embedded in issue reads
// (default 20); the rest must be paged from /comment, as on Jira.
func (s *Server) SetCommentEmbedLimit(n int) { s.locked(func() { s.embedCap = max(n, 0) }) }

// SearchLag simulates Jira's index lag: searches do not see an issue until
// more than the lag window (default 1) further requests have been served
// after its create, unless the search names it in reconcileIssues.
func (s *Server) SearchLag(on bool) { s.locked(func() { s.lag = on }) }

// SetLagWindow sets how many requests after its create an issue stays
// hidden from search while SearchLag is on.
func (s *Server) SetLagWindow(n int) { s.locked(func() { s.lagWindow = max(n, 0) }) }

// Requests returns the request log.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.requests))
	copy(out, s.requests)
	return out
}

// ResetRequests clears the request log.
func (s *Server) ResetRequests() { s.locked(func() { s.requests = nil }) }

// WriteCount counts logged requests that may change state: everything but
// GETs and searches (a search is a POST but reads).
func (s *Server) WriteCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.requests {
		if r.Method != http.MethodGet && !isSearch(r.Path) {
			n++
		}
	}
	return n
}

// Count counts logged requests with this method whose path has the prefix.
func (s *Server) Count(method, pathPrefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.requests {
		if r.Method == method && strings.HasPrefix(r.Path, pathPrefix) {
			n++
		}
	}
	return n
}

func isSearch(path string) bool {
	return path == "/rest/api/2/search" || path == "/rest/api/2/search/jql"
}

// Issues returns every stored issue in creation order.
func (s *Server) Issues() []IssueState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]IssueState, 0, len(s.issues))
	for _, is := range s.issues {
		out = append(out, is.clone())
	}
	return out
}

// Issue returns the issue with this id or key.
func (s *Server) Issue(idOrKey string) (IssueState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	is := s.find(idOrKey)
	if is == nil {
		return IssueState{}, false
	}
	return is.clone(), true
}

// IssueByLabel returns the issues carrying label, in creation order.
func (s *Server) IssueByLabel(label string) []IssueState {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []IssueState
	for _, is := range s.issues {
		for _, l := range is.Labels {
			if l == label {
				out = append(out, is.clone())
				break
			}
		}
	}
	return out
}

// AddIssue stores an issue directly (seeding). Project is required; id,
// key, status and created are filled in when empty.
func (s *Server) AddIssue(in IssueState) IssueState {
	s.mu.Lock()
	defer s.mu.Unlock()
	is := in.clone()
	s.store(&is)
	return is.clone()
}

// Edit changes an issue as a human would (id and key cannot change; use
// MoveIssue). It reports whether the issue exists.
func (s *Server) Edit(idOrKey string, fn func(is *IssueState)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	is := s.find(idOrKey)
	if is == nil {
		return false
	}
	id, key, proj := is.ID, is.Key, is.Project
	fn(is)
	is.ID, is.Key, is.Project = id, key, proj
	is.Updated = s.now()
	s.emit("jira:issue_updated", is, nil)
	return true
}

// AddHumanComment posts a comment as a human would.
func (s *Server) AddHumanComment(idOrKey, body string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	is := s.find(idOrKey)
	if is == nil {
		return false
	}
	c := s.addComment(is, body)
	s.emit("comment_created", is, &c)
	return true
}

// MoveIssue moves the issue to another project: the key changes, the id
// stays, and the old key keeps resolving.
func (s *Server) MoveIssue(id, newProject string) (newKey string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	is := s.find(id)
	if is == nil {
		return "", false
	}
	is.OldKeys = append(is.OldKeys, is.Key)
	is.Project = newProject
	s.counters[newProject]++
	is.Key = fmt.Sprintf("%s-%d", newProject, s.counters[newProject])
	s.byKey[is.Key] = is
	return is.Key, true
}

// DeleteIssue removes the issue.
func (s *Server) DeleteIssue(idOrKey string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	is := s.find(idOrKey)
	if is == nil {
		return false
	}
	s.remove(is)
	return true
}

func (s *Server) remove(is *IssueState) {
	delete(s.byID, is.ID)
	delete(s.byKey, is.Key)
	for _, k := range is.OldKeys {
		delete(s.byKey, k)
	}
	for i, x := range s.issues {
		if x == is {
			s.issues = append(s.issues[:i], s.issues[i+1:]...)
			break
		}
	}
}

func (s *Server) find(idOrKey string) *IssueState {
	if is := s.byID[idOrKey]; is != nil {
		return is
	}
	return s.byKey[strings.ToUpper(idOrKey)]
}

func (s *Server) store(is *IssueState) {
	if is.ID == "" {
		s.nextID++
		is.ID = strconv.Itoa(s.nextID)
	}
	if is.Key == "" {
		s.counters[is.Project]++
		is.Key = fmt.Sprintf("%s-%d", is.Project, s.counters[is.Project])
	}
	if is.Status == "" {
		is.Status = s.initial
	}
	if is.Type == "" {
		is.Type = "Task"
	}
	if is.Created.IsZero() {
		is.Created = s.now()
	}
	if is.Updated.IsZero() {
		is.Updated = is.Created
	}
	s.seq++
	is.Seq = s.seq
	is.createdReq = s.reqNo
	s.issues = append(s.issues, is)
	s.byID[is.ID] = is
	s.byKey[is.Key] = is
}

func (s *Server) addComment(is *IssueState, body string) CommentState {
	s.nextComment++
	c := CommentState{ID: strconv.Itoa(s.nextComment), Body: body, Created: s.now()}
	is.Comments = append(is.Comments, c)
	is.Updated = c.Created
	return c
}

func (is IssueState) clone() IssueState {
	c := is
	c.Labels = append([]string(nil), is.Labels...)
	c.Components = append([]string(nil), is.Components...)
	c.Comments = append([]CommentState(nil), is.Comments...)
	c.OldKeys = append([]string(nil), is.OldKeys...)
	if is.Fields != nil {
		c.Fields = make(map[string]any, len(is.Fields))
		for k, v := range is.Fields {
			c.Fields[k] = v
		}
	}
	if is.Properties != nil {
		c.Properties = make(map[string]json.RawMessage, len(is.Properties))
		for k, v := range is.Properties {
			c.Properties[k] = append(json.RawMessage(nil), v...)
		}
	}
	return c
}

// ServeHTTP logs the request, applies delay and faults, then routes it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))

	if !s.Wait(r.Context()) {
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqNo++
	s.requests = append(s.requests, Request{
		Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Body: string(body), Header: r.Header.Clone(),
	})
	idx := len(s.requests) - 1
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	defer func() {
		s.requests[idx].Status = sw.status
		s.emitAfterRequest(r.Method, r.URL.Path, sw.status)
	}()

	if f, ok := s.Next(); ok {
		maps.Copy(sw.Header(), f.Header)
		if f.Body != "" {
			sw.WriteHeader(f.Status)
			_, _ = io.WriteString(sw, f.Body)
			return
		}
		jiraError(sw, f.Status, []string{"injected failure"}, nil)
		return
	}
	s.mux.ServeHTTP(sw, r)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("POST /rest/api/2/issue", s.createIssue)
	m.HandleFunc("GET /rest/api/2/issue/{id}", s.getIssue)
	m.HandleFunc("PUT /rest/api/2/issue/{id}", s.editIssue)
	m.HandleFunc("DELETE /rest/api/2/issue/{id}", s.deleteIssue)
	m.HandleFunc("GET /rest/api/2/issue/{id}/transitions", s.getTransitions)
	m.HandleFunc("POST /rest/api/2/issue/{id}/transitions", s.doTransition)
	m.HandleFunc("GET /rest/api/2/issue/{id}/comment", s.listComments)
	m.HandleFunc("POST /rest/api/2/issue/{id}/comment", s.postComment)
	m.HandleFunc("GET /rest/api/2/issue/{id}/properties/{key}", s.getProperty)
	m.HandleFunc("PUT /rest/api/2/issue/{id}/properties/{key}", s.putProperty)
	m.HandleFunc("POST /rest/api/2/search/jql", s.searchJQL)
	m.HandleFunc("POST /rest/api/2/search", s.searchDC)
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		jiraError(w, http.StatusNotFound, []string{"fake jira: no such resource: " + r.Method + " " + r.URL.Path}, nil)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

func jiraError(w http.ResponseWriter, status int, msgs []string, errs map[string]string) {
	if msgs == nil {
		msgs = []string{}
	}
	if errs == nil {
		errs = map[string]string{}
	}
	writeJSON(w, status, map[string]any{"errorMessages": msgs, "errors": errs})
}

func (s *Server) issueOr404(w http.ResponseWriter, r *http.Request) *IssueState {
	is := s.find(r.PathValue("id"))
	if is == nil {
		jiraError(w, http.StatusNotFound, []string{"Issue does not exist or you do not have permission to see it."}, nil)
	}
	return is
}

type updateBody struct {
	Fields     map[string]json.RawMessage              `json:"fields"`
	Update     map[string][]map[string]json.RawMessage `json:"update"`
	Properties []struct {
		Key   string          `json:"key"`
		Value json.RawMessage `json:"value"`
	} `json:"properties"`
}

// Fields the fake accepts and ignores.
var ignoredFields = map[string]bool{"reporter": true, "duedate": true, "environment": true, "fixVersions": true, "versions": true, "parent": true}

type ref struct {
	ID        string `json:"id"`
	Key       string `json:"key"`
	Name      string `json:"name"`
	AccountID string `json:"accountId"`
	Value     string `json:"value"`
}

// applyFields sets fields on is, returning Jira-style field errors.
func applyFields(is *IssueState, fields map[string]json.RawMessage, create bool) map[string]string {
	errs := map[string]string{}
	null := func(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }
	for k, raw := range fields {
		switch k {
		case "project", "issuetype":
			if !create {
				errs[k] = "Field '" + k + "' cannot be set. It is not on the appropriate screen, or unknown."
				continue
			}
			var v ref
			if json.Unmarshal(raw, &v) != nil || (v.Key == "" && v.ID == "" && v.Name == "") {
				errs[k] = "valid " + k + " is required"
				continue
			}
			if k == "project" {
				is.Project = strings.ToUpper(v.Key + v.ID)
			} else {
				is.Type = v.Name + v.ID
			}
		case "summary":
			var v string
			if json.Unmarshal(raw, &v) != nil {
				errs[k] = "Operation value must be a string"
				continue
			}
			if strings.ContainsAny(v, "\r\n") {
				errs[k] = "Field 'summary' cannot contain line breaks."
				continue
			}
			if len([]rune(v)) > 255 {
				errs[k] = "Summary must be less than 255 characters."
				continue
			}
			is.Summary = v
		case "description":
			var v string
			if !null(raw) && json.Unmarshal(raw, &v) != nil {
				errs[k] = "Operation value must be a string"
				continue
			}
			is.Description = v
		case "labels":
			var v []string
			if json.Unmarshal(raw, &v) != nil {
				errs[k] = "Operation value must be an array of strings"
				continue
			}
			if e := badLabel(v); e != "" {
				errs[k] = e
				continue
			}
			is.Labels = v
		case "priority":
			var v ref
			if null(raw) {
				is.Priority = ""
			} else if json.Unmarshal(raw, &v) != nil || (v.Name == "" && v.ID == "") {
				errs[k] = "Specify a valid priority"
			} else {
				is.Priority = v.Name + v.ID
			}
		case "assignee":
			var v ref
			if null(raw) {
				is.Assignee = ""
			} else if json.Unmarshal(raw, &v) != nil || (v.AccountID == "" && v.Name == "" && v.ID == "") {
				errs[k] = "Specify a valid user"
			} else {
				is.Assignee = v.AccountID + v.Name + v.ID
			}
		case "components":
			var v []ref
			if json.Unmarshal(raw, &v) != nil {
				errs[k] = "Operation value must be an array of components"
				continue
			}
			is.Components = nil
			for _, c := range v {
				is.Components = append(is.Components, c.Name+c.ID)
			}
		default:
			if strings.HasPrefix(k, "customfield_") {
				var v any
				_ = json.Unmarshal(raw, &v)
				if is.Fields == nil {
					is.Fields = map[string]any{}
				}
				if v == nil {
					delete(is.Fields, k)
				} else {
					is.Fields[k] = v
				}
				continue
			}
			if !ignoredFields[k] {
				errs[k] = "Field '" + k + "' cannot be set. It is not on the appropriate screen, or unknown."
			}
		}
	}
	return errs
}

func badLabel(ls []string) string {
	for _, l := range ls {
		if l == "" || strings.ContainsAny(l, " \t\n") {
			return fmt.Sprintf("The label '%s' contains spaces which is invalid.", l)
		}
		if len([]rune(l)) > 255 {
			return "The label must not exceed 255 characters."
		}
	}
	return ""
}

func (s *Server) createIssue(w http.ResponseWriter, r *http.Request) {
	var b updateBody
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
		jiraError(w, http.StatusBadRequest, []string{"Invalid request payload: " + err.Error()}, nil)
		return
	}
	is := &IssueState{}
	errs := applyFields(is, b.Fields, true)
	if is.Project == "" {
		errs["project"] = "Specify a valid project ID or key"
	}
	if is.Type == "" {
		errs["issuetype"] = "Specify an issue type"
	}
	if strings.TrimSpace(is.Summary) == "" && errs["summary"] == "" {
		errs["summary"] = "You must specify a summary of the issue."
	}
	if len(b.Update) > 0 {
		errs["update"] = "fake jira: update operations on create are not supported"
	}
	if len(errs) > 0 {
		jiraError(w, http.StatusBadRequest, nil, errs)
		return
	}
	for _, p := range b.Properties {
		if is.Properties == nil {
			is.Properties = map[string]json.RawMessage{}
		}
		is.Properties[p.Key] = p.Value
	}
	s.store(is)
	switch s.AfterCommit() {
	case fault.Drop:
		if sw := w.(*statusWriter); fault.Hangup(sw.ResponseWriter) {
			sw.status = 0 // no answer
			return
		}
	case fault.Fail:
		jiraError(w, http.StatusInternalServerError, []string{"Internal server error"}, nil)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"id": is.ID, "key": is.Key, "self": s.URL + "/rest/api/2/issue/" + is.ID})
}

func (s *Server) getIssue(w http.ResponseWriter, r *http.Request) {
	is := s.issueOr404(w, r)
	if is == nil {
		return
	}
	q := r.URL.Query()
	out := s.issueJSON(is, splitList(q["properties"]))
	if strings.Contains(q.Get("expand"), "transitions") {
		out["transitions"] = s.transitionsJSON(is, true)
	}
	writeJSON(w, http.StatusOK, out)
}

func splitList(vs []string) []string {
	var out []string
	for _, v := range vs {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

const jiraTime = "2006-01-02T15:04:05.000-0700"

func (s *Server) issueJSON(is *IssueState, props []string) map[string]any {
	f := map[string]any{
		"summary":     is.Summary,
		"description": nullIfEmpty(is.Description),
		"labels":      append([]string{}, is.Labels...),
		"issuetype":   map[string]string{"name": is.Type},
		"project":     map[string]string{"key": is.Project},
		"status":      map[string]any{"name": is.Status, "statusCategory": map[string]string{"key": category(is.Status, is.Resolution)}},
		"created":     is.Created.Format(jiraTime),
		"updated":     is.Updated.Format(jiraTime),
		"priority":    nil,
		"assignee":    nil,
		"resolution":  nil,
	}
	if is.Priority != "" {
		f["priority"] = map[string]string{"name": is.Priority}
	}
	if is.Assignee != "" {
		f["assignee"] = map[string]string{"accountId": is.Assignee, "name": is.Assignee, "displayName": is.Assignee}
	}
	if is.Resolution != "" {
		f["resolution"] = map[string]string{"name": is.Resolution}
	}
	comps := []map[string]string{}
	for _, c := range is.Components {
		comps = append(comps, map[string]string{"name": c})
	}
	f["components"] = comps
	embedded := is.Comments
	if len(embedded) > s.embedCap {
		embedded = embedded[:s.embedCap]
	}
	cs := make([]map[string]any, 0, len(embedded))
	for _, c := range embedded {
		cs = append(cs, commentJSON(c))
	}
	f["comment"] = map[string]any{"comments": cs, "startAt": 0, "maxResults": len(cs), "total": len(is.Comments)}
	for k, v := range is.Fields {
		f[k] = v
	}
	out := map[string]any{"id": is.ID, "key": is.Key, "self": s.URL + "/rest/api/2/issue/" + is.ID, "fields": f}
	if len(props) > 0 {
		pm := map[string]json.RawMessage{}
		for _, p := range props {
			if v, ok := is.Properties[p]; ok {
				pm[p] = v
			}
		}
		out["properties"] = pm
	}
	return out
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func category(status, resolution string) string {
	switch {
	case strings.EqualFold(status, "To Do"), strings.EqualFold(status, "Open"), strings.EqualFold(status, "Backlog"):
		return "new"
	case resolution != "", strings.EqualFold(status, "Done"), strings.EqualFold(status, "Closed"):
		return "done"
	}
	return "indeterminate"
}

func commentJSON(c CommentState) map[string]any {
	return map[string]any{
		"id": c.ID, "body": c.Body, "created": c.Created.Format(jiraTime), "updated": c.Created.Format(jiraTime),
		"author": map[string]string{"accountId": "fake", "displayName": "Fake"},
	}
}

func (s *Server) editIssue(w http.ResponseWriter, r *http.Request) {
	is := s.issueOr404(w, r)
	if is == nil {
		return
	}
	var b updateBody
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
		jiraError(w, http.StatusBadRequest, []string{"Invalid request payload: " + err.Error()}, nil)
		return
	}
	next := is.clone()
	errs := applyFields(&next, b.Fields, false)
	for field, ops := range b.Update {
		if _, both := b.Fields[field]; both {
			errs[field] = "Field '" + field + "' cannot be set in both 'fields' and 'update'."
			continue
		}
		if field != "labels" {
			errs[field] = "fake jira: update operations are supported for labels only"
			continue
		}
		for _, op := range ops {
			for verb, raw := range op {
				switch verb {
				case "add", "remove":
					var l string
					if json.Unmarshal(raw, &l) != nil || badLabel([]string{l}) != "" {
						errs["labels"] = fmt.Sprintf("The label '%s' contains spaces which is invalid.", l)
						continue
					}
					if verb == "add" {
						next.Labels = qsync.EditLabels(next.Labels, []string{l}, nil)
					} else {
						next.Labels = qsync.EditLabels(next.Labels, nil, []string{l})
					}
				case "set":
					var ls []string
					if json.Unmarshal(raw, &ls) != nil || badLabel(ls) != "" {
						errs["labels"] = "invalid labels"
						continue
					}
					next.Labels = ls
				default:
					errs["labels"] = "unknown operation " + verb
				}
			}
		}
	}
	if len(errs) > 0 {
		jiraError(w, http.StatusBadRequest, nil, errs)
		return
	}
	next.Updated = s.now()
	*is = next
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) deleteIssue(w http.ResponseWriter, r *http.Request) {
	is := s.issueOr404(w, r)
	if is == nil {
		return
	}
	s.remove(is)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) available(is *IssueState) []Transition {
	var out []Transition
	for _, t := range s.workflow {
		if strings.EqualFold(t.To, is.Status) {
			continue
		}
		ok := len(t.From) == 0
		for _, f := range t.From {
			if strings.EqualFold(f, is.Status) {
				ok = true
			}
		}
		if ok {
			out = append(out, t)
		}
	}
	return out
}

func (s *Server) transitionsJSON(is *IssueState, withFields bool) []map[string]any {
	out := []map[string]any{}
	for _, t := range s.available(is) {
		tj := map[string]any{
			"id": t.ID, "name": t.Name, "hasScreen": t.Resolution,
			"to": map[string]any{"name": t.To, "id": "st-" + t.ID, "statusCategory": map[string]string{"key": category(t.To, "")}},
		}
		if withFields {
			fields := map[string]any{}
			if t.Resolution {
				fields["resolution"] = map[string]any{"required": false, "name": "Resolution",
					"allowedValues": []map[string]string{{"name": "Done"}, {"name": "Fixed"}, {"name": "Won't Do"}, {"name": "Duplicate"}}}
				fields["comment"] = map[string]any{"required": false, "name": "Comment", "operations": []string{"add", "edit", "remove"},
					"schema": map[string]string{"type": "comments-page", "system": "comment"}}
			}
			tj["fields"] = fields
		}
		out = append(out, tj)
	}
	return out
}

func (s *Server) getTransitions(w http.ResponseWriter, r *http.Request) {
	is := s.issueOr404(w, r)
	if is == nil {
		return
	}
	withFields := strings.Contains(r.URL.Query().Get("expand"), "transitions.fields")
	writeJSON(w, http.StatusOK, map[string]any{"expand": "transitions", "transitions": s.transitionsJSON(is, withFields)})
}

func (s *Server) doTransition(w http.ResponseWriter, r *http.Request) {
	is := s.issueOr404(w, r)
	if is == nil {
		return
	}
	var b struct {
		Transition *ref                                    `json:"transition"`
		Fields     map[string]json.RawMessage              `json:"fields"`
		Update     map[string][]map[string]json.RawMessage `json:"update"`
	}
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil || b.Transition == nil || b.Transition.ID == "" {
		jiraError(w, http.StatusBadRequest, []string{"Missing 'transition' identifier"}, nil)
		return
	}
	var tr *Transition
	for _, t := range s.available(is) {
		if t.ID == b.Transition.ID {
			tr = &t
			break
		}
	}
	if tr == nil {
		jiraError(w, http.StatusBadRequest, []string{fmt.Sprintf("Transition id '%s' is not valid for this issue.", b.Transition.ID)}, nil)
		return
	}
	resolution := ""
	for k, raw := range b.Fields {
		if k != "resolution" || !tr.Resolution {
			jiraError(w, http.StatusBadRequest, nil, map[string]string{k: "Field '" + k + "' cannot be set. It is not on the appropriate screen, or unknown."})
			return
		}
		var v ref
		if json.Unmarshal(raw, &v) != nil || v.Name == "" {
			jiraError(w, http.StatusBadRequest, nil, map[string]string{k: "Specify a valid resolution"})
			return
		}
		resolution = v.Name
	}
	var comments []string
	for k, ops := range b.Update {
		if k != "comment" || !tr.Resolution {
			jiraError(w, http.StatusBadRequest, nil, map[string]string{k: "Field '" + k + "' cannot be set. It is not on the appropriate screen, or unknown."})
			return
		}
		for _, op := range ops {
			var c struct {
				Body json.RawMessage `json:"body"`
			}
			var body string
			raw, ok := op["add"]
			if len(op) != 1 || !ok || json.Unmarshal(raw, &c) != nil || json.Unmarshal(c.Body, &body) != nil || strings.TrimSpace(body) == "" {
				jiraError(w, http.StatusBadRequest, nil, map[string]string{"comment": "Comment body must be a non-empty string (REST v2 takes wiki markup)"})
				return
			}
			comments = append(comments, body)
		}
	}
	for _, body := range comments {
		s.addComment(is, body)
	}
	is.Status = tr.To
	switch {
	case tr.Resolution:
		if resolution == "" {
			resolution = "Done"
		}
		is.Resolution = resolution
	case tr.ClearResolution:
		is.Resolution = ""
	}
	is.Updated = s.now()
	w.WriteHeader(http.StatusNoContent)
}

func intParam(r *http.Request, name string, def int) int {
	if v, err := strconv.Atoi(r.URL.Query().Get(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

func (s *Server) listComments(w http.ResponseWriter, r *http.Request) {
	is := s.issueOr404(w, r)
	if is == nil {
		return
	}
	start := intParam(r, "startAt", 0)
	limit := min(max(intParam(r, "maxResults", 100), 1), s.pageCap)
	cs := []map[string]any{}
	for i := start; i < len(is.Comments) && len(cs) < limit; i++ {
		cs = append(cs, commentJSON(is.Comments[i]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"startAt": start, "maxResults": limit, "total": len(is.Comments), "comments": cs})
}

func (s *Server) postComment(w http.ResponseWriter, r *http.Request) {
	is := s.issueOr404(w, r)
	if is == nil {
		return
	}
	var b struct {
		Body json.RawMessage `json:"body"`
	}
	var body string
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil || json.Unmarshal(b.Body, &body) != nil {
		jiraError(w, http.StatusBadRequest, nil, map[string]string{"body": "Comment body must be a string (REST v2 takes wiki markup)"})
		return
	}
	if strings.TrimSpace(body) == "" {
		jiraError(w, http.StatusBadRequest, nil, map[string]string{"comment": "Comment body can not be empty!"})
		return
	}
	writeJSON(w, http.StatusCreated, commentJSON(s.addComment(is, body)))
}

func (s *Server) getProperty(w http.ResponseWriter, r *http.Request) {
	is := s.issueOr404(w, r)
	if is == nil {
		return
	}
	v, ok := is.Properties[r.PathValue("key")]
	if !ok {
		jiraError(w, http.StatusNotFound, []string{"The property was not found."}, nil)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"key": r.PathValue("key"), "value": v})
}

func (s *Server) putProperty(w http.ResponseWriter, r *http.Request) {
	is := s.issueOr404(w, r)
	if is == nil {
		return
	}
	raw, _ := io.ReadAll(r.Body)
	if !json.Valid(raw) {
		jiraError(w, http.StatusBadRequest, []string{"The property value must be valid JSON."}, nil)
		return
	}
	if len(raw) > 32768 {
		jiraError(w, http.StatusBadRequest, []string{"The property value is too long (32768 bytes at most)."}, nil)
		return
	}
	if is.Properties == nil {
		is.Properties = map[string]json.RawMessage{}
	}
	_, existed := is.Properties[r.PathValue("key")]
	is.Properties[r.PathValue("key")] = json.RawMessage(raw)
	if existed {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusCreated)
	}
}

// hits runs a JQL query over the visible issues.
func (s *Server) hits(jql string, reconcile []int64) ([]*IssueState, error) {
	q, err := parseJQL(jql)
	if err != nil {
		return nil, err
	}
	forced := map[string]bool{}
	for _, id := range reconcile {
		forced[strconv.FormatInt(id, 10)] = true
	}
	cur := s.reqNo
	var out []*IssueState
	for _, is := range s.issues {
		if s.lag && !forced[is.ID] && cur-is.createdReq <= s.lagWindow {
			continue // not indexed yet
		}
		if q.match(is) {
			out = append(out, is)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.Created.Equal(b.Created) {
			return a.Created.Before(b.Created) != q.desc
		}
		return (a.Seq < b.Seq) != q.desc
	})
	return out, nil
}

// page renders the search hits of one page, from start, with the page size
// Jira would use (maxResults, default 50, capped); end is where it stops.
func (s *Server) page(all []*IssueState, start int, maxResults *int, props []string) (issues []map[string]any, limit, end int) {
	limit = 50
	if maxResults != nil {
		limit = *maxResults
	}
	limit = min(max(limit, 1), s.pageCap)
	end = min(start+limit, len(all))
	issues = []map[string]any{}
	for _, is := range all[min(start, len(all)):end] {
		issues = append(issues, s.issueJSON(is, props))
	}
	return issues, limit, end
}

// searchBody is a search request, Cloud's (nextPageToken,
// reconcileIssues) or Data Center's (startAt).
type searchBody struct {
	JQL             string   `json:"jql"`
	NextPageToken   string   `json:"nextPageToken"`
	StartAt         int      `json:"startAt"`
	MaxResults      *int     `json:"maxResults"`
	Fields          []string `json:"fields"`
	Properties      []string `json:"properties"`
	ReconcileIssues []int64  `json:"reconcileIssues"`
}

// searched decodes a search and runs its JQL; false when it has answered
// with an error.
func (s *Server) searched(w http.ResponseWriter, r *http.Request, cloud bool) (b searchBody, all []*IssueState, ok bool) {
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
		jiraError(w, http.StatusBadRequest, []string{"Invalid request payload: " + err.Error()}, nil)
		return b, nil, false
	}
	if !cloud {
		b.ReconcileIssues = nil // Data Center has no such parameter
	} else if len(b.Properties) > 5 || len(b.ReconcileIssues) > 50 {
		jiraError(w, http.StatusBadRequest, []string{"Too many properties (5) or reconcileIssues (50)."}, nil)
		return b, nil, false
	}
	all, err := s.hits(b.JQL, b.ReconcileIssues)
	if err != nil {
		jiraError(w, http.StatusBadRequest, []string{err.Error()}, nil)
		return b, nil, false
	}
	return b, all, true
}

func (s *Server) searchJQL(w http.ResponseWriter, r *http.Request) {
	b, all, ok := s.searched(w, r, true)
	if !ok {
		return
	}
	start := 0
	if b.NextPageToken != "" {
		raw, err := base64.RawURLEncoding.DecodeString(b.NextPageToken)
		n, err2 := strconv.Atoi(strings.TrimPrefix(string(raw), "o:"))
		if err != nil || err2 != nil || n < 0 {
			jiraError(w, http.StatusBadRequest, []string{"Invalid nextPageToken."}, nil)
			return
		}
		start = n
	}
	issues, _, end := s.page(all, start, b.MaxResults, b.Properties)
	out := map[string]any{"issues": issues, "isLast": end >= len(all)}
	if end < len(all) {
		out["nextPageToken"] = base64.RawURLEncoding.EncodeToString([]byte("o:" + strconv.Itoa(end)))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) searchDC(w http.ResponseWriter, r *http.Request) {
	b, all, ok := s.searched(w, r, false)
	if !ok {
		return
	}
	start := max(b.StartAt, 0)
	issues, limit, _ := s.page(all, start, b.MaxResults, b.Properties)
	writeJSON(w, http.StatusOK, map[string]any{"startAt": start, "maxResults": limit, "total": len(all), "issues": issues})
}
