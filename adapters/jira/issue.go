package jira

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"strings"
	"time"

	jira "github.com/andygrunwald/go-jira"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// Create files the issue in one request carrying the whole marker: the
// marker label and the shared label, and the marker property (the create
// body's "properties"). Jira answers a create with the id and key only, so
// nothing is read back: the issue returned is what was sent, with
// MarkerID set when the request carried every part of the marker, and no
// Status (the workflow decides where a new issue starts; the engine asks
// SetStatus, which reads it, only when the spec names a status). It does
// not transition.
func (t *Tracker) Create(ctx context.Context, spec qsync.IssueSpec, m qsync.Marker) (qsync.Issue, error) {
	if spec.Project == "" {
		return qsync.Issue{}, qsync.Permanentf("jira create: spec has no project")
	}
	typ := spec.Type
	if typ == "" {
		typ = "Task"
	}
	custom, err := customValues(spec.Fields)
	if err != nil {
		return qsync.Issue{}, err
	}
	fields := map[string]any{
		"project":   map[string]string{"key": spec.Project},
		"issuetype": map[string]string{"name": typ},
		"summary":   Title(spec.Title),
		"labels":    t.createLabels(spec.Labels, m),
	}
	if spec.Body != "" {
		fields["description"] = spec.Body
	}
	if spec.Priority != "" {
		fields["priority"] = map[string]string{"name": spec.Priority}
	}
	assignee := ""
	if len(spec.Assignees) > 0 {
		assignee = spec.Assignees[0] // Jira has one assignee
	}
	if assignee != "" {
		fields["assignee"] = map[string]string{t.userField: assignee}
	}
	if len(spec.Components) > 0 {
		cs := make([]map[string]string, 0, len(spec.Components))
		for _, c := range spec.Components {
			cs = append(cs, map[string]string{"name": c})
		}
		fields["components"] = cs
	}
	maps.Copy(fields, custom)
	props := []entityProperty{}
	if m.ID != "" {
		props = append(props, entityProperty{Key: PropertyKey, Value: markerProperty{Marker: m.ID}})
	}
	req := createRequest{Fields: fields, Properties: props}

	var created createdIssue
	err = t.call(ctx, "create", nfCreate, func(ctx context.Context) (*jira.Response, error) {
		return t.do(ctx, "POST", "rest/api/2/issue", req, &created)
	})
	if err != nil {
		return qsync.Issue{}, err
	}
	if created.ID == "" {
		// Committed, but we cannot address it: let the engine look it up.
		return qsync.Issue{}, fmt.Errorf("jira create: answer carries no issue id")
	}
	t.remember(created.ID)
	labels := fields["labels"].([]string)
	is := qsync.Issue{
		Ref: qsync.IssueRef{Project: spec.Project, ID: created.ID, Key: created.Key, URL: t.browseURL(created.Key)},
		IssueFields: qsync.IssueFields{Title: Title(spec.Title), Body: spec.Body, Labels: labels, Priority: spec.Priority,
			Components: spec.Components, Fields: spec.Fields},
		CreatedAt: t.now(),
	}
	if assignee != "" {
		is.Assignees = []string{assignee}
	}
	// The marker as the read path judges it (markerOf), applied to what the
	// request carried.
	sent := rawIssue{Properties: map[string]json.RawMessage{}}
	for _, p := range props {
		b, _ := json.Marshal(p.Value)
		sent.Properties[p.Key] = b
	}
	is.MarkerID = t.markerOf(sent, labels)
	return is, nil
}

// createRequest is the create-issue body: fields plus the entity
// properties Jira stores with the new issue.
type createRequest struct {
	Fields     map[string]any   `json:"fields"`
	Properties []entityProperty `json:"properties,omitempty"`
}

type entityProperty struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

type createdIssue struct {
	ID  string `json:"id"`
	Key string `json:"key"`
}

