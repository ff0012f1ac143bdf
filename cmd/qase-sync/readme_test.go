package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReadmeTryIt follows the README's "Two commands" section literally on
// a fresh copy of the repository: `make run &`, each curl call (sent with
// net/http, as curl would), `kill %1; wait; make run &`, the calls again.
// Every answer must equal the `# {...}` line the README shows after the
// call, and every log line the README shows (in its ```json blocks) must
// appear in the service's log with those field values. The README cannot
// drift from the code.
func TestReadmeTryIt(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the service in a fresh copy of the repository")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	steps := readmeSteps(t, string(readme))
	dir := freshCopy(t)
	addr := freeAddr(t)

	var svc *makeRun
	defer func() {
		if svc != nil {
			svc.stop(t)
		}
	}()
	logFrom := 0 // log lines shown after a call were written since the previous check
	calls := 0
	for _, st := range steps {
		switch st.kind {
		case "start":
			if svc != nil {
				t.Fatal("README starts the service twice without stopping it")
			}
			svc = startMakeRun(t, dir, addr)
			logFrom = 0
			if !strings.Contains(svc.out.String(), "a few minutes") {
				t.Errorf("make run does not say a first build takes minutes:\n%s", tail(svc.out.String(), 10))
			}
		case "stop":
			if svc == nil {
				t.Fatal("README stops a service that is not running")
			}
			svc.stop(t)
			svc = nil
		case "curl":
			if svc == nil {
				t.Fatalf("README calls %s with no service running", st.curl.url)
			}
			calls++
			got := st.curl.do(t, dir, addr)
			if st.want != "" && !jsonEqual(got, st.want) {
				t.Errorf("README: %s %s --data @%s answers %s; README shows %s", st.curl.method, st.curl.url, st.curl.data, strings.TrimSpace(got), st.want)
			}
		case "log":
			if svc == nil {
				t.Fatal("README shows log lines with no service running")
			}
			for _, line := range st.logs {
				n := svc.waitLog(t, logFrom, line, 20*time.Second)
				if n < 0 {
					t.Errorf("README shows the log line\n  %s\nbut the service logged:\n%s", line, tail(svc.out.String(), 30))
					continue
				}
			}
			logFrom = svc.lines()
		}
	}
	if calls < 4 {
		t.Fatalf("README has %d curl calls; the test expects the demo's calls before and after a restart", calls)
	}
	if _, err := os.Stat(filepath.Join(dir, "qase-sync.dryrun-jira.json")); err != nil {
		t.Errorf("README names qase-sync.dryrun-jira.json: %v", err)
	}
}

type readmeStep struct {
	kind string // start, stop, curl, log
	curl curlCall
	want string   // the answer the README shows
	logs []string // JSON log lines the README shows
}

type curlCall struct {
	method, url, data string
	headers           http.Header
}

var readmeBlock = regexp.MustCompile("(?s)```(sh|json)\n(.*?)```")

