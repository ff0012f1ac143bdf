package sync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	gosync "sync"
	"sync/atomic"
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

// GiveWayObserver is an optional Metrics extension: told how long the
// dispatcher held a job back while acknowledgements were behind.
type GiveWayObserver interface {
	GaveWay(d time.Duration)
}

// RepairObserver is an optional Metrics extension: told about each key
// whose verifying sync (a reconcile pass's job) found drift and completed,
// that is, repaired it. A change that reached the service only this way
// never arrived as a webhook (see the webhook coverage in cmd).
type RepairObserver interface {
	Repaired(k Key, drift []string)
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
	Source EntitySource
	// Writer writes tracker changes back to Qase (two-way routes); nil:
	// no route may flow in.
	Writer EntityWriter
	// LinkTypes names, per tracker, the type Qase's external-issue links
	// take (jira-cloud, jira-server); trackers not named cannot be linked.
	LinkTypes map[string]string
	Clock     Clock
	Logger    *logrus.Entry
	Metrics   Metrics

	// Coverage says for which routes the store can vouch that a key
	// without a link has no issue (nil: a new one; until RebuildLinks
	// fills it, every create looks for its marker first).
	Coverage *Coverage

	Owner       string        // lease owner id (default host:pid)
	Concurrency int           // jobs in flight (default DefaultConcurrency)
	Lease       time.Duration // lease length; renewed every third of it while a job runs (default 1m)
	JobTimeout  time.Duration // the longest one sync may run (default 10m)
	// LateCommit is how long after an ambiguous create the issue may still
	// appear: the tracker client's timeout plus what a server may take to
	// commit a request whose answer was lost (set it to at least twice the
	// tracker timeout; 0 only for trackers that cannot answer late, such
	// as dry runs).
	LateCommit  time.Duration
	MaxAttempts int           // before dead-lettering (default 12)
	MaxAge      time.Duration // before dead-lettering, since first enqueue (default 72h)
	BackoffBase time.Duration // default 2s
	BackoffMax  time.Duration // default 10m
	Poll        time.Duration // idle poll for due jobs (default 500ms)
	// Gather is how long the dispatcher, woken by new events, waits from
	// the first of them before it leases: events that arrive close
	// together then run side by side, and their jobs' writes share
	// transactions and fsyncs (combined writes). It delays a sync by at
	// most Gather; a full lease never waits (default 10ms; negative:
	// lease at once).
	Gather time.Duration
	// Behind reports whether the process is falling behind acknowledging
	// webhook deliveries (Inbox.Behind); nil: never. While it is, the
	// dispatcher holds each job back for up to giveWayMax, so the workers'
	// CPU and writes go to acknowledgements first, and the backlog still
	// moves.
	Behind func() bool
	// Sleep waits for d or until ctx ends (injected so tests skip settle
	// waits and the gathering wait, and count the dispatcher's ticks
	// while it gives way).
	Sleep func(ctx context.Context, d time.Duration) error
}

// Engine syncs keys: it leases jobs, computes the desired issue and applies
// the difference, keeping the ledger.
type Engine struct {
	o    EngineOptions
	log  *logrus.Entry
	wake chan struct{}
	// pass is the latest reconcile pass of this process, handed as a value
	// to the workers that verify its keys.
	pass atomic.Pointer[Pass]
	// wokeAt is when the first Wake since the last lease came (unix
	// nanoseconds of the clock; 0: none).
	wokeAt atomic.Int64
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
	def(&o.Lease, time.Minute)
	def(&o.JobTimeout, 10*time.Minute)
	def(&o.MaxAge, 72*time.Hour)
	def(&o.BackoffBase, 2*time.Second)
	def(&o.BackoffMax, 10*time.Minute)
	def(&o.Poll, 500*time.Millisecond)
	if o.Gather == 0 {
		o.Gather = DefaultGather
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 12
	}
	if o.Sleep == nil {
		o.Sleep = sleepCtx
	}
	if o.Coverage == nil {
		o.Coverage = &Coverage{}
	}
	o.Coverage.start(o.Clock.Now(), o.LateCommit)
	if o.Logger == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		o.Logger = logrus.NewEntry(l)
	}
	return &Engine{o: o, log: o.Logger, wake: make(chan struct{}, 1)}
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

