package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/adapters/jira/jirafake"
	"github.com/qase-sync/qase-sync/adapters/store/postgres"
	"github.com/qase-sync/qase-sync/internal/testhttp"
)

// Several replicas on one PostgreSQL database, as issue 11 runs them:
// three real `serve` processes share the work, the reconcile ticks and
// one Jira request budget.

// requestLog is an HTTP front for a fake tracker that notes when each
// request arrived.
type requestLog struct {
	mu sync.Mutex
	at []time.Time
}

func (l *requestLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.at = append(l.at, time.Now())
		l.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (l *requestLog) times() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.at)
}

// replicaConfig writes a replica's configuration: the shared database,
// the trackers at the fakes with one request budget, reconcile ticks.
func replicaConfig(t *testing.T, dsn, listen, jiraURL, ghURL, rate string, tick time.Duration) string {
	t.Helper()
	cfg := fmt.Sprintf(`server:
  listen: %q
  webhook_path: /webhooks/qase
  admin_token: %s
  shutdown_timeout: 5s
qase:
  secrets: [%q]
store:
  driver: postgres
  postgres:
    dsn: %q
%sworker:
  concurrency: 4
  lease: 3s
  max_attempts: 20
  backoff_base: 20ms
  backoff_max: 300ms
  late_commit: 1s
reconcile:
  enabled: true
  schedule: "@every %s"
  lease: 1s
log:
  level: info
  format: json
mapping:
%s
`, listen, opsAdminToken, testSecret, dsn, trackersYAML(jiraURL, ghURL, rate), tick, indent(exampleRoutes(t), "  "))
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestReplicasShareWorkTicksAndBudget: three serve processes on one
// database get the same deliveries at once plus distinct ones; one is
// SIGKILLed mid-run. Every defect ends as exactly one Jira issue and every
// delivery is accounted for; the store records one reconcile pass per
// tick across the replicas; and the Jira fake never sees more requests in
// a window than the one budget the replicas share allows.
func TestReplicasShareWorkTicksAndBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three processes")
	}
	dsn := pgDatabase(t)
	const (
		perSecond = 8
		burst     = 4
		tick      = 2 * time.Second
		shared    = 15 // defects whose deliveries go to all three replicas
		distinct  = 15 // defects delivered to one replica each
	)
	jira := jirafake.New()
	t.Cleanup(jira.Close)
	gh := newGitHubFake(t)
	var reqs requestLog
	front := httptest.NewServer(reqs.wrap(jira))
	t.Cleanup(front.Close)

	logs := &syncBuffer{}
	keepLogsOnFailure(t, logs)
	var procs []*opsProc
	for range 3 {
		addr := freeAddr(t)
		cfg := replicaConfig(t, dsn, addr, front.URL, gh.URL, fmt.Sprintf("    rate: {per_second: %d, burst: %d}\n", perSecond, burst), tick)
		procs = append(procs, startBinary(t, cfg, "http://"+addr, logs))
	}
	st, err := postgres.Open(context.Background(), postgres.Options{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	start := time.Now()

	deliver := func(p *opsProc, id int) {
		body := opsEvent("defect.created", "RP", 1700000000+int64(id), map[string]any{"id": id, "title": fmt.Sprintf("Defect %d", id), "severity": "major"})
		if code, resp := opsPost(p.url+"/webhooks/qase", body); code != http.StatusAccepted && code != http.StatusOK {
			t.Errorf("defect %d to %s: %d %s", id, p.url, code, resp)
		}
	}
	var wg sync.WaitGroup
	for id := 1; id <= shared+distinct; id++ {
		targets := procs
		if id > shared {
			targets = procs[id%3 : id%3+1]
		}
		for _, p := range targets {
			wg.Add(1)
			go func() { defer wg.Done(); deliver(p, id) }()
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Mid-run: the work has begun but is far from done (the budget makes
	// it take seconds). The killed replica's leased jobs come back to the
	// others when their leases end; the tokens it held are simply gone.
	waitFor(t, 20*time.Second, func() bool { return len(reqs.times()) >= 10 }, "the first Jira requests", logs)
	if depth, err := st.QueueDepth(context.Background()); err != nil || depth == 0 {
		t.Fatalf("queue depth %d (%v) before the kill: the work must still be under way", depth, err)
	}
	procs[2].kill()

	waitFor(t, 45*time.Second, func() bool {
		depth, err := st.QueueDepth(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		es, err := st.EventStatus(context.Background())
		return err == nil && depth == 0 && es.Pending == 0
	}, "the queue to drain on the surviving replicas", logs)
	// One more tick, so that passes run after the work too.
	time.Sleep(tick)

	// One issue per defect; every delivery accounted for.
	issues := jira.Issues()
	seen := map[string]int{}
	for _, is := range issues {
		seen[is.Summary]++
	}
	for id := 1; id <= shared+distinct; id++ {
		if n := seen[fmt.Sprintf("[RP-%d] Defect %d", id, id)]; n != 1 {
			t.Errorf("defect %d has %d Jira issues, want 1", id, n)
		}
	}
	if len(issues) != shared+distinct {
		t.Errorf("jira has %d issues, want %d", len(issues), shared+distinct)
	}
	if es, _ := st.EventStatus(context.Background()); es.Pending != 0 || es.Dead != 0 || es.Applied+es.Noop != shared+distinct {
		t.Errorf("ledger %+v: want %d events applied or no-op (same-body deliveries are one event), none dead", es, shared+distinct)
	}

	// One reconcile pass per tick across the replicas: each holder keeps
	// the lease until a tenth of the interval before its next tick, so
	// two passes are never closer than that, whoever ran them.
	passes, err := st.ReconcilePasses(context.Background(), start)
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if max := int(elapsed/(tick-tick/10)) + 1; len(passes) < 2 || len(passes) > max {
		t.Errorf("%d reconcile passes in %s of %s ticks; want at least 2 and at most %d", len(passes), elapsed.Round(time.Millisecond), tick, max)
	}
	for i := 1; i < len(passes); i++ {
		if gap := passes[i].Started.Sub(passes[i-1].Started); gap < tick-tick/10-100*time.Millisecond {
			t.Errorf("passes %d (%s) and %d (%s) started %s apart: two passes in one tick", passes[i-1].ID, passes[i-1].Owner, passes[i].ID, passes[i].Owner, gap)
		}
	}

	// The budget held across the replicas together: in any window, at
	// most the burst plus the rate over the window (a token granted just
	// before a window may be spent in it: one more for each replica).
	at := reqs.times()
	const window = 2 * time.Second
	limit := burst + int(perSecond*window.Seconds()) + 3
	if len(at) < 2*limit {
		t.Fatalf("only %d Jira requests: too few to measure the rate", len(at))
	}
	if got := testhttp.Busiest(at, window); got > limit {
		t.Errorf("%d Jira requests within %s from three replicas; the shared budget allows %d (%d/s, burst %d)", got, window, limit, perSecond, burst)
	}
	// ...and it was shared, not one replica doing all the work.
	for i, p := range procs[:2] {
		_, samples := scrapeMetrics(t, p.url)
		if n, _ := promSum(samples, "qase_sync_api_calls_total", map[string]string{"system": "jira"}); n == 0 {
			t.Errorf("replica %d made no Jira calls", i)
		}
	}
	t.Logf("%d Jira requests in %s, busiest %s window %d (limit %d); %d reconcile passes", len(at), elapsed.Round(time.Millisecond), window, testhttp.Busiest(at, window), limit, len(passes))
}
