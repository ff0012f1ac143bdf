package main

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// metrics is every Prometheus series qase-sync exports. It implements
// qsync.Metrics, the webhook observer and qsync.CallObserver.
type metrics struct {
	received     *prometheus.CounterVec
	ackLatency   prometheus.Histogram
	jobs         *prometheus.CounterVec
	jobLatency   *prometheus.HistogramVec
	retries      *prometheus.CounterVec
	giveWay      prometheus.Counter
	trackerOps   *prometheus.CounterVec
	calls        *prometheus.CounterVec
	callTime     *prometheus.HistogramVec
	rateWaits    *prometheus.CounterVec
	drift        *prometheus.CounterVec
	reconciles   *prometheus.CounterVec
	pruned       *prometheus.CounterVec
	webhookGap   *prometheus.CounterVec
	trackerHooks *prometheus.CounterVec
	onDrift      func(route, class string) // the status page's tally; may be nil
	onGap        func(k qsync.Key)         // webhook coverage (ops); may be nil
}

func newMetrics(reg prometheus.Registerer, store qsync.Store) *metrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		reg.MustRegister(c)
		return c
	}
	histogram := func(name, help string, labels ...string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: prometheus.DefBuckets}, labels)
		reg.MustRegister(h)
		return h
	}
	m := &metrics{
		received: counter("qase_sync_webhook_events_total",
			"Webhook deliveries by result (accepted, duplicate, ignored, rejected) and reason.", "result", "reason"),
		ackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "qase_sync_webhook_ack_seconds",
			Help:    "Time from request to acknowledgement (event durably stored).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		jobs:       counter("qase_sync_jobs_total", "Finished sync jobs by route and outcome (applied, noop, dead).", "route", "outcome"),
		jobLatency: histogram("qase_sync_job_seconds", "Duration of one sync of a key.", "route"),
		retries:    counter("qase_sync_job_retries_total", "Sync attempts that failed and were scheduled again.", "route"),
		giveWay: prometheus.NewCounter(prometheus.CounterOpts{Name: "qase_sync_worker_give_way_seconds_total",
			Help: "Time the workers held jobs back because webhook acknowledgements were behind (16 or more deliveries waiting for their commit)."}),
		trackerOps: counter("qase_sync_tracker_operations_total", "Tracker operations applied, by tracker and operation.", "tracker", "op"),
		calls: counter("qase_sync_api_calls_total",
			"Outbound API calls by system (jira, github, qase), operation and HTTP status (0 = transport error).", "system", "op", "status"),
		callTime:  histogram("qase_sync_api_call_seconds", "Outbound API call latency.", "system", "op"),
		rateWaits: counter("qase_sync_rate_limit_wait_seconds_total", "Time spent waiting for rate budgets: HTTP requests for their credential's budget, writes for their issue's gap; by tracker (qase-api: the Qase API).", "tracker"),
		drift:     counter("qase_sync_reconcile_drift_total", "Drift found (and repaired unless dry-run) by route and class.", "route", "class"),
		reconciles: counter("qase_sync_reconcile_runs_total",
			"Reconcile passes by result (ok, failed, skipped: one still running here, other_replica: another replica holds the reconcile lease).", "result"),
		pruned: counter("qase_sync_pruned_rows_total", "Rows removed by retention, by table (events, ledger, dead_letters).", "table"),
		trackerHooks: counter("qase_sync_tracker_webhook_events_total",
			"Tracker webhook deliveries (two-way routes) by tracker and result (accepted, duplicate, ignored, rejected, invalid, failed).", "tracker", "result"),
		webhookGap: counter("qase_sync_webhook_missed_changes_total",
			"Keys whose reconcile verify repaired a change (missing, fields, status) that no webhook brought, by Qase project: webhook missing or disabled?", "project"),
	}
	reg.MustRegister(m.ackLatency, m.giveWay)
	reg.MustRegister(&storeCollector{store: store, maxAge: 5 * time.Second,
		queue: prometheus.NewDesc("qase_sync_queue_depth", "Sync jobs not yet finished.", nil, nil),
		dead:  prometheus.NewDesc("qase_sync_dead_letters", "Dead letters waiting for an operator.", nil, nil),
		evs:   prometheus.NewDesc("qase_sync_events", "Accepted events by ledger status.", []string{"status"}, nil),
	})
	return m
}

