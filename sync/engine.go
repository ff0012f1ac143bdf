package sync

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	gosync "sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Metrics receives the engine's measurements. Implementations must be safe
// for concurrent use; NopMetrics ignores everything.
type Metrics interface {
	JobDone(route string, outcome Outcome, d time.Duration)
	JobRetried(route string)
	TrackerOps(tracker string, op OpKind)
	Drift(route, class string)
}

// NopMetrics is a Metrics that records nothing.
type NopMetrics struct{}

func (NopMetrics) JobDone(string, Outcome, time.Duration) {}
func (NopMetrics) JobRetried(string)                      {}
func (NopMetrics) TrackerOps(string, OpKind)              {}
func (NopMetrics) Drift(string, string)                   {}

// EngineOptions configure the worker side.
type EngineOptions struct {
	Store    Store
	Mapper   Mapper
	Trackers map[string]Tracker
	// Source reads entities from the Qase API; nil means events only.
	Source  EntitySource
	Clock   Clock
	Logger  *logrus.Entry
	Metrics Metrics

	Owner       string        // lease owner id (default host:pid)
	Concurrency int           // workers (default 4)
	Lease       time.Duration // how long a worker may hold a job (default 2m)
	MaxAttempts int           // before dead-lettering (default 12)
	MaxAge      time.Duration // before dead-lettering, since first enqueue (default 72h)
	BackoffBase time.Duration // default 2s
	BackoffMax  time.Duration // default 10m
	Poll        time.Duration // idle poll for due jobs (default 500ms)
	// Sleep waits for d or until ctx ends (injected so tests skip settle waits).
	Sleep func(ctx context.Context, d time.Duration) error
}

// Engine syncs keys: it leases jobs, computes the desired issue and applies
// the difference, keeping the ledger.
type Engine struct {
	o    EngineOptions
	log  *logrus.Entry
	wake chan struct{}
	// live holds issues prefetched by a reconcile pass, so verifying a key
	// costs no extra tracker read. Keyed by tracker + issue id.
	liveMu gosync.Mutex
	live   map[string]Issue
	fresh  map[EntityRef]freshEntity
	marked map[string]Issue // tracker + key -> issue carrying its marker
	// onResult, when set, sees every processed job (one-shot CLI summaries).
	onResult func(Job, Result, error)
}

// NewEngine applies defaults.
func NewEngine(o EngineOptions) *Engine {
	if o.Clock == nil {
		o.Clock = SystemClock
	}
	if o.Metrics == nil {
		o.Metrics = NopMetrics{}
	}
	if o.Owner == "" {
		host, _ := os.Hostname()
		o.Owner = host + ":" + strconv.Itoa(os.Getpid())
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Lease, 2*time.Minute)
	def(&o.MaxAge, 72*time.Hour)
	def(&o.BackoffBase, 2*time.Second)
	def(&o.BackoffMax, 10*time.Minute)
	def(&o.Poll, 500*time.Millisecond)
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 12
	}
	if o.Sleep == nil {
		o.Sleep = sleepCtx
	}
	return &Engine{o: o, log: o.Logger, wake: make(chan struct{}, 1), live: map[string]Issue{}}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Wake nudges idle workers (new events were committed).
func (e *Engine) Wake() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Run leases and processes jobs until ctx ends, then waits for in-flight
// jobs (each bounded by its own context) and releases leases.
func (e *Engine) Run(ctx context.Context) {
	jobs := make(chan Job)
	var wg gosync.WaitGroup
	// In-flight jobs finish on their own context so shutdown does not cut a
	// tracker call in half; the caller bounds shutdown time.
	work := context.WithoutCancel(ctx)
	for i := 0; i < e.o.Concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				jctx, cancel := context.WithTimeout(work, e.o.Lease)
				e.Process(jctx, j)
				cancel()
			}
		}()
	}
	e.dispatch(ctx, jobs)
	close(jobs)
	wg.Wait()
	rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.o.Store.Release(rctx, e.o.Owner); err != nil {
		e.log.WithError(err).Warn("releasing job leases")
	}
}

