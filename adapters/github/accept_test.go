package github

import (
	"strings"
	"testing"
	"time"
)

// TestIssueReadsAcceptJSON: go-github v60 sends only a preview media type
// on issue reads; the adapter must accept GitHub's JSON type.
func TestIssueReadsAcceptJSON(t *testing.T) {
	h := setup(t)
	is := h.create(t, spec("x"), marker(1))
	h.fake.ResetLog()
	if _, err := h.tr.Get(ctx(t), is.Ref); err != nil {
		t.Fatal(err)
	}
	if _, err := h.tr.List(ctx(t), repo); err != nil {
		t.Fatal(err)
	}
	if _, err := h.tr.Find(ctx(t), repo, marker(1), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.tr.HasComment(ctx(t), is.Ref, "c"); err != nil {
		t.Fatal(err)
	}
	reqs := h.fake.Requests()
	if len(reqs) != 4 {
		t.Fatalf("requests = %+v", reqs)
	}
	for _, r := range reqs {
		if !strings.Contains(r.Accept, "application/vnd.github+json") {
			t.Errorf("%s %s sent Accept %q", r.Method, r.Path, r.Accept)
		}
	}
}
