package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/internal/ratelimit"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// TestWiredClientsTakeTheirBudgets: the Jira, GitHub and Qase API clients
// the application wires each send through their own credential's budget:
// with tokens for `burst` requests and (almost) no refill, a burst of
// calls sends exactly that many requests per system; the rest wait, and
// when their context ends they were never sent and say so (a tracker
// call as qsync.ErrRateWait, which the engine does not charge).
func TestWiredClientsTakeTheirBudgets(t *testing.T) {
	var mu sync.Mutex
	got := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got[strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")[0]]++
		mu.Unlock()
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`qase:
  secrets: [s]
  api_token: qase-token
  api_url: %s/qase
  api_rate: {per_minute: 1, burst: 2}
store:
  sqlite:
    path: %s
%smapping:
%s
`, srv.URL, filepath.Join(dir, "q.db"), trackersYAML(srv.URL+"/jira", srv.URL+"/github", "    rate: {per_minute: 1, burst: 3}\n"), indent(exampleRoutes(t), "  "))
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := wireApp(path, &syncBuffer{}, appCLI, func(string) (string, bool) { return "", false }, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.close)

	calls := map[string]func(context.Context) error{
		"qase": func(ctx context.Context) error {
			_, _, err := a.source.Fetch(ctx, qsync.EntityRef{Project: "P", Kind: qsync.KindDefect, ID: 1})
			return err
		},
		"jira": func(ctx context.Context) error {
			_, err := a.trackers["jira"].Get(ctx, qsync.IssueRef{Project: "QA", ID: "10001", Key: "QA-1"})
			return err
		},
		"github": func(ctx context.Context) error {
			_, err := a.trackers["github"].Get(ctx, qsync.IssueRef{Project: "o/r", ID: "1"})
			return err
		},
	}
	errs := map[string][]error{}
	var wg sync.WaitGroup
	for name, call := range calls {
		for range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				err := call(ctx)
				mu.Lock()
				errs[name] = append(errs[name], err)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	for name, want := range map[string]int{"qase": 2, "jira": 3, "github": 3} {
		if got[name] != want {
			t.Errorf("%s: %d requests sent, want %d (the budget's burst)", name, got[name], want)
		}
		waited := 0
		for _, err := range errs[name] {
			if errors.Is(err, ratelimit.ErrWait) || errors.Is(err, qsync.ErrRateWait) {
				waited++
				if name != "qase" && !errors.Is(err, qsync.ErrRateWait) {
					t.Errorf("%s: a cut wait is %v, not qsync.ErrRateWait", name, err)
				}
			}
		}
		if waited != 5-want {
			t.Errorf("%s: %d calls ended waiting for a token, want %d; errors %v", name, waited, 5-want, errs[name])
		}
	}
}
