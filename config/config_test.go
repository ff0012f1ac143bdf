package config

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

var exampleEnv = envOf(map[string]string{"QASE_WEBHOOK_SECRET": "whsec-123", "GITHUB_TOKEN": "ghp_TOKEN"})

func TestLoadExample(t *testing.T) {
	c, err := Load("testdata/example.yaml", exampleEnv)
	if err != nil {
		t.Fatal(err)
	}
	// The mapping: section is handed over undecoded, with the file's lines.
	if c.Mapping == nil || c.Mapping.Line <= 50 || len(routesOf(t, c)) != 3 {
		t.Fatalf("mapping node not kept: %+v", c.Mapping)
	}
	if c.Server.Listen != ":8080" || c.Server.MaxBodyBytes != 1<<20 || c.Server.ReadHeaderTimeout != 5*time.Second || c.Server.ShutdownTimeout != 30*time.Second {
		t.Errorf("server defaults: %+v", c.Server)
	}
	if c.Server.AdminToken.IsSet() || c.Qase.APIToken.IsSet() {
		t.Error("optional unset variables must expand to empty")
	}
	if len(c.Qase.Secrets) != 1 || c.Qase.Secrets[0].Reveal() != "whsec-123" {
		t.Errorf("secrets: %d", len(c.Qase.Secrets))
	}
	if c.Qase.ProjectSecrets["DEMO"][0].Reveal() != "demo-only-secret" || c.Qase.APIURL != DefaultQaseAPIURL {
		t.Errorf("qase: %+v", c.Qase)
	}
	j, _ := c.Tracker("jira")
	if j.Token.Reveal() != "jira-secret-token" || j.Flavor != "cloud" || j.Settle != 5*time.Second || j.Rate.PerSecond != 5 || j.Transitions["Done"][1] != "Close" {
		t.Errorf("jira tracker: %+v (token from token_file must be trimmed)", j)
	}
	g, _ := c.Tracker("github")
	if g.Token.Reveal() != "ghp_TOKEN" || g.Rate.PerSecond != 1 || g.Rate.Burst != 10 {
		t.Errorf("github tracker: %+v", g)
	}
	if c.Store.Driver != "sqlite" || c.Store.SQLite.Path != "qase-sync.db" || c.Store.SQLite.Synchronous != "full" {
		t.Errorf("store: %+v", c.Store)
	}
	if c.Worker != (Worker{Concurrency: 16, Lease: 2 * time.Minute, JobTimeout: 10 * time.Minute, MaxAttempts: 12, MaxAge: 72 * time.Hour, BackoffBase: 2 * time.Second, BackoffMax: 10 * time.Minute, LateCommit: 70 * time.Second, Gather: 10 * time.Millisecond}) {
		t.Errorf("worker: %+v", c.Worker)
	}
	if !c.Reconcile.Enabled || c.Reconcile.Schedule != "@every 15m" || c.Log != (Log{"info", "json"}) {
		t.Errorf("reconcile/log: %+v %+v", c.Reconcile, c.Log)
	}
	if got := c.TrackerTypes(); got["preview"] != "dryrun" || len(got) != 3 {
		t.Errorf("TrackerTypes = %v", got)
	}
}

// routesOf returns the route nodes of the mapping: section.
func routesOf(t *testing.T, c *Config) []yaml.Node {
	t.Helper()
	var m struct {
		Routes []yaml.Node `yaml:"routes"`
	}
	if c.Mapping == nil {
		return nil
	}
	if err := c.Mapping.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m.Routes
}

