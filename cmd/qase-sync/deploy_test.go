package main

import (
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The compose example the README points to runs three replicas sharing
// one database URL, each loading deploy/config.yaml, which is a valid
// PostgreSQL configuration.
func TestDeployComposeRunsThreeReplicasOnOneDatabase(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Command     []string          `yaml:"command"`
			Volumes     []string          `yaml:"volumes"`
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatalf("deploy/compose.yaml: %v", err)
	}
	if _, ok := compose.Services["postgres"]; !ok {
		t.Fatal("deploy/compose.yaml has no postgres service")
	}
	var replicas []string
	dsn := ""
	for name, s := range compose.Services {
		if !slices.Contains(s.Command, "serve") {
			continue
		}
		replicas = append(replicas, name)
		d := s.Environment["QASE_SYNC_DSN"]
		if u, err := url.Parse(d); err != nil || u.Hostname() != "postgres" {
			t.Errorf("%s: QASE_SYNC_DSN %q does not name the postgres service", name, d)
		}
		if dsn != "" && d != dsn {
			t.Errorf("%s: QASE_SYNC_DSN %q differs from another replica's %q", name, d, dsn)
		}
		dsn = d
		cfg := s.Command[slices.Index(s.Command, "-c")+1]
		if !slices.Contains(s.Volumes, "./config.yaml:"+cfg+":ro") {
			t.Errorf("%s: loads %s, which is not deploy/config.yaml (volumes %v)", name, cfg, s.Volumes)
		}
	}
	if len(replicas) != 3 {
		t.Fatalf("deploy/compose.yaml runs %d replicas (%v), want 3", len(replicas), replicas)
	}

	env := func(k string) (string, bool) {
		switch {
		case k == "QASE_SYNC_DSN":
			return dsn, true
		case k == "JIRA_PROJECT":
			return "QA", true
		case strings.HasSuffix(k, "_URL"):
			return "https://example.atlassian.net", true
		}
		return "value-of-" + k, true
	}
	cfg, _, err := loadConfig(filepath.Join("..", "..", "deploy", "config.yaml"), env)
	if err != nil {
		t.Fatalf("deploy/config.yaml: %v", err)
	}
	if cfg.Store.Driver != "postgres" || cfg.Store.Postgres.DSN.Reveal() != dsn || !cfg.Reconcile.Enabled {
		t.Errorf("deploy/config.yaml: store %q %q, reconcile %v; want the compose DSN on postgres and the reconciler on", cfg.Store.Driver, cfg.Store.Postgres.DSN.Reveal(), cfg.Reconcile.Enabled)
	}
}