// readmeSteps reads the "Two commands" section's shell and log blocks.
func readmeSteps(t *testing.T, readme string) []readmeStep {
	start := strings.Index(readme, "## Two commands")
	end := strings.Index(readme, "## Worked example")
	if start < 0 || end < start {
		t.Fatal("README lacks the sections this test follows")
	}
	var steps []readmeStep
	for _, m := range readmeBlock.FindAllStringSubmatch(readme[start:end], -1) {
		lang, body := m[1], m[2]
		if lang == "json" {
			var st readmeStep
			st.kind = "log"
			for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
				if !json.Valid([]byte(l)) {
					t.Fatalf("README log line is not JSON: %s", l)
				}
				st.logs = append(st.logs, l)
			}
			steps = append(steps, st)
			continue
		}
		if !strings.Contains(body, "curl ") {
			continue // the two commands themselves
		}
		// Join continuation lines, keep answer comments.
		var lines []string
		for _, l := range strings.Split(body, "\n") {
			if n := len(lines); n > 0 && strings.HasSuffix(lines[n-1], "\\") {
				lines[n-1] = strings.TrimSuffix(lines[n-1], "\\") + " " + strings.TrimSpace(l)
				continue
			}
			lines = append(lines, l)
		}
		for _, l := range lines {
			l = strings.TrimSpace(l)
			switch {
			case l == "":
			case strings.HasPrefix(l, "# "):
				if n := len(steps); n > 0 && steps[n-1].kind == "curl" && strings.HasPrefix(l, "# {") {
					steps[n-1].want = l[2 : strings.Index(l, "}")+1]
				}
			default:
				for _, cmd := range strings.Split(l, ";") {
					cmd = strings.TrimSpace(cmd)
					switch {
					case cmd == "make run &":
						steps = append(steps, readmeStep{kind: "start"})
					case cmd == "kill %1":
						steps = append(steps, readmeStep{kind: "stop"})
					case cmd == "wait":
						// stop already waits for the service to exit
					case strings.HasPrefix(cmd, "curl "):
						steps = append(steps, readmeStep{kind: "curl", curl: parseCurl(t, cmd)})
					default:
						t.Fatalf("README runs %q, which this test does not know how to follow", cmd)
					}
				}
			}
		}
	}
	return steps
}

// parseCurl understands the curl options the README uses.
func parseCurl(t *testing.T, cmd string) curlCall {
	words := shellWords(t, cmd)
	c := curlCall{method: http.MethodGet, headers: http.Header{}}
	for i := 1; i < len(words); i++ {
		w := words[i]
		next := func() string {
			i++
			if i >= len(words) {
				t.Fatalf("README: %s needs a value in %q", w, cmd)
			}
			return words[i]
		}
		switch w {
		case "-s":
		case "-X":
			c.method = next()
		case "-H":
			k, v, _ := strings.Cut(next(), ":")
			c.headers.Set(strings.TrimSpace(k), strings.TrimSpace(v))
		case "--data", "-d":
			c.data = next()
			if c.method == http.MethodGet {
				c.method = http.MethodPost
			}
		default:
			if strings.HasPrefix(w, "-") {
				t.Fatalf("README: curl option %s is unknown to this test", w)
			}
			c.url = w
		}
	}
	return c
}

