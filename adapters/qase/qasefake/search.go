package qasefake

import (
	"cmp"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// GET /v1/search: Qase Query Language, as much of it as qase-sync sends.
// A query is conditions joined by "and", optionally followed by
// "order by ATTR asc|desc". Conditions: entity = "defect", project =
// "CODE", and updatedAt / createdAt / id compared (=, !=, <, <=, >, >=)
// with an integer (times as Unix seconds). Anything else is answered 400,
// as Qase answers a query it cannot parse, so a client that drifts from
// what the fake understands fails its tests instead of passing them.
// Records carry defect_id (the id in the project) and updated_at; an
// entity put without updated_at is stamped with the time of its last Put.

// qqlCond is one "attr op value" condition.
type qqlCond struct {
	attr, op string
	str      string
	num      int64
	isNum    bool
}

type qqlQuery struct {
	conds []qqlCond
	order string
	desc  bool
}

var qqlAttrs = map[string]bool{"entity": false, "project": false, "updatedAt": true, "createdAt": true, "id": true}

func parseQQL(q string) (qqlQuery, error) {
	toks, err := qqlTokens(q)
	if err != nil {
		return qqlQuery{}, err
	}
	var out qqlQuery
	i := 0
	next := func() string {
		if i >= len(toks) {
			return ""
		}
		i++
		return toks[i-1]
	}
	for {
		attr := next()
		numeric, ok := qqlAttrs[attr]
		if !ok {
			return out, fmt.Errorf("unknown attribute %q", attr)
		}
		c := qqlCond{attr: attr, op: next()}
		if !slices.Contains([]string{"=", "!=", "<", "<=", ">", ">="}, c.op) || (!numeric && c.op != "=") {
			return out, fmt.Errorf("operator %q not valid for %s", c.op, attr)
		}
		v := next()
		if numeric {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return out, fmt.Errorf("%s takes an integer, not %q", attr, v)
			}
			c.num, c.isNum = n, true
		} else {
			s, ok := strings.CutPrefix(v, "\"")
			if !ok || !strings.HasSuffix(s, "\"") {
				return out, fmt.Errorf("%s takes a quoted string, not %q", attr, v)
			}
			c.str = strings.TrimSuffix(s, "\"")
		}
		out.conds = append(out.conds, c)
		switch w := strings.ToLower(next()); w {
		case "and":
			continue
		case "":
			return out, nil
		case "order":
			if strings.ToLower(next()) != "by" {
				return out, fmt.Errorf("expected by after order")
			}
			out.order = next()
			if numeric, ok := qqlAttrs[out.order]; !ok || !numeric {
				return out, fmt.Errorf("cannot order by %q", out.order)
			}
			switch d := strings.ToLower(next()); d {
			case "", "asc":
			case "desc":
				out.desc = true
			default:
				return out, fmt.Errorf("unexpected %q after order by", d)
			}
			if i != len(toks) {
				return out, fmt.Errorf("unexpected %q after order by", toks[i])
			}
			return out, nil
		default:
			return out, fmt.Errorf("unexpected %q (the fake knows and and order by only)", w)
		}
	}
}

func qqlTokens(q string) ([]string, error) {
	var toks []string
	for i := 0; i < len(q); {
		r := rune(q[i])
		switch {
		case unicode.IsSpace(r):
			i++
		case r == '"':
			j := strings.IndexByte(q[i+1:], '"')
			if j < 0 {
				return nil, fmt.Errorf("unterminated string")
			}
			toks = append(toks, q[i:i+j+2])
			i += j + 2
		case strings.ContainsRune("=!<>", r):
			j := i + 1
			if j < len(q) && q[j] == '=' {
				j++
			}
			toks = append(toks, q[i:j])
			i = j
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			j := i
			for j < len(q) && (q[j] == '-' || q[j] == '_' || unicode.IsLetter(rune(q[j])) || unicode.IsDigit(rune(q[j]))) {
				j++
			}
			toks = append(toks, q[i:j])
			i = j
		default:
			return nil, fmt.Errorf("unexpected %q", r)
		}
	}
	return toks, nil
}

