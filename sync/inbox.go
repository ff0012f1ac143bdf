package sync

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// ErrInboxClosed is returned by Accept once the inbox stopped (shutdown):
// the webhook answers 503 and Qase may redeliver.
var ErrInboxClosed = errors.New("inbox closed")

// Inbox accepts webhook events durably. Concurrent deliveries are grouped
// into one store transaction (group commit): every caller still waits for
// its own commit, but many share one fsync, which is what makes durable
// ingest fast on SQLite.
type Inbox struct {
	store    InboxStore
	mapper   Mapper
	clock    Clock
	log      *logrus.Entry
	notify   func()
	maxBatch int
	linger   time.Duration
	busy     func() bool
	reqs     chan acceptReq
	done     chan struct{}
	waiting  atomic.Int64 // deliveries queued or in a commit, not yet answered
}

type acceptReq struct {
	in    Inbound
	reply chan acceptReply
}

type acceptReply struct {
	res AcceptResult
	err error
}

// InboxOptions configure an Inbox.
type InboxOptions struct {
	Store  InboxStore
	Mapper Mapper
	Clock  Clock
	Logger *logrus.Entry
	// Notify is called after each commit that enqueued work (wakes workers).
	Notify func()
	// MaxBatch bounds a group commit (default 256).
	MaxBatch int
	// Linger is the longest a batch waits for more deliveries while the
	// process is short of CPU (default 1ms; negative: never).
	Linger time.Duration
	// Busy reports whether the process is short of CPU (default: a
	// CPUGauge over the process's CPU time).
	Busy func() bool
}

// NewInbox builds an inbox; call Run to start committing.
func NewInbox(o InboxOptions) *Inbox {
	if o.Clock == nil {
		o.Clock = SystemClock
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 256
	}
	if o.Linger == 0 {
		o.Linger = time.Millisecond
	}
	if o.Busy == nil {
		o.Busy = NewCPUGauge(nil, nil).Busy
	}
	if o.Notify == nil {
		o.Notify = func() {}
	}
	return &Inbox{
		store: o.Store, mapper: o.Mapper, clock: o.Clock, log: o.Logger, notify: o.Notify,
		maxBatch: o.MaxBatch, linger: o.Linger, busy: o.Busy, reqs: make(chan acceptReq, o.MaxBatch), done: make(chan struct{}),
	}
}

// Accept routes the event and stores it; it returns once committed.
func (in *Inbox) Accept(ctx context.Context, ev Event) (AcceptStatus, error) {
	routes := in.mapper.Routes(ev.Name, ev.Ref.Project, ev.Ref.Kind)
	if len(routes) == 0 && !in.servesKind(ev.Ref.Project, ev.Ref.Kind) {
		return StatusIgnored, nil
	}
	// An event no route triggers on may still describe the entity (only
	// run.started carries a run's title): keep it, as context for later
	// syncs, with no job.
	return in.accept(ctx, Inbound{Event: ev, Routes: routes})
}

// AcceptTracker stores a tracker delivery about the issue of key k: a
// hint, routed to k's route alone, that the key needs a sync (two-way
// routes read the issue and write changes back to Qase). A route that
// takes nothing from the tracker ignores it. A duplicate of a delivery
// whose DedupKey is the tracker's delivery id ("github:<X-GitHub-Delivery>")
// is a redelivery of a change already stored: it enqueues no second sync.
func (in *Inbox) AcceptTracker(ctx context.Context, k Key, ev Event) (AcceptStatus, error) {
	tw, ok := in.mapper.(TwoWayMapper)
	if !ok {
		return StatusIgnored, nil
	}
	if rule, ok := tw.TwoWay(k.Route); !ok || !rule.Inbound() {
		return StatusIgnored, nil
	}
	if !IsTrackerEvent(ev.Name) {
		ev.Name = TrackerEventPrefix + ev.Name
	}
	ev.Ref = k.EntityRef
	return in.accept(ctx, Inbound{Event: ev, Routes: []string{k.Route}, QuietDuplicate: quietTrackerDuplicate(ev.DedupKey)})
}

// behindAt is how many deliveries waiting for their commit make the inbox
// behind. A batch commits in about a millisecond and takes in whatever
// queued meanwhile, so at 1,000 deliveries/s a few wait at a time; 16 or
// more means they arrive faster than they are acknowledged.
const behindAt = 16

