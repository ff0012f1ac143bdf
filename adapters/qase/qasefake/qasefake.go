// Package qasefake is a stateful, in-memory fake of the parts of the Qase
// REST API v1 that qase-sync reads (defects, runs, reviews), served on an
// httptest server. Tests put entities in, point a client at URL and assert
// on the final state and the request log.
//
// It follows the real API where qase-sync depends on it: the Token header,
// the {status, result} envelope, list pages {total, filtered, count,
// entities} with limit 1..100 (default 10) and offset 0..100000, status
// filters, 404 for unknown projects and entities, and 429 with Retry-After.
// It also learns test results (listed per run and status, read by hash)
// and test cases, for failure routes.
package qasefake

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/qase-sync/qase-sync/internal/fault"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// Request is one logged request (the token is never recorded).
type Request struct {
	Method string
	Path   string // as received, including the /v1 prefix
	Query  url.Values
	Status int
	Body   string // writes only
}

// Server is the fake API. Use URL as the client's BaseURL. Faults are
// injected through the embedded Injector (FailNext, Delay) and
// RateLimitNext; they answer authenticated requests only.
type Server struct {
	URL string
	fault.Injector

	srv   *httptest.Server
	token string

	mu        sync.Mutex
	projects  map[string]map[qsync.Kind]map[int64]map[string]any
	nextID    map[string]int64
	requests  []Request
	offsetCap int
	// results by project and hash; cases by project and id (results.go).
	results map[string]map[string]map[string]any
	cases   map[string]map[int64]map[string]any
	hashSeq int
	// touched is when each entity was last put (its update time for
	// searches when the record has no updated_at).
	touched   map[string]time.Time
	caseLinks map[string][]string // "PROJ/case_id" → Jira issue keys
}

// New starts a fake that accepts only the given token. Close it when done.
func New(token string) *Server {
	s := &Server{
		token:     token,
		projects:  map[string]map[qsync.Kind]map[int64]map[string]any{},
		nextID:    map[string]int64{},
		offsetCap: 100000,
		touched:   map[string]time.Time{},
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL + "/v1"
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// AddProject makes a project exist (lists of an unknown project are 404).
func (s *Server) AddProject(code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.project(code)
}

func (s *Server) project(code string) map[qsync.Kind]map[int64]map[string]any {
	code = strings.ToUpper(code)
	p := s.projects[code]
	if p == nil {
		p = map[qsync.Kind]map[int64]map[string]any{}
		for _, k := range qsync.Kinds {
			p[k] = map[int64]map[string]any{}
		}
		s.projects[code] = p
	}
	return p
}

// PutDefect stores (or replaces) a defect record as the API returns it.
func (s *Server) PutDefect(project string, m map[string]any) int64 {
	return s.Put(project, qsync.KindDefect, m)
}

// PutRun stores (or replaces) a run record.
func (s *Server) PutRun(project string, m map[string]any) int64 {
	return s.Put(project, qsync.KindRun, m)
}

// PutReview stores (or replaces) a review record.
func (s *Server) PutReview(project string, m map[string]any) int64 {
	return s.Put(project, qsync.KindReview, m)
}

// Put stores a record of any kind. A missing "id" is assigned; the id is
// returned. The map is copied (JSON round trip), so later changes by the
// caller do not leak in.
func (s *Server) Put(project string, kind qsync.Kind, m map[string]any) int64 {
	rec := copyRecord(m)
	s.mu.Lock()
	defer s.mu.Unlock()
	seqKey := strings.ToUpper(project) + "/" + string(kind)
	id, ok := intOf(rec["id"])
	if !ok || id <= 0 {
		s.nextID[seqKey]++
		id = s.nextID[seqKey]
	}
	if id > s.nextID[seqKey] {
		s.nextID[seqKey] = id
	}
	rec["id"] = id
	s.project(project)[kind][id] = rec
	s.touched[touchKey(project, kind, id)] = time.Now()
	return id
}

// Delete removes an entity (later reads answer 404).
func (s *Server) Delete(project string, kind qsync.Kind, id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.project(project)[kind], id)
}

// Requests returns a copy of the request log.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// RequestCount is the number of requests served (including refused ones).
func (s *Server) RequestCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

// ResetRequests clears the request log.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

// RateLimitNext answers the next n requests with 429. retryAfter > 0 is
// sent as Retry-After (whole seconds, rounded up) plus X-RateLimit-Reset
// (reckoned from now); retryAfter == 0 sends neither header. The replies
// queue up behind faults injected before, as FailNext's do.
func (s *Server) RateLimitNext(n int, retryAfter time.Duration) {
	h := http.Header{"X-Ratelimit-Remaining": {"0"}}
	if retryAfter > 0 {
		secs := int64(math.Ceil(retryAfter.Seconds()))
		h.Set("Retry-After", strconv.FormatInt(secs, 10))
		h.Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Unix()+secs, 10))
	}
	s.FailNext(n, http.StatusTooManyRequests, h, `{"status":false,"errorMessage":"API rate limit exceeded."}`)
}

