package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/adapters/github/githubfake"
	"github.com/qase-sync/qase-sync/adapters/jira/jirafake"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// Fault injection through the real binary: a stream of webhook deliveries
// (duplicated, shuffled) over dozens of entities while the fake trackers
// rate-limit, fail, hang and commit-then-fail, and the service is killed
// with SIGKILL mid-stream. At the end the invariants must hold: every
// accepted event finished (I1), one issue per key (I2), the final tracker
// state is what the mapping says for the latest Qase state (I3).

func newGitHubFake(t *testing.T) *githubfake.Server {
	gh := githubfake.New()
	t.Cleanup(gh.Close)
	return gh
}

// faultDelivery is one POST of the stream; several may share a body
// (deliberate duplicates).
type faultDelivery struct{ body []byte }

// faultClient delivers the stream like a patient Qase: a delivery that got
// no 2xx answer (refused, reset, 503) is sent again until acknowledged.
type faultClient struct {
	url      string
	mu       sync.Mutex
	answers  map[string][]string // body -> every 2xx status answered ("accepted", "duplicate", "ignored")
	acked    atomic.Int64
	unacked  atomic.Int64 // attempts without a 2xx answer
	deadline time.Time
}

// send delivers ds with the given number of concurrent senders; it is
// called off the test goroutine, so it reports instead of failing.
func (c *faultClient) send(ds []faultDelivery, workers int) error {
	ch := make(chan faultDelivery)
	var wg sync.WaitGroup
	var late atomic.Int64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range ch {
				for {
					if time.Now().After(c.deadline) {
						late.Add(1)
						break
					}
					code, body := opsPost(c.url, d.body)
					if code >= 200 && code < 300 {
						var ans struct{ Status string }
						_ = json.Unmarshal([]byte(body), &ans)
						c.mu.Lock()
						c.answers[string(d.body)] = append(c.answers[string(d.body)], ans.Status)
						c.mu.Unlock()
						c.acked.Add(1)
						time.Sleep(10 * time.Millisecond) // a stream, not a burst
						break
					}
					c.unacked.Add(1)
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	for _, d := range ds {
		ch <- d
	}
	close(ch)
	wg.Wait()
	if n := late.Load(); n > 0 {
		return fmt.Errorf("%d deliveries not acknowledged before the deadline", n)
	}
	return nil
}

// faultInjector cycles through tracker faults until stopped.
func faultInjector(jira *jirafake.Server, gh *githubfake.Server, every time.Duration) (stop func()) {
	// Ambiguous creates first, while creates are still flowing.
	faults := []func(){
		func() { jira.CommitThenFail(1) },
		func() { gh.CommitThenFail(1) },
		func() { jira.FailNext(2, http.StatusTooManyRequests, http.Header{"Retry-After": {"1"}}, "") },
		func() { gh.FailNext(2, http.StatusInternalServerError, nil, `{"message":"Server Error"}`) },
		func() { jira.Delay(400 * time.Millisecond) }, // a hang, shorter than the client timeout
		func() { jira.FailNext(2, http.StatusInternalServerError, nil, "") },
		func() { gh.TooManyRequests(2, time.Second) },
		func() { jira.CommitThenDrop(1) },
		func() { gh.SecondaryRateLimit(1, time.Second) },
		func() { jira.FailNext(1, http.StatusBadGateway, nil, "") },
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-done:
				jira.Delay(0)
				return
			case <-t.C:
			}
			jira.Delay(0) // a hang lasts one tick
			faults[i%len(faults)]()
		}
	}()
	return func() { close(done); <-finished }
}

const faultRepo = "acme/qa"

func faultKey(route string, kind qsync.Kind, id int) qsync.Key {
	return qsync.Key{Route: route, EntityRef: qsync.EntityRef{Project: "ID", Kind: kind, ID: int64(id)}}
}

// ghIssuesFor returns the (not deleted) GitHub issues stamped with the key's marker.
// oneGHIssue is the key's one GitHub issue; it reports an error and
// false when there is not exactly one.
func oneGHIssue(t *testing.T, gh *githubfake.Server, k qsync.Key) (githubfake.IssueState, bool) {
	t.Helper()
	found := ghIssuesFor(gh, k)
	if len(found) != 1 {
		t.Errorf("%s has %d github issues, want 1", k, len(found))
		return githubfake.IssueState{}, false
	}
	return found[0], true
}