// Mark stamps m on an existing issue as Create does: the shared label and
// the marker label (added, so labels people set stay) and the marker
// property. One read, then only the writes still missing; a fully marked
// issue costs no write.
func (t *Tracker) Mark(ctx context.Context, ref qsync.IssueRef, m qsync.Marker) error {
	id := issueID(ref)
	if id == "" {
		return qsync.Permanentf("jira mark: issue ref has no id or key")
	}
	if m.ID == "" || labelSafe(m.Label) == "" {
		return qsync.Permanentf("jira mark %s: empty marker", ref)
	}
	var raw rawIssue
	path := "rest/api/2/issue/" + url.PathEscape(id) + "?fields=labels&properties=" + PropertyKey
	err := t.call(ctx, "get", nfGone, func(ctx context.Context) (*jira.Response, error) {
		return t.do(ctx, "GET", path, nil, &raw)
	})
	if err != nil {
		return err
	}
	var have []string
	decode(raw.Fields["labels"], &have)
	var ops []map[string]string
	for _, l := range []string{t.sharedLabel, labelSafe(m.Label)} {
		if !hasLabel(have, l) {
			ops = append(ops, map[string]string{"add": l})
		}
	}
	if len(ops) > 0 {
		data := map[string]any{"update": map[string]any{"labels": ops}}
		err := t.call(ctx, "update", nfGone, func(ctx context.Context) (*jira.Response, error) {
			return t.client.Issue.UpdateIssueWithContext(ctx, id, data)
		})
		if err != nil {
			return err
		}
	}
	var mp markerProperty
	if decode(raw.Properties[PropertyKey], &mp) && mp.Marker == m.ID {
		return nil
	}
	return t.putMarker(ctx, id, m)
}

func hasLabel(labels []string, l string) bool {
	for _, x := range labels {
		if x == l {
			return true
		}
	}
	return false
}

func (t *Tracker) putMarker(ctx context.Context, id string, m qsync.Marker) error {
	path := fmt.Sprintf("rest/api/2/issue/%s/properties/%s", url.PathEscape(id), PropertyKey)
	return t.call(ctx, "property", nfGone, func(ctx context.Context) (*jira.Response, error) {
		return t.do(ctx, "PUT", path, markerProperty{Marker: m.ID}, nil)
	})
}

type markerProperty struct {
	Marker string `json:"marker"`
}

// Get reads the issue by id (stable across project moves).
func (t *Tracker) Get(ctx context.Context, ref qsync.IssueRef) (qsync.Issue, error) {
	id := issueID(ref)
	if id == "" {
		return qsync.Issue{}, qsync.Permanentf("jira get: issue ref has no id or key")
	}
	q := url.Values{}
	q.Set("fields", strings.Join(issueFields, ","))
	q.Set("properties", PropertyKey)
	path := "rest/api/2/issue/" + url.PathEscape(id) + "?" + q.Encode()
	var raw rawIssue
	err := t.call(ctx, "get", nfGet, func(ctx context.Context) (*jira.Response, error) {
		return t.do(ctx, "GET", path, nil, &raw)
	})
	if err != nil {
		return qsync.Issue{}, err
	}
	is := t.toIssue(raw)
	var cp commentPage
	if decode(raw.Fields["comment"], &cp) && cp.Total > len(cp.Comments) {
		ids, err := t.commentIDs(ctx, id)
		if err != nil {
			return qsync.Issue{}, err
		}
		is.CommentIDs = ids
	}
	return is, nil
}

