// Package config loads the qase-sync service configuration: YAML decoded
// by yaml.v3 into the tagged structs below, strictly (unknown keys are
// errors), ${VAR} expansion per scalar, secrets from values or *_file
// files, defaults per section (Default, Tracker.UnmarshalYAML), and
// validation in one place (validate.go) with "file:line: field: problem"
// messages, all problems at once.
//
// Import direction: config does not import mapping. The mapping: section
// is kept as a YAML node (Config.Mapping) that cmd/qase-sync hands to
// package mapping, which reports its problems in the same form.
package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/qase-sync/qase-sync/internal/yamlpos"
)

// Config is the whole service configuration.
type Config struct {
	// File is the path the configuration was loaded from.
	File      string    `yaml:"-" json:"-"`
	Server    Server    `yaml:"server" json:"server"`
	Qase      Qase      `yaml:"qase" json:"qase"`
	Store     Store     `yaml:"store" json:"store"`
	Trackers  []Tracker `yaml:"trackers" json:"trackers"`
	Worker    Worker    `yaml:"worker" json:"worker"`
	Reconcile Reconcile `yaml:"reconcile" json:"reconcile"`
	Retention Retention `yaml:"retention" json:"retention"`
	Log       Log       `yaml:"log" json:"log"`
	// Notify lists notification routes (config/notify.go).
	Notify []Notifier `yaml:"notify,omitempty" json:"notify,omitempty"`
	// Mapping is the mapping: section as written (after ${VAR}
	// expansion), nil when absent; package mapping decodes it.
	Mapping *yaml.Node `yaml:"-" json:"-"`

	index *yamlpos.Index
}