// Behind reports whether acknowledging deliveries is falling behind: at
// least behindAt of them are waiting for their commit. The workers give
// way while it is (EngineOptions.Behind): a delivery is acknowledged only
// once stored, while a sync can wait.
func (in *Inbox) Behind() bool { return in.waiting.Load() >= behindAt }

func (in *Inbox) accept(ctx context.Context, inb Inbound) (AcceptStatus, error) {
	if inb.Event.ReceivedAt.IsZero() {
		inb.Event.ReceivedAt = in.clock.Now()
	}
	req := acceptReq{in: inb, reply: make(chan acceptReply, 1)}
	in.waiting.Add(1)
	defer in.waiting.Add(-1)
	select {
	case in.reqs <- req:
	case <-in.done:
		return "", ErrInboxClosed
	case <-ctx.Done():
		return "", ctx.Err()
	}
	// Once queued, wait for the verdict even if the client went away: the
	// batch may commit, and the answer must match what was stored.
	var r acceptReply
	select {
	case r = <-req.reply:
	case <-in.done:
		// Stopped: no batch will run any more, but one may have answered.
		select {
		case r = <-req.reply:
		default:
			return "", ErrInboxClosed
		}
	}
	if r.err != nil {
		return "", r.err
	}
	if r.res.Duplicate {
		return StatusDuplicate, nil
	}
	return StatusAccepted, nil
}

// servesKind reports whether any route takes entities of this kind and
// project, whatever its event list.
func (in *Inbox) servesKind(project string, kind Kind) bool {
	for _, name := range in.mapper.RouteNames() {
		ri, ok := in.mapper.RouteInfo(name)
		if !ok || ri.Kind != kind {
			continue
		}
		if len(ri.Projects) == 0 {
			return true
		}
		for _, p := range ri.Projects {
			if p == project {
				return true
			}
		}
	}
	return false
}

// Run commits batches until ctx ends; queued requests are still answered.
func (in *Inbox) Run(ctx context.Context) {
	defer func() {
		// Fail whatever is queued, then close: a request that slips in
		// later sees done and answers for itself.
		for {
			select {
			case r := <-in.reqs:
				r.reply <- acceptReply{err: ErrInboxClosed}
				continue
			default:
			}
			break
		}
		close(in.done)
	}()
	batch := make([]acceptReq, 0, in.maxBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-in.reqs:
			batch = append(batch[:0], r)
		}
		linger := time.Duration(0)
		if in.linger > 0 && in.busy() {
			linger = in.linger
		}
		batch = in.fill(batch, linger)
		in.commit(batch)
	}
}

// fill adds what is queued to the batch; with linger > 0 it waits up to
// that long for more.
//
// Every delivery that arrives while a batch commits joins the next one.
// Waiting beyond that only pays when the CPU is the limit: a larger batch
// spends less CPU per event (one transaction, one fsync). Otherwise it only
// adds latency, and with few concurrent senders added latency is lost
// throughput, so Run lingers only while the process is busy (CPUGauge).
func (in *Inbox) fill(batch []acceptReq, linger time.Duration) []acceptReq {
	var timeout <-chan time.Time
	for len(batch) < in.maxBatch {
		select {
		case r := <-in.reqs:
			batch = append(batch, r)
			continue
		default:
		}
		if linger <= 0 {
			return batch
		}
		if timeout == nil {
			t := time.NewTimer(linger)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case r := <-in.reqs:
			batch = append(batch, r)
		case <-timeout:
			return batch
		}
	}
	return batch
}

func (in *Inbox) commit(batch []acceptReq) {
	ins := make([]Inbound, len(batch))
	for i, r := range batch {
		ins[i] = r.in
	}
	// Detached from the server's context: a commit in flight must finish so
	// every waiting caller gets a truthful answer.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	res, err := in.store.AcceptEvents(ctx, ins, in.clock.Now())
	cancel()
	if err == nil && len(res) != len(batch) {
		err = errors.New("store returned a short accept result")
	}
	if err != nil {
		in.log.WithError(err).WithField("batch", len(batch)).Error("storing webhook events failed")
	}
	fresh := false
	for i, r := range batch {
		if err != nil {
			r.reply <- acceptReply{err: err}
			continue
		}
		fresh = fresh || !res[i].Duplicate
		r.reply <- acceptReply{res: res[i]}
	}
	if fresh {
		in.notify()
	}
}