// Update applies u in one PUT: set values under "fields", label changes
// under "update" (add/remove keep labels humans added).
func (t *Tracker) Update(ctx context.Context, ref qsync.IssueRef, u qsync.Update) error {
	if u.Empty() {
		return nil
	}
	id := issueID(ref)
	if id == "" {
		return qsync.Permanentf("jira update: issue ref has no id or key")
	}
	fields := map[string]any{}
	if u.Title != nil {
		fields["summary"] = Title(*u.Title)
	}
	if u.Body != nil {
		fields["description"] = *u.Body
	}
	if u.Priority != nil {
		if *u.Priority == "" {
			fields["priority"] = nil
		} else {
			fields["priority"] = map[string]string{"name": *u.Priority}
		}
	}
	if u.Assignees != nil {
		if len(*u.Assignees) == 0 || (*u.Assignees)[0] == "" {
			fields["assignee"] = nil
		} else {
			fields["assignee"] = map[string]string{t.userField: (*u.Assignees)[0]}
		}
	}
	if u.Components != nil {
		cs := make([]map[string]string, 0, len(*u.Components))
		for _, c := range *u.Components {
			cs = append(cs, map[string]string{"name": c})
		}
		fields["components"] = cs
	}
	custom, err := customValues(u.Fields)
	if err != nil {
		return err
	}
	maps.Copy(fields, custom)
	data := map[string]any{}
	if len(fields) > 0 {
		data["fields"] = fields
	}
	var ops []map[string]string
	for _, l := range uniq(labelsSafe(u.AddLabels)) {
		ops = append(ops, map[string]string{"add": l})
	}
	for _, l := range uniq(labelsSafe(u.RemoveLabels)) {
		ops = append(ops, map[string]string{"remove": l})
	}
	if len(ops) > 0 {
		data["update"] = map[string]any{"labels": ops}
	}
	return t.call(ctx, "update", nfGone, func(ctx context.Context) (*jira.Response, error) {
		return t.client.Issue.UpdateIssueWithContext(ctx, id, data)
	})
}

// Find searches by the marker label across all projects (issues move),
// oldest first. since is applied coarsely (a day earlier) because JQL
// dates are read in the Jira user's time zone; callers compare exactly.
func (t *Tracker) Find(ctx context.Context, project string, m qsync.Marker, since time.Time) ([]qsync.Issue, error) {
	if m.Label == "" {
		return nil, qsync.Permanentf("jira find: marker has no label")
	}
	jql := "labels = " + jqlQuote(m.Label)
	if !since.IsZero() {
		jql += " AND created >= " + jqlQuote(since.Add(-24*time.Hour).UTC().Format("2006/01/02 15:04"))
	}
	// A hit whose property or shared label is missing comes back without
	// MarkerID: the engine adopts it and completes the marker with Mark.
	return t.search(ctx, jql+" ORDER BY created ASC")
}

// List reads every managed issue of the project in pages of 100: the
// reconciler's bulk read costs ⌈n/100⌉ calls. Comment ids are those Jira
// embeds in search hits (complete for issues with few comments).
func (t *Tracker) List(ctx context.Context, project string) ([]qsync.Issue, error) {
	if project == "" {
		return nil, qsync.Permanentf("jira list: no project")
	}
	return t.search(ctx, "project = "+jqlQuote(project)+" AND labels = "+jqlQuote(t.sharedLabel)+" ORDER BY created ASC")
}

// issueFields are the fields read back; "*navigable" brings custom fields.
var issueFields = []string{
	"summary", "description", "labels", "priority", "assignee", "components",
	"status", "resolution", "created", "updated", "project", "comment", "*navigable",
}

// searchQuery is what both searches send: the query and what to read back.
type searchQuery struct {
	JQL        string   `json:"jql"`
	MaxResults int      `json:"maxResults"`
	Fields     []string `json:"fields"`
	Properties []string `json:"properties"`
}

type searchJQLRequest struct {
	searchQuery
	NextPageToken   string  `json:"nextPageToken,omitempty"`
	ReconcileIssues []int64 `json:"reconcileIssues,omitempty"`
}

type searchJQLResponse struct {
	Issues        []rawIssue `json:"issues"`
	NextPageToken string     `json:"nextPageToken"`
	IsLast        bool       `json:"isLast"`
}

type searchRequest struct {
	searchQuery
	StartAt int `json:"startAt"`
}

type searchResponse struct {
	StartAt    int        `json:"startAt"`
	MaxResults int        `json:"maxResults"`
	Total      int        `json:"total"`
	Issues     []rawIssue `json:"issues"`
}

