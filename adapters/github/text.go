package github

import (
	"regexp"
	"strings"
	"unicode/utf8"
)

// GitHub's limits, in characters (GitHub validates lengths in characters, so
// runes are counted here, not bytes).
const (
	maxTitle     = 256
	maxBody      = 65536
	maxLabelLen  = 50
	maxLabels    = 100
	maxAssignees = 10
)

const truncNotice = "\n\n…(truncated by qase-sync)"

var (
	markerRe  = regexp.MustCompile(`(?:\r?\n){0,2}<!-- qase-sync:marker (\S+) -->`)
	commentRe = regexp.MustCompile(`<!-- qase-sync:comment (\S+) -->`)
)

// markerComment is the hidden stamp that ties an issue to its key. HTML
// comments do not render, so it survives in the body unseen.
func markerComment(id string) string { return "<!-- qase-sync:marker " + stampSafe(id) + " -->" }

// commentStamp marks a posted comment so HasComment can find it again.
func commentStamp(id string) string { return "<!-- qase-sync:comment " + stampSafe(id) + " -->" }

// stampSafe keeps an id from ending the HTML comment early or splitting
// the \S+ the parsers expect. Marker ids (qase-sync:route:P/kind/id) pass
// unchanged.
func stampSafe(id string) string {
	id = strings.ReplaceAll(id, "-->", "--_")
	return strings.Join(strings.Fields(id), "_")
}

// composeBody appends the stamp to the user text, cutting the user text
// (never the stamp) so the whole stays within GitHub's body limit.
func composeBody(user, stamp string) string {
	if stamp == "" {
		return truncateRunes(user, maxBody, truncNotice)
	}
	suffix := "\n\n" + stamp
	if user == "" {
		return stamp
	}
	return truncateRunes(user, maxBody-utf8.RuneCountInString(suffix), truncNotice) + suffix
}

// splitBody separates the user text from the marker stamp.
func splitBody(body string) (user, markerID string) {
	if m := markerRe.FindStringSubmatch(body); m != nil {
		markerID = m[1]
	}
	return markerRe.ReplaceAllString(body, ""), markerID
}

// truncateRunes cuts s to at most max runes, ending with suffix when cut.
func truncateRunes(s string, max int, suffix string) string {
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	keep := max - utf8.RuneCountInString(suffix)
	if keep < 0 {
		keep = 0
	}
	i, n := 0, 0
	for i < len(s) && n < keep {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
		n++
	}
	return s[:i] + suffix
}

// cleanTitle makes a title GitHub accepts; ok=false when nothing is left.
func cleanTitle(s string) (string, bool) {
	s = strings.TrimSpace(strings.Join(strings.Fields(s), " "))
	if s == "" {
		return "", false
	}
	return truncateRunes(s, maxTitle, "…"), true
}

// cleanLabel trims a label to GitHub's rules; "" means drop it.
func cleanLabel(s string) string {
	s = strings.TrimSpace(s)
	// A comma would split the name in the list endpoint's labels filter.
	s = strings.ReplaceAll(s, ",", " ")
	return strings.TrimSpace(truncateRunes(s, maxLabelLen, ""))
}

// cleanLabels trims, drops empties, dedupes case-insensitively (GitHub
// labels are) and caps the count, keeping first the labels in keepFirst.
func cleanLabels(labels []string, keepFirst ...string) []string {
	seen := map[string]bool{}
	var out []string
	for _, l := range append(append([]string(nil), keepFirst...), labels...) {
		l = cleanLabel(l)
		k := strings.ToLower(l)
		if l == "" || seen[k] {
			continue
		}
		if len(out) == maxLabels {
			break
		}
		seen[k] = true
		out = append(out, l)
	}
	return out
}

// cleanAssignees dedupes logins and caps them at GitHub's maximum.
func cleanAssignees(in []string) []string {
	seen := map[string]bool{}
	out := []string{}
	for _, a := range in {
		a = strings.TrimPrefix(strings.TrimSpace(a), "@")
		k := strings.ToLower(a)
		if a == "" || seen[k] || len(out) == maxAssignees {
			continue
		}
		seen[k] = true
		out = append(out, a)
	}
	return out
}
