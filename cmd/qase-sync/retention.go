package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/sirupsen/logrus"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// pruneOnce forgets history older than retention.max_age at now (see
// qsync.RetentionStore.Prune for what is kept).
func (a *app) pruneOnce(ctx context.Context, now time.Time) (qsync.PruneReport, error) {
	r := a.cfg.Retention
	start := time.Now()
	rep, err := a.store.Prune(ctx, now.Add(-r.MaxAge), r.Batch)
	if a.metrics != nil {
		a.metrics.pruned.WithLabelValues("events").Add(float64(rep.Events))
		a.metrics.pruned.WithLabelValues("ledger").Add(float64(rep.Ledger))
		a.metrics.pruned.WithLabelValues("dead_letters").Add(float64(rep.DeadLetters))
	}
	f := logrus.Fields{"events": rep.Events, "ledger": rep.Ledger, "dead_letters": rep.DeadLetters,
		"max_age": r.MaxAge.String(), "took": time.Since(start).Round(time.Millisecond).String()}
	if err != nil {
		a.log.WithError(err).WithFields(f).Warn("pruning history failed; the next interval tries again")
	} else {
		a.log.WithFields(f).Info("pruned history")
	}
	return rep, err
}

// prune runs pruneOnce at start and then every retention.interval until
// ctx ends; retention.max_age 0 turns it off. Every replica may prune: the
// deletes are bounded and idempotent.
func (a *app) prune(ctx context.Context) {
	if a.cfg.Retention.MaxAge <= 0 {
		return
	}
	t := time.NewTicker(a.cfg.Retention.Interval)
	defer t.Stop()
	for {
		_, _ = a.pruneOnce(ctx, a.clock.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// cmdPrune is `qase-sync prune`: one prune now, as serve does every
// retention.interval.
func cmdPrune(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a, c, _, err := storeCommand("prune", args, 0, "prune -c FILE", stderr)
	if err != nil {
		return err
	}
	defer a.close()
	if a.cfg.Retention.MaxAge <= 0 {
		return fmt.Errorf("%s: retention.max_age is 0: nothing is ever pruned", c.config)
	}
	rep, err := a.pruneOnce(ctx, a.clock.Now())
	if err != nil {
		return err
	}
	if c.output == "json" {
		return json.NewEncoder(stdout).Encode(rep)
	}
	fmt.Fprintf(stdout, "pruned %d events, %d ledger entries, %d dead letters, %d reconcile passes older than %s\n",
		rep.Events, rep.Ledger, rep.DeadLetters, rep.Passes, a.cfg.Retention.MaxAge)
	return nil
}
