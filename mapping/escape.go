package mapping

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Escaping of values interpolated into body and comment templates, per
// tracker markup. The template author's literal text is never touched;
// every value an action prints is passed through the route's escaper
// (see rewriteActions), unless the template marks it with raw.

// Markup names the text format a tracker renders.
type Markup string

// Markups.
const (
	MarkupJira     Markup = "jira"     // Jira wiki markup (REST v2)
	MarkupMarkdown Markup = "markdown" // GitHub-flavoured Markdown
	MarkupPlain    Markup = "plain"    // no markup (dryrun)
)

// markupFor maps a tracker type to its markup.
func markupFor(trackerType string) Markup {
	switch trackerType {
	case "jira":
		return MarkupJira
	case "github":
		return MarkupMarkdown
	}
	return MarkupPlain
}

// Escape makes s render literally in the given markup.
func Escape(m Markup, s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	switch m {
	case MarkupJira:
		return escapeLines(s, escapeJiraLine)
	case MarkupMarkdown:
		return escapeLines(s, escapeMarkdownLine)
	}
	return s
}

func escapeLines(s string, f func(string, *strings.Builder)) string {
	var b strings.Builder
	b.Grow(len(s) + len(s)/8)
	for i, line := range strings.Split(s, "\n") {
		if i > 0 {
			b.WriteByte('\n')
		}
		f(line, &b)
	}
	return b.String()
}

func isWordRune(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }

// intraword reports whether rs[i] sits between two word characters, where
// emphasis markers cannot open or close (so snake_case and URLs with
// hyphens stay readable and clickable).
func intraword(rs []rune, i int) bool {
	return i > 0 && i+1 < len(rs) && isWordRune(rs[i-1]) && isWordRune(rs[i+1])
}

// escapeJiraLine escapes one line of Jira wiki markup.
//
// Jira has no escape for the backslash itself ("\\" is a forced line
// break), so a literal backslash becomes the numeric entity; & is escaped
// so user text cannot smuggle entities. Phrase markers (* _ + - ^ ~ ??)
// are escaped with a backslash, brackets and braces always (links,
// mentions [~user], macros {html}), and line-leading block markers
// (# lists, h1. headings, bq. quotes) are neutralized.
func escapeJiraLine(line string, b *strings.Builder) {
	rs := []rune(line)
	start := 0
	for start < len(rs) && (rs[start] == ' ' || rs[start] == '\t') {
		start++
	}
	for i, r := range rs {
		if i == start {
			rest := string(rs[i:])
			if len(rest) >= 3 && rest[0] == 'h' && rest[1] >= '1' && rest[1] <= '6' && rest[2] == '.' {
				b.WriteString("&#104;")
				continue
			}
			if strings.HasPrefix(rest, "bq.") {
				b.WriteString("&#98;")
				continue
			}
			if r == '#' {
				b.WriteString(`\#`)
				continue
			}
		}
		switch r {
		case '\\':
			b.WriteString("&#92;")
		case '&':
			b.WriteString("&amp;")
		case '{', '}', '[', ']', '*', '^', '~', '|', '!':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '_', '+', '-':
			if intraword(rs, i) {
				b.WriteRune(r)
			} else {
				b.WriteByte('\\')
				b.WriteRune(r)
			}
		case '?':
			if (i > 0 && rs[i-1] == '?') || (i+1 < len(rs) && rs[i+1] == '?') {
				b.WriteString(`\?`)
			} else {
				b.WriteRune(r)
			}
		default:
			b.WriteRune(r)
		}
	}
}

// escapeMarkdownLine escapes one line of GitHub-flavoured Markdown.
//
// < > & become entities, so user text can neither open HTML (no <!--, so
// it cannot fake or hide the qase-sync marker) nor smuggle entities.
// Inline markup characters get a backslash; @mentions get a zero-width
// space (the Dependabot trick) so Qase text never pings anyone; line
// starts that would begin a block (heading, quote, list, indented code,
// setext underline) are neutralized.
func escapeMarkdownLine(line string, b *strings.Builder) {
	rs := []rune(line)
	start := 0
	for start < len(rs) && (rs[start] == ' ' || rs[start] == '\t') {
		start++
	}
	if start > 0 && (start >= 4 || strings.ContainsRune(string(rs[:start]), '\t')) {
		// Indented code would show our entities verbatim: keep it a paragraph.
		b.WriteString("&#8203;")
	}
	for i, r := range rs {
		if i == start {
			switch r {
			case '-', '+', '=':
				b.WriteByte('\\')
				b.WriteRune(r)
				continue
			}
			if unicode.IsDigit(r) {
				// "1." or "1)" starts an ordered list.
				j := i
				for j < len(rs) && unicode.IsDigit(rs[j]) {
					j++
				}
				if j < len(rs) && (rs[j] == '.' || rs[j] == ')') {
					b.WriteString(string(rs[i:j]))
					b.WriteByte('\\')
					b.WriteRune(rs[j])
					// Skip what we wrote.
					escapeMarkdownRest(rs, j+1, b)
					return
				}
			}
		}
		if escapeMarkdownRune(rs, i, b) {
			continue
		}
		b.WriteRune(r)
	}
}

func escapeMarkdownRest(rs []rune, from int, b *strings.Builder) {
	for i := from; i < len(rs); i++ {
		if !escapeMarkdownRune(rs, i, b) {
			b.WriteRune(rs[i])
		}
	}
}

// escapeMarkdownRune writes rs[i] escaped and returns true, or returns
// false when it needs no escaping.
func escapeMarkdownRune(rs []rune, i int, b *strings.Builder) bool {
	r := rs[i]
	switch r {
	case '<':
		b.WriteString("&lt;")
	case '>':
		b.WriteString("&gt;")
	case '&':
		b.WriteString("&amp;")
	case '\\', '`', '*', '[', ']', '|', '~', '#', '$':
		b.WriteByte('\\')
		b.WriteRune(r)
	case '_':
		if intraword(rs, i) {
			return false
		}
		b.WriteString(`\_`)
	case '@':
		// A mention needs a non-word character (or nothing) before @;
		// e-mail addresses stay as they are.
		if i > 0 && (isWordRune(rs[i-1]) || rs[i-1] == '.') {
			return false
		}
		b.WriteString("@&#8203;")
	default:
		return false
	}
	return true
}

// codeBlock renders s as a literal block in the markup. Inside a block
// nothing is markup, but the raw text is still scanned for the
// qase-sync marker, so "<!--" is broken up with a zero-width space.
func codeBlock(m Markup, s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.TrimRight(s, "\n")
	switch m {
	case MarkupMarkdown:
		s = strings.ReplaceAll(s, "<!--", "<!\u200b--")
		longest, run := 0, 0
		for _, r := range s {
			if r == '`' {
				run++
				longest = max(longest, run)
			} else {
				run = 0
			}
		}
		fence := strings.Repeat("`", max(3, longest+1))
		return "\n" + fence + "\n" + s + "\n" + fence + "\n"
	case MarkupJira:
		s = strings.ReplaceAll(s, "{noformat}", "{noformat\u200b}")
		return "\n{noformat}\n" + s + "\n{noformat}\n"
	}
	return s
}

// plainLine collapses whitespace runs (newlines included) into single
// spaces and trims: titles and other single-line fields.
func plainLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// truncateRunes cuts s to at most n runes, ending in "…" when cut.
func truncateRunes(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	rs := []rune(s)
	if n == 1 {
		return "…"
	}
	return strings.TrimRightFunc(string(rs[:n-1]), unicode.IsSpace) + "…"
}
