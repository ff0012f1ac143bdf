package qasefake

import (
	"encoding/json"
	"iter"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// The writes qase-sync makes (two-way routes, link write-back), validated
// as the API does: PATCH /defect/{code}/status/{id} with status in
// in_progress|resolved|invalid (open cannot be set), PATCH
// /defect/{code}/{id} with title and an integer severity, POST
// /run/{code}/external-issue and POST /case/{code}/external-issue/attach.

var severitySlugs = []string{"undefined", "blocker", "critical", "major", "normal", "minor", "trivial"}

// Writes returns the logged write requests (every method but GET).
func (s *Server) Writes() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Request
	for _, r := range s.requests {
		if r.Method != http.MethodGet {
			out = append(out, r)
		}
	}
	return out
}

// Defect returns a copy of a stored defect record.
func (s *Server) Defect(project string, id int64) (map[string]any, bool) {
	return s.Get(project, qsync.KindDefect, id)
}

// Get returns a copy of a stored record.
func (s *Server) Get(project string, kind qsync.Kind, id int64) (map[string]any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.project(project)[kind][id]
	if !ok {
		return nil, false
	}
	b, _ := json.Marshal(rec)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out, true
}

// CaseIssues returns the Jira issues attached to a case.
func (s *Server) CaseIssues(project string, caseID int64) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.caseLinks[strings.ToUpper(project)+"/"+strconv.FormatInt(caseID, 10)])
}

func (s *Server) write(w http.ResponseWriter, method string, parts []string, body []byte) int {
	if len(parts) < 3 {
		return fail(w, http.StatusNotFound, "Not found.")
	}
	proj, ok := s.projects[strings.ToUpper(parts[1])]
	if !ok {
		return fail(w, http.StatusNotFound, "Project not found.")
	}
	var in map[string]any
	if err := json.Unmarshal(body, &in); err != nil {
		return invalid(w, "body", "The body must be a JSON object.")
	}
	now := time.Now().UTC().Format(time.RFC3339)
	switch {
	case method == http.MethodPatch && parts[0] == "defect" && len(parts) == 4 && parts[2] == "status":
		rec, code := s.defect(w, proj, parts[3])
		if rec == nil {
			return code
		}
		st, _ := in["status"].(string)
		if !slices.Contains([]string{"in_progress", "resolved", "invalid"}, st) {
			return invalid(w, "status", "The selected status is invalid.")
		}
		rec["status"], rec["updated_at"] = st, now
		if st == "resolved" {
			rec["resolved_at"] = now
		}
		return ok200(w, map[string]any{"id": rec["id"]})
	case method == http.MethodPatch && parts[0] == "defect" && len(parts) == 3:
		rec, code := s.defect(w, proj, parts[2])
		if rec == nil {
			return code
		}
		if t, ok := in["title"]; ok {
			ts, isStr := t.(string)
			if !isStr || ts == "" {
				return invalid(w, "title", "The title must be a non-empty string.")
			}
			rec["title"] = ts
		}
		if v, ok := in["severity"]; ok {
			n, isInt := intOf(v)
			if !isInt || n < 0 || int(n) >= len(severitySlugs) {
				return invalid(w, "severity", "The severity must be an integer.")
			}
			rec["severity"] = severitySlugs[n]
		}
		if v, ok := in["tags"]; ok {
			list, isList := v.([]any)
			if !isList {
				return invalid(w, "tags", "The tags must be an array.")
			}
			tags, _, ok := recordStrings(slices.All(list), func(i int, str string) map[string]any {
				return map[string]any{"title": str, "internal_id": i + 1}
			})
			if !ok {
				return invalid(w, "tags", "Each tag must be a string.")
			}
			rec["tags"] = tags
		}
		if v, ok := in["custom_field"]; ok {
			m, isMap := v.(map[string]any)
			if !isMap {
				return invalid(w, "custom_field", "The custom_field must be an object.")
			}
			cfs, id, ok := recordStrings(maps.All(m), func(id string, str string) map[string]any {
				return map[string]any{"id": id, "value": str}
			})
			if !ok {
				return invalid(w, "custom_field."+id, "Values are scalar strings.")
			}
			rec["custom_fields"] = cfs
		}
		rec["updated_at"] = now
		return ok200(w, map[string]any{"id": rec["id"]})
	case method == http.MethodPost && parts[0] == "run" && len(parts) == 3 && parts[2] == "external-issue":
		if !jiraType(in["type"]) {
			return invalid(w, "type", "The selected type is invalid.")
		}
		links, _ := in["links"].([]any)
		for _, l := range links {
			m, _ := l.(map[string]any)
			id, ok := intOf(m["run_id"])
			rec := proj[qsync.KindRun][id]
			if !ok || rec == nil {
				return invalid(w, "links.run_id", "The run does not exist.")
			}
			key, _ := m["external_issue"].(string)
			rec["external_issue"] = map[string]any{"id": key, "type": in["type"], "link": ""}
		}
		return ok200(w, nil)
	case method == http.MethodPost && parts[0] == "case" && len(parts) == 4 && parts[2] == "external-issue" && parts[3] == "attach":
		if !jiraType(in["type"]) {
			return invalid(w, "type", "The selected type is invalid.")
		}
		links, _ := in["links"].([]any)
		if s.caseLinks == nil {
			s.caseLinks = map[string][]string{}
		}
		for _, l := range links {
			m, _ := l.(map[string]any)
			id, ok := intOf(m["case_id"])
			issues, _ := m["external_issues"].([]any)
			if !ok || len(issues) == 0 {
				return invalid(w, "links", "case_id and external_issues are required.")
			}
			k := strings.ToUpper(parts[1]) + "/" + strconv.FormatInt(id, 10)
			for _, is := range issues {
				if str, _ := is.(string); str != "" && !slices.Contains(s.caseLinks[k], str) {
					s.caseLinks[k] = append(s.caseLinks[k], str)
				}
			}
		}
		return ok200(w, nil)
	}
	return fail(w, http.StatusMethodNotAllowed, "Method not allowed.")
}

func jiraType(v any) bool {
	s, _ := v.(string)
	return s == "jira-cloud" || s == "jira-server"
}

func (s *Server) defect(w http.ResponseWriter, proj map[qsync.Kind]map[int64]map[string]any, idText string) (map[string]any, int) {
	id, err := strconv.ParseInt(idText, 10, 64)
	if err != nil || id <= 0 {
		return nil, invalid(w, "id", "The id must be an integer.")
	}
	rec, ok := proj[qsync.KindDefect][id]
	if !ok {
		return nil, fail(w, http.StatusNotFound, "Defect not found.")
	}
	return rec, 0
}

// recordStrings makes one record of each string value in seq (a JSON
// array's or object's); at the first value that is not a string it
// reports that value's key and false.
func recordStrings[K any](seq iter.Seq2[K, any], record func(K, string) map[string]any) ([]any, K, bool) {
	var out []any
	for k, v := range seq {
		str, isStr := v.(string)
		if !isStr {
			return nil, k, false
		}
		out = append(out, record(k, str))
	}
	var none K
	return out, none, true
}
