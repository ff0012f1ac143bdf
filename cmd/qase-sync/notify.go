package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"

	"github.com/qase-sync/qase-sync/config"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// Notifications: the service tells operators, through notifier routes
// (config notify:), about new dead letters, a route that drifts in
// consecutive reconcile passes, and a Qase project that has gone silent.
// Conditions are read from the store (so every replica sees the same) and
// from this process's reconcile passes. Each route is rate-limited (a
// token bucket); what the limit holds back is counted in the next message.
// Every text passes the secret redactor; a route's URL is a credential and
// is never logged, not even inside a transport error.

// notification is what a route sends (the generic webhook's JSON body).
type notification struct {
	Service    string    `json:"service"`
	Kind       string    `json:"kind"` // dead_letter | drift | silent_project
	Title      string    `json:"title"`
	Text       string    `json:"text"`
	Key        string    `json:"key,omitempty"`
	Project    string    `json:"project,omitempty"`
	Route      string    `json:"route,omitempty"`
	At         time.Time `json:"at"`
	Suppressed int       `json:"suppressed,omitempty"` // held back by the rate limit since the previous message
}

type notifyRoute struct {
	cfg        config.Notifier
	url        string
	lim        *rate.Limiter
	suppressed int
	silent     map[string]bool // projects reported silent, until they deliver again
	drifting   map[string]bool // routes reported drifting, until a pass without drift
	backlog    []notification  // not delivered (receiver down): sent again at the next check
}

// maxBacklog bounds what a route keeps while its receiver is down; older
// messages beyond it are counted as suppressed.
const maxBacklog = 100

type notifier struct {
	routes []*notifyRoute
	store  qsync.Store
	ops    *opsState
	clock  qsync.Clock
	log    *logrus.Entry
	red    redactor
	client *http.Client

	mu      sync.Mutex
	seenDL  int64 // highest dead letter id already reported (or present at start)
	started time.Time
	primed  bool
}

func newNotifier(cfgs []config.Notifier, store qsync.Store, ops *opsState, clock qsync.Clock, red redactor, log *logrus.Entry, hc *http.Client) *notifier {
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	n := &notifier{store: store, ops: ops, clock: clock, log: log, red: red, client: hc, started: clock.Now()}
	for _, c := range cfgs {
		n.routes = append(n.routes, &notifyRoute{cfg: c, url: c.URL.Reveal(),
			lim:    rate.NewLimiter(rate.Limit(c.PerMinute/60), c.Burst),
			silent: map[string]bool{}, drifting: map[string]bool{}})
	}
	return n
}

// interval is the shortest check interval of the routes.
func (n *notifier) interval() time.Duration {
	d := time.Minute
	for i, r := range n.routes {
		if i == 0 || r.cfg.Interval < d {
			d = r.cfg.Interval
		}
	}
	return d
}

