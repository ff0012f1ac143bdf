package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// The first hour of a newcomer, each trap found on a fresh clone.

func TestAdminBearerSchemeIsCaseInsensitive(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for _, c := range []struct {
		auth string
		want int
	}{
		{"Bearer test-admin-token", http.StatusOK},
		{"bearer test-admin-token", http.StatusOK},
		{"BEARER   test-admin-token", http.StatusOK},
		{"Basic test-admin-token", http.StatusUnauthorized},
		{"bearer wrong-token", http.StatusUnauthorized},
		{"bearer ", http.StatusUnauthorized},
		{"test-admin-token", http.StatusUnauthorized},
	} {
		req, _ := http.NewRequest(http.MethodGet, h.url+"/admin/events", nil)
		req.Header.Set("Authorization", c.auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("Authorization %q: %d, want %d", c.auth, resp.StatusCode, c.want)
		}
	}
}

func TestBodyTimeoutLeavesRoomToAnswer(t *testing.T) {
	for _, c := range []struct{ read, write, want time.Duration }{
		{15 * time.Second, 15 * time.Second, 13 * time.Second},
		{5 * time.Second, 15 * time.Second, 5 * time.Second},
		{15 * time.Second, 2 * time.Second, 1500 * time.Millisecond},
		{10 * time.Second, 0, 10 * time.Second},
	} {
		if got := bodyTimeout(c.read, c.write); got != c.want {
			t.Errorf("bodyTimeout(%v, %v) = %v, want %v", c.read, c.write, got, c.want)
		}
	}
}

// plan says what the webhook would do for every recorded Qase payload and
// exits 0 (legacy bodies carry no project_code: --project, as the webhook
// URL /webhooks/qase/CODE); the live webhook agrees on what it ignores.
func TestPlanAgreesWithWebhookOnEveryTestdataFile(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "qase", "*.json"))
	if err != nil || len(files) < 78 {
		t.Fatalf("testdata: %d files, %v", len(files), err)
	}
	for _, f := range files {
		base := filepath.Base(f)
		args := []string{"plan", "-c", h.cfg, "--event", f}
		path := "/webhooks/qase"
		if strings.Contains(base, ".legacy.") {
			args = append(args, "--project", "LEG")
			path += "/LEG"
		}
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 {
			t.Errorf("plan %s: exit %d: %s", base, code, errb.String())
			continue
		}
		planIgnores := strings.Contains(out.String(), "the webhook would answer 202 ignored")
		body, _ := os.ReadFile(f)
		code, resp := h.post(path, body, testSecret)
		hookIgnores := code == http.StatusAccepted && strings.Contains(resp, `"ignored"`)
		if code != http.StatusAccepted && code != http.StatusOK {
			t.Errorf("webhook %s: %d %s", base, code, resp)
		}
		if planIgnores != hookIgnores {
			t.Errorf("%s: plan ignores=%v, webhook answered %d %s\nplan:\n%s", base, planIgnores, code, resp, out.String())
		}
		served := strings.HasPrefix(base, "defect.") || strings.HasPrefix(base, "review.") || strings.HasPrefix(base, "run.")
		if !served && !planIgnores {
			t.Errorf("%s: an unserved kind not reported as ignored:\n%s", base, out.String())
		}
	}
	// Without --project a legacy body is what the plain webhook URL refuses.
	var out, errb bytes.Buffer
	code := run([]string{"plan", "-c", h.cfg, "--event", filepath.Join("..", "..", "testdata", "qase", "defect.created.legacy.json")}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "would answer 400") || !strings.Contains(errb.String(), "--project") {
		t.Errorf("legacy body without --project: exit %d, %s", code, errb.String())
	}
}

// Unknown verbs of a served kind, and names that are not UTF-8, are
// acknowledged and ignored by the webhook and by plan; they file nothing.
func TestUnknownEventsAreIgnored(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for _, name := range []string{"defect.exploded", "defect.cr\xffeated", "review.teleported", "defect."} {
		body, _ := json.Marshal(map[string]any{"event_name": name, "project_code": "QA", "timestamp": 1700000000,
			"payload": map[string]any{"id": 7, "title": "boom"}})
		if !utf8.ValidString(name) {
			body = bytes.Replace(body, []byte(`\ufffd`), []byte{0xff}, 1)
		}
		code, resp := h.post("/webhooks/qase", body, testSecret)
		if code != http.StatusAccepted || !strings.Contains(resp, `"ignored"`) {
			t.Errorf("%q: %d %s, want 202 ignored", name, code, resp)
		}
		f := filepath.Join(t.TempDir(), "ev.json")
		_ = os.WriteFile(f, body, 0o600)
		var out, errb bytes.Buffer
		if c := run([]string{"plan", "-c", h.cfg, "--event", f}, &out, &errb); c != 0 || !strings.Contains(out.String(), "202 ignored") || strings.Contains(out.String(), "\nroute ") {
			t.Errorf("plan %q: exit %d\n%s%s", name, c, out.String(), errb.String())
		}
	}
	// A known verb still files.
	h.deliver("defect.created.json", http.StatusAccepted)
	h.drain()
	st := h.eventStatus()
	if st.Applied+st.Noop+st.Dead != 1 || st.Pending != 0 {
		t.Errorf("ledger after the ignored events and one defect.created: %+v", st)
	}
	if n := len(h.jira.Issues()); n != 1 {
		t.Errorf("jira has %d issues, want 1 (only the known event files)", n)
	}
}