// Server configures the HTTP listener.
type Server struct {
	Listen            string        `yaml:"listen" json:"listen"`
	WebhookPath       string        `yaml:"webhook_path" json:"webhook_path"`
	MaxBodyBytes      int64         `yaml:"max_body_bytes" json:"max_body_bytes"`
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout" json:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout" json:"read_timeout"`
	WriteTimeout      time.Duration `yaml:"write_timeout" json:"write_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout" json:"idle_timeout"`
	ShutdownTimeout   time.Duration `yaml:"shutdown_timeout" json:"shutdown_timeout"`
	// ShutdownDelay keeps serving (readiness failing) this long after
	// SIGTERM, so load balancers stop routing before the listener closes.
	ShutdownDelay time.Duration `yaml:"shutdown_delay" json:"shutdown_delay"`
	// AdminToken enables the admin API when set.
	AdminToken     Secret `yaml:"admin_token,omitempty" json:"admin_token,omitempty"`
	AdminTokenFile string `yaml:"admin_token_file,omitempty" json:"admin_token_file,omitempty"`
}

// Qase configures the webhook receiver and the optional API reader.
type Qase struct {
	// Secrets are accepted X-Qase-Secret values (several for rotation).
	Secrets []Secret `yaml:"secrets" json:"secrets"`
	// SecretsFile holds more secrets, one a line (# comments).
	SecretsFile string `yaml:"secrets_file,omitempty" json:"secrets_file,omitempty"`
	// ProjectSecrets are accepted only for the project code they are listed under.
	ProjectSecrets map[string][]Secret `yaml:"project_secrets,omitempty" json:"project_secrets,omitempty"`
	AllowUnsigned  bool                `yaml:"allow_unsigned" json:"allow_unsigned"`
	DefaultProject string              `yaml:"default_project,omitempty" json:"default_project,omitempty"`
	// APIToken enables reading entities from the Qase REST API.
	APIToken     Secret `yaml:"api_token,omitempty" json:"api_token,omitempty"`
	APITokenFile string `yaml:"api_token_file,omitempty" json:"api_token_file,omitempty"`
	APIURL       string `yaml:"api_url" json:"api_url"`
	AppURL       string `yaml:"app_url" json:"app_url"`
	// APIRate is the API token's request budget, shared by the worker's
	// reads and the reconciler (Qase allows about 200 requests a minute
	// per workspace; the default leaves room for other clients).
	APIRate Rate `yaml:"api_rate" json:"api_rate"`
}

// Store selects and configures the storage backend.
type Store struct {
	Driver   string   `yaml:"driver" json:"driver"` // sqlite | postgres
	SQLite   SQLite   `yaml:"sqlite" json:"sqlite"`
	Postgres Postgres `yaml:"postgres" json:"postgres"`
}

// SQLite configures the embedded database.
type SQLite struct {
	Path        string `yaml:"path" json:"path"`
	Synchronous string `yaml:"synchronous" json:"synchronous"` // full | normal
}

// Postgres configures the PostgreSQL backend.
type Postgres struct {
	DSN     Secret `yaml:"dsn" json:"dsn"`
	DSNFile string `yaml:"dsn_file,omitempty" json:"dsn_file,omitempty"`
}

// Tracker types.
const (
	TrackerJira   = "jira"
	TrackerGitHub = "github"
	TrackerDryRun = "dryrun"
)

// Tracker is one tracker instance; which fields apply depends on Type.
type Tracker struct {
	Name string `yaml:"name" json:"name"`
	Type string `yaml:"type" json:"type"`
	// DryRun (jira, github) logs operations instead of sending them and
	// keeps issues in memory; credentials are then optional. The type
	// still decides the markup the mapping renders.
	DryRun bool `yaml:"dry_run,omitempty" json:"dry_run,omitempty"`

	// Jira.
	URL         string              `yaml:"url,omitempty" json:"url,omitempty"`
	Flavor      string              `yaml:"flavor,omitempty" json:"flavor,omitempty"` // cloud | datacenter
	Email       string              `yaml:"email,omitempty" json:"email,omitempty"`
	UserField   string              `yaml:"user_field,omitempty" json:"user_field,omitempty"`
	Transitions map[string][]string `yaml:"transitions,omitempty" json:"transitions,omitempty"`
	Settle      time.Duration       `yaml:"settle,omitempty" json:"settle,omitempty"`

	// GitHub.
	BaseURL string     `yaml:"base_url,omitempty" json:"base_url,omitempty"` // GHES API URL
	App     *GitHubApp `yaml:"app,omitempty" json:"app,omitempty"`

	// Token is the Jira API token / PAT or the GitHub token.
	Token     Secret `yaml:"token,omitempty" json:"token,omitempty"`
	TokenFile string `yaml:"token_file,omitempty" json:"token_file,omitempty"`
	Rate      Rate   `yaml:"rate" json:"rate"`

	// WebhookSecrets enable the tracker's webhook receiver at
	// /webhooks/<name> (two-way routes): GitHub deliveries must be signed
	// with one (X-Hub-Signature-256); Jira deliveries must carry one as
	// the token query parameter or X-Qase-Sync-Token header, or be signed
	// with one (X-Hub-Signature). Several allow rotation.
	WebhookSecrets []Secret `yaml:"webhook_secrets,omitempty" json:"webhook_secrets,omitempty"`
}

// trackerKeys are the settings each tracker type takes (besides name and
// type); validate reports any other key set on a tracker.
var trackerKeys = map[string][]string{
	TrackerJira:   {"dry_run", "url", "flavor", "email", "token", "token_file", "user_field", "transitions", "settle", "rate", "webhook_secrets"},
	TrackerGitHub: {"dry_run", "base_url", "token", "token_file", "app", "rate", "webhook_secrets"},
	TrackerDryRun: {"settle"},
}

// defaultTracker is a tracker of type typ before its settings apply.
func defaultTracker(typ string) Tracker {
	switch typ {
	case TrackerJira:
		return Tracker{Flavor: "cloud", Settle: 5 * time.Second, Rate: Rate{PerSecond: 5, Burst: 10}}
	case TrackerGitHub:
		return Tracker{Rate: Rate{PerSecond: 1, Burst: 10}} // 60/min
	}
	return Tracker{}
}

// UnmarshalYAML fills the defaults of the tracker's type, then decodes it.
// (The older unmarshal-function form keeps yaml.v3's strict decoding.)
func (t *Tracker) UnmarshalYAML(unmarshal func(any) error) error {
	var head struct {
		Type string `yaml:"type"`
	}
	_ = unmarshal(&head) // only the type: the full decode below reports every problem
	*t = defaultTracker(head.Type)
	type plain Tracker
	if err := unmarshal((*plain)(t)); err != nil {
		return err
	}
	t.URL = strings.TrimRight(t.URL, "/")
	t.BaseURL = strings.TrimRight(t.BaseURL, "/")
	t.Flavor = strings.ToLower(t.Flavor)
	return nil
}

// GitHubApp authenticates as a GitHub App installation.
type GitHubApp struct {
	AppID          int64  `yaml:"app_id" json:"app_id"`
	InstallationID int64  `yaml:"installation_id" json:"installation_id"`
	PrivateKey     Secret `yaml:"private_key" json:"private_key"` // PEM, read from private_key_file
	PrivateKeyFile string `yaml:"private_key_file,omitempty" json:"private_key_file,omitempty"`
}

// Rate is a request budget for one credential: a token bucket that every
// HTTP request sent with it takes from, shared by the replicas on one
// PostgreSQL database. Written as per_second or per_minute; PerSecond
// holds the normalized rate.
type Rate struct {
	PerSecond float64 `yaml:"per_second" json:"per_second"`
	Burst     int     `yaml:"burst" json:"burst"`
}

// UnmarshalYAML decodes {per_second | per_minute, burst} over the
// tracker type's default (validate reports setting both).
func (r *Rate) UnmarshalYAML(unmarshal func(any) error) error {
	var in struct {
		PerSecond *float64 `yaml:"per_second"`
		PerMinute *float64 `yaml:"per_minute"`
		Burst     *int     `yaml:"burst"`
	}
	if err := unmarshal(&in); err != nil {
		return err
	}
	switch {
	case in.PerSecond != nil:
		r.PerSecond = *in.PerSecond
	case in.PerMinute != nil:
		r.PerSecond = *in.PerMinute / 60
	}
	if in.Burst != nil {
		r.Burst = *in.Burst
	}
	return nil
}

// Worker configures the sync workers and retries.
type Worker struct {
	Concurrency int           `yaml:"concurrency" json:"concurrency"`
	Lease       time.Duration `yaml:"lease" json:"lease"`
	// JobTimeout bounds one sync (an attempt); the lease is renewed while
	// it runs.
	JobTimeout  time.Duration `yaml:"job_timeout" json:"job_timeout"`
	MaxAttempts int           `yaml:"max_attempts" json:"max_attempts"`
	MaxAge      time.Duration `yaml:"max_age" json:"max_age"`
	BackoffBase time.Duration `yaml:"backoff_base" json:"backoff_base"`
	BackoffMax  time.Duration `yaml:"backoff_max" json:"backoff_max"`
	// LateCommit is how long after a tracker request's answer was lost its
	// write may still land (the client timeout and a server's commit
	// delay); nothing is created again for a key within it. Dry-run
	// trackers have none.
	LateCommit time.Duration `yaml:"late_commit" json:"late_commit"`
	// Gather is how long woken workers wait for more events before they
	// take jobs, so that jobs arriving together share their commits (0:
	// take them at once).
	Gather time.Duration `yaml:"gather" json:"gather"`
}

// Reconcile configures the scheduled reconciler.
type Reconcile struct {
	Enabled  bool     `yaml:"enabled" json:"enabled"`
	Schedule string   `yaml:"schedule" json:"schedule"`                 // cron spec or @every 15m
	Routes   []string `yaml:"routes,omitempty" json:"routes,omitempty"` // empty = all
	// Projects are the Qase projects enumerated for routes without a
	// projects: list (empty = only projects seen in links and events).
	Projects []string `yaml:"projects,omitempty" json:"projects,omitempty"`
	// Lease is how long a replica's claim on the scheduled pass lasts
	// without renewal (it is renewed while the pass runs): a replica that
	// dies mid-pass blocks the others' ticks for at most this long.
	Lease time.Duration `yaml:"lease" json:"lease"`
	// Incremental makes a scheduled pass read only the Qase entities
	// updated since the last one (QQL search; defects), less Overlap;
	// a full sweep still runs when the last started FullEvery ago.
	Incremental bool          `yaml:"incremental" json:"incremental"`
	FullEvery   time.Duration `yaml:"full_every" json:"full_every"`
	Overlap     time.Duration `yaml:"overlap" json:"overlap"`
}

// Retention configures pruning of the store's history: accepted events
// (once folded into their entity's snapshot and delivered), ledger entries
// and dead letters whose key has no job, older than MaxAge.
type Retention struct {
	MaxAge   time.Duration `yaml:"max_age" json:"max_age"`   // 0 = keep everything
	Interval time.Duration `yaml:"interval" json:"interval"` // how often serve prunes
	Batch    int           `yaml:"batch" json:"batch"`       // rows per delete transaction
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level" json:"level"`
	Format string `yaml:"format" json:"format"` // json | text
}