// DefaultConcurrency is EngineOptions.Concurrency's default, as
// worker.concurrency's: a job mostly waits (its turn at the store's
// writer, the fsync before a create, the tracker), so more in flight use
// CPUs that 4 left idle and share more commits (performance.md).
const DefaultConcurrency = 16

// DefaultGather is EngineOptions.Gather's default. Measured end to end
// at 1,000 events/s with dry-run trackers on 2 CPUs (performance.md):
// 988–1,016 → 768–829 µs of CPU per job, ack p99 3.6 → 5.1–5.7 ms.
const DefaultGather = 10 * time.Millisecond

// Wake nudges idle workers (new events were committed).
func (e *Engine) Wake() {
	e.wokeAt.CompareAndSwap(0, e.o.Clock.Now().UnixNano())
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
				e.process(work, j, nil)
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
		e.wokeAt.Store(0)
		leased, err := e.o.Store.Lease(ctx, e.o.Owner, e.o.Concurrency, e.o.Clock.Now(), e.o.Lease)
		if err != nil && ctx.Err() == nil {
			e.log.WithError(err).Error("leasing jobs")
		}
		for _, j := range leased {
			e.giveWay(ctx)
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
			e.gather(ctx)
		case <-t.C:
		}
		t.Stop()
	}
}

// gather waits until Gather has passed since the first wake after the
// last lease, so that the events committed meanwhile are leased together.
func (e *Engine) gather(ctx context.Context) {
	at := e.wokeAt.Load()
	if at == 0 || e.o.Gather <= 0 {
		return
	}
	// Never longer than Gather: wokeAt is wall-clock time, which can step
	// back.
	if wait := min(e.o.Gather, e.o.Gather-e.o.Clock.Now().Sub(time.Unix(0, at))); wait > 0 {
		_ = e.o.Sleep(ctx, wait)
	}
}

// A job held back while acknowledgements are behind waits in ticks of
// giveWayTick, giveWayMax at most: the backlog moves at 20 jobs/s or more
// however long the burst lasts. Measured with dry-run trackers on 2 cores,
// where a job costs about a millisecond of CPU: durable ingest at 32 and
// 128 senders rose from 17% and 29% of a no-op server to 24% and 35%
// (performance.md), while fewer jobs finished during the burst. With real
// trackers a job spends far longer than giveWayMax on the network, so
// holding it back costs them little.
const (
	giveWayTick = 2 * time.Millisecond
	giveWayMax  = 50 * time.Millisecond
)

// giveWay holds the next job back while Behind says so, up to giveWayMax.
func (e *Engine) giveWay(ctx context.Context) {
	if e.o.Behind == nil || !e.o.Behind() {
		return
	}
	start := e.o.Clock.Now()
	for i := 0; i < int(giveWayMax/giveWayTick) && e.o.Behind(); i++ {
		if e.o.Sleep(ctx, giveWayTick) != nil {
			break
		}
	}
	if o, ok := e.o.Metrics.(GiveWayObserver); ok {
		o.GaveWay(e.o.Clock.Now().Sub(start))
	}
}

// Process runs one leased job to an outcome, retry or dead letter.
func (e *Engine) Process(ctx context.Context, j Job) { e.process(ctx, j, nil) }