// search pages through a JQL query. Cloud: POST /search/jql with
// nextPageToken (go-jira's SearchV2JQL cannot page and its Search hits the
// removed /search); Data Center: the classic POST /search with startAt.
func (t *Tracker) search(ctx context.Context, jql string) ([]qsync.Issue, error) {
	post := func(ctx context.Context, path string, req, res any) error {
		return t.call(ctx, "search", nfCreate, func(ctx context.Context) (*jira.Response, error) {
			return t.do(ctx, "POST", path, req, res)
		})
	}
	// next reads one page and tells whether another follows.
	var next func(ctx context.Context) (issues []rawIssue, more bool, err error)
	q := searchQuery{JQL: jql, MaxResults: pageSize, Fields: issueFields, Properties: []string{PropertyKey}}
	if t.flavor == FlavorDataCenter {
		req := searchRequest{searchQuery: q}
		next = func(ctx context.Context) ([]rawIssue, bool, error) {
			var res searchResponse
			if err := post(ctx, "rest/api/2/search", req, &res); err != nil {
				return nil, false, err
			}
			req.StartAt += len(res.Issues)
			return res.Issues, len(res.Issues) > 0 && req.StartAt < res.Total, nil
		}
	} else {
		req := searchJQLRequest{searchQuery: q, ReconcileIssues: t.recentIDs()}
		next = func(ctx context.Context) ([]rawIssue, bool, error) {
			var res searchJQLResponse
			if err := post(ctx, "rest/api/2/search/jql", req, &res); err != nil {
				return nil, false, err
			}
			more := !res.IsLast && res.NextPageToken != "" && res.NextPageToken != req.NextPageToken
			req.NextPageToken = res.NextPageToken
			return res.Issues, more, nil
		}
	}
	var out []qsync.Issue
	seen := map[string]bool{}
	for page := 0; ; page++ {
		issues, more, err := next(ctx)
		if err != nil {
			return nil, err
		}
		for _, r := range issues {
			if !seen[r.ID] {
				seen[r.ID] = true
				out = append(out, t.toIssue(r))
			}
		}
		if !more {
			return out, nil
		}
		if page > 10000 {
			return nil, fmt.Errorf("jira search: paging does not end")
		}
	}
}

// rawIssue is decoded leniently: one odd field (an ADF description, a
// numeric date) must not cost the whole issue.
type rawIssue struct {
	ID         string                     `json:"id"`
	Key        string                     `json:"key"`
	Fields     map[string]json.RawMessage `json:"fields"`
	Properties map[string]json.RawMessage `json:"properties"`
}

type named struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	Key       string `json:"key"`
	AccountID string `json:"accountId"`
}

func (t *Tracker) toIssue(r rawIssue) qsync.Issue {
	f := r.Fields
	is := qsync.Issue{Ref: qsync.IssueRef{ID: r.ID, Key: r.Key, URL: t.browseURL(r.Key)}}
	var proj named
	if decode(f["project"], &proj) && proj.Key != "" {
		is.Ref.Project = proj.Key
	} else if p, _, ok := strings.Cut(r.Key, "-"); ok {
		is.Ref.Project = p
	}
	decode(f["summary"], &is.Title)
	decode(f["description"], &is.Body)
	decode(f["labels"], &is.Labels)
	var v named
	if decode(f["priority"], &v) {
		is.Priority = v.Name
	}
	v = named{}
	if decode(f["assignee"], &v) {
		id := v.AccountID
		if t.userField == "name" {
			id = v.Name
		}
		if id != "" {
			is.Assignees = []string{id}
		}
	}
	var comps []named
	if decode(f["components"], &comps) {
		for _, c := range comps {
			is.Components = append(is.Components, c.Name)
		}
	}
	var st struct {
		Name     string `json:"name"`
		Category struct {
			Key string `json:"key"`
		} `json:"statusCategory"`
	}
	if decode(f["status"], &st) {
		is.Status, is.StatusCategory = st.Name, st.Category.Key
	}
	v = named{}
	if decode(f["resolution"], &v) {
		is.Reason = v.Name
	}
	var created string
	if decode(f["created"], &created) {
		is.CreatedAt = parseJiraTime(created)
	}
	var updated string
	if decode(f["updated"], &updated) {
		is.UpdatedAt = parseJiraTime(updated)
	}
	var cp commentPage
	if decode(f["comment"], &cp) {
		for _, c := range cp.Comments {
			if id, ok := commentStamp(c.Body); ok {
				is.CommentIDs = append(is.CommentIDs, id)
			}
		}
	}
	is.Fields = customFields(f)
	is.MarkerID = t.markerOf(r, is.Labels)
	return is
}

