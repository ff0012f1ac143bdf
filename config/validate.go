package config

import (
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/qase-sync/qase-sync/internal/yamlpos"
)

var trackerNameRE = regexp.MustCompile(`^[a-z0-9]+([_-][a-z0-9]+)*$`)

// validate checks the decoded configuration. Every rule lives here;
// messages name the field and point at its line. (Routes are checked by
// package mapping, against ValidTrackers.)
func (c *Config) validate() yamlpos.Problems {
	l := &checker{c: c}
	// server
	if host, port, err := net.SplitHostPort(c.Server.Listen); err != nil {
		l.errf("server.listen", "invalid listen address %q (want host:port or :port)", c.Server.Listen)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		l.errf("server.listen", "invalid port %q in listen address", port)
	} else if host != "" && strings.ContainsAny(host, " /") {
		l.errf("server.listen", "invalid host %q in listen address", host)
	}
	if !strings.HasPrefix(c.Server.WebhookPath, "/") {
		l.errf("server.webhook_path", "must start with \"/\" (got %q)", c.Server.WebhookPath)
	}
	if c.Server.MaxBodyBytes <= 0 {
		l.errf("server.max_body_bytes", "must be positive")
	}
	if c.Server.ShutdownDelay < 0 || (c.Server.ShutdownDelay >= c.Server.ShutdownTimeout && c.Server.ShutdownTimeout > 0) {
		l.errf("server.shutdown_delay", "must be at least 0 and shorter than server.shutdown_timeout")
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"server.read_header_timeout", c.Server.ReadHeaderTimeout}, {"server.read_timeout", c.Server.ReadTimeout},
		{"server.write_timeout", c.Server.WriteTimeout}, {"server.idle_timeout", c.Server.IdleTimeout},
		{"server.shutdown_timeout", c.Server.ShutdownTimeout},
		{"worker.lease", c.Worker.Lease}, {"worker.max_age", c.Worker.MaxAge},
		{"worker.backoff_base", c.Worker.BackoffBase}, {"worker.backoff_max", c.Worker.BackoffMax},
		{"worker.job_timeout", c.Worker.JobTimeout}, {"reconcile.lease", c.Reconcile.Lease},
	} {
		if d.v <= 0 {
			l.errf(d.field, "must be a positive duration")
		}
	}
	if c.Worker.LateCommit < 0 {
		l.errf("worker.late_commit", "must not be negative")
	}
	if c.Worker.Gather < 0 || c.Worker.Gather > time.Second {
		l.errf("worker.gather", "must be between 0s and 1s")
	}
	l.validateNotify()

	// qase
	if len(c.Qase.Secrets) == 0 && len(c.Qase.ProjectSecrets) == 0 && !c.Qase.AllowUnsigned {
		l.errf("qase.secrets", "at least one webhook secret is required (or set allow_unsigned: true)")
	}
	for code, ss := range c.Qase.ProjectSecrets {
		if len(ss) == 0 {
			l.errf("qase.project_secrets."+code, "no secrets listed")
		}
	}
	l.checkURL("qase.api_url", c.Qase.APIURL, true)
	if c.index.Has("qase.api_rate.per_second") && c.index.Has("qase.api_rate.per_minute") {
		l.errf("qase.api_rate.per_minute", "set per_second or per_minute, not both")
	}
	if c.Qase.APIRate.PerSecond <= 0 {
		l.errf("qase.api_rate", "rate must be positive")
	}
	if c.Qase.APIRate.Burst < 1 {
		l.errf("qase.api_rate.burst", "must be at least 1")
	}
	l.checkURL("qase.app_url", c.Qase.AppURL, true)

	// store
	switch c.Store.Driver {
	case "sqlite":
		if c.Store.SQLite.Path == "" {
			l.errf("store.sqlite.path", "required")
		}
		if s := c.Store.SQLite.Synchronous; s != "full" && s != "normal" {
			l.errf("store.sqlite.synchronous", "must be full or normal (got %q)", s)
		}
	case "postgres":
		if !c.Store.Postgres.DSN.IsSet() {
			l.errf("store.postgres.dsn", "required when store.driver is postgres (set dsn or dsn_file)")
		}
	default:
		l.errf("store.driver", "unknown driver %q (sqlite or postgres)", c.Store.Driver)
	}

	// trackers
	names := map[string]string{}
	for i, t := range c.Trackers {
		f := yamlpos.Elem("trackers", i)
		if allowed, ok := trackerKeys[t.Type]; ok {
			for _, k := range c.index.Keys(f) {
				if k != "name" && k != "type" && !slices.Contains(allowed, k) {
					l.errf(f+"."+k, "not a setting of a %s tracker", t.Type)
				}
			}
		}
		if c.index.Has(f+".rate.per_second") && c.index.Has(f+".rate.per_minute") {
			l.errf(f+".rate.per_minute", "set per_second or per_minute, not both")
		}
		switch {
		case t.Name == "":
			l.errf(f+".name", "required")
		case !trackerNameRE.MatchString(t.Name):
			l.errf(f+".name", "invalid tracker name %q (lowercase letters, digits, - and _)", t.Name)
		case names[t.Name] != "":
			l.errf(f+".name", "duplicate tracker name %q (first defined at %s)", t.Name, names[t.Name])
		}
		if t.Name != "" && names[t.Name] == "" {
			names[t.Name] = f
		}
		switch t.Type {
		case TrackerJira:
			l.checkURL(f+".url", t.URL, false)
			if t.URL == "" && !t.DryRun {
				l.errf(f+".url", "required for a jira tracker")
			}
			if !t.Token.IsSet() && !t.DryRun {
				l.errf(f+".token", "required for a jira tracker (set token or token_file)")
			}
			switch t.Flavor {
			case "cloud":
				if t.Email == "" && !t.DryRun {
					l.errf(f+".email", "required for Jira Cloud (the API token's account e-mail)")
				}
			case "datacenter":
			default:
				l.errf(f+".flavor", "must be cloud or datacenter (got %q)", t.Flavor)
			}
			if t.Settle < 0 {
				l.errf(f+".settle", "must not be negative")
			}
			for status, via := range t.Transitions {
				if status == "" || len(via) == 0 {
					l.errf(f+".transitions."+status, "list the transition names to reach %q", status)
				}
			}
		case TrackerGitHub:
			if t.BaseURL != "" {
				l.checkURL(f+".base_url", t.BaseURL, false)
			}
			switch {
			case t.Token.IsSet() && t.App != nil:
				l.errf(f+".app", "set token or app, not both")
			case t.App != nil:
				if t.App.AppID <= 0 {
					l.errf(f+".app.app_id", "required (a positive integer)")
				}
				if t.App.InstallationID <= 0 {
					l.errf(f+".app.installation_id", "required (a positive integer)")
				}
				if !t.App.PrivateKey.IsSet() {
					l.errf(f+".app.private_key_file", "required (the App's PEM private key)")
				}
			case !t.Token.IsSet() && !t.DryRun:
				l.errf(f+".token", "a github tracker needs token (or token_file) or app")
			}
		case TrackerDryRun:
		case "":
			l.errf(f+".type", "required (jira, github or dryrun)")
		default:
			l.errf(f+".type", "unknown tracker type %q (jira, github or dryrun)", t.Type)
		}
		if t.Type == TrackerJira || t.Type == TrackerGitHub {
			if t.Rate.PerSecond <= 0 {
				l.errf(f+".rate", "rate must be positive")
			}
			if t.Rate.Burst < 1 {
				l.errf(f+".rate.burst", "must be at least 1")
			}
		}
	}

	// worker
	if c.Worker.Concurrency < 1 {
		l.errf("worker.concurrency", "must be at least 1")
	}
	if c.Worker.MaxAttempts < 1 {
		l.errf("worker.max_attempts", "must be at least 1")
	}
	if c.Worker.BackoffBase > 0 && c.Worker.BackoffMax > 0 && c.Worker.BackoffMax < c.Worker.BackoffBase {
		l.errf("worker.backoff_max", "must not be smaller than backoff_base")
	}

	// log
	switch c.Log.Level {
	case "trace", "debug", "info", "warn", "warning", "error":
	default:
		l.errf("log.level", "unknown level %q (trace, debug, info, warn, error)", c.Log.Level)
	}
	if c.Log.Format != "json" && c.Log.Format != "text" {
		l.errf("log.format", "must be json or text (got %q)", c.Log.Format)
	}

	// reconcile
	if c.Reconcile.Enabled && c.Reconcile.Schedule == "" {
		l.errf("reconcile.schedule", "required when reconcile.enabled is true (e.g. \"@every 15m\" or \"*/15 * * * *\")")
	}
	if c.Reconcile.Schedule != "" {
		if _, err := cron.ParseStandard(c.Reconcile.Schedule); err != nil {
			l.errf("reconcile.schedule", "invalid schedule %q: %v", c.Reconcile.Schedule, err)
		}
	}
	if c.Reconcile.Incremental && c.Reconcile.FullEvery <= 0 {
		l.errf("reconcile.full_every", "must be a positive duration when reconcile.incremental is true: full sweeps are the only repair of tracker-side edits and deletions")
	}
	if c.Reconcile.Overlap < 0 {
		l.errf("reconcile.overlap", "must not be negative")
	}

	// retention
	if r := c.Retention; r.MaxAge != 0 && r.MaxAge < time.Hour {
		l.errf("retention.max_age", "must be 0 (keep everything) or at least 1h (got %s)", r.MaxAge)
	}
	if c.Retention.Interval <= 0 {
		l.errf("retention.interval", "must be a positive duration")
	}
	if b := c.Retention.Batch; b < 1 || b > 100000 {
		l.errf("retention.batch", "must be between 1 and 100000 (got %d)", b)
	}
	return l.ps
}

// checker collects the problems validate finds.
type checker struct {
	c  *Config
	ps yamlpos.Problems
}

func (l *checker) errf(field, format string, args ...any) {
	l.ps = append(l.ps, l.c.Problem(field, format, args...))
}

// ValidTrackers maps the names of the trackers that passed validation to
// their types: what routes may name.
func (c *Config) ValidTrackers() map[string]string {
	out := map[string]string{}
	seen := map[string]bool{}
	for _, t := range c.Trackers {
		if t.Name == "" || seen[t.Name] || !trackerNameRE.MatchString(t.Name) {
			continue
		}
		seen[t.Name] = true
		if _, ok := trackerKeys[t.Type]; ok {
			out[t.Name] = t.Type
		}
	}
	return out
}

// checkURL requires an absolute http(s) URL. Empty is allowed when
// !required (the caller reports missing values with a better message).
func (l *checker) checkURL(field, v string, required bool) {
	if v == "" {
		if required {
			l.errf(field, "required")
		}
		return
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		l.errf(field, "invalid URL %q (want http(s)://host/...)", v)
	}
}