// SetOffsetCap lowers the API's offset maximum (100000) so tests can reach
// it cheaply.
func (s *Server) SetOffsetCap(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offsetCap = n
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if !s.Wait(r.Context()) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var body []byte
	if r.Method != http.MethodGet {
		body, _ = io.ReadAll(io.LimitReader(r.Body, 1<<20))
	}
	status := s.handle(w, r, body)
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Status: status, Body: string(body)})
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request, body []byte) int {
	w.Header().Set("X-RateLimit-Limit", "200")
	if r.Header.Get("Token") == "" || r.Header.Get("Token") != s.token {
		return fail(w, http.StatusUnauthorized, "Unauthenticated.")
	}
	if f, ok := s.Next(); ok {
		maps.Copy(w.Header(), f.Header)
		if f.Body == "" {
			return fail(w, f.Status, "Internal server error.")
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(f.Status)
		_, _ = io.WriteString(w, f.Body+"\n")
		return f.Status
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/")
	if !ok {
		return fail(w, http.StatusNotFound, "Not found.")
	}
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	switch {
	case (parts[0] == "result" || parts[0] == "case") && r.Method == http.MethodGet:
		return s.handleResults(w, r, parts)
	case parts[0] == "search" && len(parts) == 1 && r.Method == http.MethodGet:
		return s.search(w, r.URL.Query())
	}
	if r.Method != http.MethodGet {
		return s.write(w, r.Method, parts, body)
	}
	kind := qsync.Kind(parts[0])
	if !kind.Valid() || kind == qsync.KindFailure || len(parts) < 2 || len(parts) > 3 {
		return fail(w, http.StatusNotFound, "Not found.")
	}
	if r.Method != http.MethodGet {
		return fail(w, http.StatusMethodNotAllowed, "Method not allowed.")
	}
	proj, ok := s.projects[strings.ToUpper(parts[1])]
	if !ok {
		return fail(w, http.StatusNotFound, "Project not found.")
	}
	if len(parts) == 3 {
		id, err := strconv.ParseInt(parts[2], 10, 64)
		if err != nil || id <= 0 {
			return invalid(w, "id", "The id must be an integer.")
		}
		rec, ok := proj[kind][id]
		if !ok {
			return fail(w, http.StatusNotFound, title(kind)+" not found.")
		}
		return ok200(w, rec)
	}
	return s.list(w, r.URL.Query(), kind, proj[kind])
}

var statusEnum = map[qsync.Kind][]string{
	qsync.KindDefect: {"open", "resolved", "in_progress", "invalid"},
	qsync.KindRun:    {"in_progress", "passed", "failed", "aborted", "active", "complete", "abort"},
	qsync.KindReview: {"open", "merged", "declined"},
}

func (s *Server) list(w http.ResponseWriter, q url.Values, kind qsync.Kind, recs map[int64]map[string]any) int {
	limit, offset, status := s.paging(w, q)
	if status != 0 {
		return status
	}
	var want map[string]bool
	if v := q.Get("status"); v != "" {
		want = map[string]bool{}
		vals := []string{v}
		if kind == qsync.KindRun { // runs take a comma list; the rest one value
			vals = strings.Split(v, ",")
		}
		for _, x := range vals {
			if !slices.Contains(statusEnum[kind], x) {
				return invalid(w, "status", "The selected status is invalid.")
			}
			want[x] = true
		}
	}
	ids := make([]int64, 0, len(recs))
	for id, rec := range recs {
		if want == nil || want[statusOf(kind, rec)] {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	page := []map[string]any{}
	for i := offset; i < len(ids) && len(page) < limit; i++ {
		page = append(page, recs[ids[i]])
	}
	return ok200(w, map[string]any{"total": len(recs), "filtered": len(ids), "count": len(page), "entities": page})
}

// paging reads limit (1..100, default 10) and offset (0..cap); a bad
// value is answered 400 and its status returned.
func (s *Server) paging(w http.ResponseWriter, q url.Values) (limit, offset, status int) {
	limit = 10
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return 0, 0, invalid(w, "limit", "The limit must be between 1 and 100.")
		}
		limit = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > s.offsetCap {
			return 0, 0, invalid(w, "offset", fmt.Sprintf("The offset must be between 0 and %d.", s.offsetCap))
		}
		offset = n
	}
	return limit, offset, 0
}

func statusOf(kind qsync.Kind, rec map[string]any) string {
	key := "status"
	if kind == qsync.KindRun {
		key = "status_text" // "status" is an undocumented int on runs
	}
	s, _ := rec[key].(string)
	return s
}

func title(k qsync.Kind) string {
	s := string(k)
	return strings.ToUpper(s[:1]) + s[1:]
}

func ok200(w http.ResponseWriter, result any) int {
	return writeJSON(w, http.StatusOK, map[string]any{"status": true, "result": result})
}

func fail(w http.ResponseWriter, status int, msg string) int {
	return writeJSON(w, status, map[string]any{"status": false, "errorMessage": msg})
}

func invalid(w http.ResponseWriter, field, msg string) int {
	return writeJSON(w, http.StatusBadRequest, map[string]any{
		"status": false, "errorMessage": "Data is invalid.",
		"errorFields": []map[string]string{{"field": field, "error": msg}},
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
	return status
}

func intOf(v any) (int64, bool) {
	switch t := v.(type) {
	case float64:
		if t == math.Trunc(t) {
			return int64(t), true
		}
	case int64:
		return t, true
	case int:
		return int64(t), true
	case json.Number:
		n, err := t.Int64()
		return n, err == nil
	}
	return 0, false
}