func TestMinimalDefaults(t *testing.T) {
	c, err := Parse("min.yaml", []byte("qase: {allow_unsigned: true}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.WebhookPath != "/webhooks/qase" || c.Qase.AppURL != "https://app.qase.io" || c.Log.Format != "json" || c.Reconcile.Enabled || c.Mapping != nil {
		t.Errorf("defaults: %+v", c)
	}
	if c.Qase.APIRate != (Rate{3, 10}) {
		t.Errorf("qase.api_rate default %+v, want 180/min burst 10", c.Qase.APIRate)
	}
	if c, err := Parse("r.yaml", []byte("qase: {allow_unsigned: true, api_rate: {per_minute: 120}}\n"), nil); err != nil || c.Qase.APIRate != (Rate{2, 10}) {
		t.Errorf("qase.api_rate per_minute: %+v %v", c.Qase.APIRate, err)
	}
	if c.Retention != (Retention{MaxAge: 720 * time.Hour, Interval: time.Hour, Batch: 1000}) {
		t.Errorf("retention defaults: %+v", c.Retention)
	}
	if c.Worker.Concurrency != 16 || c.Worker.Gather != 10*time.Millisecond {
		t.Errorf("worker defaults: %+v, want 16 jobs in flight gathering for 10ms", c.Worker)
	}
	if _, err := Parse("empty.yaml", nil, nil); err == nil || !strings.Contains(err.Error(), "qase.secrets: at least one webhook secret is required (or set allow_unsigned: true)") {
		t.Errorf("empty config: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	base := "qase: {secrets: [s]}\n"
	cases := []struct {
		name, src, want string
	}{
		{"unknown key", base + "servr: {}\n", "c.yaml:2: servr: unknown field"},
		{"unknown nested key", base + "server:\n  listn: x\n", "c.yaml:3: server.listn: unknown field"},
		{"bad listen", base + "server: {listen: '8080'}\n", `c.yaml:2: server.listen: invalid listen address "8080"`},
		{"bad port", base + "server: {listen: ':99999'}\n", `c.yaml:2: server.listen: invalid port "99999"`},
		{"webhook path", base + "server: {webhook_path: hooks}\n", `c.yaml:2: server.webhook_path: must start with "/"`},
		{"bad duration", base + "server:\n  read_timeout: 10 parsecs\n", `c.yaml:3: server.read_timeout: expected a duration (e.g. 30s, 5m, 72h), got "10 parsecs"`},
		{"negative duration", base + "worker:\n  lease: -1s\n", "c.yaml:3: worker.lease: must be a positive duration"},
		{"short retention", base + "retention:\n  max_age: 10m\n", "c.yaml:3: retention.max_age: must be 0 (keep everything) or at least 1h (got 10m0s)"},
		{"reconcile lease", base + "reconcile:\n  lease: 0s\n", "c.yaml:3: reconcile.lease: must be a positive duration"},
		{"retention interval", base + "retention:\n  interval: 0s\n", "c.yaml:3: retention.interval: must be a positive duration"},
		{"retention batch", base + "retention:\n  max_age: 0s\n  batch: 0\n", "c.yaml:4: retention.batch: must be between 1 and 100000 (got 0)"},
		{"bad int", base + "worker:\n  concurrency: many\n", `c.yaml:3: worker.concurrency: expected an integer, got "many"`},
		{"no secret", "qase: {allow_unsigned: false}\n", "c.yaml:1: qase.secrets: at least one webhook secret is required (or set allow_unsigned: true)"},
		{"bad bool", "qase: {secrets: [s], allow_unsigned: maybe}\n", `c.yaml:1: qase.allow_unsigned: expected true or false, got "maybe"`},
		{"bad url", "qase: {secrets: [s], api_url: 'ftp:/x'}\n", `c.yaml:1: qase.api_url: invalid URL "ftp:/x"`},
		{"postgres no dsn", base + "store:\n  driver: postgres\n", "c.yaml:3: store.postgres.dsn: required when store.driver is postgres"},
		{"bad driver", base + "store:\n  driver: mysql\n", `c.yaml:3: store.driver: unknown driver "mysql"`},
		{"synchronous", base + "store:\n  sqlite: {synchronous: off}\n", `c.yaml:3: store.sqlite.synchronous: must be full or normal`},
		{"tracker type", base + "trackers:\n  - name: x\n    type: gitlab\n", `c.yaml:4: trackers[0].type: unknown tracker type "gitlab"`},
		{"tracker no type", base + "trackers:\n  - name: x\n", `c.yaml:3: trackers[0].type: required`},
		{"jira no url", base + "trackers:\n  - name: j\n    type: jira\n    email: a@b\n    token: t\n", "c.yaml:3: trackers[0].url: required for a jira tracker"},
		{"jira no token", base + "trackers:\n  - name: j\n    type: jira\n    url: https://x.atlassian.net\n    email: a@b\n", "c.yaml:3: trackers[0].token: required for a jira tracker"},
		{"jira cloud no email", base + "trackers:\n  - {name: j, type: jira, url: 'https://x', token: t}\n", "c.yaml:3: trackers[0].email: required for Jira Cloud"},
		{"jira bad flavor", base + "trackers:\n  - {name: j, type: jira, url: 'https://x', token: t, flavor: server}\n", `c.yaml:3: trackers[0].flavor: must be cloud or datacenter`},
		{"github no auth", base + "trackers:\n  - name: g\n    type: github\n", "c.yaml:3: trackers[0].token: a github tracker needs token (or token_file) or app"},
		{"github both", base + "trackers:\n  - name: g\n    type: github\n    token: t\n    app: {app_id: 1, installation_id: 2, private_key: k}\n", "c.yaml:6: trackers[0].app: set token or app, not both"},
		{"github app incomplete", base + "trackers:\n  - name: g\n    type: github\n    app:\n      app_id: 1\n", "c.yaml:6: trackers[0].app.installation_id: required"},
		{"field of other type", base + "trackers:\n  - name: g\n    type: github\n    token: t\n    url: https://x\n", "c.yaml:6: trackers[0].url: not a setting of a github tracker"},
		{"dup tracker", base + "trackers:\n  - {name: d, type: dryrun}\n  - {name: d, type: dryrun}\n", `c.yaml:4: trackers[1].name: duplicate tracker name "d"`},
		{"rate both", base + "trackers:\n  - name: g\n    type: github\n    token: t\n    rate: {per_second: 1, per_minute: 60}\n", "c.yaml:6: trackers[0].rate.per_minute: set per_second or per_minute, not both"},
		{"api rate both", "qase:\n  secrets: [s]\n  api_rate: {per_second: 1, per_minute: 60}\n", "c.yaml:3: qase.api_rate.per_minute: set per_second or per_minute, not both"},
		{"api rate burst", "qase:\n  secrets: [s]\n  api_rate: {burst: 0}\n", "c.yaml:3: qase.api_rate.burst: must be at least 1"},
		{"reconcile no schedule", base + "reconcile:\n  enabled: true\n", "c.yaml:3: reconcile.schedule: required when reconcile.enabled is true"},
		{"reconcile bad schedule", base + "reconcile:\n  schedule: every day\n", `c.yaml:3: reconcile.schedule: invalid schedule "every day"`},
		{"reconcile no backstop", base + "reconcile:\n  enabled: true\n  schedule: \"@every 15m\"\n  full_every: 0s\n", "c.yaml:5: reconcile.full_every: must be a positive duration when reconcile.incremental is true"},
		{"reconcile negative overlap", base + "reconcile:\n  overlap: -1m\n", "c.yaml:3: reconcile.overlap: must not be negative"},
		{"gather too long", base + "worker:\n  gather: 2s\n", "c.yaml:3: worker.gather: must be between 0s and 1s"},
		{"log level", base + "log: {level: loud}\n", `c.yaml:2: log.level: unknown level "loud"`},
		{"env missing", "qase:\n  secrets: ['${QS_NOPE}']\n", "c.yaml:2: qase.secrets[0]: environment variable QS_NOPE is not set"},
		{"env bad syntax", "qase:\n  secrets: ['${QS_NOPE']\n", "c.yaml:2: qase.secrets[0]: unterminated ${"},
		{"env bad name", "qase:\n  secrets: ['${1X}']\n", `c.yaml:2: qase.secrets[0]: invalid environment variable name "1X"`},
		{"secret and file", "qase: {secrets: [s]}\nserver:\n  admin_token: a\n  admin_token_file: f\n", "c.yaml:4: server.admin_token_file: set admin_token or admin_token_file, not both"},
		{"secret file missing", "qase: {secrets: [s]}\nserver:\n  admin_token_file: does-not-exist\n", "c.yaml:3: server.admin_token_file: cannot read secret file: no such file or directory"},
		{"secret file not regular", "qase: {secrets: [s]}\nserver:\n  admin_token_file: /dev/zero\n", "c.yaml:3: server.admin_token_file: cannot read secret file: /dev/zero is not a regular file"},
		{"yaml syntax", "server: [\n", "c.yaml:1:"},
		{"merge key", base + "x: &a {listen: ':1'}\nserver:\n  <<: *a\n", "merge keys (<<) are not supported"},
		{"scalar for map", base + "server: 8080\n", `c.yaml:2: server: expected a mapping, got "8080"`},
	}
	for _, c := range cases {
		_, err := Parse("c.yaml", []byte(c.src), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v\nwant %q", c.name, err, c.want)
		}
	}
}

func TestErrorsAreAllReportedInLineOrder(t *testing.T) {
	_, err := Load("testdata/broken.yaml", nil)
	if err == nil {
		t.Fatal("want errors")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) < 12 {
		t.Errorf("want every problem, got %d:\n%s", len(lines), err)
	}
	last := 0
	for _, l := range lines {
		var n int
		if _, e := fmt.Sscanf(strings.TrimPrefix(l, "testdata/broken.yaml:"), "%d:", &n); e != nil {
			t.Errorf("no file:line in %q", l)
			continue
		}
		if n < last {
			t.Errorf("not sorted by line: %q after line %d", l, last)
		}
		last = n
	}
}

func TestEnvExpansion(t *testing.T) {
	env := envOf(map[string]string{"PORT": "9090", "EMPTY": "", "SECRET": "s1"})
	src := `server:
  listen: ':${PORT}'
  webhook_path: '/hooks/${MISSING:-qase}'
  max_body_bytes: ${SIZE:-2048}
qase:
  secrets: ['${SECRET}', 'literal-$${SECRET}', '${EMPTY:-fallback}']
  default_project: ${UNSET_PROJECT}
`
	c, err := Parse("e.yaml", []byte(src), env)
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.Listen != ":9090" || c.Server.WebhookPath != "/hooks/qase" || c.Server.MaxBodyBytes != 2048 {
		t.Errorf("server: %+v", c.Server)
	}
	got := []string{c.Qase.Secrets[0].Reveal(), c.Qase.Secrets[1].Reveal(), c.Qase.Secrets[2].Reveal()}
	if strings.Join(got, "|") != "s1|literal-${SECRET}|fallback" {
		t.Errorf("secrets: %v", got)
	}
	if c.Qase.DefaultProject != "" {
		t.Errorf("optional field: %q", c.Qase.DefaultProject)
	}
	// An expanded value is data: it cannot inject YAML structure.
	c, err = Parse("e.yaml", []byte("qase:\n  secrets: ['${SECRET}']\n  default_project: ${INJ}\n"), envOf(map[string]string{"SECRET": "s", "INJ": "x\nallow_unsigned: true"}))
	if err != nil || c.Qase.AllowUnsigned || c.Qase.DefaultProject != "x\nallow_unsigned: true" {
		t.Errorf("injection: %+v %v", c, err)
	}
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("secrets.txt", "# rotation\nnew-secret\n\nold-secret\n")
	write("dsn", "postgres://u:pw@localhost/db\n")
	write("gh.pem", "-----BEGIN KEY-----\nabc\n-----END KEY-----\n")
	write("empty", "\n")
	write("config.yaml", `qase:
  secrets_file: secrets.txt
store:
  driver: postgres
  postgres: {dsn_file: dsn}
trackers:
  - name: gh
    type: github
    app: {app_id: 1, installation_id: 2, private_key_file: gh.pem}
`)
	c, err := Load(filepath.Join(dir, "config.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Qase.Secrets) != 2 || c.Qase.Secrets[1].Reveal() != "old-secret" {
		t.Errorf("secrets_file: %d", len(c.Qase.Secrets))
	}
	if c.Store.Postgres.DSN.Reveal() != "postgres://u:pw@localhost/db" {
		t.Error("dsn_file not read/trimmed")
	}
	if !strings.HasSuffix(c.Trackers[0].App.PrivateKey.Reveal(), "-----END KEY-----") {
		t.Error("private_key_file not read")
	}
	write("config.yaml", "qase: {secrets: [s]}\nserver:\n  admin_token_file: empty\n")
	if _, err := Load(filepath.Join(dir, "config.yaml"), nil); err == nil || !strings.Contains(err.Error(), "config.yaml:3: server.admin_token_file: secret file empty is empty") {
		t.Errorf("empty secret file: %v", err)
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	const token = "SUPERSECRET-42"
	env := envOf(map[string]string{"T": token})
	src := `server: {admin_token: '${T}'}
qase:
  secrets: ['${T}']
  project_secrets: {DEMO: ['${T}']}
  api_token: '${T}'
store: {postgres: {dsn: '${T}'}}
trackers:
  - {name: g, type: github, token: '${T}'}
  - {name: j, type: jira, url: 'https://x.atlassian.net', email: a@b.c, token: '${T}'}
`
	c, err := Parse("s.yaml", []byte(src), env)
	if err != nil {
		t.Fatal(err)
	}
	if c.Trackers[0].Token.Reveal() != token {
		t.Fatal("Reveal must return the value")
	}
	js, _ := json.Marshal(c)
	ys, _ := yaml.Marshal(c)
	outputs := map[string]string{
		"%v": fmt.Sprintf("%v", c), "%+v": fmt.Sprintf("%+v", *c), "%#v": fmt.Sprintf("%#v", *c),
		"%s": fmt.Sprintf("%s", c.Qase.APIToken), "%q": fmt.Sprintf("%q", c.Qase.APIToken), "%x": fmt.Sprintf("%x", c.Qase.APIToken),
		"%d": fmt.Sprintf("%d", c.Qase.APIToken), "slice": fmt.Sprint(c.Qase.Secrets), "map": fmt.Sprintf("%v", c.Qase.ProjectSecrets),
		"trackers": fmt.Sprintf("%+v", c.Trackers), "json": string(js), "yaml": string(ys), "redacted": c.Redacted(), "string": c.String(),
	}
	for name, out := range outputs {
		if strings.Contains(out, token) || strings.Contains(out, fmt.Sprintf("%x", token)) {
			t.Errorf("%s leaks the secret: %s", name, out)
		}
	}
	if !strings.Contains(outputs["%s"], "[REDACTED]") || !strings.Contains(outputs["json"], `"[REDACTED]"`) || !strings.Contains(outputs["redacted"], "[REDACTED]") {
		t.Errorf("redaction marker missing: %s / %s", outputs["%s"], outputs["json"])
	}
	var unset Secret
	if fmt.Sprint(unset) != "" {
		t.Error("unset secret should print empty")
	}
}

func TestTrackerSettings(t *testing.T) {
	src := `qase: {secrets: [s]}
trackers:
  - name: dc
    type: jira
    flavor: datacenter
    url: https://jira.example.com/
    token: pat
    settle: 2s
    user_field: name
    rate: {per_second: 2, burst: 3}
  - name: ghes
    type: github
    base_url: https://ghe.example.com/api/v3/
    token: t
    rate: {per_minute: 30}
`
	c, err := Parse("t.yaml", []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	dc, gh := c.Trackers[0], c.Trackers[1]
	if dc.URL != "https://jira.example.com" || dc.Settle != 2*time.Second || dc.Rate != (Rate{2, 3}) || dc.UserField != "name" {
		t.Errorf("jira dc: %+v", dc)
	}
	if gh.BaseURL != "https://ghe.example.com/api/v3" || gh.Rate != (Rate{0.5, 10}) {
		t.Errorf("ghes: %+v", gh)
	}
}

func TestRepoExampleConfig(t *testing.T) {
	// The repository's config.example.yaml must load with no environment:
	// dry-run trackers need no credentials.
	c, err := Load("../config.example.yaml", nil)
	if err != nil {
		if os.IsNotExist(err) || strings.Contains(err.Error(), "cannot read configuration") {
			t.Skip("no config.example.yaml")
		}
		t.Fatal(err)
	}
	if len(routesOf(t, c)) == 0 {
		t.Error("example config has no routes")
	}
	if c.Worker != Default().Worker {
		t.Errorf("example worker settings %+v, want the defaults %+v (the benchmarks run the example)", c.Worker, Default().Worker)
	}
	for _, tr := range c.Trackers {
		if (tr.Type == TrackerJira || tr.Type == TrackerGitHub) && !tr.DryRun {
			t.Errorf("tracker %s should be dry-run in the example", tr.Name)
		}
	}
}

func TestDryRunTrackerNeedsNoCredentials(t *testing.T) {
	src := "qase: {secrets: [s]}\ntrackers:\n  - {name: j, type: jira, dry_run: true}\n  - {name: g, type: github, dry_run: true}\nreconcile: {projects: [DEMO]}\n"
	c, err := Parse("d.yaml", []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Trackers[0].DryRun || c.Reconcile.Projects[0] != "DEMO" {
		t.Errorf("%+v", c)
	}
	if _, err := Parse("d.yaml", []byte("qase: {secrets: [s]}\ntrackers:\n  - {name: d, type: dryrun, dry_run: true}\n"), nil); err == nil || !strings.Contains(err.Error(), "trackers[0].dry_run: not a setting of a dryrun tracker") {
		t.Errorf("dry_run on dryrun: %v", err)
	}
}
