package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// TestExampleTwoWayRoute: the two-way route config.example.yaml shows (as
// comments) is valid once uncommented, and validate says that a two-way
// route needs the Qase API and that Qase cannot set a defect back to open.
func TestExampleTwoWayRoute(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "config.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	on := false
	for i, l := range lines {
		trim := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(trim, "# two_way:"), strings.HasPrefix(trim, "# webhook_secrets:"):
			on = true
		case on && !strings.HasPrefix(trim, "#   "):
			on = false
		}
		if on {
			lines[i] = strings.Replace(l, "# ", "", 1)
		}
	}
	src := strings.Join(lines, "\n")
	if !strings.Contains(src, "\n      two_way:\n") || !strings.Contains(src, "\n    webhook_secrets:") {
		t.Fatal("config.example.yaml no longer shows a two-way route and webhook secrets")
	}
	env := func(k string) (string, bool) {
		if strings.HasSuffix(k, "_WEBHOOK_SECRET") {
			return "hook-secret", true
		}
		return "", false
	}
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, _, err := loadConfig(write(src), env); err == nil || !strings.Contains(err.Error(), "qase.api_token") {
		t.Fatalf("a two-way route without qase.api_token: %v", err)
	}
	withToken := strings.Replace(src, "api_token: ${QASE_API_TOKEN:-}", "api_token: tok", 1)
	cfg, m, err := loadConfig(write(withToken), env)
	if err != nil {
		t.Fatal(err)
	}
	tw, ok := m.TwoWay("defects-to-jira")
	if !ok || tw.Dir(qsync.FieldStatus) != qsync.DirBoth {
		t.Fatalf("two-way = %+v %v", tw, ok)
	}
	if got, _ := tw.ReverseStatus("Done", "", "done"); got != "resolved" {
		t.Fatalf("Done → %q", got)
	}
	if len(cfg.Trackers[0].WebhookSecrets) != 1 || cfg.Trackers[0].WebhookSecrets[0].Reveal() != "hook-secret" {
		t.Fatalf("webhook secrets = %v", cfg.Trackers[0].WebhookSecrets)
	}
	// plan names the route's reverse mapping.
	t.Setenv("JIRA_WEBHOOK_SECRET", "hook-secret")
	t.Setenv("GITHUB_WEBHOOK_SECRET", "hook-secret")
	var out, errb bytes.Buffer
	if code := run([]string{"plan", "-c", write(withToken), "--event", filepath.Join("..", "..", "testdata", "qase", "defect.created.json")}, &out, &errb); code != 0 {
		t.Fatalf("plan: %d %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "two-way (status both; conflicts: newest)") {
		t.Fatalf("plan output lacks the two-way line:\n%s", out.String())
	}
	reopen := strings.Replace(withToken, "Done: resolved", "Done: resolved\n          To Do: open", 1)
	if _, _, err := loadConfig(write(reopen), env); err == nil || !strings.Contains(err.Error(), "cannot set a defect back to open") {
		t.Fatalf("open in the reverse table: %v", err)
	}
}