func shellWords(t *testing.T, s string) []string {
	var out []string
	var cur strings.Builder
	in := rune(0)
	have := false
	for _, r := range s {
		switch {
		case in != 0 && r == in:
			in = 0
		case in != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			in, have = r, true
		case r == ' ' || r == '\t':
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if in != 0 {
		t.Fatalf("unbalanced quote in %q", s)
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// do sends the call as curl would (--data @file: the file's bytes, newlines
// removed; without -H Content-Type curl sends form encoding).
func (c curlCall) do(t *testing.T, dir, addr string) string {
	t.Helper()
	u := c.url
	if !strings.Contains(u, "://") {
		u = "http://" + u
	}
	u = strings.Replace(u, "localhost:8080", addr, 1)
	var body io.Reader
	if c.data != "" {
		data := []byte(c.data)
		if f, ok := strings.CutPrefix(c.data, "@"); ok {
			b, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatalf("README posts %s: %v", f, err)
			}
			data = bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r"), nil), []byte("\n"), nil)
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequest(c.method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = c.headers.Clone()
	if c.data != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("README call %s %s: %v", c.method, c.url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func jsonEqual(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// freshCopy copies the repository's files (tracked and new, not ignored:
// no bin/, database or tools) into a temporary directory.
func freshCopy(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Skipf("not a git checkout (%v): the README test copies the tracked files", err)
	}
	dir := t.TempDir()
	for _, f := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		src := filepath.Join(root, f)
		st, err := os.Lstat(src)
		if err != nil || !st.Mode().IsRegular() {
			continue // deleted in the work tree, or not a file
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, st.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// makeRun is `make run &` in the copy.
type makeRun struct {
	cmd *exec.Cmd
	out *syncBuffer
}

func startMakeRun(t *testing.T, dir, addr string) *makeRun {
	t.Helper()
	m := &makeRun{out: &syncBuffer{}}
	m.cmd = exec.Command("make", "--no-print-directory", "run")
	m.cmd.Dir = dir
	// As a shell's background job: its own process group, so kill %1
	// reaches make and the service.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	m.cmd.Env = append(os.Environ(), "QASE_SYNC_LISTEN="+addr, "QASE_SYNC_CONFIG=", "QASE_SYNC_DB=", "QASE_SYNC_ADMIN_TOKEN=")
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Minute) // a cold build cache
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	m.stop(t)
	t.Fatalf("make run did not serve on %s; output:\n%s", addr, tail(m.out.String(), 40))
	return nil
}

// stop is `kill %1; wait`: SIGTERM to the job, then wait until make and
// the service have exited (their output pipe closes).
func (m *makeRun) stop(t *testing.T) {
	t.Helper()
	_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- m.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Errorf("make run did not stop on SIGTERM; output:\n%s", tail(m.out.String(), 20))
	}
	if !strings.Contains(m.out.String(), "stopped cleanly") {
		t.Errorf("the service did not stop cleanly; output:\n%s", tail(m.out.String(), 20))
	}
}

func (m *makeRun) lines() int { return strings.Count(m.out.String(), "\n") }

// waitLog waits for a log line, at or after line index from, that has
// every field of want with the same value; it returns its index or -1.
func (m *makeRun) waitLog(t *testing.T, from int, want string, d time.Duration) int {
	var w map[string]any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(d)
	for {
		sc := bufio.NewScanner(strings.NewReader(m.out.String()))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for i := 0; sc.Scan(); i++ {
			if i < from {
				continue
			}
			var got map[string]any
			if json.Unmarshal(sc.Bytes(), &got) != nil {
				continue // make's own output
			}
			match := true
			for k, v := range w {
				if !reflect.DeepEqual(got[k], v) {
					match = false
					break
				}
			}
			if match {
				return i
			}
		}
		if time.Now().After(deadline) {
			return -1
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReadmeConsoleExamples runs every `$ qase-sync …` line of the README's
// console blocks and checks that what the README shows after it is what
// the command prints: line by line in order, whitespace aside (the README
// compacts JSON), "…" standing for an elided part.
func TestReadmeConsoleExamples(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```console\n(.*?)```").FindAllStringSubmatch(string(readme), -1)
	ran := 0
	for _, b := range blocks {
		lines := strings.Split(strings.TrimRight(b[1], "\n"), "\n")
		cmdline, ok := strings.CutPrefix(lines[0], "$ qase-sync ")
		if !ok {
			continue
		}
		args := shellWords(t, cmdline)
		for i, a := range args {
			if !strings.HasPrefix(a, "-") && (strings.HasSuffix(a, ".yaml") || strings.HasSuffix(a, ".json")) {
				args[i] = filepath.Join("..", "..", a)
			}
		}
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 {
			t.Errorf("README runs qase-sync %s: exit %d: %s", cmdline, code, errb.String())
			continue
		}
		ran++
		squash := func(s string) string { return strings.Join(strings.Fields(s), "") }
		got := squash(out.String())
		pos := 0
		for _, l := range lines[1:] {
			for _, piece := range strings.Split(l, "…") {
				p := squash(piece)
				if p == "" {
					continue
				}
				i := strings.Index(got[pos:], p)
				if i < 0 {
					t.Errorf("README shows %q after `qase-sync %s`, but the command prints (from there on):\n%s", strings.TrimSpace(piece), cmdline, out.String())
					break
				}
				pos += i + len(p)
			}
		}
	}
	if ran == 0 {
		t.Fatal("no `$ qase-sync` console example found in the README")
	}
}