func (c qqlCond) match(v int64) bool {
	switch c.op {
	case "=":
		return v == c.num
	case "!=":
		return v != c.num
	case "<":
		return v < c.num
	case "<=":
		return v <= c.num
	case ">":
		return v > c.num
	}
	return v >= c.num
}

// updatedAt is the record's update time: its updated_at, else when it
// was last put.
func (s *Server) updatedAt(project string, kind qsync.Kind, id int64, rec map[string]any) time.Time {
	if v, ok := rec["updated_at"].(string); ok {
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			return t
		}
	}
	return s.touched[touchKey(project, kind, id)]
}

func touchKey(project string, kind qsync.Kind, id int64) string {
	return strings.ToUpper(project) + "/" + string(kind) + "/" + strconv.FormatInt(id, 10)
}

func (s *Server) search(w http.ResponseWriter, q url.Values) int {
	limit, offset, status := s.paging(w, q)
	if status != 0 {
		return status
	}
	query := q.Get("query")
	if query == "" || len(query) > 1000 {
		return invalid(w, "query", "The query must be between 1 and 1000 characters.")
	}
	parsed, err := parseQQL(query)
	if err != nil {
		return invalid(w, "query", "The query is invalid: "+err.Error())
	}
	entity, project := "case", ""
	for _, c := range parsed.conds {
		switch c.attr {
		case "entity":
			entity = c.str
		case "project":
			project = strings.ToUpper(c.str)
		}
	}
	if entity != "defect" {
		return invalid(w, "query", fmt.Sprintf("The fake searches defects only, not %q.", entity))
	}
	kind := qsync.KindDefect
	type hit struct {
		project string
		id      int64
		rec     map[string]any
		updated time.Time
	}
	var hits []hit
	for code, p := range s.projects {
		if project != "" && code != project {
			continue
		}
		for id, rec := range p[kind] {
			h := hit{project: code, id: id, rec: rec, updated: s.updatedAt(code, kind, id, rec)}
			ok := true
			for _, c := range parsed.conds {
				switch c.attr {
				case "updatedAt":
					ok = ok && c.match(h.updated.Unix())
				case "createdAt":
					ct, _ := time.Parse(time.RFC3339, fmt.Sprint(rec["created_at"]))
					ok = ok && c.match(ct.Unix())
				case "id":
					ok = ok && c.match(id)
				}
			}
			if ok {
				hits = append(hits, h)
			}
		}
	}
	slices.SortFunc(hits, func(a, b hit) int {
		c := 0
		switch parsed.order {
		case "updatedAt":
			c = a.updated.Compare(b.updated)
		}
		if parsed.desc {
			c = -c
		}
		if c == 0 {
			c = strings.Compare(a.project, b.project)
		}
		if c == 0 {
			c = cmp.Compare(a.id, b.id)
		}
		return c
	})
	page := []map[string]any{}
	for i := offset; i < len(hits) && len(page) < limit; i++ {
		h := hits[i]
		rec := make(map[string]any, len(h.rec)+2)
		for k, v := range h.rec {
			rec[k] = v
		}
		rec["defect_id"] = h.id
		if _, ok := rec["updated_at"]; !ok {
			rec["updated_at"] = h.updated.UTC().Format(time.RFC3339)
		}
		page = append(page, rec)
	}
	return ok200(w, map[string]any{"total": len(hits), "entities": page})
}

// Calls counts the requests served per endpoint, named as in the API
// spec ("GET /search", "GET /defect/{code}", "GET /defect/{code}/{id}").
func (s *Server) Calls() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for _, r := range s.requests {
		parts := strings.Split(strings.Trim(strings.TrimPrefix(r.Path, "/v1"), "/"), "/")
		ep := "/" + parts[0]
		if len(parts) > 1 {
			ep += "/{code}"
		}
		if len(parts) > 2 {
			ep += "/{id}"
		}
		out[r.Method+" "+ep]++
	}
	return out
}
