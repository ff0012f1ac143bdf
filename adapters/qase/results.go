package qase

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// Test results, case titles and recent runs, for failure routes
// (qsync.ResultSource).

var _ qsync.ResultSource = (*Client)(nil)

type listPage struct {
	Total    int64            `json:"total"`
	Filtered int64            `json:"filtered"`
	Count    int64            `json:"count"`
	Entities []map[string]any `json:"entities"`
}

// RunResults pages through GET /result/{code}?run={id}&status={status}.
func (c *Client) RunResults(ctx context.Context, project string, run int64, status string, fn func(qsync.FailureResult) error) error {
	path := "/result/" + url.PathEscape(project)
	for offset := 0; ; {
		q := url.Values{"run": {strconv.FormatInt(run, 10)}, "status": {status},
			"limit": {strconv.Itoa(pageLimit)}, "offset": {strconv.Itoa(offset)}}
		var page listPage
		if err := c.get(ctx, "list_results", path, q, &page); err != nil {
			return err
		}
		for _, e := range page.Entities {
			if err := fn(resultOf(e, run)); err != nil {
				return err
			}
		}
		count := page.Count
		if count == 0 {
			count = int64(len(page.Entities))
		}
		offset += int(count)
		switch {
		case count < pageLimit, page.Filtered > 0 && int64(offset) >= page.Filtered:
			return nil
		case offset > maxOffset:
			return fmt.Errorf("%w (results of run %s/%d)", ErrListTruncated, project, run)
		}
	}
}

// RunResultTotal counts the run's results of any status: one page of one
// result, whose filtered count is the answer.
func (c *Client) RunResultTotal(ctx context.Context, project string, run int64) (int, error) {
	q := url.Values{"run": {strconv.FormatInt(run, 10)}, "limit": {"1"}, "offset": {"0"}}
	var page listPage
	if err := c.get(ctx, "list_results", "/result/"+url.PathEscape(project), q, &page); err != nil {
		return 0, err
	}
	return int(page.Filtered), nil
}