// Defaults.
const (
	DefaultListen       = ":8080"
	DefaultWebhookPath  = "/webhooks/qase"
	DefaultMaxBodyBytes = 1 << 20
	DefaultQaseAPIURL   = "https://api.qase.io/v1"
	DefaultQaseAppURL   = "https://app.qase.io"
	DefaultSQLitePath   = "qase-sync.db"
	maxFileBytes        = 1 << 20
)

// Default is the configuration of an empty file: every section's defaults
// (trackers take theirs from defaultTracker).
func Default() Config {
	return Config{
		Server: Server{
			Listen: DefaultListen, WebhookPath: DefaultWebhookPath, MaxBodyBytes: DefaultMaxBodyBytes,
			ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second, WriteTimeout: 15 * time.Second,
			IdleTimeout: 60 * time.Second, ShutdownTimeout: 30 * time.Second, ShutdownDelay: 2 * time.Second,
		},
		Qase:  Qase{APIURL: DefaultQaseAPIURL, AppURL: DefaultQaseAppURL, APIRate: Rate{PerSecond: 3, Burst: 10}}, // 180/min
		Store: Store{Driver: "sqlite", SQLite: SQLite{Path: DefaultSQLitePath, Synchronous: "full"}},
		// late_commit: twice the trackers' 30 s request timeout, and a margin.
		// concurrency: a job mostly waits (its turn at the one writer, the
		// fsync before a create, the tracker), so more jobs in flight use
		// CPUs that 4 left idle and share more commits (performance.md).
		Worker: Worker{Concurrency: 16, Lease: 2 * time.Minute, JobTimeout: 10 * time.Minute, MaxAttempts: 12, MaxAge: 72 * time.Hour,
			BackoffBase: 2 * time.Second, BackoffMax: 10 * time.Minute, LateCommit: 70 * time.Second,
			Gather: 10 * time.Millisecond},
		Reconcile: Reconcile{Lease: time.Minute, Incremental: true, FullEvery: 24 * time.Hour, Overlap: 10 * time.Minute},
		Retention: Retention{MaxAge: 720 * time.Hour, Interval: time.Hour, Batch: 1000},
		Log:       Log{Level: "info", Format: "json"},
	}
}

