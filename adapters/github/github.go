// Package github is the qsync.Tracker for GitHub issues (github.com and
// GitHub Enterprise Server) over go-github v60.
//
// Correlation lives in the issue itself: a shared label (Options.SharedLabel)
// that makes qase-sync's issues listable, the key's marker label
// ("qs-<16 hex>"), and a hidden HTML comment "<!-- qase-sync:marker <id> -->"
// at the end of the body that names the key exactly. An issue reports
// MarkerID only when all three are there; Mark completes the rest. Lookups use the issues list endpoint filtered by the label, which
// is read-your-writes consistent; the search API is never used (it lags and
// ignores HTML comments), so the tracker needs no FindSettler.
//
// Priority, Components and Fields are not GitHub concepts: Create and Update
// ignore them (express them as labels in the mapping instead).
package github

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	gh "github.com/google/go-github/v60/github"
	"github.com/sirupsen/logrus"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// DefaultSharedLabel is the label every qase-sync issue carries.
const DefaultSharedLabel = "qase-sync"

// findSlack widens Find's since bound: GitHub's created_at and our clock
// may disagree, and the caller's since is taken before the create call.
const findSlack = 10 * time.Minute

const perPage = 100

// mediaTypeJSON is GitHub's stable REST media type.
const mediaTypeJSON = "application/vnd.github+json"

// stableAccept sends GitHub's stable media type where go-github v60 sends
// only a preview type (issue reads and lists ask for
// squirrel-girl-preview, long since folded into the stable API): GitHub's
// validating API description, and strict proxies, answer those with 406.
// Every field the adapter reads is in the stable representation.
type stableAccept struct{ next http.RoundTripper }

func (s stableAccept) RoundTrip(r *http.Request) (*http.Response, error) {
	if a := r.Header.Get("Accept"); a != "" && !acceptsStable(a) {
		r = r.Clone(r.Context())
		r.Header.Set("Accept", mediaTypeJSON)
	}
	return s.next.RoundTrip(r)
}

// acceptsStable reports whether an Accept header names a non-preview type.
func acceptsStable(accept string) bool {
	for _, t := range strings.Split(accept, ",") {
		t, _, _ = strings.Cut(strings.TrimSpace(t), ";")
		if t != "" && !strings.Contains(t, "-preview") {
			return true
		}
	}
	return false
}

// AppAuth authenticates as a GitHub App installation.
type AppAuth struct {
	AppID          int64
	InstallationID int64
	PrivateKey     []byte // PEM
}

// Options configures a Tracker. Exactly one of Token and App is required.
type Options struct {
	Token string   // personal access token (classic or fine-grained)
	App   *AppAuth // or a GitHub App installation
	// BaseURL is the REST API base, e.g. https://ghe.example.com/api/v3/
	// for GitHub Enterprise Server; empty means https://api.github.com/.
	BaseURL string
	// HTTPClient supplies the base transport (tests, proxies); its
	// Transport is used, the client itself is not.
	HTTPClient  *http.Client
	SharedLabel string        // default "qase-sync"
	Timeout     time.Duration // per HTTP request; default 30s
	Logger      *logrus.Entry
	Observer    qsync.CallObserver // may be nil
}

// Tracker implements qsync.Tracker for GitHub.
type Tracker struct {
	client   *gh.Client
	label    string
	log      *logrus.Entry
	observer qsync.CallObserver
}

var _ qsync.Tracker = (*Tracker)(nil)