func ghIssuesFor(gh *githubfake.Server, k qsync.Key) []githubfake.IssueState {
	var out []githubfake.IssueState
	stamp := "<!-- qase-sync:marker " + qsync.MarkerFor(k).ID + " -->"
	for _, is := range gh.Issues(faultRepo) {
		if !is.Deleted && strings.Contains(is.Body, stamp) {
			out = append(out, is)
		}
	}
	return out
}

func TestFaultStreamWithKills(t *testing.T) {
	const (
		nDefects = 30
		nReviews = 10
		nRuns    = 10
		base     = int64(1_700_000_000)
	)
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("QASE_SYNC_E2E_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("shuffle seed %d (set QASE_SYNC_E2E_SEED to replay the order)", seed)
	rnd := rand.New(rand.NewPCG(seed, 7))

	jira := jirafake.New()
	t.Cleanup(jira.Close)
	gh := newGitHubFake(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	url := "http://" + addr
	cfg := opsConfig{dir: dir, listen: addr, jiraURL: jira.URL, ghURL: gh.URL, concurrency: 4, lease: 6 * time.Second, maxAttempts: 25, logLevel: os.Getenv("QASE_SYNC_E2E_LOGLEVEL")}.write(t)
	logs := &syncBuffer{}
	keepLogsOnFailure(t, logs)
	p := startBinary(t, cfg, url, logs)
	client := &faultClient{url: url + "/webhooks/qase", answers: map[string][]string{}, deadline: time.Now().Add(50 * time.Second)}

	// dup sends each body 1-3 times; the whole phase is shuffled.
	var phase []faultDelivery
	dup := func(b []byte) {
		for n := 1 + rnd.IntN(3); n > 0; n-- {
			phase = append(phase, faultDelivery{body: b})
		}
	}
	severities := []string{"blocker", "critical", "major", "normal", "minor"}

	// Phase A: everything that files an issue, plus hints and noise.
	for i := 1; i <= nDefects; i++ {
		ts := base + int64(i)*10
		dup(opsEvent("defect.created", "ID", ts, map[string]any{"id": i, "title": fmt.Sprintf("Defect %d", i), "severity": severities[i%len(severities)], "actual_result": "boom"}))
		dup(opsEvent("defect.updated", "ID", ts+1, map[string]any{"id": i}))
		dup(opsEvent("defect.updated", "ID", ts+2, map[string]any{"id": i}))
	}
	for j := 1; j <= nReviews; j++ {
		ts := base + int64(j)*10
		dup(opsEvent("review.created", "ID", ts, map[string]any{"id": j, "title": fmt.Sprintf("Review %d", j), "case_id": j, "created_by": map[string]any{"name": "Ann", "email": "ann@x.io"}}))
		dup(opsEvent("review.declined", "ID", ts+1, map[string]any{"id": j, "declined_by": map[string]any{"name": "Bob", "email": "bob@x.io"}}))
	}
	for k := 1; k <= nRuns; k++ {
		ts := base + int64(k)*10
		dup(opsEvent("run.started", "ID", ts, map[string]any{"id": k, "title": fmt.Sprintf("Run %d", k)})) // context only: no job
		dup(opsEvent("case.created", "ID", ts, map[string]any{"id": k, "title": "noise"}))                 // unserved kind: ignored
		dup(opsEvent("run.completed", "ID", ts+1, map[string]any{"id": k, "cases": 20, "passed": 20 - k, "failed": k, "duration": 1000}))
	}
	rnd.Shuffle(len(phase), func(a, b int) { phase[a], phase[b] = phase[b], phase[a] })
	phaseA := phase
	phase = nil

	// Phase B: closes and comments, once every issue exists.
	for i := 1; i <= nDefects; i++ {
		ts := base + 1000 + int64(i)*10
		if i%2 == 1 {
			dup(opsEvent("defect.resolved", "ID", ts, map[string]any{"id": i}))
		} else {
			dup(opsEvent("defect.updated", "ID", ts, map[string]any{"id": i}))
		}
	}
	for j := 1; j <= nReviews; j++ {
		ts := base + 1000 + int64(j)*10
		for c := 1; c <= 2; c++ {
			dup(opsEvent("review.commented", "ID", ts+int64(c), map[string]any{"id": j, "comment": fmt.Sprintf("note %d on review %d", c, j), "commented_by": map[string]any{"name": "Cy", "email": "cy@x.io"}}))
		}
		if j%2 == 1 {
			dup(opsEvent("review.merged", "ID", ts+5, map[string]any{"id": j, "merged_by": map[string]any{"name": "Bob", "email": "bob@x.io"}}))
		}
	}
	for k := 2; k <= nRuns; k += 2 {
		dup(opsEvent("run.deleted", "ID", base+1000+int64(k)*10, map[string]any{"id": k}))
	}
	rnd.Shuffle(len(phase), func(a, b int) { phase[a], phase[b] = phase[b], phase[a] })
	phaseB := phase
	t.Logf("stream: %d deliveries in phase A, %d in phase B", len(phaseA), len(phaseB))

	kills := 0
	// killAt SIGKILLs the service once n more deliveries were acknowledged
	// (or the phase ended), then starts it again on the same store.
	killAt := func(n int64, sending <-chan struct{}) {
		target := client.acked.Load() + n
		for client.acked.Load() < target {
			select {
			case <-sending:
				target = 0
			case <-time.After(5 * time.Millisecond):
			}
		}
		p.kill()
		kills++
		p = startBinary(t, cfg, url, logs)
	}
	// sendPhase delivers ds with the trackers misbehaving (until a second
	// after the last delivery) and one SIGKILL half-way.
	sendPhase := func(ds []faultDelivery) {
		stopFaults := faultInjector(jira, gh, 200*time.Millisecond)
		defer stopFaults()
		done := make(chan struct{})
		var err error
		go func() { defer close(done); err = client.send(ds, 4) }()
		killAt(int64(len(ds)/2), done)
		<-done
		if err != nil {
			t.Fatalf("%v; logs:\n%s", err, tail(logs.String(), 40))
		}
		time.Sleep(time.Second)
	}

	sendPhase(phaseA)
	// A kill while the workers are busy with phase A's creates.
	time.Sleep(300 * time.Millisecond)
	p.kill()
	kills++
	p = startBinary(t, cfg, url, logs)

	// Wait until every phase-A entity has its issue.
	defectKey := func(i int) qsync.Key { return faultKey("defects-to-jira", qsync.KindDefect, i) }
	reviewKey := func(j int) qsync.Key { return faultKey("declined-reviews-to-github", qsync.KindReview, j) }
	runKey := func(k int) qsync.Key { return faultKey("failed-runs-to-github", qsync.KindRun, k) }
	allFiled := func() bool {
		for i := 1; i <= nDefects; i++ {
			if len(jira.IssueByLabel(qsync.MarkerFor(defectKey(i)).Label)) == 0 {
				return false
			}
		}
		for j := 1; j <= nReviews; j++ {
			if len(ghIssuesFor(gh, reviewKey(j))) == 0 {
				return false
			}
		}
		for k := 1; k <= nRuns; k++ {
			if len(ghIssuesFor(gh, runKey(k))) == 0 {
				return false
			}
		}
		return true
	}
	waitFor(t, 30*time.Second, allFiled, "every phase-A entity filed", logs)

	sendPhase(phaseB)

	// Converged: nothing pending, nothing queued.
	waitFor(t, 40*time.Second, func() bool {
		st := adminEvents(t, url)
		_, m := scrapeMetrics(t, url)
		depth, _ := promSum(m, "qase_sync_queue_depth", nil)
		return st.Pending == 0 && depth == 0
	}, "queue drained", logs)

	// I1: every accepted event is in the ledger exactly once and finished.
	client.mu.Lock()
	stored, ignored := 0, 0
	for body, answers := range client.answers {
		accepted := 0
		for _, a := range answers {
			if a == "accepted" {
				accepted++
			}
		}
		if accepted > 1 {
			t.Errorf("one event body was accepted %d times (dedup failed): %.120s", accepted, body)
		}
		switch answers[0] {
		case "accepted", "duplicate":
			stored++
		case "ignored":
			ignored++
		default:
			t.Errorf("unexpected answer %q for %.120s", answers[0], body)
		}
	}
	client.mu.Unlock()
	st := adminEvents(t, url)
	t.Logf("kills %d, deliveries acknowledged %d, unacknowledged attempts %d, distinct events stored %d (ignored %d), ledger %+v",
		kills, client.acked.Load(), client.unacked.Load(), stored, ignored, st)
	if ignored != nRuns {
		t.Errorf("%d distinct ignored events, want %d (case.created)", ignored, nRuns)
	}
	if st.Pending != 0 || st.Applied+st.Noop+st.Dead != stored {
		t.Errorf("ledger %+v does not account for the %d accepted events", st, stored)
	}
	if st.Dead != 0 {
		code, body := opsGet(url+"/admin/deadletters", opsAdminToken)
		t.Errorf("%d events dead-lettered under transient faults: %d %s", st.Dead, code, body)
	}

	// I2 + I3: one issue per key, in the right final state.
	if n := len(jira.Issues()); n != nDefects {
		t.Errorf("jira has %d issues, want %d", n, nDefects)
	}
	for i := 1; i <= nDefects; i++ {
		found := jira.IssueByLabel(qsync.MarkerFor(defectKey(i)).Label)
		if len(found) != 1 {
			t.Errorf("defect %d has %d jira issues", i, len(found))
			continue
		}
		is := found[0]
		if want := fmt.Sprintf("[ID-%d] Defect %d", i, i); is.Summary != want {
			t.Errorf("defect %d summary %q, want %q", i, is.Summary, want)
		}
		wantStatus, wantComments := "To Do", 0
		if i%2 == 1 {
			wantStatus, wantComments = "Done", 1
		}
		if is.Status != wantStatus || len(is.Comments) != wantComments {
			t.Errorf("defect %d: status %q with %d comments, want %q with %d (%q)", i, is.Status, len(is.Comments), wantStatus, wantComments, commentBodies(is.Comments))
		}
		if wantComments == 1 && !strings.Contains(is.Comments[0].Body, "resolved in Qase") {
			t.Errorf("defect %d comment %q", i, is.Comments[0].Body)
		}
		if sev := "severity-" + severities[i%len(severities)]; !hasLabel(is.Labels, sev) {
			t.Errorf("defect %d labels %v lack %s", i, is.Labels, sev)
		}
	}
	var ghLive int
	for _, is := range gh.Issues(faultRepo) {
		if !is.Deleted {
			ghLive++
		}
	}
	if ghLive != nReviews+nRuns {
		t.Errorf("github has %d issues, want %d", ghLive, nReviews+nRuns)
	}
	for j := 1; j <= nReviews; j++ {
		is, ok := oneGHIssue(t, gh, reviewKey(j))
		if !ok {
			continue
		}
		wantState, wantReason, wantComments := "open", "", 2
		if j%2 == 1 {
			wantState, wantReason, wantComments = "closed", "completed", 3
		}
		if is.State != wantState || (wantReason != "" && is.StateReason != wantReason) {
			t.Errorf("review %d: state %s/%s, want %s/%s", j, is.State, is.StateReason, wantState, wantReason)
		}
		bodies := commentBodies(is.Comments)
		if len(is.Comments) != wantComments {
			t.Errorf("review %d has %d comments, want %d: %q", j, len(is.Comments), wantComments, bodies)
		}
		for c := 1; c <= 2; c++ {
			text := fmt.Sprintf("note %d on review %d", c, j)
			if n := strings.Count(strings.Join(bodies, "\n"), text); n != 1 {
				t.Errorf("review %d: comment %q posted %d times", j, text, n)
			}
		}
	}
	for k := 1; k <= nRuns; k++ {
		is, ok := oneGHIssue(t, gh, runKey(k))
		if !ok {
			continue
		}
		wantState, wantComments := "open", 0
		if k%2 == 0 {
			wantState, wantComments = "closed", 1
		}
		if is.State != wantState || len(is.Comments) != wantComments || (wantState == "closed" && is.StateReason != "not_planned") {
			t.Errorf("run %d: state %s/%s with %d comments, want %s with %d", k, is.State, is.StateReason, len(is.Comments), wantState, wantComments)
		}
		// run.started is kept as context: the sync that phase B's
		// run.deleted causes picks up the title it carried.
		if want := fmt.Sprintf("Test run failed: Run %d", k); k%2 == 0 && is.Title != want {
			t.Errorf("run %d title %q, want %q", k, is.Title, want)
		}
		if !strings.Contains(is.Body, fmt.Sprintf("| %d | %d |", 20-k, k)) {
			t.Errorf("run %d body lacks its counts:\n%s", k, is.Body)
		}
	}

	// Stop cleanly and read the store directly: every key linked to the
	// issue the tracker holds.
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.waitExit(20 * time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit status %d", code)
	}
	ctx := context.Background()
	store := openStoreFile(t, dir)
	links, err := store.Links(ctx, "", qsync.Key{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(links) != nDefects+nReviews+nRuns {
		t.Errorf("%d links in the store, want %d", len(links), nDefects+nReviews+nRuns)
	}
	for _, l := range links {
		if l.State != qsync.LinkLinked {
			t.Errorf("link %s is %s", l.Key, l.State)
			continue
		}
		if l.Key.Route == "defects-to-jira" {
			is, ok := jira.Issue(l.Issue.ID)
			if !ok || !hasLabel(is.Labels, l.Marker.Label) {
				t.Errorf("link %s points at jira %s, which is missing or not its issue", l.Key, l.Issue.ID)
			}
		} else if found := ghIssuesFor(gh, l.Key); len(found) != 1 || fmt.Sprint(found[0].Number) != l.Issue.ID {
			t.Errorf("link %s points at github #%s, not at its issue", l.Key, l.Issue.ID)
		}
	}
	if depth, err := store.QueueDepth(ctx); err != nil || depth != 0 {
		t.Errorf("queue depth after stop = %d (%v)", depth, err)
	}
	for _, secret := range opsSecrets {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("a secret (%d chars) reached the logs", len(secret))
		}
	}
	if strings.Contains(logs.String(), "DATA RACE") {
		t.Error("the race detector fired in the service process")
	}
	// The faults really happened: rate limits, server errors and
	// ambiguous creates that had to be adopted.
	served := map[string]int{}
	for _, r := range jira.Requests() {
		served[fmt.Sprintf("jira %d", r.Status)]++
	}
	for _, r := range gh.Requests() {
		served[fmt.Sprintf("github %d", r.Status)]++
	}
	adopted := strings.Count(logs.String(), "adopting the issue that carries this key's marker")
	t.Logf("tracker answers %v; adoptions %d", served, adopted)
	for _, k := range []string{"jira 429", "jira 500", "github 429", "github 500"} {
		if served[k] == 0 {
			t.Errorf("no %q answer was served: the fault injection did not bite", k)
		}
	}
	if adopted == 0 {
		t.Error("no ambiguous create was adopted: commit-then-fail never bit")
	}
	if t.Failed() {
		t.Logf("service logs (tail):\n%s", tail(logs.String(), 60))
	}
}

// keepLogsOnFailure writes the service logs of a failed test to the file
// named by $QASE_SYNC_E2E_LOGS (for post-mortems; the test output keeps
// only a tail).
func keepLogsOnFailure(t *testing.T, logs *syncBuffer) {
	t.Cleanup(func() {
		if path := os.Getenv("QASE_SYNC_E2E_LOGS"); path != "" && t.Failed() {
			_ = os.WriteFile(path, []byte(logs.String()), 0o600)
		}
	})
}

// waitFor polls cond until it holds, failing the test after d.
func waitFor(t *testing.T, d time.Duration, cond func() bool, what string, logs *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s; logs:\n%s", what, tail(logs.String(), 60))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