// Load reads and parses the configuration file at path. env looks up
// environment variables (os.LookupEnv in production; nil = none set).
func Load(path string, env func(string) (string, bool)) (*Config, error) {
	data, err := readLimited(path)
	if err != nil {
		return nil, yamlpos.Problems{{File: path, Msg: "cannot read configuration: " + err.Error()}}
	}
	return Parse(path, data, env)
}

// Parse parses configuration data; name is used in messages and to
// resolve relative *_file paths.
//
// On problems the error is a yamlpos.Problems, sorted by line. The config
// is then still returned, decoded as far as it could be, when the YAML
// itself parsed: a caller that checks more (the mapping) can report
// every problem of the file at once.
func Parse(name string, data []byte, env func(string) (string, bool)) (*Config, error) {
	root, err := yamlpos.Parse(name, data)
	if err != nil {
		return nil, err
	}
	ps := expandNodes(name, root, "", env)
	doc := struct {
		Config  `yaml:",inline"`
		Mapping yaml.Node `yaml:"mapping"` // decoded by package mapping
	}{Config: Default()}
	ps = append(ps, yamlpos.Decode(name, root, "", &doc)...)
	c := &doc.Config
	c.File = name
	c.index = yamlpos.NewIndex(name, root, "")
	if n := c.index.Node("mapping"); !yamlpos.IsNull(n) {
		c.Mapping = n // the original node: its lines are the file's
	}
	ps = append(ps, c.readFiles(filepath.Dir(name))...)
	c.normalize()
	ps = append(ps, c.validate()...)
	return c, ps.Err()
}