// markerOf returns the marker id the issue carries completely: the
// property names it, and the issue has both the marker label derived from
// that id and the shared label. "" otherwise (Mark completes it).
func (t *Tracker) markerOf(r rawIssue, labels []string) string {
	var mp markerProperty
	if !decode(r.Properties[PropertyKey], &mp) || mp.Marker == "" {
		return ""
	}
	k, ok := qsync.ParseMarkerID(mp.Marker)
	if !ok || qsync.MarkerFor(k).ID != mp.Marker {
		return ""
	}
	if !hasLabel(labels, labelSafe(qsync.MarkerFor(k).Label)) || !hasLabel(labels, t.sharedLabel) {
		return ""
	}
	return mp.Marker
}

// decode unmarshals a field, reporting whether it held a usable value.
func decode(raw json.RawMessage, v any) bool {
	if len(raw) == 0 || string(raw) == "null" {
		return false
	}
	return json.Unmarshal(raw, v) == nil
}

// customFields returns customfield_* values that read as text: strings,
// numbers, and single-choice {value} / {name} objects.
func customFields(f map[string]json.RawMessage) map[string]string {
	out := map[string]string{}
	for k, raw := range f {
		if !strings.HasPrefix(k, "customfield_") {
			continue
		}
		var s string
		var n json.Number
		var o named
		switch {
		case decode(raw, &s):
			out[k] = s
		case decode(raw, &n):
			out[k] = n.String()
		case decode(raw, &o) && (o.Value != "" || o.Name != ""):
			out[k] = o.Value
			if o.Value == "" {
				out[k] = o.Name
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// customValues turns spec field values into Jira values: JSON objects and
// arrays are sent as JSON, everything else as a string.
func customValues(fields map[string]string) (map[string]any, error) {
	if len(fields) == 0 {
		return nil, nil
	}
	out := make(map[string]any, len(fields))
	for k, v := range fields {
		if k == "" {
			return nil, qsync.Permanentf("jira: custom field with an empty id")
		}
		s := strings.TrimSpace(v)
		if strings.HasPrefix(s, "{") || strings.HasPrefix(s, "[") {
			var j any
			if json.Unmarshal([]byte(s), &j) == nil {
				out[k] = j
				continue
			}
		}
		if v == "" {
			out[k] = nil // clears the field
			continue
		}
		out[k] = v
	}
	return out, nil
}

func parseJiraTime(s string) time.Time {
	for _, layout := range []string{"2006-01-02T15:04:05.000-0700", "2006-01-02T15:04:05-0700", time.RFC3339Nano} {
		if at, err := time.Parse(layout, s); err == nil {
			return at
		}
	}
	return time.Time{}
}

func (t *Tracker) createLabels(spec []string, m qsync.Marker) []string {
	ls := labelsSafe(spec)
	ls = append(ls, t.sharedLabel, labelSafe(m.Label))
	return uniq(ls)
}

// Title makes a valid Jira summary: one line of at most 255 characters.
func Title(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > maxTitle {
		s = strings.TrimRight(string(r[:maxTitle-1]), " ") + "…"
	}
	return s
}

// labelSafe makes a valid Jira label: no whitespace, at most 255 characters.
func labelSafe(l string) string {
	l = strings.Join(strings.Fields(l), "-")
	if r := []rune(l); len(r) > 255 {
		l = string(r[:255])
	}
	return l
}

func labelsSafe(ls []string) []string {
	out := make([]string, 0, len(ls))
	for _, l := range ls {
		if l = labelSafe(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func uniq(ss []string) []string {
	seen := make(map[string]bool, len(ss))
	out := ss[:0:0]
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// jqlQuote makes a JQL string literal.
func jqlQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

// issueID prefers the stable id; the key is a fallback (old links).
func issueID(ref qsync.IssueRef) string {
	if ref.ID != "" {
		return ref.ID
	}
	return ref.Key
}
