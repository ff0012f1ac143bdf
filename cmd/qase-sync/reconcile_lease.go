package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// reconcileLease names the store lease that makes one replica run each
// reconcile pass.
const reconcileLease = "reconcile"

// errOtherReplica: another replica holds the reconcile lease.
var errOtherReplica = errors.New("a reconcile pass is running on another replica (or ran for this tick)")

// replicaID names this process among replicas: host, pid and a random
// suffix (two apps in one test process are two replicas).
func replicaID() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s:%d/%s", host, os.Getpid(), hex.EncodeToString(b))
}

// reconcileTick is the scheduled pass for the tick before next (interval
// is the schedule's spacing). Every replica's cron calls it; the store
// lease lets one of them run the pass. The winner keeps the lease until
// shortly before the next tick, so a replica whose tick fires late (a busy
// process, clocks a little apart, @every schedules started at different
// times) finds it taken and skips.
func (a *app) reconcileTick(ctx context.Context, next time.Time, interval time.Duration) {
	margin := min(interval/10, 5*time.Second)
	_, err := a.leasedReconcile(ctx, next.Add(-margin))
	switch {
	case errors.Is(err, errOtherReplica):
		a.log.Debug("scheduled reconcile skipped: another replica runs this tick")
	case err != nil:
		a.log.WithError(err).Error("scheduled reconcile failed")
	}
}

// leasedReconcile runs one pass (one at a time in this process) while
// holding the reconcile lease,
// renewing it every third of reconcile.lease; a replica that dies
// mid-pass stops renewing and its lease ends. After the pass the lease is
// kept until holdUntil (released if that has passed or is zero). A
// replica that does not get the lease runs nothing: errOtherReplica,
// counted as qase_sync_reconcile_runs_total{result="other_replica"}.
func (a *app) leasedReconcile(ctx context.Context, holdUntil time.Time) (qsync.ReconcileReport, error) {
	if !a.reconcileMu.TryLock() {
		a.metrics.reconciles.WithLabelValues("skipped").Inc()
		return qsync.ReconcileReport{}, errors.New("a reconcile pass is already running")
	}
	defer a.reconcileMu.Unlock()
	ttl := a.cfg.Reconcile.Lease
	ok, err := a.store.TryLease(ctx, reconcileLease, a.owner, a.clock.Now(), ttl)
	if err != nil {
		a.metrics.reconciles.WithLabelValues("failed").Inc()
		return qsync.ReconcileReport{}, fmt.Errorf("reconcile lease: %w", err)
	}
	if !ok {
		a.metrics.reconciles.WithLabelValues("other_replica").Inc()
		return qsync.ReconcileReport{}, errOtherReplica
	}
	passCtx, cancel := context.WithCancel(ctx)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		qsync.RenewEvery(passCtx, max(ttl/3, time.Millisecond), func() bool {
			ok, err := a.store.TryLease(passCtx, reconcileLease, a.owner, a.clock.Now(), ttl)
			switch {
			case err != nil && passCtx.Err() == nil:
				a.log.WithError(err).Warn("renewing the reconcile lease failed; trying again")
			case err == nil && !ok:
				a.log.Warn("the reconcile lease ended and another replica took it; stopping this pass")
				cancel()
				return false
			}
			return true
		})
	}()
	rep, err := a.runPass(passCtx)
	cancel()
	<-renewed
	if !rep.Started.IsZero() {
		p := qsync.ReconcilePass{Started: rep.Started, Owner: a.owner, Checked: rep.Checked, Enqueued: rep.Enqueued}
		if rerr := a.store.RecordPass(context.WithoutCancel(ctx), p); rerr != nil {
			a.log.WithError(rerr).Warn("recording the reconcile pass failed")
		}
	}
	end := a.clock.Now()
	lctx, lcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer lcancel()
	if ctx.Err() == nil && holdUntil.After(end) {
		if _, herr := a.store.TryLease(lctx, reconcileLease, a.owner, end, holdUntil.Sub(end)); herr != nil {
			a.log.WithError(herr).Warn("keeping the reconcile lease until the next tick failed")
		}
	} else if rerr := a.store.ReleaseLease(lctx, reconcileLease, a.owner); rerr != nil {
		a.log.WithError(rerr).WithField("owner", a.owner).Warn("releasing the reconcile lease failed; it ends by itself")
	}
	return rep, err
}
