package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/robfig/cron/v3"
	"github.com/sirupsen/logrus"

	"github.com/qase-sync/qase-sync/adapters/qase"
	qsync "github.com/qase-sync/qase-sync/sync"
)

func cmdServe(ctx context.Context, args []string, _, stderr io.Writer) error {
	var c commonFlags
	a, err := flagsThenApp(newFlagSet("serve", stderr, &c), &c, args, stderr, appServe)
	if err != nil {
		return err
	}
	defer a.close()
	return a.serve(ctx)
}

// serve runs until ctx ends, then shuts down in order: readiness fails,
// the listener stops taking requests (in-flight ones finish and commit),
// the inbox drains, workers finish their jobs within the shutdown timeout,
// and leases are released.
func (a *app) serve(ctx context.Context) error {
	srv := a.cfg.Server
	ln, err := net.Listen("tcp", srv.Listen)
	if err != nil {
		return fmt.Errorf("server.listen %s: %w", srv.Listen, err)
	}
	var ready atomic.Bool
	sched, err := a.startCron()
	if err != nil {
		ln.Close()
		return err
	}
	inbox := a.inbox
	inboxCtx, stopInbox := context.WithCancel(context.Background())
	defer stopInbox()
	inboxDone := make(chan struct{})
	go func() { inbox.Run(inboxCtx); close(inboxDone) }()

	notifyCtx, stopNotify := context.WithCancel(context.Background())
	defer stopNotify()
	notifyDone := make(chan struct{})
	go func() {
		defer close(notifyDone)
		newNotifier(a.cfg.Notify, a.store, a.ops, a.clock, newRedactor(a.cfg), a.log.WithField("component", "notify"), a.httpClient).run(notifyCtx)
	}()

	engineCtx, stopEngine := context.WithCancel(context.Background())
	defer stopEngine()
	engineDone := make(chan struct{})
	go func() { a.engine.Run(engineCtx); close(engineDone) }()
	go a.vouch(engineCtx)
	go a.prune(engineCtx)

	hook := qase.NewHandler(qase.HandlerOptions{
		Acceptor: inbox, Secrets: reveal(a.cfg.Qase.Secrets), ProjectSecrets: revealMap(a.cfg.Qase.ProjectSecrets),
		AllowUnsigned: a.cfg.Qase.AllowUnsigned, MaxBody: srv.MaxBodyBytes, DefaultProject: a.cfg.Qase.DefaultProject,
		BodyTimeout: bodyTimeout(srv.ReadTimeout, srv.WriteTimeout), KnownEvent: a.knownEvent,
		Logger: a.log.WithField("component", "webhook"), Clock: a.clock, Metrics: a.metrics,
	})
	mux := http.NewServeMux()
	mux.Handle(srv.WebhookPath, hook)
	mux.Handle(srv.WebhookPath+"/{project}", hook) // S21 envelopes carry no project code
	a.trackerWebhooks(mux, inbox)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		pctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if !ready.Load() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "shutting down"})
			return
		}
		if err := a.store.Ping(pctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "store unavailable"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.Handle("/metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}))
	mux.Handle(uiPrefix, newStatusUI(a.cfg.Server.AdminToken.Reveal(), a.store, a.clock, a.explain, a.ops, newRedactor(a.cfg), a.log.WithField("component", "status-page")))
	mux.Handle("/admin/", adminHandler(a.cfg.Server.AdminToken.Reveal(), a.store, a.adminReconcile, a.explain, a.statusJSON, a.clock))
	mux.Handle("/debug/pprof/", pprofHandler(a.cfg.Server.AdminToken.Reveal()))

	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: srv.ReadHeaderTimeout, // slow-loris
		ReadTimeout:       srv.ReadTimeout,
		WriteTimeout:      srv.WriteTimeout,
		IdleTimeout:       srv.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          nil,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	ready.Store(true)
	a.log.WithFields(logrus.Fields{"listen": ln.Addr().String(), "webhook_path": srv.WebhookPath, "store": a.cfg.Store.Driver, "version": version}).Info("qase-sync serving")

	var failed error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		failed = fmt.Errorf("http server: %w", err)
	}
	a.log.Info("shutting down")
	ready.Store(false)
	deadline, cancel := context.WithTimeout(context.Background(), srv.ShutdownTimeout)
	defer cancel()
	if failed == nil && srv.ShutdownDelay > 0 {
		// Readiness fails first; keep serving (deliveries still commit)
		// while load balancers stop routing here.
		select {
		case <-time.After(srv.ShutdownDelay):
		case err := <-serveErr:
			failed = fmt.Errorf("http server: %w", err)
		}
	}
	if sched != nil {
		<-sched.Stop().Done()
	}
	if err := hs.Shutdown(deadline); err != nil {
		a.log.WithError(err).Warn("http shutdown incomplete")
	}
	stopInbox()
	<-inboxDone
	stopNotify()
	<-notifyDone
	stopEngine()
	select {
	case <-engineDone:
	case <-deadline.Done():
		a.log.Warn("workers still busy at shutdown timeout; their leases will expire and the jobs retry")
		return failed
	}
	if failed == nil {
		a.log.Info("stopped cleanly")
	}
	return failed
}

