// Package jira implements qsync.Tracker for Jira Cloud and Jira Data Center
// over github.com/andygrunwald/go-jira v1.17.0 (REST v2, wiki markup).
//
// Correlation lives in the issue twice: a per-key label (marker.Label, the
// lookup key, findable by JQL) plus a shared label (the reconciler's List),
// and the issue entity property "qase-sync" = {"marker": marker.ID} (exact,
// invisible, returned with search hits; not searchable without an app).
//
// Issues are addressed by their numeric id, which survives project moves
// (the key does not).
package jira

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	jira "github.com/andygrunwald/go-jira"
	"github.com/sirupsen/logrus"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// Flavors.
const (
	FlavorCloud      = "cloud"
	FlavorDataCenter = "datacenter"
)

// PropertyKey is the issue entity property holding {"marker": marker.ID}.
const PropertyKey = "qase-sync"

const (
	defaultSharedLabel = "qase-sync"
	defaultSettle      = 5 * time.Second
	defaultTimeout     = 30 * time.Second
	defaultRetryWait   = 10 * time.Second
	pageSize           = 100
	maxTitle           = 255
	recentCreates      = 50 // Jira accepts up to 50 reconcileIssues
)

// Options configures a Tracker.
type Options struct {
	// BaseURL of the site, e.g. https://acme.atlassian.net (no credentials).
	BaseURL string
	// Flavor is "cloud" (default) or "datacenter": DC searches with the
	// classic /rest/api/2/search (startAt paging), Cloud with /search/jql.
	Flavor string
	// Email+Token: Cloud basic auth. Token alone: Bearer (DC personal
	// access token). Neither: anonymous (tests).
	Email string
	Token string
	// HTTPClient is an optional base client (tests); its Transport is
	// wrapped with authentication.
	HTTPClient *http.Client
	// SharedLabel is put on every managed issue (default "qase-sync").
	SharedLabel string
	// Transitions holds "via" paths: to reach status X, take these hops in
	// order, each named by the status it leads to or by the transition's
	// name (keys and values match case-insensitively).
	// SetStatus takes a path only when its first remaining hop is
	// available from the status; it never explores.
	Transitions map[string][]string
	// UserField names the user attribute assignees are given in:
	// "accountId" (Cloud default) or "name" (DC default).
	UserField string
	// Settle is FindSettle's answer: how long the JQL index may lag.
	// 0 means the default (5s); a negative value means no settle delay.
	Settle time.Duration
	// Timeout bounds each request (0 = 30s).
	Timeout time.Duration
	Logger  *logrus.Entry
	// Observer is told about every call (may be nil).
	Observer qsync.CallObserver
}

// Tracker is a Jira site as a qsync.Tracker.
type Tracker struct {
	client      *jira.Client
	base        string // without trailing slash
	flavor      string
	sharedLabel string
	via         map[string][]string // lower-cased target -> hops
	userField   string
	settle      time.Duration
	timeout     time.Duration
	log         *logrus.Entry
	observe     qsync.CallObserver
	secrets     []string
	now         func() time.Time

	mu     sync.Mutex
	recent []int64 // ids of issues this process created, for reconcileIssues
}

var (
	_ qsync.Tracker     = (*Tracker)(nil)
	_ qsync.FindSettler = (*Tracker)(nil)
)

// New builds a Tracker. It does not contact Jira.
func New(opts Options) (*Tracker, error) {
	if opts.BaseURL == "" {
		return nil, errors.New("jira: base URL is required")
	}
	u, err := url.Parse(opts.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("jira: base URL %q: want http(s)://host[/path]", opts.BaseURL)
	}
	if u.User != nil {
		// Credentials in the URL would end up in error messages and logs.
		return nil, errors.New("jira: base URL must not contain credentials; use email/token")
	}
	flavor := strings.ToLower(opts.Flavor)
	switch flavor {
	case "":
		flavor = FlavorCloud
	case FlavorCloud, FlavorDataCenter:
	default:
		return nil, fmt.Errorf("jira: flavor %q: want cloud or datacenter", opts.Flavor)
	}
	userField := opts.UserField
	switch userField {
	case "":
		userField = "accountId"
		if flavor == FlavorDataCenter {
			userField = "name"
		}
	case "accountId", "name":
	default:
		return nil, fmt.Errorf("jira: user field %q: want accountId or name", opts.UserField)
	}
	if opts.Email != "" && opts.Token == "" {
		return nil, errors.New("jira: email given without token")
	}

	hc := &http.Client{}
	if opts.HTTPClient != nil {
		c := *opts.HTTPClient
		hc = &c
	}
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	base = bodyKeeper{base}
	var secrets []string
	switch {
	case opts.Email != "":
		hc.Transport = &jira.BasicAuthTransport{Username: opts.Email, Password: opts.Token, Transport: base}
		secrets = append(secrets, opts.Token, basicCreds(opts.Email, opts.Token))
	case opts.Token != "":
		hc.Transport = &jira.PATAuthTransport{Token: opts.Token, Transport: base}
		secrets = append(secrets, opts.Token)
	default:
		hc.Transport = base
	}

	trimmed := strings.TrimRight(opts.BaseURL, "/")
	client, err := jira.NewClient(hc, trimmed+"/")
	if err != nil {
		return nil, fmt.Errorf("jira: %w", err)
	}
	t := &Tracker{
		client:      client,
		base:        trimmed,
		flavor:      flavor,
		sharedLabel: labelSafe(opts.SharedLabel),
		via:         map[string][]string{},
		userField:   userField,
		settle:      opts.Settle,
		timeout:     opts.Timeout,
		log:         opts.Logger,
		observe:     opts.Observer,
		secrets:     secrets,
		now:         time.Now,
	}
	if t.sharedLabel == "" {
		t.sharedLabel = defaultSharedLabel
	}
	switch {
	case t.settle == 0:
		t.settle = defaultSettle
	case t.settle < 0:
		t.settle = 0
	}
	if t.timeout <= 0 {
		t.timeout = defaultTimeout
	}
	if t.log == nil {
		l := logrus.New()
		l.Out = discard{}
		t.log = logrus.NewEntry(l)
	}
	t.log = t.log.WithField("tracker", "jira")
	for k, v := range opts.Transitions {
		t.via[strings.ToLower(strings.TrimSpace(k))] = append([]string(nil), v...)
	}
	return t, nil
}

// FindSettle implements qsync.FindSettler: Jira's JQL index lags writes.
func (t *Tracker) FindSettle() time.Duration { return t.settle }

func (t *Tracker) browseURL(key string) string {
	if key == "" {
		return ""
	}
	return t.base + "/browse/" + key
}

// remember records an issue this process created so the next searches can
// ask Jira to reconcile it into their results (read-your-writes on Cloud).
func (t *Tracker) remember(id string) {
	v, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.recent = append(t.recent, v)
	if len(t.recent) > recentCreates {
		t.recent = t.recent[len(t.recent)-recentCreates:]
	}
}

func (t *Tracker) recentIDs() []int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]int64(nil), t.recent...)
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