// New builds a Tracker. It makes no network call.
func New(opts Options) (*Tracker, error) {
	if (opts.Token == "") == (opts.App == nil) {
		return nil, errors.New("github: exactly one of token and app credentials is required")
	}
	label := opts.SharedLabel
	if label == "" {
		label = DefaultSharedLabel
	}
	if cleanLabel(label) != label {
		return nil, fmt.Errorf("github: shared label %q must be at most %d characters without commas or outer spaces", label, maxLabelLen)
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	base := "https://api.github.com/"
	if opts.BaseURL != "" {
		base = opts.BaseURL
		if !strings.HasSuffix(base, "/") {
			base += "/"
		}
	}
	baseURL, err := url.Parse(base)
	if err != nil || baseURL.Scheme == "" || baseURL.Host == "" {
		return nil, fmt.Errorf("github: invalid base URL %q", opts.BaseURL)
	}

	var rt http.RoundTripper = http.DefaultTransport
	if opts.HTTPClient != nil && opts.HTTPClient.Transport != nil {
		rt = opts.HTTPClient.Transport
	}
	if opts.App != nil {
		itr, err := ghinstallation.New(rt, opts.App.AppID, opts.App.InstallationID, opts.App.PrivateKey)
		if err != nil {
			// The parse error names no key material.
			return nil, fmt.Errorf("github: app credentials: %w", err)
		}
		if opts.BaseURL != "" {
			itr.BaseURL = strings.TrimSuffix(base, "/")
		}
		rt = itr
	}
	hc := &http.Client{Transport: stableAccept{rt}, Timeout: timeout, CheckRedirect: checkRedirect}
	client := gh.NewClient(hc)
	if opts.Token != "" {
		client = client.WithAuthToken(opts.Token)
	}
	client.BaseURL = baseURL

	log := opts.Logger
	if log == nil {
		l := logrus.New()
		l.SetOutput(discard{})
		log = logrus.NewEntry(l)
	}
	return &Tracker{
		client:   client,
		label:    label,
		log:      log.WithField("tracker", "github"),
		observer: opts.Observer,
	}, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// checkRedirect follows GitHub's redirects (renamed repositories,
// transferred issues) only where that is safe: never to another host (the
// auth transport would send the credential along) and never when Go would
// turn a write into a GET, which would silently drop the write.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("too many redirects")
	}
	first := via[0]
	if req.URL.Host != first.URL.Host || req.Method != first.Method {
		return http.ErrUseLastResponse
	}
	return nil
}

// do runs one API call: metrics, a debug log line, and classification.
func (t *Tracker) do(ctx context.Context, c call, fn func(ctx context.Context) (*gh.Response, error)) error {
	start := time.Now()
	resp, err := fn(ctx)
	d := time.Since(start)
	status := 0
	if resp != nil && resp.Response != nil {
		status = resp.StatusCode
	}
	if t.observer != nil {
		t.observer("github", c.op, status, d)
	}
	err = classify(c, err)
	entry := t.log.WithFields(logrus.Fields{"op": c.op, "project": c.project, "status": status, "duration": d.Round(time.Millisecond)})
	if c.number > 0 {
		entry = entry.WithField("issue", c.number)
	}
	if err != nil {
		entry.WithError(err).Debug("github call failed")
	} else {
		entry.Debug("github call")
	}
	return err
}

// repo splits "owner/repo".
func splitProject(project string) (owner, repo string, err error) {
	owner, repo, ok := strings.Cut(strings.TrimSpace(project), "/")
	if !ok || owner == "" || repo == "" || strings.Contains(repo, "/") {
		return "", "", qsync.Permanentf("github: project %q: want owner/repo", project)
	}
	return owner, repo, nil
}

// target resolves an IssueRef to owner, repo and number. ID is the issue
// number; Key ("owner/repo#N") is the fallback.
func target(ref qsync.IssueRef) (owner, repo string, number int, err error) {
	project, id := ref.Project, ref.ID
	if p, n, ok := strings.Cut(ref.Key, "#"); ok {
		if project == "" {
			project = p
		}
		if id == "" {
			id = n
		}
	}
	owner, repo, err = splitProject(project)
	if err != nil {
		return "", "", 0, err
	}
	number, perr := strconv.Atoi(id)
	if perr != nil || number <= 0 {
		return "", "", 0, qsync.Permanentf("github: issue ref %v: no issue number", ref)
	}
	return owner, repo, number, nil
}

