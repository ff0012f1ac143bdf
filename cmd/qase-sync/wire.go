package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
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
	engine   *qsync.Engine
	coverage *qsync.Coverage
	metrics  *metrics
	registry *prometheus.Registry
	ops      *opsState // this process's reconcile passes and drift
	owner    string    // this replica's name in store leases
	// reconcileMu keeps this process to one reconcile pass at a time.
	reconcileMu sync.Mutex
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
		a.source = qase.NewClient(qase.ClientOptions{BaseURL: cfg.Qase.APIURL, Token: cfg.Qase.APIToken.Reveal(), HTTPClient: hc,
			Logger: a.log.WithField("component", "qase-api"), Observer: a.metrics.Call, Clock: a.clock})
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
		Store: a.store, Mapper: a.mapper, Trackers: a.trackers, Source: a.source, Clock: a.clock,
		Logger: a.log.WithField("component", "worker"), Metrics: a.metrics, Coverage: a.coverage,
		Concurrency: w.Concurrency, Lease: w.Lease, JobTimeout: w.JobTimeout, MaxAttempts: w.MaxAttempts, MaxAge: w.MaxAge,
		BackoffBase: w.BackoffBase, BackoffMax: w.BackoffMax, LateCommit: late,
	})
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
	if plan || tc.DryRun || tc.Rate.PerSecond <= 0 {
		return tr, nil
	}
	lim := qsync.NewLimiter(qsync.PaceOptions{PerSecond: tc.Rate.PerSecond, Burst: tc.Rate.Burst, IssueSpace: issueSpace(tc.Type), Clock: a.clock,
		OnWait: func(d time.Duration) { a.metrics.RateWait(tc.Name, d) }})
	return qsync.Paced(tr, lim), nil
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