// Received counts a webhook delivery (webhook observer).
func (m *metrics) Received(result, reason string) { m.received.WithLabelValues(result, reason).Inc() }

// TrackerWebhook returns the observer of one tracker's webhook receiver.
func (m *metrics) TrackerWebhook(tracker string) func(result string) {
	return func(result string) { m.trackerHooks.WithLabelValues(tracker, result).Inc() }
}

// AckLatency records the time to acknowledge a delivery.
func (m *metrics) AckLatency(d time.Duration) { m.ackLatency.Observe(d.Seconds()) }

func (m *metrics) JobDone(route string, o qsync.Outcome, d time.Duration) {
	m.jobs.WithLabelValues(route, string(o)).Inc()
	m.jobLatency.WithLabelValues(route).Observe(d.Seconds())
}

// GaveWay is a qsync.GiveWayObserver.
func (m *metrics) GaveWay(d time.Duration) { m.giveWay.Add(d.Seconds()) }

func (m *metrics) JobRetried(route string) { m.retries.WithLabelValues(route).Inc() }
func (m *metrics) TrackerOps(tracker string, op qsync.OpKind) {
	m.trackerOps.WithLabelValues(tracker, string(op)).Inc()
}
func (m *metrics) Drift(route, class string) {
	m.drift.WithLabelValues(route, class).Inc()
	if m.onDrift != nil {
		m.onDrift(route, class)
	}
}

// Repaired is a qsync.RepairObserver: a key whose verify repaired drift.
func (m *metrics) Repaired(k qsync.Key, drift []string) {
	if !isWebhookGap(drift) {
		return
	}
	m.webhookGap.WithLabelValues(k.Project).Inc()
	if m.onGap != nil {
		m.onGap(k)
	}
}

// Call is a qsync.CallObserver.
func (m *metrics) Call(system, op string, status int, d time.Duration) {
	m.calls.WithLabelValues(system, op, strconv.Itoa(status)).Inc()
	m.callTime.WithLabelValues(system, op).Observe(d.Seconds())
}

// RateWait records time spent in the pacing limiter.
func (m *metrics) RateWait(tracker string, d time.Duration) {
	m.rateWaits.WithLabelValues(tracker).Add(d.Seconds())
}

// storeCollector reads gauges from the store at scrape time, so they are
// right across replicas and restarts. Readings are cached briefly: the
// ledger summary scans the events table, and scrapers may be frequent.
type storeCollector struct {
	store            qsync.Store
	queue, dead, evs *prometheus.Desc

	mu     sync.Mutex
	at     time.Time
	cached []prometheus.Metric
	maxAge time.Duration
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.queue
	ch <- c.dead
	ch <- c.evs
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.cached == nil || now.Sub(c.at) > c.maxAge {
		c.cached, c.at = c.read(), now
	}
	for _, m := range c.cached {
		ch <- m
	}
}

func (c *storeCollector) read() []prometheus.Metric {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var out []prometheus.Metric
	if n, err := c.store.QueueDepth(ctx); err == nil {
		out = append(out, prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue, float64(n)))
	}
	if dl, err := c.store.DeadLetters(ctx, 0); err == nil {
		out = append(out, prometheus.MustNewConstMetric(c.dead, prometheus.GaugeValue, float64(len(dl))))
	}
	if st, err := c.store.EventStatus(ctx); err == nil {
		for k, v := range map[string]int{"pending": st.Pending, "applied": st.Applied, "noop": st.Noop, "dead": st.Dead} {
			out = append(out, prometheus.MustNewConstMetric(c.evs, prometheus.GaugeValue, float64(v), k))
		}
	}
	return out
}