// vouch lets the store vouch for its keys again: once the late-commit
// window since start has passed, it lists every route's marked issues and
// links the unlinked ones (a new, lost or restored database), retrying
// until it succeeds. Until then creates look for their marker first.
func (a *app) vouch(ctx context.Context) {
	wait := time.Until(a.coverage.Trusted())
	for attempt := 0; ; attempt++ {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		n, err := a.engine.RebuildLinks(ctx, nil)
		if err == nil {
			a.log.WithFields(logrus.Fields{"restored": n, "routes": len(a.coverage.Routes())}).Info("links checked against the trackers' markers; the store vouches for its keys")
			return
		}
		if ctx.Err() != nil {
			return
		}
		wait = min(time.Duration(1<<min(attempt, 6))*time.Second, time.Minute)
		a.log.WithError(err).WithField("retry_in", wait.String()).Warn("listing marked issues failed; creates keep looking for their marker first")
	}
}

// startCron registers the scheduled reconciler.
func (a *app) startCron() (*cron.Cron, error) {
	rc := a.cfg.Reconcile
	if !rc.Enabled || rc.Schedule == "" {
		return nil, nil
	}
	cl := cronLogger{a.log.WithField("component", "cron")}
	c := cron.New(cron.WithLogger(cl), cron.WithChain(cron.Recover(cl), cron.SkipIfStillRunning(cl)))
	sched, err := cron.ParseStandard(rc.Schedule)
	if err != nil {
		return nil, fmt.Errorf("reconcile.schedule %q: %w", rc.Schedule, err)
	}
	c.Schedule(sched, cron.FuncJob(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Hour)
		defer cancel()
		next := sched.Next(a.clock.Now())
		a.reconcileTick(ctx, next, sched.Next(next).Sub(next))
	}))
	c.Start()
	return c, nil
}

// adminReconcile is POST /admin/reconcile: a pass now, under the
// reconcile lease (released when it ends), so it never overlaps another
// replica's pass.
func (a *app) adminReconcile(ctx context.Context) (qsync.ReconcileReport, error) {
	return a.leasedReconcile(ctx, time.Time{})
}

// runPass runs one pass (enqueueing jobs for the keys that need one),
// incremental unless reconcile.incremental is off or a full sweep is due;
// the caller holds a.reconcileMu and the reconcile lease.
func (a *app) runPass(ctx context.Context) (qsync.ReconcileReport, error) {
	a.ops.reconcileStarted(a.clock.Now())
	rc := a.cfg.Reconcile
	rep, err := a.engine.Reconcile(ctx, qsync.ReconcileOptions{Routes: rc.Routes, Projects: reconcileProjects(a.cfg),
		Incremental: rc.Incremental, FullEvery: rc.FullEvery, Overlap: rc.Overlap})
	a.ops.reconcileFinished(rep, err)
	result := "ok"
	if err != nil {
		result = "failed"
	}
	a.metrics.reconciles.WithLabelValues(result).Inc()
	a.log.WithFields(logrus.Fields{"mode": rep.Mode, "checked": rep.Checked, "unchanged": rep.Unchanged, "enqueued": rep.Enqueued,
		"full_only": rep.FullOnly, "duplicates": rep.Duplicates, "failed": rep.Failed}).Info("reconcile pass")
	return rep, err
}

// cronLogger adapts logrus to cron.Logger.
type cronLogger struct{ l *logrus.Entry }

func (c cronLogger) Info(msg string, kv ...any) { c.l.WithFields(kvFields(kv)).Debug(msg) }
func (c cronLogger) Error(err error, msg string, kv ...any) {
	c.l.WithError(err).WithFields(kvFields(kv)).Error(msg)
}

func kvFields(kv []any) logrus.Fields {
	f := logrus.Fields{}
	for i := 0; i+1 < len(kv); i += 2 {
		f[fmt.Sprint(kv[i])] = kv[i+1]
	}
	return f
}

// bodyTimeout is how long the webhook waits for a request body: within the
// read timeout and early enough before the write deadline (which runs from
// the end of the headers) to still answer 408.
func bodyTimeout(read, write time.Duration) time.Duration {
	if write <= 0 {
		return read
	}
	margin := min(2*time.Second, write/4)
	t := write - margin
	if read > 0 && read < t {
		t = read
	}
	return t
}
