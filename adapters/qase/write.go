package qase

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// severityIDs are Qase's numeric severities; the defect update endpoint
// takes the number, reads return the slug.
var severityIDs = map[string]int{
	"undefined": 0, "blocker": 1, "critical": 2, "major": 3, "normal": 4, "minor": 5, "trivial": 6,
}

// Severities lists the slugs UpdateDefect accepts.
func Severities() []string {
	out := make([]string, 0, len(severityIDs))
	for s := range severityIDs {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

var _ qsync.EntityWriter = (*Client)(nil)

func defectPath(ref qsync.EntityRef, mid string) string {
	p := "/defect/" + url.PathEscape(ref.Project) + "/"
	if mid != "" {
		p += mid + "/"
	}
	return p + strconv.FormatInt(ref.ID, 10)
}

// SetDefectStatus moves a defect: PATCH /defect/{code}/status/{id}. The API
// takes in_progress, resolved and invalid; it cannot reopen a defect.
func (c *Client) SetDefectStatus(ctx context.Context, ref qsync.EntityRef, status string) error {
	if ref.Kind != qsync.KindDefect {
		return qsync.Permanentf("qase: cannot set the status of a %s", ref.Kind)
	}
	if !slices.Contains(qsync.QaseDefectStatuses, status) {
		return qsync.Permanentf("qase: defect status %q cannot be set through the API (in_progress, resolved or invalid)", status)
	}
	return c.do(ctx, "set_defect_status", http.MethodPatch, defectPath(ref, "status"), nil, map[string]string{"status": status}, nil)
}

// UpdateDefect changes a defect's title, severity and tags (the whole
// list): PATCH /defect/{code}/{id}.
func (c *Client) UpdateDefect(ctx context.Context, ref qsync.EntityRef, u qsync.DefectUpdate) error {
	if ref.Kind != qsync.KindDefect {
		return qsync.Permanentf("qase: cannot update a %s as a defect", ref.Kind)
	}
	body := map[string]any{}
	if u.Title != nil {
		body["title"] = *u.Title
	}
	if u.Severity != nil {
		n, ok := severityIDs[*u.Severity]
		if !ok {
			return qsync.Permanentf("qase: unknown defect severity %q", *u.Severity)
		}
		body["severity"] = n
	}
	if u.Tags != nil {
		body["tags"] = append([]string{}, *u.Tags...)
	}
	if len(u.CustomFields) > 0 {
		body["custom_field"] = u.CustomFields
	}
	if len(body) == 0 {
		return nil
	}
	return c.do(ctx, "update_defect", http.MethodPatch, defectPath(ref, ""), nil, body, nil)
}

// LinkRunIssue links a run to its Jira issue (Qase keeps one per run):
// POST /run/{code}/external-issue. jiraType is jira-cloud or jira-server.
func (c *Client) LinkRunIssue(ctx context.Context, ref qsync.EntityRef, jiraType, issueKey string) error {
	body := map[string]any{"type": jiraType, "links": []map[string]any{{"run_id": ref.ID, "external_issue": issueKey}}}
	return c.do(ctx, "link_run_issue", http.MethodPost, "/run/"+url.PathEscape(ref.Project)+"/external-issue", nil, body, nil)
}

// AttachCaseIssue attaches a Jira issue to a test case:
// POST /case/{code}/external-issue/attach.
func (c *Client) AttachCaseIssue(ctx context.Context, project string, caseID int64, jiraType, issueKey string) error {
	body := map[string]any{"type": jiraType, "links": []map[string]any{{"case_id": caseID, "external_issues": []string{issueKey}}}}
	return c.do(ctx, "attach_case_issue", http.MethodPost, "/case/"+url.PathEscape(project)+"/external-issue/attach", nil, body, nil)
}
