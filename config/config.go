// Package config loads the qase-sync service configuration: strict YAML
// (unknown keys are errors), ${VAR} expansion per scalar, secrets from
// values or *_file files, defaults, and validation in one place with
// "file:line: field: problem" messages, all problems at once.
//
// Import direction: config imports mapping (and mapping/yamlnode); mapping
// never imports config. Load parses the mapping: section too, validating
// routes against the configured trackers, so one call reports every
// problem of the file.
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

	"github.com/qase-sync/qase-sync/mapping"
	"github.com/qase-sync/qase-sync/mapping/yamlnode"
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
	Log       Log       `yaml:"log" json:"log"`
	// Notify lists notification routes (config/notify.go).
	Notify []Notifier `yaml:"notify,omitempty" json:"notify,omitempty"`
	// Mapping is the parsed mapping: section (never nil after Load).
	Mapping *mapping.Mapping `yaml:"-" json:"-"`
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
	AdminToken Secret `yaml:"admin_token,omitempty" json:"admin_token,omitempty"`
}

// Qase configures the webhook receiver and the optional API reader.
type Qase struct {
	// Secrets are accepted X-Qase-Secret values (several for rotation).
	Secrets []Secret `yaml:"secrets" json:"secrets"`
	// ProjectSecrets are accepted only for the project code they are listed under.
	ProjectSecrets map[string][]Secret `yaml:"project_secrets,omitempty" json:"project_secrets,omitempty"`
	AllowUnsigned  bool                `yaml:"allow_unsigned" json:"allow_unsigned"`
	DefaultProject string              `yaml:"default_project,omitempty" json:"default_project,omitempty"`
	// APIToken enables reading entities from the Qase REST API.
	APIToken Secret `yaml:"api_token,omitempty" json:"api_token,omitempty"`
	APIURL   string `yaml:"api_url" json:"api_url"`
	AppURL   string `yaml:"app_url" json:"app_url"`
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
	DSN Secret `yaml:"dsn" json:"dsn"`
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
	Token Secret `yaml:"token,omitempty" json:"token,omitempty"`
	Rate  Rate   `yaml:"rate" json:"rate"`
}

// GitHubApp authenticates as a GitHub App installation.
type GitHubApp struct {
	AppID          int64  `yaml:"app_id" json:"app_id"`
	InstallationID int64  `yaml:"installation_id" json:"installation_id"`
	PrivateKey     Secret `yaml:"private_key" json:"private_key"` // PEM, read from private_key_file
	PrivateKeyFile string `yaml:"private_key_file,omitempty" json:"private_key_file,omitempty"`
}

// Rate is a token bucket for writes to a tracker. Written as per_second
// or per_minute; PerSecond holds the normalized rate.
type Rate struct {
	PerSecond float64 `yaml:"per_second" json:"per_second"`
	Burst     int     `yaml:"burst" json:"burst"`
}

// Worker configures the sync workers and retries.
type Worker struct {
	Concurrency int           `yaml:"concurrency" json:"concurrency"`
	Lease       time.Duration `yaml:"lease" json:"lease"`
	MaxAttempts int           `yaml:"max_attempts" json:"max_attempts"`
	MaxAge      time.Duration `yaml:"max_age" json:"max_age"`
	BackoffBase time.Duration `yaml:"backoff_base" json:"backoff_base"`
	BackoffMax  time.Duration `yaml:"backoff_max" json:"backoff_max"`
}

// Reconcile configures the scheduled reconciler.
type Reconcile struct {
	Enabled  bool     `yaml:"enabled" json:"enabled"`
	Schedule string   `yaml:"schedule" json:"schedule"`                 // cron spec or @every 15m
	Routes   []string `yaml:"routes,omitempty" json:"routes,omitempty"` // empty = all
	// Projects are the Qase projects enumerated for routes without a
	// projects: list (empty = only projects seen in links and events).
	Projects []string `yaml:"projects,omitempty" json:"projects,omitempty"`
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

// Load reads and parses the configuration file at path. env looks up
// environment variables (os.LookupEnv in production; nil = none set).
func Load(path string, env func(string) (string, bool)) (*Config, error) {
	data, err := readLimited(path)
	if err != nil {
		return nil, yamlnode.Problems{{File: path, Msg: "cannot read configuration: " + err.Error()}}
	}
	return Parse(path, data, env)
}

// LoadAll is Load returning the mapping alongside, for callers that wire
// the two separately.
func LoadAll(path string, env func(string) (string, bool)) (*Config, *mapping.Mapping, error) {
	c, err := Load(path, env)
	if err != nil {
		return nil, nil, err
	}
	return c, c.Mapping, nil
}

// Parse parses configuration data; name is used in messages and to
// resolve relative *_file paths and table_files.
func Parse(name string, data []byte, env func(string) (string, bool)) (*Config, error) {
	root, err := yamlnode.Parse(name, data)
	if err != nil {
		return nil, err
	}
	l := &loader{d: &yamlnode.Decoder{File: name}, pos: map[string]*yaml.Node{}, dir: filepath.Dir(name)}
	expandNodes(l.d, root, "", env)
	c := l.decode(root)
	l.validate(c)
	if err := l.d.Problems.Err(); err != nil {
		return nil, err
	}
	return c, nil
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

// loader carries decoding state: positions of every decoded field, so
// validation can point at the line.
type loader struct {
	d   *yamlnode.Decoder
	pos map[string]*yaml.Node
	dir string
}

// at returns the node of field, or of its closest decoded parent.
func (l *loader) at(field string) *yaml.Node {
	for f := field; f != ""; {
		if n, ok := l.pos[f]; ok {
			return n
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			break
		}
		f = f[:i]
	}
	return l.pos[""]
}

func (l *loader) errf(field, format string, args ...any) {
	l.d.Errorf(l.at(field), field, format, args...)
}

func (l *loader) path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(l.dir, p)
}
