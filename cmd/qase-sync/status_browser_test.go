package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// browserTools finds node, Debian's chromium and playwright-core (installed
// into .tools/playwright by `make tools`). Missing tools skip the test with
// a message, unless QASE_SYNC_REQUIRE_BROWSER is set (make test sets it).
func browserTools(t *testing.T) (node, chromium, playwright string) {
	t.Helper()
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	chromium = os.Getenv("QASE_SYNC_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	playwright = filepath.Join(root, ".tools", "playwright", "node_modules", "playwright-core")
	var missing []string
	node, err := exec.LookPath("node")
	if err != nil {
		missing = append(missing, "node")
	}
	if _, err := os.Stat(chromium); err != nil {
		missing = append(missing, chromium+" (apt-get install chromium)")
	}
	if _, err := os.Stat(filepath.Join(playwright, "package.json")); err != nil {
		missing = append(missing, "playwright-core in .tools/playwright (make tools)")
	}
	if len(missing) > 0 {
		msg := "status page browser test needs " + strings.Join(missing, ", ")
		if os.Getenv("QASE_SYNC_REQUIRE_BROWSER") != "" {
			t.Fatal(msg + " (QASE_SYNC_REQUIRE_BROWSER is set)")
		}
		t.Skip(msg + "; set QASE_SYNC_REQUIRE_BROWSER=1 to make this a failure")
	}
	return node, chromium, playwright
}

// TestStatusPageBrowser drives the status page of the real server in
// headless Chromium: login, overview, dead letters, a dead letter's
// detail, a click on "Retry", and the entity's provenance showing the
// retried sync applied. Screenshots of each page are kept in
// .artifacts/status-page/ (QASE_SYNC_ARTIFACTS overrides).
func TestStatusPageBrowser(t *testing.T) {
	node, chromium, playwright := browserTools(t)
	h := newHarness(t, harnessOpts{})
	deadID := h.deadLetter()
	shots := os.Getenv("QASE_SYNC_ARTIFACTS")
	if shots == "" {
		shots, _ = filepath.Abs(filepath.Join("..", "..", ".artifacts", "status-page"))
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	base := strings.Replace(h.url, "127.0.0.1", "localhost", 1) // a secure context for Secure cookies over http

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("testdata", "statuspage.mjs"))
	cmd.Env = append(os.Environ(), "BASE_URL="+base, "ADMIN_TOKEN=test-admin-token", "DEAD_ID="+deadID,
		"ENTITY=ID/defect/1", "ARTIFACTS="+shots, "CHROMIUM="+chromium, "PLAYWRIGHT_DIR="+playwright)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("browser script: %v\n%s\n%s", err, out.String(), errb.String())
	}
	var found struct {
		RedirectedToLogin bool `json:"redirectedToLogin"`
		Overview          string
		Cookie            *struct {
			Secure, HTTPOnly bool
			SameSite         string
		}
		DeadLetters, Detail, Flash, AfterRetry, Explain string
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &found); err != nil {
		t.Fatalf("script output: %v\n%s", err, out.String())
	}
	if !found.RedirectedToLogin {
		t.Error("an anonymous visit was not sent to the login form")
	}
	if c := found.Cookie; c == nil || !c.Secure || c.SameSite != "Strict" {
		t.Errorf("session cookie as the browser holds it: %+v", c)
	}
	for _, w := range []string{"Queue depth", "Oldest pending job", "Syncs, last hour", "Dead letters", "ID", "Last reconcile"} {
		if !strings.Contains(found.Overview, w) {
			t.Errorf("overview lacks %q: %s", w, found.Overview)
		}
	}
	if !strings.Contains(found.DeadLetters, "defects-to-jira:ID/defect/1") || !strings.Contains(found.Detail, "Failed request") {
		t.Errorf("dead letter pages: %q / %q", found.DeadLetters, found.Detail)
	}
	if !strings.Contains(found.Flash, "requeued") || !strings.Contains(found.AfterRetry, "No dead letters") {
		t.Errorf("after clicking Retry: flash %q, page %q", found.Flash, found.AfterRetry)
	}
	if !strings.Contains(found.Explain, "applied") || !strings.Contains(found.Explain, "create") {
		t.Errorf("the retried sync does not show in the provenance: %q", found.Explain)
	}
	h.drain()
	if is := onlyIssue(t, h.jira); is.Summary != "[ID-1] Example defect" {
		t.Errorf("issue after the retry: %+v", is)
	}
	for _, name := range []string{"login", "overview", "deadletters", "deadletter", "deadletters-after-retry", "explain"} {
		if st, err := os.Stat(filepath.Join(shots, name+".png")); err != nil || st.Size() == 0 {
			t.Errorf("screenshot %s.png: %v", name, err)
		}
	}
	t.Logf("screenshots in %s", shots)
}