// CaseTitle reads GET /case/{code}/{id}.
func (c *Client) CaseTitle(ctx context.Context, project string, id int64) (string, bool, error) {
	var m map[string]any
	err := c.get(ctx, "get_case", "/case/"+url.PathEscape(project)+"/"+strconv.FormatInt(id, 10), nil, &m)
	if errors.Is(err, qsync.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	t, _ := m["title"].(string)
	return t, true, nil
}

// endedRuns are the run statuses whose results are final.
const endedRuns = "passed,failed,aborted"

// RecentRuns lists the newest ended runs: the listing's count first, then
// the last page (Qase lists runs oldest first).
func (c *Client) RecentRuns(ctx context.Context, project string, limit int) ([]int64, error) {
	limit = min(max(limit, 1), pageLimit)
	path := "/run/" + url.PathEscape(project)
	var head listPage
	if err := c.get(ctx, "list_run", path, url.Values{"status": {endedRuns}, "limit": {"1"}, "offset": {"0"}}, &head); err != nil {
		return nil, err
	}
	offset := max(int(head.Filtered)-limit, 0)
	if offset > maxOffset {
		offset = maxOffset
	}
	var page listPage
	q := url.Values{"status": {endedRuns}, "limit": {strconv.Itoa(limit)}, "offset": {strconv.Itoa(offset)}}
	if err := c.get(ctx, "list_run", path, q, &page); err != nil {
		return nil, err
	}
	var ids []int64
	for _, e := range page.Entities {
		if id, ok := toInt64(e["id"]); ok && id > 0 {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	slices.Reverse(ids)
	return ids, nil
}

// resultOf reads a result record leniently: ids may be strings, texts
// null, end_time RFC 3339 or "Y-m-d H:i:s" (UTC assumed).
func resultOf(m map[string]any, run int64) qsync.FailureResult {
	r := qsync.FailureResult{RunID: run}
	r.Hash, _ = m["hash"].(string)
	if r.Hash == "" {
		r.Hash, _ = m["result_hash"].(string)
	}
	if id, ok := toInt64(m["run_id"]); ok {
		r.RunID = id
	}
	r.CaseID, _ = toInt64(m["case_id"])
	r.Status, _ = m["status"].(string)
	r.Status = strings.ToLower(r.Status)
	r.Message, _ = m["comment"].(string)
	r.Stacktrace, _ = m["stacktrace"].(string)
	if s, ok := m["end_time"].(string); ok {
		for _, layout := range []string{time.RFC3339, time.DateTime} {
			if t, err := time.Parse(layout, s); err == nil {
				r.EndTime = t.UTC()
				break
			}
		}
	}
	r.Attachments = attachmentURLs(m["attachments"])
	if steps, ok := m["steps"].([]any); ok {
		r.FailedStep, r.Attachments = failedStep(steps, "", r.Attachments)
	}
	return r
}

func attachmentURLs(v any) []string {
	var out []string
	atts, _ := v.([]any)
	for _, a := range atts {
		if am, ok := a.(map[string]any); ok {
			if u, _ := am["url"].(string); u != "" {
				out = append(out, u)
			}
		}
	}
	return out
}

// stepFailed is a failed step's status in results (TestStepResult.status).
const stepFailed = 2

// failedStep finds the first failed step, depth first (nested steps are
// numbered 1.2.1), as "position: comment", and adds its attachments.
func failedStep(steps []any, prefix string, atts []string) (string, []string) {
	for i, s := range steps {
		sm, ok := s.(map[string]any)
		if !ok {
			continue
		}
		pos := prefix + strconv.Itoa(i+1)
		if st, _ := toInt64(sm["status"]); st == stepFailed {
			if nested, ok := sm["steps"].([]any); ok {
				if found, a := failedStep(nested, pos+".", atts); found != "" {
					return found, a
				}
			}
			text := pos
			if c, _ := sm["comment"].(string); strings.TrimSpace(c) != "" {
				text += ": " + strings.TrimSpace(c)
			}
			return text, append(atts, attachmentURLs(sm["attachments"])...)
		}
	}
	return "", atts
}

// RecordedRun reads a recorded run, the fixture `plan --run` takes: the
// Qase API's own JSON for the run and its results, and optionally cases
// for their titles:
//
//	{"project": "SHOP", "run": {"id": 42, ...},
//	 "results": [{"hash": ..., "case_id": ..., "status": "failed", ...}],
//	 "cases": [{"id": 7, "title": ...}]}
//
// results may also be a list page ({"entities": [...]}) as GET
// /result/{code} answers it. total defaults to the number of results.
func RecordedRun(data []byte) (qsync.RunRecord, error) {
	var doc struct {
		Project string          `json:"project"`
		Run     map[string]any  `json:"run"`
		Total   int             `json:"total"`
		Results json.RawMessage `json:"results"`
		Cases   []struct {
			ID    json.Number `json:"id"`
			Title string      `json:"title"`
		} `json:"cases"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return qsync.RunRecord{}, fmt.Errorf("recorded run: %w", err)
	}
	run, ok := toInt64(doc.Run["id"])
	if !ok || run <= 0 {
		return qsync.RunRecord{}, fmt.Errorf("recorded run: run.id is missing or not a positive integer")
	}
	if !projectCode.MatchString(doc.Project) {
		return qsync.RunRecord{}, fmt.Errorf("recorded run: project %q is not a Qase project code", doc.Project)
	}
	var results []map[string]any
	var page struct {
		Entities []map[string]any `json:"entities"`
	}
	rd := json.NewDecoder(bytes.NewReader(doc.Results))
	rd.UseNumber()
	if err := rd.Decode(&results); err != nil {
		rd = json.NewDecoder(bytes.NewReader(doc.Results))
		rd.UseNumber()
		if err := rd.Decode(&page); err != nil {
			return qsync.RunRecord{}, fmt.Errorf("recorded run: results: want a list of results or a list page")
		}
		results = page.Entities
	}
	rec := qsync.RunRecord{Project: doc.Project, RunID: run, Total: doc.Total, CaseTitles: map[int64]string{}}
	rec.Title, _ = doc.Run["title"].(string)
	for _, m := range results {
		r := resultOf(m, run)
		if r.RunID != run {
			continue // a result of another run
		}
		rec.Results = append(rec.Results, r)
	}
	for _, c := range doc.Cases {
		if id, err := c.ID.Int64(); err == nil {
			rec.CaseTitles[id] = c.Title
		}
	}
	rec.Total = max(rec.Total, len(rec.Results))
	return rec, nil
}
