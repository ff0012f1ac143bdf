package github

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestBodyStampRoundTrip(t *testing.T) {
	id := "qase-sync:bugs:QA/defect/1"
	cases := []struct{ user string }{{""}, {"text"}, {"line1\r\nline2\r\n"}, {strings.Repeat("ü", maxBody)}}
	for _, c := range cases {
		body := composeBody(c.user, markerComment(id))
		if utf8.RuneCountInString(body) > maxBody {
			t.Fatalf("%d runes", utf8.RuneCountInString(body))
		}
		user, got := splitBody(body)
		if got != id {
			t.Fatalf("marker %q", got)
		}
		if len(c.user) < 100 && user != c.user {
			t.Fatalf("user %q, want %q", user, c.user)
		}
	}
	// GitHub's web editor stores CRLF; a human may move the stamp.
	user, got := splitBody("a\r\n\r\n<!-- qase-sync:marker " + id + " -->\r\nafter")
	if got != id || user != "a\r\nafter" {
		t.Fatalf("%q %q", user, got)
	}
	if stampSafe("a b-->c") != "a_b--_c" {
		t.Fatal(stampSafe("a b-->c"))
	}
	if _, id := splitBody("no stamp"); id != "" {
		t.Fatal(id)
	}
}
