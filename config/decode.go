package config

import (
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/qase-sync/qase-sync/mapping/yamlnode"
)

// fields decodes a mapping node strictly and records positions.
func (l *loader) fields(n *yaml.Node, field string, known ...string) map[string]*yaml.Node {
	if r := yamlnode.Resolve(n); r != nil {
		l.pos[field] = r
	}
	f := l.d.Fields(n, field, known...)
	for k, v := range f {
		if r := yamlnode.Resolve(v); r != nil {
			l.pos[yamlnode.Join(field, k)] = r
			if r.Kind == yaml.SequenceNode {
				for i, it := range r.Content {
					l.pos[yamlnode.Index(yamlnode.Join(field, k), i)] = it
				}
			}
		}
	}
	return f
}

func (l *loader) str(f map[string]*yaml.Node, field, key, def string) string {
	n := f[key]
	if yamlnode.IsNull(n) {
		return def
	}
	s, _ := l.d.String(n, yamlnode.Join(field, key))
	return s
}

func (l *loader) dur(f map[string]*yaml.Node, field, key string, def time.Duration) time.Duration {
	return l.d.Duration(f[key], yamlnode.Join(field, key), def)
}

// secret decodes key and its key_file variant (read at load).
func (l *loader) secret(f map[string]*yaml.Node, field, key string) Secret {
	v := l.str(f, field, key, "")
	fileKey := key + "_file"
	if p := l.str(f, field, fileKey, ""); p != "" {
		if v != "" {
			l.errf(yamlnode.Join(field, fileKey), "set %s or %s, not both", key, fileKey)
			return ""
		}
		data, err := readLimited(l.path(p))
		if err != nil {
			l.errf(yamlnode.Join(field, fileKey), "cannot read secret file: %v", err)
			return ""
		}
		v = strings.TrimRight(string(data), "\r\n")
		if v == "" {
			l.errf(yamlnode.Join(field, fileKey), "secret file %s is empty", p)
		}
	}
	return Secret(v)
}

func (l *loader) secretList(n *yaml.Node, field string) []Secret {
	var out []Secret
	for _, s := range l.d.Strings(n, field) {
		if s != "" {
			out = append(out, Secret(s))
		}
	}
	return out
}

func (l *loader) decode(root *yaml.Node) *Config {
	c := &Config{File: l.d.File}
	l.pos[""] = root
	top := l.fields(root, "", "server", "qase", "store", "trackers", "worker", "reconcile", "log", "mapping", "notify")

	s := l.fields(top["server"], "server", "listen", "webhook_path", "max_body_bytes", "read_header_timeout",
		"read_timeout", "write_timeout", "idle_timeout", "shutdown_timeout", "shutdown_delay", "admin_token", "admin_token_file")
	c.Server = Server{
		Listen:            l.str(s, "server", "listen", DefaultListen),
		WebhookPath:       l.str(s, "server", "webhook_path", DefaultWebhookPath),
		MaxBodyBytes:      l.d.Int(s["max_body_bytes"], "server.max_body_bytes", DefaultMaxBodyBytes),
		ReadHeaderTimeout: l.dur(s, "server", "read_header_timeout", 5*time.Second),
		ReadTimeout:       l.dur(s, "server", "read_timeout", 15*time.Second),
		WriteTimeout:      l.dur(s, "server", "write_timeout", 15*time.Second),
		IdleTimeout:       l.dur(s, "server", "idle_timeout", 60*time.Second),
		ShutdownTimeout:   l.dur(s, "server", "shutdown_timeout", 30*time.Second),
		ShutdownDelay:     l.dur(s, "server", "shutdown_delay", 2*time.Second),
		AdminToken:        l.secret(s, "server", "admin_token"),
	}

	q := l.fields(top["qase"], "qase", "secrets", "secrets_file", "project_secrets", "allow_unsigned",
		"default_project", "api_token", "api_token_file", "api_url", "app_url")
	c.Qase = Qase{
		Secrets:        l.secretList(q["secrets"], "qase.secrets"),
		AllowUnsigned:  l.d.Bool(q["allow_unsigned"], "qase.allow_unsigned", false),
		DefaultProject: l.str(q, "qase", "default_project", ""),
		APIToken:       l.secret(q, "qase", "api_token"),
		APIURL:         strings.TrimRight(l.str(q, "qase", "api_url", DefaultQaseAPIURL), "/"),
		AppURL:         strings.TrimRight(l.str(q, "qase", "app_url", DefaultQaseAppURL), "/"),
	}
	if p := l.str(q, "qase", "secrets_file", ""); p != "" {
		data, err := readLimited(l.path(p))
		if err != nil {
			l.errf("qase.secrets_file", "cannot read secret file: %v", err)
		} else {
			// One secret per line; blank lines and # comments are skipped.
			for _, line := range strings.Split(string(data), "\n") {
				if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
					c.Qase.Secrets = append(c.Qase.Secrets, Secret(line))
				}
			}
		}
	}
	for _, p := range l.d.Pairs(q["project_secrets"], "qase.project_secrets") {
		field := "qase.project_secrets." + p.Key
		l.pos[field] = p.KeyN
		if c.Qase.ProjectSecrets == nil {
			c.Qase.ProjectSecrets = map[string][]Secret{}
		}
		c.Qase.ProjectSecrets[p.Key] = l.secretList(p.Value, field)
	}

	st := l.fields(top["store"], "store", "driver", "sqlite", "postgres")
	c.Store.Driver = l.str(st, "store", "driver", "sqlite")
	sq := l.fields(st["sqlite"], "store.sqlite", "path", "synchronous")
	c.Store.SQLite = SQLite{
		Path:        l.str(sq, "store.sqlite", "path", DefaultSQLitePath),
		Synchronous: l.str(sq, "store.sqlite", "synchronous", "full"),
	}
	pg := l.fields(st["postgres"], "store.postgres", "dsn", "dsn_file")
	c.Store.Postgres.DSN = l.secret(pg, "store.postgres", "dsn")

	for i, tn := range l.d.Items(top["trackers"], "trackers") {
		c.Trackers = append(c.Trackers, l.decodeTracker(tn, yamlnode.Index("trackers", i)))
	}

	w := l.fields(top["worker"], "worker", "concurrency", "lease", "max_attempts", "max_age", "backoff_base", "backoff_max")
	c.Worker = Worker{
		Concurrency: int(l.d.Int(w["concurrency"], "worker.concurrency", 4)),
		Lease:       l.dur(w, "worker", "lease", 2*time.Minute),
		MaxAttempts: int(l.d.Int(w["max_attempts"], "worker.max_attempts", 12)),
		MaxAge:      l.dur(w, "worker", "max_age", 72*time.Hour),
		BackoffBase: l.dur(w, "worker", "backoff_base", 2*time.Second),
		BackoffMax:  l.dur(w, "worker", "backoff_max", 10*time.Minute),
	}

	r := l.fields(top["reconcile"], "reconcile", "enabled", "schedule", "routes", "projects")
	c.Reconcile = Reconcile{
		Enabled:  l.d.Bool(r["enabled"], "reconcile.enabled", false),
		Schedule: l.str(r, "reconcile", "schedule", ""),
		Routes:   l.d.Strings(r["routes"], "reconcile.routes"),
		Projects: l.d.Strings(r["projects"], "reconcile.projects"),
	}

	c.Notify = l.decodeNotify(top["notify"])

	lg := l.fields(top["log"], "log", "level", "format")
	c.Log = Log{Level: strings.ToLower(l.str(lg, "log", "level", "info")), Format: strings.ToLower(l.str(lg, "log", "format", "json"))}
	return c
}

