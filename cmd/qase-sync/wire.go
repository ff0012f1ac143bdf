package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sirupsen/logrus"

	"github.com/qase-sync/qase-sync/adapters/dryrun"
	"github.com/qase-sync/qase-sync/adapters/github"
	"github.com/qase-sync/qase-sync/adapters/jira"
	"github.com/qase-sync/qase-sync/adapters/qase"
	"github.com/qase-sync/qase-sync/adapters/store/postgres"
	"github.com/qase-sync/qase-sync/adapters/store/sqlite"
	"github.com/qase-sync/qase-sync/config"
	"github.com/qase-sync/qase-sync/internal/ratelimit"
	"github.com/qase-sync/qase-sync/internal/trackerhook"
	"github.com/qase-sync/qase-sync/mapping"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// appMode says how much of the application a command needs.
type appMode int

const (
	appValidate  appMode = iota // config and mapping only
	appPlan                     // + nothing that touches the network or the store
	appStoreOnly                // + store
	appCLI                      // + trackers, Qase source, engine
	appServe                    // the same, long-running
)

// app is the wired application.
type app struct {
	cfg      *config.Config
	mapper   *mapping.Mapping
	log      *logrus.Entry
	clock    qsync.Clock
	store    qsync.Store
	trackers map[string]qsync.Tracker
	source   qsync.EntitySource
	writer   *qase.Client // Qase API writes (two-way routes, write-back); nil without a token
	engine   *qsync.Engine
	inbox    *qsync.Inbox // serve's webhook receivers store through it
	coverage *qsync.Coverage
	metrics  *metrics
	registry *prometheus.Registry
	ops      *opsState // this process's reconcile passes and drift
	owner    string    // this replica's name in store leases
	// reconcileMu keeps this process to one reconcile pass at a time.
	reconcileMu sync.Mutex
	// budgets are the request limiters by credential (ratelimit.CredentialID):
	// trackers sharing a credential share its budget.
	budgets map[string]*ratelimit.Limiter
	// env and httpClient are seams for tests.
	env        func(string) (string, bool)
	httpClient *http.Client
}

// loadApp loads the configuration and wires what mode needs.
func loadApp(path string, stderr io.Writer, mode appMode) (*app, error) {
	return wireApp(path, stderr, mode, os.LookupEnv, nil)
}

func wireApp(path string, stderr io.Writer, mode appMode, env func(string) (string, bool), hc *http.Client) (*app, error) {
	cfg, mapper, err := loadConfig(path, env)
	if err != nil {
		return nil, err // already "file:line: field: problem", every one of them
	}
	a := &app{cfg: cfg, mapper: mapper, clock: qsync.SystemClock, env: env, httpClient: hc, trackers: map[string]qsync.Tracker{}, ops: newOpsState(), owner: replicaID()}
	a.log = newLogger(cfg.Log, stderr, mode)
	if mode <= appPlan {
		return a, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if a.store, err = openStore(ctx, cfg.Store, a.log); err != nil {
		return nil, err
	}
	a.registry = prometheus.NewRegistry()
	a.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.metrics = newMetrics(a.registry, a.store)
	a.metrics.onDrift = a.ops.found
	a.metrics.onGap = func(k qsync.Key) {
		if a.ops.gap(k) {
			a.log.WithFields(logrus.Fields{"project": k.Project, "key": k.String()}).Warn(webhookSuspectNote)
		}
	}
	if mode == appStoreOnly {
		return a, nil
	}
	for _, tc := range cfg.Trackers {
		tr, err := a.buildTracker(tc.Name, hc, false)
		if err != nil {
			a.close()
			return nil, fmt.Errorf("%s: trackers[%s]: %w", cfg.File, tc.Name, err)
		}
		a.trackers[tc.Name] = tr
	}
	if cfg.Qase.APIToken.IsSet() {
		// One budget for the API token: the worker's reads and the
		// reconciler's lists spend it together, across replicas.
		lim := a.requestLimiter(ratelimit.CredentialID("qase", cfg.Qase.APIURL, cfg.Qase.APIToken.Reveal()), "qase-api", cfg.Qase.APIRate)
		c := qase.NewClient(qase.ClientOptions{BaseURL: cfg.Qase.APIURL, Token: cfg.Qase.APIToken.Reveal(), HTTPClient: ratelimit.Client(hc, lim),
			Logger: a.log.WithField("component", "qase-api"), Observer: a.metrics.Call, Clock: a.clock})
		a.source, a.writer = c, c
	} else {
		a.log.Info("no qase.api_token: working from webhook payloads alone (thin events; the reconciler cannot recover missed ones)")
	}
	w := cfg.Worker
	// A dry-run tracker answers every call at once: nothing can land late.
	late := time.Duration(0)
	for _, tc := range cfg.Trackers {
		if !tc.DryRun {
			late = w.LateCommit
		}
	}
	// A database younger than the late-commit window may have replaced one
	// whose creates are still landing: until the window has passed since it
	// was created, no search or listing proves that an issue is absent.
	created, err := a.store.CreatedAt(ctx)
	if err != nil {
		a.log.WithError(err).Warn("reading the store's creation time; treating it as new")
		created = a.clock.Now()
	}
	a.coverage = qsync.NewCoverage(created, late)
	a.engine = qsync.NewEngine(qsync.EngineOptions{
		Store: a.store, Mapper: a.mapper, Trackers: a.trackers, Source: a.source, Writer: a.entityWriter(), LinkTypes: linkTypes(cfg), Clock: a.clock,
		Logger: a.log.WithField("component", "worker"), Metrics: a.metrics, Coverage: a.coverage,
		Concurrency: w.Concurrency, Lease: w.Lease, JobTimeout: w.JobTimeout, MaxAttempts: w.MaxAttempts, MaxAge: w.MaxAge,
		BackoffBase: w.BackoffBase, BackoffMax: w.BackoffMax, LateCommit: late, Gather: gather(w.Gather),
		// Acknowledging deliveries comes first; a sync can wait.
		Behind: func() bool { return a.inbox.Behind() },
	})
	a.inbox = qsync.NewInbox(qsync.InboxOptions{Store: a.store, Mapper: a.mapper, Clock: a.clock, Logger: a.log.WithField("component", "inbox"), Notify: a.engine.Wake})
	return a, nil
}

func (a *app) close() {
	// Trackers that keep state (the dry-run tracker's journal) fold it
	// away; the workers have stopped by now.
	for name, tr := range a.trackers {
		if c, ok := tr.(io.Closer); ok {
			if err := c.Close(); err != nil {
				a.log.WithError(err).WithField("tracker", name).Warn("closing tracker")
			}
		}
	}
	if a.store != nil {
		if err := a.store.Close(); err != nil {
			a.log.WithError(err).Warn("closing store")
		}
		a.store = nil
	}
}

func newLogger(lc config.Log, out io.Writer, mode appMode) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(out)
	if lc.Format == "text" || (mode != appServe && lc.Format == "") {
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	} else {
		l.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano})
	}
	lvl, err := logrus.ParseLevel(lc.Level)
	if err != nil {
		lvl = logrus.InfoLevel
	}
	l.SetLevel(lvl)
	return logrus.NewEntry(l).WithField("service", "qase-sync")
}

