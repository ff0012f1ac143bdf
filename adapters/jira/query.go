package jira

import (
	"context"
	"strings"

	qsync "github.com/qase-sync/qase-sync/sync"
)

var _ qsync.IssueQuerier = (*Tracker)(nil)

// Query returns the issues a JQL query finds (the bulk form of links
// adopt). The project is the route's; a query that names none is limited
// to it. Jira's index lags writes a little, which adoption can afford.
func (t *Tracker) Query(ctx context.Context, project, jql string) ([]qsync.Issue, error) {
	jql = strings.TrimSpace(jql)
	if jql == "" {
		return nil, qsync.Permanentf("jira query: empty JQL")
	}
	if project != "" && !strings.Contains(strings.ToLower(jql), "project") {
		jql = "project = " + jqlQuote(project) + " AND (" + jql + ")"
	}
	return t.search(ctx, jql+" ORDER BY created ASC")
}