var trackerKeys = map[string][]string{
	TrackerJira:   {"dry_run", "url", "flavor", "email", "token", "token_file", "user_field", "transitions", "settle", "rate"},
	TrackerGitHub: {"dry_run", "base_url", "token", "token_file", "app", "rate"},
	TrackerDryRun: {"settle"},
}

func (l *loader) decodeTracker(n *yaml.Node, field string) Tracker {
	all := []string{"name", "type", "dry_run", "url", "flavor", "email", "token", "token_file", "user_field",
		"transitions", "settle", "rate", "base_url", "app"}
	f := l.fields(n, field, all...)
	t := Tracker{Name: l.str(f, field, "name", ""), Type: l.str(f, field, "type", ""),
		DryRun: l.d.Bool(f["dry_run"], field+".dry_run", false)}
	if allowed, ok := trackerKeys[t.Type]; ok {
		for k, v := range f {
			if k == "name" || k == "type" {
				continue
			}
			valid := false
			for _, a := range allowed {
				valid = valid || a == k
			}
			if !valid {
				l.d.Errorf(v, field+"."+k, "not a setting of a %s tracker", t.Type)
			}
		}
	}
	t.Token = l.secret(f, field, "token")
	switch t.Type {
	case TrackerJira:
		t.URL = strings.TrimRight(l.str(f, field, "url", ""), "/")
		t.Flavor = strings.ToLower(l.str(f, field, "flavor", "cloud"))
		t.Email = l.str(f, field, "email", "")
		t.UserField = l.str(f, field, "user_field", "")
		t.Settle = l.dur(f, field, "settle", 5*time.Second)
		for _, p := range l.d.Pairs(f["transitions"], field+".transitions") {
			l.pos[field+".transitions."+p.Key] = p.KeyN
			if t.Transitions == nil {
				t.Transitions = map[string][]string{}
			}
			t.Transitions[p.Key] = l.d.Strings(p.Value, field+".transitions."+p.Key)
		}
		t.Rate = l.rate(f["rate"], field+".rate", 5, 10)
	case TrackerGitHub:
		t.BaseURL = strings.TrimRight(l.str(f, field, "base_url", ""), "/")
		if !yamlnode.IsNull(f["app"]) {
			af := field + ".app"
			a := l.fields(f["app"], af, "app_id", "installation_id", "private_key", "private_key_file")
			t.App = &GitHubApp{
				AppID:          l.d.Int(a["app_id"], af+".app_id", 0),
				InstallationID: l.d.Int(a["installation_id"], af+".installation_id", 0),
				PrivateKeyFile: l.str(a, af, "private_key_file", ""),
			}
			t.App.PrivateKey = l.secret(a, af, "private_key")
		}
		t.Rate = l.rate(f["rate"], field+".rate", 1, 10) // 60/min
	case TrackerDryRun:
		t.Settle = l.dur(f, field, "settle", 0)
	}
	return t
}

// rate decodes {per_second | per_minute, burst} into a per-second rate.
func (l *loader) rate(n *yaml.Node, field string, defPerSecond float64, defBurst int) Rate {
	f := l.fields(n, field, "per_second", "per_minute", "burst")
	r := Rate{PerSecond: defPerSecond, Burst: defBurst}
	_, ps := f["per_second"]
	_, pm := f["per_minute"]
	switch {
	case ps && pm:
		l.errf(field+".per_minute", "set per_second or per_minute, not both")
	case ps:
		r.PerSecond = l.d.Float(f["per_second"], field+".per_second", defPerSecond)
	case pm:
		r.PerSecond = l.d.Float(f["per_minute"], field+".per_minute", defPerSecond*60) / 60
	}
	r.Burst = int(l.d.Int(f["burst"], field+".burst", int64(defBurst)))
	return r
}
