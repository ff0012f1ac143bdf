package main

import (
	"context"
	"maps"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/qase-sync/qase-sync/config"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// opsState is what this process knows that the store does not: the last
// reconcile pass it ran and the drift its workers found since. The status
// page shows it; notifications watch it.
type opsState struct {
	mu   sync.Mutex
	last *reconcileRecord
	// drift found since the current pass started, by route and class.
	drift map[string]map[string]int
	// passes keeps the drift of finished passes, newest last (bounded).
	passes []map[string]int // route -> drift count
	// gaps: keys per project whose verify in the current pass repaired a
	// change no webhook brought (see coverage.go); prevGaps the previous
	// pass's, which started at prevStarted.
	gaps        map[string]map[qsync.Key]bool
	prevGaps    map[string]map[qsync.Key]bool
	prevStarted time.Time
}

type reconcileRecord struct {
	At       time.Time             `json:"at"`
	Report   qsync.ReconcileReport `json:"report"`
	Err      string                `json:"error,omitempty"`
	Drift    map[string]int        `json:"drift_since"` // class -> count found by the pass's jobs so far
	Finished bool                  `json:"finished"`
}

func newOpsState() *opsState { return &opsState{drift: map[string]map[string]int{}} }

// reconcileStarted closes the previous pass's drift tally.
func (o *opsState) reconcileStarted(at time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.last != nil {
		byRoute := map[string]int{}
		for route, classes := range o.drift {
			for _, n := range classes {
				byRoute[route] += n
			}
		}
		o.passes = append(o.passes, byRoute)
		if len(o.passes) > 16 {
			o.passes = o.passes[1:]
		}
	}
	o.drift = map[string]map[string]int{}
	if o.last != nil {
		o.prevGaps, o.prevStarted = o.gaps, o.last.At
	}
	o.gaps = nil
	o.last = &reconcileRecord{At: at}
}

func (o *opsState) reconcileFinished(rep qsync.ReconcileReport, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.last == nil {
		o.last = &reconcileRecord{}
	}
	o.last.Report, o.last.Finished = rep, true
	if err != nil {
		o.last.Err = err.Error()
	}
	for class, n := range rep.ByClass { // duplicates found while enumerating
		o.addLocked("", class, n)
	}
}

// found records drift a worker found (and repaired) while verifying.
func (o *opsState) found(route, class string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.addLocked(route, class, 1)
}

func (o *opsState) addLocked(route, class string, n int) {
	if o.drift[route] == nil {
		o.drift[route] = map[string]int{}
	}
	o.drift[route][class] += n
}

// lastReconcile returns a copy of the last pass, with the drift by class
// found since it started; nil if none ran in this process.
func (o *opsState) lastReconcile() *reconcileRecord {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.last == nil {
		return nil
	}
	r := *o.last
	r.Drift = map[string]int{}
	for _, classes := range o.drift {
		for c, n := range classes {
			r.Drift[c] += n
		}
	}
	return &r
}

// repeatedDrift lists routes that drifted in each of the last n finished
// passes (n >= 2).
func (o *opsState) repeatedDrift(n int) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if n < 1 || len(o.passes) < n {
		return nil
	}
	recent := o.passes[len(o.passes)-n:]
	var out []string
	for route := range maps.Keys(recent[0]) {
		all := true
		for _, p := range recent {
			if p[route] == 0 {
				all = false
				break
			}
		}
		if all && route != "" {
			out = append(out, route)
		}
	}
	sort.Strings(out)
	return out
}

// redactor replaces every configured secret value in text shown to an
// operator or sent to a notifier (defence in depth: stored reasons and
// requests never carry credentials in the first place).
type redactor struct{ secrets []string }

func newRedactor(cfg *config.Config) redactor {
	var ss []string
	add := func(s config.Secret) {
		if v := s.Reveal(); len(v) >= 4 {
			ss = append(ss, v)
		}
	}
	for _, s := range cfg.Qase.Secrets {
		add(s)
	}
	for _, tc := range cfg.Trackers {
		for _, s := range tc.WebhookSecrets {
			add(s)
		}
	}
	for _, list := range cfg.Qase.ProjectSecrets {
		for _, s := range list {
			add(s)
		}
	}
	add(cfg.Qase.APIToken)
	add(cfg.Server.AdminToken)
	add(cfg.Store.Postgres.DSN)
	for _, t := range cfg.Trackers {
		add(t.Token)
		if t.App != nil {
			add(t.App.PrivateKey)
		}
	}
	for _, n := range cfg.Notify {
		add(n.URL)
	}
	// Longest first, so a secret containing another is replaced whole.
	sort.Slice(ss, func(i, j int) bool { return len(ss[i]) > len(ss[j]) })
	return redactor{secrets: ss}
}

func (r redactor) String(s string) string {
	for _, sec := range r.secrets {
		s = strings.ReplaceAll(s, sec, "[REDACTED]")
	}
	return s
}

// statusReport is GET /admin/status: the status page's overview as JSON.
type statusReport struct {
	qsync.Overview
	ThroughputWindow string           `json:"outcomes_window"`
	LastReconcile    *reconcileRecord `json:"last_reconcile,omitempty"`
	// WebhookSuspects: projects whose changes reached the service only
	// through this process's reconcile passes (current and previous).
	WebhookSuspects []webhookSuspect `json:"webhook_suspects,omitempty"`
}

func (a *app) statusJSON(ctx context.Context) (any, error) {
	o, err := a.store.Overview(ctx, a.clock.Now().Add(-time.Hour))
	if err != nil {
		return nil, err
	}
	return statusReport{Overview: o, ThroughputWindow: "1h", LastReconcile: a.ops.lastReconcile(),
		WebhookSuspects: a.ops.webhookSuspects(o.LastDelivery)}, nil
}
