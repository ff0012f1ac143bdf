package qasefake

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// resultStatuses are the values GET /result/{code} takes in status (one).
var resultStatuses = []string{"in_progress", "passed", "failed", "blocked", "skipped", "invalid"}

// PutResult stores (or replaces) a test result as the API returns it
// (hash, run_id, case_id, status, comment, stacktrace, end_time,
// attachments, ...). A missing hash is assigned; the hash is returned.
func (s *Server) PutResult(project string, m map[string]any) string {
	rec := copyRecord(m)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.project(project)
	hash, _ := rec["hash"].(string)
	if hash == "" {
		s.hashSeq++
		hash = fmt.Sprintf("%040x", s.hashSeq)
		rec["hash"] = hash
	}
	putIn(&s.results, project, hash, rec)
	return hash
}

// PutCase stores (or replaces) a test case (id, title, ...).
func (s *Server) PutCase(project string, m map[string]any) int64 {
	rec := copyRecord(m)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.project(project)
	id, _ := intOf(rec["id"])
	putIn(&s.cases, project, id, rec)
	return id
}

// putIn stores rec as (*m)[PROJECT][k], making the maps on first use.
func putIn[K comparable](m *map[string]map[K]map[string]any, project string, k K, rec map[string]any) {
	code := strings.ToUpper(project)
	if *m == nil {
		*m = map[string]map[K]map[string]any{}
	}
	if (*m)[code] == nil {
		(*m)[code] = map[K]map[string]any{}
	}
	(*m)[code][k] = rec
}

func copyRecord(m map[string]any) map[string]any {
	b, err := json.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("qasefake: record not JSON-encodable: %v", err))
	}
	var rec map[string]any
	if err := json.Unmarshal(b, &rec); err != nil || rec == nil {
		rec = map[string]any{}
	}
	return rec
}

// handleResults serves GET /result/{code}, /result/{code}/{hash} and
// /case/{code}/{id}.
func (s *Server) handleResults(w http.ResponseWriter, r *http.Request, parts []string) int {
	if len(parts) < 2 || len(parts) > 3 || (parts[0] == "case" && len(parts) != 3) {
		return fail(w, http.StatusNotFound, "Not found.")
	}
	if r.Method != http.MethodGet {
		return fail(w, http.StatusMethodNotAllowed, "Method not allowed.")
	}
	code := strings.ToUpper(parts[1])
	if _, ok := s.projects[code]; !ok {
		return fail(w, http.StatusNotFound, "Project not found.")
	}
	if parts[0] == "case" {
		id, err := strconv.ParseInt(parts[2], 10, 64)
		if err != nil || id <= 0 {
			return invalid(w, "id", "The id must be an integer.")
		}
		rec, ok := s.cases[code][id]
		if !ok {
			return fail(w, http.StatusNotFound, "Test case not found.")
		}
		return ok200(w, rec)
	}
	if len(parts) == 3 {
		rec, ok := s.results[code][parts[2]]
		if !ok {
			return fail(w, http.StatusNotFound, "Result not found.")
		}
		return ok200(w, rec)
	}
	return s.listResults(w, r.URL.Query(), s.results[code])
}

func (s *Server) listResults(w http.ResponseWriter, q url.Values, recs map[string]map[string]any) int {
	limit, offset := 10, 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return invalid(w, "limit", "The limit must be between 1 and 100.")
		}
		limit = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > s.offsetCap {
			return invalid(w, "offset", fmt.Sprintf("The offset must be between 0 and %d.", s.offsetCap))
		}
		offset = n
	}
	status := q.Get("status")
	if status != "" && !slices.Contains(resultStatuses, status) {
		return invalid(w, "status", "The selected status is invalid.")
	}
	ids := func(key string) (map[int64]bool, bool) {
		v := q.Get(key)
		if v == "" {
			return nil, true
		}
		out := map[int64]bool{}
		for _, x := range strings.Split(v, ",") {
			n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
			if err != nil {
				return nil, false
			}
			out[n] = true
		}
		return out, true
	}
	runs, ok := ids("run")
	if !ok {
		return invalid(w, "run", "The run must be a list of integers.")
	}
	cases, ok := ids("case_id")
	if !ok {
		return invalid(w, "case_id", "The case_id must be a list of integers.")
	}
	var hashes []string
	for h, rec := range recs {
		run, _ := intOf(rec["run_id"])
		cs, _ := intOf(rec["case_id"])
		st, _ := rec["status"].(string)
		if (runs == nil || runs[run]) && (cases == nil || cases[cs]) && (status == "" || st == status) {
			hashes = append(hashes, h)
		}
	}
	// Oldest first, as Qase lists: by end time, then hash.
	slices.SortFunc(hashes, func(a, b string) int {
		ea, _ := recs[a]["end_time"].(string)
		eb, _ := recs[b]["end_time"].(string)
		if ea != eb {
			return strings.Compare(ea, eb)
		}
		return strings.Compare(a, b)
	})
	page := []map[string]any{}
	for i := offset; i < len(hashes) && len(page) < limit; i++ {
		page = append(page, recs[hashes[i]])
	}
	return ok200(w, map[string]any{"total": len(recs), "filtered": len(hashes), "count": len(page), "entities": page})
}
