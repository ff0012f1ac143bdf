package github

import (
	"context"

	gh "github.com/google/go-github/v60/github"

	qsync "github.com/qase-sync/qase-sync/sync"
)

var _ qsync.IssueQuerier = (*Tracker)(nil)

// Query returns the issues in project carrying the label query, oldest
// first, through the issues list endpoint (read-your-writes consistent,
// unlike search): the bulk form of links adopt.
func (t *Tracker) Query(ctx context.Context, project, label string) ([]qsync.Issue, error) {
	label = cleanLabel(label)
	if label == "" {
		return nil, qsync.Permanentf("github query: empty label")
	}
	var out []qsync.Issue
	err := t.pagesLabeled(ctx, "query", project, label, "asc", func(batch []*gh.Issue) bool {
		for _, is := range batch {
			if !is.IsPullRequest() {
				out = append(out, t.convert(project, is))
			}
		}
		return true
	})
	return out, err
}