func openStore(ctx context.Context, sc config.Store, log *logrus.Entry) (qsync.Store, error) {
	switch sc.Driver {
	case "postgres":
		st, err := postgres.Open(ctx, postgres.Options{DSN: sc.Postgres.DSN.Reveal(), Logger: log.WithField("component", "store")})
		if err != nil {
			return nil, fmt.Errorf("store.postgres: %w", err)
		}
		return st, nil
	default:
		st, err := sqlite.Open(ctx, sqlite.Options{Path: sc.SQLite.Path, Synchronous: sc.SQLite.Synchronous, Logger: log.WithField("component", "store")})
		if err != nil {
			return nil, fmt.Errorf("store.sqlite %s: %w", sc.SQLite.Path, err)
		}
		return st, nil
	}
}

func (a *app) trackerType(name string) string {
	for _, tc := range a.cfg.Trackers {
		if tc.Name == name {
			return tc.Type
		}
	}
	return ""
}

// buildTracker constructs a tracker adapter. In plan mode credentials are
// replaced by placeholders (nothing is sent; a GitHub App would fetch a
// token) and no pacing applies.
func (a *app) buildTracker(name string, hc *http.Client, plan bool) (qsync.Tracker, error) {
	var tc *config.Tracker
	for i := range a.cfg.Trackers {
		if a.cfg.Trackers[i].Name == name {
			tc = &a.cfg.Trackers[i]
		}
	}
	if tc == nil {
		return nil, fmt.Errorf("tracker %q is not configured", name)
	}
	log := a.log.WithFields(logrus.Fields{"component": "tracker", "tracker": tc.Name})
	var observe qsync.CallObserver
	if a.metrics != nil {
		observe = a.metrics.Call
	}
	// Every HTTP request a live tracker sends takes a token from its
	// credential's budget; plan and dry-run send nothing.
	live := !plan && !tc.DryRun && tc.Type != config.TrackerDryRun
	if live {
		hc = ratelimit.Client(hc, a.requestLimiter(credentialID(tc), tc.Name, tc.Rate))
	}
	var tr qsync.Tracker
	switch {
	case tc.DryRun && !plan:
		t, err := a.dryRunTracker(tc.Name, log)
		if err != nil {
			return nil, err
		}
		tr = t
	case tc.Type == config.TrackerJira:
		o := jira.Options{BaseURL: tc.URL, Flavor: tc.Flavor, Email: tc.Email, Token: tc.Token.Reveal(), HTTPClient: hc,
			Transitions: tc.Transitions, UserField: tc.UserField, Settle: tc.Settle, Logger: log, Observer: observe}
		if plan {
			o.Email, o.Token = "", "plan"
		}
		t, err := jira.New(o)
		if err != nil {
			return nil, err
		}
		tr = t
	case tc.Type == config.TrackerGitHub:
		o := github.Options{Token: tc.Token.Reveal(), BaseURL: tc.BaseURL, HTTPClient: hc, Logger: log, Observer: observe}
		if tc.App != nil {
			o.App = &github.AppAuth{AppID: tc.App.AppID, InstallationID: tc.App.InstallationID, PrivateKey: []byte(tc.App.PrivateKey.Reveal())}
		}
		if plan {
			o.Token, o.App = "plan", nil
		}
		t, err := github.New(o)
		if err != nil {
			return nil, err
		}
		tr = t
	case tc.Type == config.TrackerDryRun:
		t, err := a.dryRunTracker(tc.Name, log)
		if err != nil {
			return nil, err
		}
		tr = t
	default:
		return nil, fmt.Errorf("unknown tracker type %q", tc.Type)
	}
	if !live {
		return tr, nil
	}
	return qsync.Paced(tr, qsync.PaceOptions{IssueSpace: issueSpace(tc.Type), Clock: a.clock, OnWait: a.rateWaitObserver(tc.Name)}), nil
}