func (e *Engine) dispatch(ctx context.Context, jobs chan<- Job) {
	for ctx.Err() == nil {
		leased, err := e.o.Store.Lease(ctx, e.o.Owner, e.o.Concurrency, e.o.Clock.Now(), e.o.Lease)
		if err != nil && ctx.Err() == nil {
			e.log.WithError(err).Error("leasing jobs")
		}
		for _, j := range leased {
			select {
			case jobs <- j:
			case <-ctx.Done():
				return // Run releases the leases of jobs not handed out
			}
		}
		if len(leased) == e.o.Concurrency {
			continue // more may be due
		}
		t := time.NewTimer(e.o.Poll)
		select {
		case <-ctx.Done():
		case <-e.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// Result is what one sync of a key did.
type Result struct {
	Key     Key
	Outcome Outcome
	Ops     []Op
	Issue   IssueRef
	Drift   []string // drift classes found when verifying
}

// Process runs one leased job to an outcome, retry or dead letter.
func (e *Engine) Process(ctx context.Context, j Job) {
	start := e.o.Clock.Now()
	log := e.log.WithFields(logrus.Fields{"route": j.Key.Route, "project": j.Key.Project, "kind": j.Key.Kind, "id": j.Key.ID, "attempt": j.Attempts + 1})
	res, err := e.Sync(ctx, j.Key, j.Verify, log)
	if e.onResult != nil {
		e.onResult(j, res, err)
	}
	// The job's context may have run out (the sync outlived its lease):
	// the bookkeeping still has to happen, or the job would loop forever.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	now := e.o.Clock.Now()
	entry := LedgerEntry{At: now, Key: j.Key, Gen: j.Gen, Issue: res.Issue.String()}
	for _, op := range res.Ops {
		entry.Ops = append(entry.Ops, op.String())
	}
	if res.Issue == (IssueRef{}) {
		entry.Issue = ""
	}
	if err == nil {
		entry.Outcome = res.Outcome
		if cerr := e.o.Store.Complete(ctx, j, res.Outcome, entry, now); cerr != nil {
			log.WithError(cerr).Error("recording job outcome")
			return
		}
		e.o.Metrics.JobDone(j.Key.Route, res.Outcome, now.Sub(start))
		log.WithFields(logrus.Fields{"outcome": res.Outcome, "ops": entry.Ops, "issue": entry.Issue}).Info("synced")
		return
	}
	age := now.Sub(j.FirstAt)
	if IsPermanent(err) || j.Attempts+1 >= e.o.MaxAttempts || (!j.FirstAt.IsZero() && age > e.o.MaxAge) {
		reason := err.Error()
		if !IsPermanent(err) {
			reason = fmt.Sprintf("gave up after %d attempts over %s: %v", j.Attempts+1, age.Round(time.Second), err)
		}
		entry.Outcome, entry.Detail = OutcomeDead, reason
		var rq interface{ Request() string }
		if errors.As(err, &rq) {
			entry.Request = rq.Request()
		}
		if cerr := e.o.Store.Complete(ctx, j, OutcomeDead, entry, now); cerr != nil {
			log.WithError(cerr).Error("recording dead letter")
			return
		}
		e.o.Metrics.JobDone(j.Key.Route, OutcomeDead, now.Sub(start))
		log.WithError(err).Error("dead-lettered")
		return
	}
	wait := e.backoff(j.Attempts)
	if w, ok := RetryWait(err); ok && w > wait {
		wait = w
	}
	if rerr := e.o.Store.Retry(ctx, j, now.Add(wait), err.Error(), true, now); rerr != nil {
		log.WithError(rerr).Error("scheduling retry")
		return
	}
	e.o.Metrics.JobRetried(j.Key.Route)
	log.WithError(err).WithField("retry_in", wait.Round(time.Millisecond).String()).Warn("sync failed; will retry")
}

// backoff is full-jitter exponential: uniform in [base*2^n/2, base*2^n], capped.
func (e *Engine) backoff(attempts int) time.Duration {
	d := e.o.BackoffBase
	for i := 0; i < attempts && d < e.o.BackoffMax; i++ {
		d *= 2
	}
	if d > e.o.BackoffMax {
		d = e.o.BackoffMax
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}