// Problem makes a "file:line: field: message" problem for field (a path
// such as "reconcile.routes[1]"), at the line of the field or of its
// closest parent that the file sets.
func (c *Config) Problem(field, format string, args ...any) yamlpos.Problem {
	if c.index == nil {
		return yamlpos.Problem{File: c.File, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	return c.index.Problem(field, format, args...)
}

// normalize trims and lower-cases what is compared later.
func (c *Config) normalize() {
	c.Qase.APIURL = strings.TrimRight(c.Qase.APIURL, "/")
	c.Qase.AppURL = strings.TrimRight(c.Qase.AppURL, "/")
	c.Qase.Secrets = nonEmpty(c.Qase.Secrets)
	for code, ss := range c.Qase.ProjectSecrets {
		c.Qase.ProjectSecrets[code] = nonEmpty(ss)
	}
	c.Log.Level = strings.ToLower(c.Log.Level)
	c.Log.Format = strings.ToLower(c.Log.Format)
}

func nonEmpty(ss []Secret) []Secret {
	var out []Secret
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// readFiles reads the *_file settings (relative to dir) into their secrets.
func (c *Config) readFiles(dir string) yamlpos.Problems {
	var ps yamlpos.Problems
	path := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	secret := func(s *Secret, file, field, key string) {
		if file == "" {
			return
		}
		fileField := field + "_file"
		if *s != "" {
			ps = append(ps, c.Problem(fileField, "set %s or %s_file, not both", key, key))
			*s = ""
			return
		}
		data, err := readLimited(path(file))
		if err != nil {
			ps = append(ps, c.Problem(fileField, "cannot read secret file: %v", err))
			return
		}
		*s = Secret(strings.TrimRight(string(data), "\r\n"))
		if *s == "" {
			ps = append(ps, c.Problem(fileField, "secret file %s is empty", file))
		}
	}
	secret(&c.Server.AdminToken, c.Server.AdminTokenFile, "server.admin_token", "admin_token")
	secret(&c.Qase.APIToken, c.Qase.APITokenFile, "qase.api_token", "api_token")
	secret(&c.Store.Postgres.DSN, c.Store.Postgres.DSNFile, "store.postgres.dsn", "dsn")
	for i := range c.Trackers {
		t := &c.Trackers[i]
		f := yamlpos.Elem("trackers", i)
		secret(&t.Token, t.TokenFile, f+".token", "token")
		if t.App != nil {
			secret(&t.App.PrivateKey, t.App.PrivateKeyFile, f+".app.private_key", "private_key")
		}
	}
	for i := range c.Notify {
		n := &c.Notify[i]
		secret(&n.URL, n.URLFile, yamlpos.Elem("notify", i)+".url", "url")
	}
	if p := c.Qase.SecretsFile; p != "" {
		data, err := readLimited(path(p))
		if err != nil {
			ps = append(ps, c.Problem("qase.secrets_file", "cannot read secret file: %v", err))
		} else {
			// One secret per line; blank lines and # comments are skipped.
			for _, line := range strings.Split(string(data), "\n") {
				if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
					c.Qase.Secrets = append(c.Qase.Secrets, Secret(line))
				}
			}
		}
	}
	return ps
}

// TrackerTypes maps tracker names to types.
func (c *Config) TrackerTypes() map[string]string {
	out := make(map[string]string, len(c.Trackers))
	for _, t := range c.Trackers {
		out[t.Name] = t.Type
	}
	return out
}

// Tracker returns the tracker with the given name.
func (c *Config) Tracker(name string) (Tracker, bool) {
	for _, t := range c.Trackers {
		if t.Name == name {
			return t, true
		}
	}
	return Tracker{}, false
}

// Redacted renders the configuration as YAML with every secret replaced
// by [REDACTED]. The mapping is not included.
func (c *Config) Redacted() string {
	b, err := yaml.Marshal(c)
	if err != nil {
		return "config: " + err.Error()
	}
	return string(b)
}

// String is Redacted, so printing a Config never leaks secrets.
func (c *Config) String() string { return c.Redacted() }

// ReadFile reads a regular file of at most 1 MiB, as the loader reads
// secret files (the mapping's table_files go through it too).
func ReadFile(path string) ([]byte, error) { return readLimited(path) }

// readLimited reads a regular file of at most maxFileBytes (never a
// device or pipe that could block or never end).
func readLimited(path string) ([]byte, error) {
	// Stat first: opening a FIFO would block.
	if st, err := os.Stat(path); err == nil && !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, pe.Err // drop the path, the caller names the field
		}
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxFileBytes)
	}
	return data, nil
}