// credentialID names a tracker's request budget: its site and credential,
// digested (the secret never reaches the store, logs or metrics).
func credentialID(tc *config.Tracker) string {
	if tc.Type == config.TrackerGitHub {
		if tc.App != nil { // the installation's token, fetched through the same transport
			return ratelimit.CredentialID("github", tc.BaseURL, "app", strconv.FormatInt(tc.App.AppID, 10), strconv.FormatInt(tc.App.InstallationID, 10))
		}
		return ratelimit.CredentialID("github", tc.BaseURL, tc.Token.Reveal())
	}
	return ratelimit.CredentialID(tc.Type, tc.URL, tc.Email, tc.Token.Reveal())
}

// budgetStore is a store that keeps request budgets for all replicas
// (PostgreSQL; with SQLite, one process, budgets stay in memory).
type budgetStore interface {
	ReserveRate(ctx context.Context, key string, n int, perSecond float64, burst int) ([]time.Duration, error)
}

// storeBudget is one credential's budget in the store.
type storeBudget struct {
	st  budgetStore
	key string
	r   config.Rate
}

func (b storeBudget) Reserve(ctx context.Context, n int) ([]time.Duration, error) {
	return b.st.ReserveRate(ctx, b.key, n, b.r.PerSecond, b.r.Burst)
}

// requestLimiter returns the limiter of credential id (made on first use
// with rate r; name labels its metrics and logs): shared with every
// replica through the store when the store can, else in this process.
// Creates go first (qsync.IsCreate), and a wait cut short is reported to
// the paced call, which then does not charge the attempt.
func (a *app) requestLimiter(id, name string, r config.Rate) *ratelimit.Limiter {
	if l, ok := a.budgets[id]; ok {
		return l
	}
	var src ratelimit.Source = ratelimit.NewLocal(r.PerSecond, r.Burst)
	if bs, ok := a.store.(budgetStore); ok {
		src = storeBudget{st: bs, key: id, r: r}
	}
	log := a.log.WithField("budget", name)
	// A batch of at most the burst: no replica reserves far ahead of the others.
	l := ratelimit.New(ratelimit.Options{Source: src, Batch: r.Burst, Create: qsync.IsCreate, Cut: qsync.NoteRateWaitCut, OnWait: a.rateWaitObserver(name),
		OnError: func(err error) {
			log.WithError(err).Warn("reserving request tokens in the store failed; requests wait and it is asked again")
		}})
	if a.budgets == nil {
		a.budgets = map[string]*ratelimit.Limiter{}
	}
	a.budgets[id] = l
	return l
}

func (a *app) rateWaitObserver(name string) func(time.Duration) {
	if a.metrics == nil {
		return nil
	}
	return func(d time.Duration) { a.metrics.RateWait(name, d) }
}

// issueSpace spaces writes to one issue: Jira Cloud limits writes per
// issue; GitHub sends a notification per change.
func issueSpace(kind string) time.Duration {
	switch strings.ToLower(kind) {
	case config.TrackerJira:
		return 500 * time.Millisecond
	case config.TrackerGitHub:
		return time.Second
	}
	return 0
}

// reconcileProjects lists the Qase projects the reconciler enumerates for
// routes that accept any project.
func reconcileProjects(cfg *config.Config) []string { return cfg.Reconcile.Projects }