func (e *Engine) process(parent context.Context, j Job, onResult func(Job, Result, error)) {
	start := e.o.Clock.Now()
	log := e.log.WithFields(logrus.Fields{"route": j.Key.Route, "project": j.Key.Project, "kind": j.Key.Kind, "id": j.Key.ID, "attempt": j.Attempts + 1})
	ctx, cancel := context.WithTimeout(parent, e.o.JobTimeout)
	lost := e.keepLease(ctx, cancel, j, log)
	var pass *Pass
	if j.Verify {
		pass = e.pass.Load()
	}
	later := &deferred{key: j.Key}
	res, err := e.Sync(ctx, j.Key, SyncOptions{Verify: j.Verify, Pass: pass, Job: &j, Log: log, later: later})
	cancel()
	if onResult != nil {
		onResult(j, res, err)
	}
	if lost.Load() || errors.Is(err, ErrLeaseLost) {
		// Another worker holds the key now; it does the bookkeeping.
		log.WithError(err).Warn("job lease lost; leaving the key to its new holder")
		return
	}
	// The bookkeeping has to happen even when the sync's context ran out,
	// or the job would loop forever.
	bctx, bcancel := context.WithTimeout(context.WithoutCancel(parent), 10*time.Second)
	defer bcancel()
	now := e.o.Clock.Now()
	entry := LedgerEntry{At: now, Key: j.Key, Gen: j.Gen, Drift: res.Drift, Detail: res.Detail}
	for _, op := range res.Ops {
		entry.Ops = append(entry.Ops, op.String())
	}
	if res.Issue != (IssueRef{}) {
		entry.Issue = res.Issue.String()
	}
	// The attempt's one commit: what the sync left for later, and its
	// outcome or retry.
	finish := func(o JobOutcome) error {
		o.Link, o.Snapshot, o.PrevSeq = later.link, later.snap, later.prev
		ferr := e.o.Store.Finish(bctx, j, o, now)
		if ferr != nil && !errors.Is(ferr, ErrLeaseLost) {
			// Nothing of the commit landed. Hand the key back at once
			// rather than when its lease ends: the next attempt starts
			// from the last saved link, and looks before it creates.
			if rerr := e.o.Store.Retry(bctx, j, now, "recording the outcome failed: "+ferr.Error(), false, now); rerr != nil {
				log.WithError(rerr).Warn("releasing the job after a failed outcome")
			}
		}
		return ferr
	}
	if err == nil {
		entry.Outcome = res.Outcome
		if cerr := finish(JobOutcome{Outcome: res.Outcome, Entry: entry}); cerr != nil {
			log.WithError(cerr).Error("recording job outcome")
			return
		}
		e.o.Metrics.JobDone(j.Key.Route, res.Outcome, now.Sub(start))
		if ro, ok := e.o.Metrics.(RepairObserver); ok && j.Verify && len(res.Drift) > 0 {
			ro.Repaired(j.Key, res.Drift)
		}
		log.WithFields(logrus.Fields{"outcome": res.Outcome, "ops": entry.Ops, "issue": entry.Issue}).Info("synced")
		return
	}
	// Not failures of the tracker: settling after an ambiguous create, a
	// rate-limit wait or shutdown cut short. Try again without charging.
	if errors.Is(err, errSettling) || errors.Is(err, ErrRateWait) || parent.Err() != nil {
		wait, _ := RetryWait(err)
		if rerr := finish(JobOutcome{RetryAt: now.Add(wait), LastErr: err.Error()}); rerr != nil {
			log.WithError(rerr).Error("scheduling retry")
		}
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
		if cerr := finish(JobOutcome{Outcome: OutcomeDead, Entry: entry}); cerr != nil {
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
	if rerr := finish(JobOutcome{RetryAt: now.Add(wait), LastErr: err.Error(), Charge: true}); rerr != nil {
		log.WithError(rerr).Error("scheduling retry")
		return
	}
	e.o.Metrics.JobRetried(j.Key.Route)
	log.WithError(err).WithField("retry_in", wait.Round(time.Millisecond).String()).Warn("sync failed; will retry")
}

// keepLease renews the job's lease every third of its length while the
// sync runs: waits for rate tokens and slow tracker calls must not let
// another worker take the key. If the lease is lost the sync is cancelled
// before its next write (and its link writes are fenced anyway).
func (e *Engine) keepLease(ctx context.Context, cancel context.CancelFunc, j Job, log *logrus.Entry) *atomic.Bool {
	lost := &atomic.Bool{}
	every := e.o.Lease / 3
	go RenewEvery(ctx, every, func() bool {
		err := e.o.Store.Renew(ctx, j, e.o.Clock.Now().Add(e.o.Lease))
		if errors.Is(err, ErrLeaseLost) {
			lost.Store(true)
			cancel()
			return false
		}
		if err != nil && ctx.Err() == nil {
			log.WithError(err).Warn("renewing job lease")
		}
		return true
	})
	return lost
}

// RenewEvery calls renew every interval until ctx ends or renew reports
// the lease lost (false): how a job's lease, and cmd's reconcile lease,
// are kept while their work runs.
func RenewEvery(ctx context.Context, every time.Duration, renew func() bool) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !renew() {
			return
		}
	}
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