// Create files the issue with the marker stamp and the shared label. It
// never closes it: the engine calls SetStatus for a closed spec.
func (t *Tracker) Create(ctx context.Context, spec qsync.IssueSpec, m qsync.Marker) (qsync.Issue, error) {
	owner, repo, err := splitProject(spec.Project)
	if err != nil {
		return qsync.Issue{}, err
	}
	if m.ID == "" || cleanLabel(m.Label) == "" {
		return qsync.Issue{}, qsync.Permanentf("github create %s: empty marker", spec.Project)
	}
	title, ok := cleanTitle(spec.Title)
	if !ok {
		return qsync.Issue{}, qsync.Permanentf("github create %s: empty title", spec.Project)
	}
	body := composeBody(spec.Body, markerComment(m.ID))
	labels := cleanLabels(spec.Labels, t.label, m.Label)
	req := &gh.IssueRequest{Title: &title, Body: &body, Labels: &labels}
	if as := cleanAssignees(spec.Assignees); len(as) > 0 {
		req.Assignees = &as
	}
	var out *gh.Issue
	err = t.do(ctx, call{op: "create", project: spec.Project}, func(ctx context.Context) (r *gh.Response, err error) {
		out, r, err = t.client.Issues.Create(ctx, owner, repo, req)
		return r, err
	})
	if err != nil {
		return qsync.Issue{}, err
	}
	return t.convert(owner+"/"+repo, out), nil
}

// Find lists the shared-label issues newest first and keeps those stamped
// with the marker in the body or carrying its label (an issue whose stamp
// a person removed comes back without MarkerID, for Mark to complete). It stops once the issues are older than since (less a
// slack); zero since scans everything.
func (t *Tracker) Find(ctx context.Context, project string, m qsync.Marker, since time.Time) ([]qsync.Issue, error) {
	stamp := markerComment(m.ID)
	var cutoff time.Time
	if !since.IsZero() {
		cutoff = since.Add(-findSlack)
	}
	var found []qsync.Issue
	err := t.pages(ctx, "find", project, "desc", func(batch []*gh.Issue) bool {
		older := false
		for _, is := range batch {
			if !cutoff.IsZero() && is.GetCreatedAt().Time.Before(cutoff) {
				older = true
			}
			if is.IsPullRequest() || !strings.Contains(is.GetBody(), stamp) && !hasLabel(is.Labels, m.Label) {
				continue
			}
			found = append(found, t.convert(project, is))
		}
		return !older && len(batch) > 0
	})
	if err != nil {
		return nil, err
	}
	// Oldest first: the engine adopts the oldest and treats the rest as
	// duplicates.
	slices.Reverse(found)
	return found, nil
}