func reveal(ss []config.Secret) []string {
	out := make([]string, 0, len(ss))
	for _, s := range ss {
		if s.IsSet() {
			out = append(out, s.Reveal())
		}
	}
	return out
}

func revealMap(m map[string][]config.Secret) map[string][]string {
	out := make(map[string][]string, len(m))
	for k, v := range m {
		out[k] = reveal(v)
	}
	return out
}

// knownEvent tells whether qase-sync acts on an event of a served kind: a
// Qase event it knows, or one a route names in its events list. The
// webhook acknowledges any other (an unknown verb such as defect.exploded,
// a garbled name) as 202 ignored, and plan says so.
func (a *app) knownEvent(ev qsync.Event) bool {
	name := ev.Name
	if ev.Ref.Kind == qsync.KindRun && strings.HasPrefix(name, "result.") && utf8.ValidString(name) {
		// A hint that the run changed, acted on by failure routes only.
		return len(a.mapper.Routes(name, ev.Ref.Project, ev.Ref.Kind)) > 0
	}
	if !utf8.ValidString(name) || !strings.HasPrefix(name, string(ev.Ref.Kind)+".") {
		return false
	}
	if slices.Contains(mapping.EventNames[ev.Ref.Kind], name) {
		return true
	}
	// A route names the event when it takes it but not a name no route can
	// list (routes without an events list take every name of their kind).
	any := a.mapper.Routes(string(ev.Ref.Kind)+".", ev.Ref.Project, ev.Ref.Kind)
	for _, r := range a.mapper.Routes(name, ev.Ref.Project, ev.Ref.Kind) {
		if !slices.Contains(any, r) {
			return true
		}
	}
	return false
}

// dryRunTracker keeps a dry-run tracker's issues beside the SQLite file
// (qase-sync.db → qase-sync.dryrun-jira.json), so that after a restart the
// store's links still point at issues that exist, as with a real tracker:
// the demo goes on updating, transitioning and commenting them. Removing
// the store file alone is safe too (the engine finds the issues by their
// markers and adopts them); to start over remove both. With PostgreSQL or
// an in-memory SQLite store the issues live in memory only.
func (a *app) dryRunTracker(name string, log *logrus.Entry) (*dryrun.Tracker, error) {
	p := dryRunStatePath(a.cfg.Store, name)
	if p == "" {
		return dryrun.New(name, log, a.clock), nil
	}
	return dryrun.Open(name, log, a.clock, p)
}

func dryRunStatePath(sc config.Store, tracker string) string {
	p := sc.SQLite.Path
	if sc.Driver == "postgres" || p == "" || strings.Contains(p, ":memory:") || strings.HasPrefix(p, "file:") {
		return ""
	}
	return strings.TrimSuffix(p, ".db") + ".dryrun-" + tracker + ".json"
}

// entityWriter is the Qase API client as the engine's writer (a nil
// interface without a token, so the engine can tell).
func (a *app) entityWriter() qsync.EntityWriter {
	if a.writer == nil {
		return nil
	}
	return a.writer
}

// trackerWebhooks mounts /webhooks/<tracker name> for every tracker with
// webhook secrets: tracker deliveries for two-way routes.
func (a *app) trackerWebhooks(mux *http.ServeMux, acc qsync.TrackerAcceptor) {
	for _, tc := range a.cfg.Trackers {
		if len(tc.WebhookSecrets) == 0 || tc.DryRun {
			continue
		}
		log := a.log.WithFields(logrus.Fields{"component": "tracker-webhook", "tracker": tc.Name})
		path := "/webhooks/" + tc.Name
		o := trackerhook.Options{Acceptor: acc, Secrets: reveal(tc.WebhookSecrets),
			MaxBody: a.cfg.Server.MaxBodyBytes, Logger: log, Clock: a.clock, Observe: a.metrics.TrackerWebhook(tc.Name)}
		switch tc.Type {
		case config.TrackerGitHub:
			mux.Handle(path, github.NewWebhookHandler(o))
		case config.TrackerJira:
			mux.Handle(path, jira.NewWebhookHandler(jira.WebhookOptions{Options: o, Tracker: a.trackers[tc.Name]}))
		default:
			continue
		}
		log.WithField("path", path).Info("tracker webhook receiver enabled")
	}
}

// linkTypes names the Qase external-issue type of each Jira tracker (Qase
// links Jira issues only).
func linkTypes(cfg *config.Config) map[string]string {
	out := map[string]string{}
	for _, tc := range cfg.Trackers {
		if tc.Type != config.TrackerJira {
			continue
		}
		out[tc.Name] = "jira-cloud"
		if tc.Flavor == "datacenter" {
			out[tc.Name] = "jira-server"
		}
	}
	return out
}

// gather maps worker.gather to EngineOptions.Gather, where 0 means the
// default and a negative value none.
func gather(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