func TestEveryCommandHelpExitsZero(t *testing.T) {
	for _, c := range []struct{ args, want []string }{
		{[]string{"serve", "--help"}, []string{"Usage: qase-sync serve", "webhook receiver", "-config"}},
		{[]string{"validate", "-h"}, []string{"Usage: qase-sync validate", "file, line and field"}},
		{[]string{"plan", "--help"}, []string{"Usage: qase-sync plan", "--project CODE", "-event"}},
		{[]string{"reconcile", "--help"}, []string{"Usage: qase-sync reconcile", "-dry-run", "-route"}},
		{[]string{"links", "--help"}, []string{"Usage: qase-sync links rebuild", "markers"}},
		{[]string{"deadletters", "--help"}, []string{"Usage: qase-sync deadletters", "retry"}},
		{[]string{"explain", "--help"}, []string{"Usage: qase-sync explain", "newest first"}},
		{[]string{"help", "plan"}, []string{"Usage: qase-sync plan"}},
		{[]string{"--help"}, []string{"qase-sync serve", "COMMAND --help"}},
	} {
		var out, errb bytes.Buffer
		code := run(c.args, &out, &errb)
		if code != 0 || errb.Len() != 0 {
			t.Errorf("%v: exit %d, stderr %q", c.args, code, errb.String())
		}
		for _, w := range c.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%v: help lacks %q:\n%s", c.args, w, out.String())
			}
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"serve", "--no-such-flag"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "serve --help") {
		t.Errorf("unknown flag: exit %d, %q", code, errb.String())
	}
}

func TestValidateJSON(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"validate", "-c", filepath.Join("..", "..", "config.example.yaml"), "-o", "json"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var ok validateResult
	if err := json.Unmarshal(out.Bytes(), &ok); err != nil || !ok.Valid || len(ok.Routes) == 0 || len(ok.Trackers) == 0 {
		t.Fatalf("valid config: %v %s", err, out.String())
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	_ = os.WriteFile(bad, []byte("server:\n  listen: 5\n  bogus: 1\nqase:\n  secrets: [x]\n"), 0o600)
	out.Reset()
	errb.Reset()
	code := run([]string{"validate", "-c", bad, "-o", "json"}, &out, &errb)
	var res validateResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out.String())
	}
	if code != 1 || res.Valid || len(res.Problems) != 2 || !strings.HasPrefix(res.Problems[0], bad+":2: server.listen") {
		t.Errorf("invalid config: exit %d, %+v, stderr %q", code, res, errb.String())
	}
}

// make help names every target with its variables expanded, and prints no
// colour codes when its output is not a terminal.
func TestMakeHelp(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	cmd := exec.Command("make", "--no-print-directory", "help")
	cmd.Dir = filepath.Join("..", "..")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("make help: %v", err)
	}
	s := string(out)
	if strings.Contains(s, "$(") || strings.Contains(s, "\x1b[") {
		t.Errorf("make help prints unexpanded variables or colour codes:\n%q", s)
	}
	for _, target := range []string{"build", "run", "test", "tools", "lint", "docker", "fuzz"} {
		if !strings.Contains(s, "  "+target+" ") {
			t.Errorf("make help lacks %s:\n%s", target, s)
		}
	}
}

// make docker sends only the source: no tools, build output or database.
func TestDockerignore(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, w := range []string{".tools", "bin", "*.db", "*.db-wal", ".git", ".artifacts", "*.dryrun-*.json"} {
		if !lines[w] {
			t.Errorf(".dockerignore lacks %s", w)
		}
	}
	for _, keep := range []string{"cmd", "go.mod", "config.example.yaml", "*.go"} {
		if lines[keep] {
			t.Errorf(".dockerignore drops %s, which the image build needs", keep)
		}
	}
}