// run checks the conditions every interval until ctx ends.
func (n *notifier) run(ctx context.Context) {
	if len(n.routes) == 0 {
		return
	}
	t := time.NewTicker(n.interval())
	defer t.Stop()
	for {
		n.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check evaluates every condition once and sends what is due.
func (n *notifier) check(ctx context.Context) {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.clock.Now()
	var due []notification

	dls, err := n.store.DeadLetters(ctx, 200)
	if err != nil {
		n.log.WithError(err).Warn("notify: reading dead letters")
	} else {
		// Dead letters present at start were there before this process:
		// only new ones are announced.
		sort.Slice(dls, func(i, j int) bool { return dls[i].ID < dls[j].ID })
		for _, d := range dls {
			if d.ID <= n.seenDL {
				continue
			}
			if n.primed {
				due = append(due, notification{Kind: config.NotifyDeadLetter, Key: d.Key.String(), Project: d.Key.Project, Route: d.Key.Route,
					Title: fmt.Sprintf("dead letter %d: %s", d.ID, d.Key),
					Text:  fmt.Sprintf("%s failed after %d attempt(s): %s", d.Key, d.Attempts, oneLine(d.Reason, 500))})
			}
			n.seenDL = d.ID
		}
	}
	n.primed = true

	var last map[string]time.Time
	if o, err := n.store.Overview(ctx, now); err != nil {
		n.log.WithError(err).Warn("notify: reading the last deliveries")
	} else {
		last = o.LastDelivery
	}

	for _, r := range n.routes {
		var mine []notification
		for _, nt := range due {
			if slices.Contains(r.cfg.On, nt.Kind) {
				mine = append(mine, nt)
			}
		}
		if slices.Contains(r.cfg.On, config.NotifyDrift) {
			drifting := n.ops.repeatedDrift(r.cfg.DriftPasses)
			for _, route := range drifting {
				if !r.drifting[route] {
					r.drifting[route] = true
					mine = append(mine, notification{Kind: config.NotifyDrift, Route: route,
						Title: "repeated drift on route " + route,
						Text:  fmt.Sprintf("route %s drifted in each of the last %d reconcile passes: something (a person, an automation, a workflow) keeps changing the issues it owns", route, r.cfg.DriftPasses)})
				}
			}
			for route := range r.drifting {
				if !slices.Contains(drifting, route) {
					delete(r.drifting, route)
				}
			}
		}
		if slices.Contains(r.cfg.On, config.NotifySilentProject) && last != nil {
			projects := r.cfg.Projects
			if len(projects) == 0 {
				for p := range last {
					projects = append(projects, p)
				}
				sort.Strings(projects)
			}
			for _, p := range projects {
				at, seen := last[p]
				ref := at
				if !seen {
					ref = n.started // a watched project that never delivered
				}
				if now.Sub(ref) < r.cfg.SilentAfter {
					delete(r.silent, p)
					continue
				}
				if r.silent[p] {
					continue
				}
				r.silent[p] = true
				since := "no delivery since this process started " + n.started.UTC().Format(time.RFC3339)
				if seen {
					since = "last delivery " + at.UTC().Format(time.RFC3339)
				}
				mine = append(mine, notification{Kind: config.NotifySilentProject, Project: p,
					Title: "Qase project " + p + " is silent",
					Text:  fmt.Sprintf("no webhook from Qase project %s for over %s (%s): is the webhook disabled in Qase?", p, r.cfg.SilentAfter, since)})
			}
		}
		for i := range mine {
			mine[i].At = now
		}
		mine, r.backlog = append(r.backlog, mine...), nil
		for _, nt := range mine {
			n.send(ctx, r, nt)
		}
	}
}

// send posts one notification if the route's rate limit allows it.
func (n *notifier) send(ctx context.Context, r *notifyRoute, nt notification) {
	if !r.lim.AllowN(n.clock.Now(), 1) {
		r.suppressed++
		n.log.WithFields(logrus.Fields{"notifier": r.cfg.Name, "kind": nt.Kind}).Warn("notify: rate limit reached; counted in the next message")
		return
	}
	nt.Service = "qase-sync"
	nt.Suppressed, r.suppressed = r.suppressed, 0
	nt.Title, nt.Text, nt.Key = n.red.String(nt.Title), n.red.String(nt.Text), n.red.String(nt.Key)
	var body []byte
	switch r.cfg.Type {
	case "slack":
		text := "*qase-sync: " + nt.Title + "*\n" + nt.Text
		if nt.Suppressed > 0 {
			text += fmt.Sprintf("\n(%d more notification(s) held back by the rate limit)", nt.Suppressed)
		}
		body, _ = json.Marshal(map[string]string{"text": text})
	default:
		body, _ = json.Marshal(nt)
	}
	log := n.log.WithFields(logrus.Fields{"notifier": r.cfg.Name, "kind": nt.Kind})
	if err := n.post(ctx, r.url, body); err != nil {
		log.WithError(errors.New(n.red.String(err.Error()))).Warn("notify: not delivered; trying again at the next check")
		nt.Suppressed, r.suppressed = 0, r.suppressed+nt.Suppressed
		r.backlog = append(r.backlog, nt)
		if over := len(r.backlog) - maxBacklog; over > 0 {
			r.backlog, r.suppressed = r.backlog[over:], r.suppressed+over
		}
		return
	}
	log.Info("notify: sent")
}

func (n *notifier) post(ctx context.Context, u string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return errors.New("invalid notifier URL") // the URL is a secret: not repeated
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // *url.Error quotes the URL
		}
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("receiver answered %s", strings.TrimSpace(resp.Status))
	}
	return nil
}