// List returns every issue carrying the shared label, oldest first.
// Ascending order keeps paging stable while new issues are created.
func (t *Tracker) List(ctx context.Context, project string) ([]qsync.Issue, error) {
	var out []qsync.Issue
	err := t.pages(ctx, "list", project, "asc", func(batch []*gh.Issue) bool {
		for _, is := range batch {
			if !is.IsPullRequest() {
				out = append(out, t.convert(project, is))
			}
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// pages reads the issues carrying the shared label page by page, sorted by
// creation in direction (asc, desc), handing each page to visit until it
// returns false or the pages end.
func (t *Tracker) pages(ctx context.Context, op, project, direction string, visit func([]*gh.Issue) bool) error {
	return t.pagesLabeled(ctx, op, project, t.label, direction, visit)
}

// pagesLabeled is pages for the issues carrying label.
func (t *Tracker) pagesLabeled(ctx context.Context, op, project, label, direction string, visit func([]*gh.Issue) bool) error {
	owner, repo, err := splitProject(project)
	if err != nil {
		return err
	}
	opts := &gh.IssueListByRepoOptions{
		Labels: []string{label}, State: "all", Sort: "created", Direction: direction,
		ListOptions: gh.ListOptions{PerPage: perPage},
	}
	for page := 1; page != 0; {
		opts.Page = page
		var batch []*gh.Issue
		var resp *gh.Response
		err := t.do(ctx, call{op: op, project: project, read: true}, func(ctx context.Context) (r *gh.Response, err error) {
			batch, resp, err = t.client.Issues.ListByRepo(ctx, owner, repo, opts)
			return resp, err
		})
		if err != nil {
			return err
		}
		if !visit(batch) {
			return nil
		}
		page = nextPage(resp, page)
	}
	return nil
}

// Get reads one issue; qsync.ErrNotFound when it was deleted (404/410). A
// transferred issue is followed to its new home, which the returned Ref
// names.
func (t *Tracker) Get(ctx context.Context, ref qsync.IssueRef) (qsync.Issue, error) {
	is, project, err := t.get(ctx, ref, "get")
	if err != nil {
		return qsync.Issue{}, err
	}
	return t.convert(project, is), nil
}

func (t *Tracker) get(ctx context.Context, ref qsync.IssueRef, op string) (*gh.Issue, string, error) {
	owner, repo, n, err := target(ref)
	if err != nil {
		return nil, "", err
	}
	project := owner + "/" + repo
	var is *gh.Issue
	err = t.do(ctx, call{op: op, project: project, number: n, notFound: true, read: true}, func(ctx context.Context) (r *gh.Response, err error) {
		is, r, err = t.client.Issues.Get(ctx, owner, repo, n)
		return r, err
	})
	if err != nil {
		return nil, "", err
	}
	return is, project, nil
}

// Update applies title, body and assignees in one PATCH, then label
// changes (one POST for the labels added, one DELETE per label removed:
// GitHub's PATCH can only replace the whole label set, which would drop
// labels people added). A new body carries the marker stamp of u.Marker,
// or, when the update does not name the marker, the stamp the issue has
// (one read). Priority, Components and Fields are ignored: GitHub has no
// such fields.
func (t *Tracker) Update(ctx context.Context, ref qsync.IssueRef, u qsync.Update) error {
	owner, repo, n, err := target(ref)
	if err != nil {
		return err
	}
	project := owner + "/" + repo
	c := func(op string) call { return call{op: op, project: project, number: n, notFound: true} }

	if u.Title != nil || u.Body != nil || u.Assignees != nil {
		req := &gh.IssueRequest{}
		if u.Title != nil {
			title, ok := cleanTitle(*u.Title)
			if !ok {
				return qsync.Permanentf("%s: empty title", c("edit"))
			}
			req.Title = &title
		}
		if u.Body != nil {
			id := u.Marker.ID
			if id == "" {
				cur, _, err := t.get(ctx, ref, "get")
				if err != nil {
					if errors.Is(err, qsync.ErrNotFound) {
						return qsync.Permanent(err)
					}
					return err
				}
				_, id = splitBody(cur.GetBody())
			}
			stamp := ""
			if id != "" {
				stamp = markerComment(id)
			} else {
				t.log.WithField("issue", n).WithField("project", project).
					Warn("issue body has lost its qase-sync marker; the edit cannot restore it")
			}
			body := composeBody(*u.Body, stamp)
			req.Body = &body
		}
		if u.Assignees != nil {
			as := cleanAssignees(*u.Assignees)
			req.Assignees = &as
		}
		err := t.do(ctx, c("edit"), func(ctx context.Context) (r *gh.Response, err error) {
			_, r, err = t.client.Issues.Edit(ctx, owner, repo, n, req)
			return r, err
		})
		if err != nil {
			return err
		}
	}

	if add := cleanLabels(u.AddLabels); len(add) > 0 {
		err := t.do(ctx, c("add_labels"), func(ctx context.Context) (*gh.Response, error) {
			// go-github v60's AddLabelsToIssue sends a bare array; the
			// published contract wants {"labels": [...]}.
			req, err := t.client.NewRequest(http.MethodPost,
				fmt.Sprintf("repos/%s/%s/issues/%d/labels", url.PathEscape(owner), url.PathEscape(repo), n),
				struct {
					Labels []string `json:"labels"`
				}{add})
			if err != nil {
				return nil, err
			}
			return t.client.Do(ctx, req, nil)
		})
		if err != nil {
			return err
		}
	}

	for _, l := range u.RemoveLabels {
		l = cleanLabel(l)
		if l == "" || strings.EqualFold(l, t.label) {
			continue // never drop the correlation label
		}
		err := t.do(ctx, c("remove_label"), func(ctx context.Context) (*gh.Response, error) {
			// Escaped here: v60's RemoveLabelForIssue puts the raw name
			// into the path.
			req, err := t.client.NewRequest(http.MethodDelete,
				fmt.Sprintf("repos/%s/%s/issues/%d/labels/%s", url.PathEscape(owner), url.PathEscape(repo), n, url.PathEscape(l)), nil)
			if err != nil {
				return nil, err
			}
			r, err := t.client.Do(ctx, req, nil)
			if r != nil && r.StatusCode == http.StatusNotFound {
				return r, nil // the label is already gone
			}
			return r, err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// SetStatus opens or closes the issue with one PATCH (idempotent, so no
// read first). Closing takes reason "completed" (default), "not_planned"
// or "duplicate"; reopening sets state_reason "reopened".
func (t *Tracker) SetStatus(ctx context.Context, ref qsync.IssueRef, status, reason string) error {
	owner, repo, n, err := target(ref)
	if err != nil {
		return err
	}
	req := &gh.IssueRequest{}
	switch strings.ToLower(strings.TrimSpace(status)) {
	case "closed":
		r := strings.ToLower(strings.TrimSpace(reason))
		switch r {
		case "":
			r = "completed"
		case "completed", "not_planned", "duplicate":
		default:
			return qsync.Permanentf("github set_status %s/%s#%d: state_reason %q: want completed, not_planned or duplicate", owner, repo, n, reason)
		}
		req.State, req.StateReason = gh.String("closed"), &r
	case "open":
		req.State, req.StateReason = gh.String("open"), gh.String("reopened")
	default:
		return qsync.Permanentf("github set_status %s/%s#%d: status %q: want open or closed", owner, repo, n, status)
	}
	return t.do(ctx, call{op: "set_status", project: owner + "/" + repo, number: n, notFound: true}, func(ctx context.Context) (r *gh.Response, err error) {
		_, r, err = t.client.Issues.Edit(ctx, owner, repo, n, req)
		return r, err
	})
}

// AddComment posts the comment stamped with its id.
func (t *Tracker) AddComment(ctx context.Context, ref qsync.IssueRef, cm qsync.Comment) error {
	owner, repo, n, err := target(ref)
	if err != nil {
		return err
	}
	if cm.ID == "" {
		return qsync.Permanentf("github add_comment %s/%s#%d: empty comment id", owner, repo, n)
	}
	body := composeBody(cm.Body, commentStamp(cm.ID))
	return t.do(ctx, call{op: "add_comment", project: owner + "/" + repo, number: n, notFound: true}, func(ctx context.Context) (r *gh.Response, err error) {
		_, r, err = t.client.Issues.CreateComment(ctx, owner, repo, n, &gh.IssueComment{Body: &body})
		return r, err
	})
}

// HasComment pages through the issue's comments looking for the stamp.
func (t *Tracker) HasComment(ctx context.Context, ref qsync.IssueRef, id string) (bool, error) {
	owner, repo, n, err := target(ref)
	if err != nil {
		return false, err
	}
	stamp := commentStamp(id)
	opts := &gh.IssueListCommentsOptions{ListOptions: gh.ListOptions{PerPage: perPage}}
	for page := 1; page != 0; {
		opts.Page = page
		var batch []*gh.IssueComment
		var resp *gh.Response
		// Not "read": a vanished issue is a permanent failure here.
		err := t.do(ctx, call{op: "list_comments", project: owner + "/" + repo, number: n, notFound: true}, func(ctx context.Context) (r *gh.Response, err error) {
			batch, resp, err = t.client.Issues.ListComments(ctx, owner, repo, n, opts)
			return resp, err
		})
		if err != nil {
			return false, err
		}
		for _, c := range batch {
			if strings.Contains(c.GetBody(), stamp) {
				return true, nil
			}
		}
		page = nextPage(resp, page)
	}
	return false, nil
}

// nextPage follows the Link header, guarding against a server whose
// "next" does not advance (0 ends the loop).
func nextPage(resp *gh.Response, page int) int {
	if resp == nil || resp.NextPage <= page {
		return 0
	}
	return resp.NextPage
}

// convert maps a go-github issue to the engine's view.
func (t *Tracker) convert(project string, is *gh.Issue) qsync.Issue {
	// Keep the caller's spelling unless the issue really lives elsewhere
	// (GitHub names are case-insensitive).
	if p := projectOf(is); p != "" && !strings.EqualFold(p, project) {
		project = p
	}
	body, marker := splitBody(is.GetBody())
	var labels []string
	for _, l := range is.Labels {
		labels = append(labels, l.GetName())
	}
	out := qsync.Issue{
		Ref: qsync.IssueRef{
			Project: project,
			ID:      strconv.Itoa(is.GetNumber()),
			Key:     fmt.Sprintf("%s#%d", project, is.GetNumber()),
			URL:     is.GetHTMLURL(),
		},
		IssueFields: qsync.IssueFields{
			Title: is.GetTitle(), Body: body, Labels: labels,
			Status: is.GetState(), Reason: is.GetStateReason(),
		},
		MarkerID:  t.markerOf(marker, is.Labels),
		CreatedAt: is.GetCreatedAt().Time,
		UpdatedAt: is.GetUpdatedAt().Time,
	}
	for _, a := range is.Assignees {
		out.Assignees = append(out.Assignees, a.GetLogin())
	}
	return out
}

// projectOf reads owner/repo from the issue's repository_url
// (".../repos/owner/repo"), so a followed transfer reports its new home.
func projectOf(is *gh.Issue) string {
	u := is.GetRepositoryURL()
	i := strings.LastIndex(u, "/repos/")
	if i < 0 {
		return ""
	}
	p := u[i+len("/repos/"):]
	if o, r, ok := strings.Cut(p, "/"); ok && o != "" && r != "" && !strings.Contains(r, "/") {
		return p
	}
	return ""
}

// markerOf returns the marker id the issue carries completely: the body
// stamp names it, and the issue has both the marker label derived from
// that id and the shared label. "" otherwise (Mark completes it).
func (t *Tracker) markerOf(id string, labels []*gh.Label) string {
	if id == "" {
		return ""
	}
	k, ok := qsync.ParseMarkerID(id)
	if !ok {
		return ""
	}
	m := qsync.MarkerFor(k)
	if m.ID != id || !hasLabel(labels, m.Label) || !hasLabel(labels, t.label) {
		return ""
	}
	return id
}

// hasLabel: GitHub label names compare case-insensitively.
func hasLabel(labels []*gh.Label, name string) bool {
	name = cleanLabel(name)
	for _, l := range labels {
		if name != "" && strings.EqualFold(l.GetName(), name) {
			return true
		}
	}
	return false
}

// Mark stamps m on an existing issue as Create does: the shared and marker
// labels and the hidden body stamp. One read, then one PATCH carrying only
// what is missing (the body with the stamp, the label set with the two
// labels added); none when the issue is fully marked.
func (t *Tracker) Mark(ctx context.Context, ref qsync.IssueRef, m qsync.Marker) error {
	owner, repo, n, err := target(ref)
	if err != nil {
		return err
	}
	if m.ID == "" || cleanLabel(m.Label) == "" {
		return qsync.Permanentf("github mark %s/%s#%d: empty marker", owner, repo, n)
	}
	cur, _, err := t.get(ctx, ref, "get")
	if err != nil {
		if errors.Is(err, qsync.ErrNotFound) {
			return qsync.Permanent(err) // a write to a vanished issue
		}
		return err
	}
	// Write where the issue lives now (a transfer was followed).
	if p := projectOf(cur); p != "" {
		if o, r, err := splitProject(p); err == nil {
			owner, repo = o, r
		}
	}
	if cur.GetNumber() > 0 {
		n = cur.GetNumber()
	}
	req := &gh.IssueRequest{}
	user, id := splitBody(cur.GetBody())
	if id != stampSafe(m.ID) {
		body := composeBody(user, markerComment(m.ID))
		req.Body = &body
	}
	if !hasLabel(cur.Labels, t.label) || !hasLabel(cur.Labels, m.Label) {
		var have []string
		for _, l := range cur.Labels {
			have = append(have, l.GetName())
		}
		labels := cleanLabels(have, t.label, m.Label)
		req.Labels = &labels
	}
	if req.Body == nil && req.Labels == nil {
		return nil
	}
	return t.do(ctx, call{op: "mark", project: owner + "/" + repo, number: n, notFound: true}, func(ctx context.Context) (r *gh.Response, err error) {
		_, r, err = t.client.Issues.Edit(ctx, owner, repo, n, req)
		return r, err
	})
}
