package jirafake

import (
	"fmt"
	"strings"
	"time"
	"unicode"
)

// query is a parsed JQL subset: clauses joined by AND, optional ORDER BY
// created ASC|DESC. Supported clauses: labels = "x", project = "X",
// status = "S", key = "K", created >=|>|<=|< "yyyy/MM/dd[ HH:mm]".
type query struct {
	conds []func(*IssueState) bool
	desc  bool
}

func (q query) match(is *IssueState) bool {
	for _, c := range q.conds {
		if !c(is) {
			return false
		}
	}
	return true
}

type token struct {
	text   string
	quoted bool
}

func tokenize(s string) ([]token, error) {
	var toks []token
	rs := []rune(s)
	for i := 0; i < len(rs); {
		r := rs[i]
		switch {
		case unicode.IsSpace(r):
			i++
		case r == '"' || r == '\'':
			q := r
			var b strings.Builder
			i++
			closed := false
			for i < len(rs) {
				if rs[i] == '\\' && i+1 < len(rs) {
					b.WriteRune(rs[i+1])
					i += 2
					continue
				}
				if rs[i] == q {
					closed = true
					i++
					break
				}
				b.WriteRune(rs[i])
				i++
			}
			if !closed {
				return nil, fmt.Errorf("Error in the JQL Query: unterminated string")
			}
			toks = append(toks, token{text: b.String(), quoted: true})
		case strings.ContainsRune("=!<>~", r):
			j := i + 1
			if j < len(rs) && rs[j] == '=' {
				j++
			}
			toks = append(toks, token{text: string(rs[i:j])})
			i = j
		default:
			j := i
			for j < len(rs) && !unicode.IsSpace(rs[j]) && !strings.ContainsRune("=!<>~\"'", rs[j]) {
				j++
			}
			toks = append(toks, token{text: string(rs[i:j])})
			i = j
		}
	}
	return toks, nil
}

func parseJQL(s string) (query, error) {
	var q query
	if strings.TrimSpace(s) == "" {
		return q, fmt.Errorf("JQL query is empty") // /search/jql rejects unbounded queries
	}
	toks, err := tokenize(s)
	if err != nil {
		return q, err
	}
	// Parentheses group clauses; with AND the only connective they change
	// nothing, so the subset drops them.
	kept := toks[:0]
	for _, t := range toks {
		if t.quoted || strings.Trim(t.text, "()") != "" {
			if !t.quoted {
				t.text = strings.Trim(t.text, "()")
			}
			kept = append(kept, t)
		}
	}
	toks = kept
	kw := func(i int, w string) bool {
		return i < len(toks) && !toks[i].quoted && strings.EqualFold(toks[i].text, w)
	}
	i := 0
	for {
		if i+3 > len(toks) {
			return q, fmt.Errorf("Error in the JQL Query: expected a clause at position %d", i)
		}
		field, op, val := strings.ToLower(toks[i].text), toks[i+1].text, toks[i+2]
		c, err := clause(field, op, val)
		if err != nil {
			return q, err
		}
		q.conds = append(q.conds, c)
		i += 3
		if i == len(toks) {
			return q, nil
		}
		if kw(i, "AND") {
			i++
			continue
		}
		if kw(i, "ORDER") && kw(i+1, "BY") && kw(i+2, "created") {
			i += 3
			if kw(i, "DESC") {
				q.desc = true
				i++
			} else if kw(i, "ASC") {
				i++
			}
			if i != len(toks) {
				return q, fmt.Errorf("Error in the JQL Query: unexpected %q after ORDER BY", toks[i].text)
			}
			return q, nil
		}
		return q, fmt.Errorf("Error in the JQL Query: unsupported %q (the fake knows AND and ORDER BY created)", toks[i].text)
	}
}

func clause(field, op string, val token) (func(*IssueState) bool, error) {
	v := val.text
	switch field {
	case "labels", "project", "status", "key", "issuekey":
		if op != "=" {
			return nil, fmt.Errorf("Error in the JQL Query: operator %q is not supported for %s by the fake", op, field)
		}
		switch field {
		case "labels":
			return func(is *IssueState) bool {
				for _, l := range is.Labels {
					if strings.EqualFold(l, v) {
						return true
					}
				}
				return false
			}, nil
		case "project":
			return func(is *IssueState) bool { return strings.EqualFold(is.Project, v) }, nil
		case "status":
			return func(is *IssueState) bool { return strings.EqualFold(is.Status, v) }, nil
		default:
			return func(is *IssueState) bool { return strings.EqualFold(is.Key, v) }, nil
		}
	case "created":
		at, err := parseJQLTime(v)
		if err != nil {
			return nil, err
		}
		switch op {
		case ">=":
			return func(is *IssueState) bool { return !is.Created.Before(at) }, nil
		case ">":
			return func(is *IssueState) bool { return is.Created.After(at) }, nil
		case "<=":
			return func(is *IssueState) bool { return !is.Created.After(at) }, nil
		case "<":
			return func(is *IssueState) bool { return is.Created.Before(at) }, nil
		}
		return nil, fmt.Errorf("Error in the JQL Query: operator %q is not supported for created by the fake", op)
	}
	return nil, fmt.Errorf("Error in the JQL Query: field %q is not supported by the fake", field)
}

// parseJQLTime reads JQL dates in the fake user's time zone (UTC).
func parseJQLTime(v string) (time.Time, error) {
	for _, layout := range []string{"2006/01/02 15:04", "2006-01-02 15:04", "2006/01/02", "2006-01-02"} {
		if at, err := time.ParseInLocation(layout, v, time.UTC); err == nil {
			return at, nil
		}
	}
	return time.Time{}, fmt.Errorf("Date value %q for field 'created' is invalid. Valid formats include: 'yyyy/MM/dd HH:mm', 'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', 'yyyy-MM-dd'", v)
}
