package sync

import (
	"context"
	"time"
)

// Ports: small interfaces the engine depends on. Adapters implement them;
// cmd/qase-sync wires them together.

// Inbound is an event plus the routes it was matched to at accept time.
type Inbound struct {
	Event  Event
	Routes []string
	// QuietDuplicate: a duplicate of this event (its DedupKey already
	// stored) enqueues and bumps nothing. Set for tracker deliveries whose
	// DedupKey is the tracker's own delivery id: a redelivery of that id
	// carries no change the first one did not. Qase events leave it false
	// (invariant I6: their keys are content hashes, and an equal body may
	// still be news).
	QuietDuplicate bool
}

// AcceptResult tells, per inbound event, whether it was new.
type AcceptResult struct {
	Seq       int64
	Duplicate bool
}

// InboxStore persists accepted events durably.
type InboxStore interface {
	// AcceptEvents stores the events in one transaction: each event whose
	// DedupKey is new for its entity is inserted with one pending delivery
	// per route. For every event, new or duplicate, each of its routes'
	// keys gets its job enqueued or bumped (one job per key; the Gen
	// grows), except a duplicate marked QuietDuplicate: thin Qase events of one second have equal bodies, so a
	// duplicate may still be news, and dedup may spare a ledger row but
	// never a sync (invariant I6). It returns only after the transaction
	// committed. Dedup keys are content-derived and name their entity, so
	// a store may look for duplicates among the entity's events only.
	// Events are inserted in batch order: their Seqs follow it.
	AcceptEvents(ctx context.Context, in []Inbound, now time.Time) ([]AcceptResult, error)
}

// JobStore is the work queue: one job per Key, leased by one worker at a time.
type JobStore interface {
	// Enqueue makes a job due for each key (reconcile, dead-letter retry).
	// An existing job keeps its place; verify is or-ed in.
	Enqueue(ctx context.Context, keys []Key, verify bool, now time.Time) error
	// Lease hands out up to limit due jobs not leased by anyone (or whose
	// lease expired), leased until now+lease. Each job carries a fresh
	// fencing token in Job.Lease, issued to owner: every later call for
	// the job names that token, so a worker whose lease expired and was
	// taken over can no longer write.
	Lease(ctx context.Context, owner string, limit int, now time.Time, lease time.Duration) ([]Job, error)
	// Renew extends the job's lease to until while job.Lease still holds
	// it; ErrLeaseLost otherwise.
	Renew(ctx context.Context, job Job, until time.Time) error
	// Complete ends the job's attempt with an outcome: events of the key up
	// to job.Gen get that outcome, a ledger entry is written, and the job is
	// removed unless it was re-enqueued meanwhile (then it is released, due
	// now). OutcomeDead also records a dead letter with detail as reason.
	// ErrLeaseLost if job.Lease no longer holds the job.
	Complete(ctx context.Context, job Job, outcome Outcome, entry LedgerEntry, now time.Time) error
	// Retry releases the job for another attempt at due, recording the
	// error. charge=false leaves the attempt count alone (the attempt was
	// cut short by shutdown or a rate-limit wait, not failed by the tracker).
	Retry(ctx context.Context, job Job, due time.Time, lastErr string, charge bool, now time.Time) error
	// Finish records everything one attempt of the job leaves behind in
	// one transaction, fenced by job.Lease (ErrLeaseLost, and nothing
	// written, once the token no longer holds the job): the entity's
	// snapshot and the key's link, when given, then the outcome as
	// Complete, or as Retry when o.Outcome is empty. A worker so commits
	// once per job; only writes that must be durable before a tracker call
	// (a create's intent, a comment marked pending) go before it. Finish
	// need not be on disk when it returns, only ordered before every later
	// write: losing it to a power cut is the crash before it the next
	// attempt already recovers from.
	Finish(ctx context.Context, job Job, o JobOutcome, now time.Time) error
	// Release gives back every lease issued to owner (graceful shutdown).
	Release(ctx context.Context, owner string) error
	// QueueDepth counts jobs not yet finished.
	QueueDepth(ctx context.Context) (int, error)
}

// JobOutcome is what Finish records for one attempt of a job.
type JobOutcome struct {
	// Outcome (applied, noop or dead) ends the job as Complete does, with
	// Entry; empty releases it for another attempt as Retry does.
	Outcome Outcome
	Entry   LedgerEntry
	RetryAt time.Time
	LastErr string
	Charge  bool
	// Link, when set, is saved as the key's link (the job's key).
	Link *Link
	// Snapshot, when set, is saved as SaveSnapshot(*Snapshot, PrevSeq)
	// does; a lost compare-and-set is no error (another fold got there
	// first, and the snapshot is only a cache of the events).
	Snapshot *Snapshot
	PrevSeq  int64
}

// SnapshotStore keeps each entity's folded state and its events.
type SnapshotStore interface {
	// Snapshot returns the stored state (zero Snapshot if none).
	Snapshot(ctx context.Context, ref EntityRef) (Snapshot, error)
	// EventsAfter returns the entity's events with Seq > after, in Seq order.
	EventsAfter(ctx context.Context, ref EntityRef, after int64, limit int) ([]Event, error)
	// SaveSnapshot writes s if the stored LastSeq still equals prevSeq
	// (compare-and-set); ok=false means another writer got there first.
	SaveSnapshot(ctx context.Context, s Snapshot, prevSeq int64) (ok bool, err error)
}

// KeyReader is implemented by a Store that reads a key's snapshot, the
// first limit events after it and its link more cheaply together than
// one by one (SQLite: one read transaction instead of three). Optional.
type KeyReader interface {
	ReadKey(ctx context.Context, k Key, limit int) (KeyRead, error)
}

// KeyRead is what ReadKey read.
type KeyRead struct {
	Snapshot Snapshot
	Events   []Event // Seq > Snapshot.LastSeq, in Seq order, at most limit
	Link     Link
	Linked   bool
}

// ReadKey reads k's snapshot, the first limit events after it and k's
// link: together where s is a KeyReader, one by one otherwise.
func ReadKey(ctx context.Context, s Store, k Key, limit int) (KeyRead, error) {
	if kr, ok := s.(KeyReader); ok {
		return kr.ReadKey(ctx, k, limit)
	}
	var r KeyRead
	var err error
	if r.Snapshot, err = s.Snapshot(ctx, k.EntityRef); err != nil {
		return KeyRead{}, err
	}
	if r.Events, err = s.EventsAfter(ctx, k.EntityRef, r.Snapshot.LastSeq, limit); err != nil {
		return KeyRead{}, err
	}
	if r.Link, r.Linked, err = s.Link(ctx, k); err != nil {
		return KeyRead{}, err
	}
	return r, nil
}

// LinkStore keeps the correlation between keys and tracker issues.
type LinkStore interface {
	// Link returns the key's link; found=false if there is none.
	Link(ctx context.Context, k Key) (l Link, found bool, err error)
	// SaveLink inserts or replaces the key's link.
	SaveLink(ctx context.Context, l Link) error
	// SaveLinkFenced is SaveLink while job.Lease still holds the key's job,
	// checked in the same transaction; ErrLeaseLost otherwise. Workers save
	// every link through it, so a worker that lost its lease cannot record
	// an intent (and so cannot create) or overwrite a newer link.
	SaveLinkFenced(ctx context.Context, l Link, job Job) error
	// DeleteLink forgets the key's link.
	DeleteLink(ctx context.Context, k Key) error
	// DeleteLinkFenced is DeleteLink while job.Lease still holds the key's
	// job, checked in the same transaction; ErrLeaseLost otherwise. A
	// worker that lost its lease must not forget the new holder's intent.
	DeleteLinkFenced(ctx context.Context, k Key, job Job) error
	// Links lists links, optionally of one route ("" = all), ordered by key,
	// starting after the given key (zero Key = from the start).
	Links(ctx context.Context, route string, after Key, limit int) ([]Link, error)
}

// LedgerStore answers what happened to accepted events and keys.
type LedgerStore interface {
	Ledger(ctx context.Context, k Key, limit int) ([]LedgerEntry, error)
	EventStatus(ctx context.Context) (EventStatus, error)
	DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error)
	DeadLetter(ctx context.Context, id int64) (DeadLetter, bool, error)
	// DropDeadLetter removes it; RetryDeadLetter removes it and enqueues its key.
	DropDeadLetter(ctx context.Context, id int64) error
	RetryDeadLetter(ctx context.Context, id int64, now time.Time) error
}

// Delivery is one event's outcome on one route (ledger I1).
type Delivery struct {
	EventSeq int64  `json:"event_seq"`
	Gen      int64  `json:"gen"`    // the key's job generation it was enqueued at
	Status   string `json:"status"` // pending | applied | noop | dead
}

// Overview is what an operator's status page shows of the store.
type Overview struct {
	QueueDepth    int                  `json:"queue_depth"`
	OldestPending time.Time            `json:"oldest_pending,omitzero"` // first_at of the oldest unfinished job
	Outcomes      map[Outcome]int      `json:"outcomes"`                // ledger entries since the asked time
	LastDelivery  map[string]time.Time `json:"last_delivery"`           // newest received_at per Qase project
	DeadLetters   int                  `json:"dead_letters"`
}

// InsightStore answers operators' questions (explain, the status page);
// read-only.
type InsightStore interface {
	// Deliveries lists the key's event deliveries, newest event first.
	Deliveries(ctx context.Context, k Key, limit int) ([]Delivery, error)
	// Overview summarizes the queue, the ledger since since, the last
	// delivery per project and the dead letters.
	Overview(ctx context.Context, since time.Time) (Overview, error)
}

// PruneReport counts the rows one Prune removed.
type PruneReport struct {
	Events      int `json:"events"`
	Ledger      int `json:"ledger"`
	DeadLetters int `json:"dead_letters"`
	Passes      int `json:"passes"`
}

// RetentionStore forgets history older than the retention age.
type RetentionStore interface {
	// Prune deletes, in transactions of at most batch rows each:
	//   - events received before before that their entity's snapshot has
	//     folded (Seq <= the snapshot's LastSeq) and that have no pending
	//     delivery, with their deliveries: what Snapshot plus EventsAfter
	//     give for an entity is unchanged. The newest event of each
	//     project is kept (the last delivery per project, see Overview);
	//   - ledger entries written before before;
	//   - dead letters created before before whose key has no job;
	//   - reconcile passes started before before.
	Prune(ctx context.Context, before time.Time, batch int) (PruneReport, error)
}

// ReconcilePass is one reconcile pass as recorded in the store.
type ReconcilePass struct {
	ID       int64     `json:"id"`
	Started  time.Time `json:"started_at"`
	Owner    string    `json:"owner"`
	Checked  int       `json:"checked"`
	Enqueued int       `json:"enqueued"`
}

// CoordinationStore lets replicas on one database do singleton work once:
// named leases that expire when their holder stops renewing them, and a
// record of reconcile passes.
type CoordinationStore interface {
	// TryLease gives the named lease to owner until now+ttl when nobody
	// holds it, its holder's lease has ended (until <= now), or owner
	// holds it already (a renewal, which may also shorten it). ok=false:
	// another owner holds it.
	TryLease(ctx context.Context, name, owner string, now time.Time, ttl time.Duration) (ok bool, err error)
	// ReleaseLease ends the lease if owner holds it.
	ReleaseLease(ctx context.Context, name, owner string) error
	// RecordPass stores a finished pass.
	RecordPass(ctx context.Context, p ReconcilePass) error
	// ReconcilePasses lists the passes started at or after since, oldest
	// first.
	ReconcilePasses(ctx context.Context, since time.Time) ([]ReconcilePass, error)
}

// Store is every storage port; sqlite and postgres implement it and pass
// the same conformance suite (adapters/store/storetest).
type Store interface {
	InboxStore
	JobStore
	SnapshotStore
	LinkStore
	LedgerStore
	InsightStore
	RetentionStore
	CoordinationStore
	CheckpointStore
	Ping(ctx context.Context) error
	// CreatedAt is when this database was created (its first schema
	// migration): a store younger than the trackers' late-commit window
	// may have replaced one whose creates are still landing.
	CreatedAt(ctx context.Context) (time.Time, error)
	Close() error
}

// Mapper is the engine's view of the mapping tables (package mapping).
type Mapper interface {
	// Routes returns the names of the routes that take an event, judged by
	// name, project and kind only (conditions on state come later).
	Routes(eventName, project string, kind Kind) []string
	// RouteKinds tells which kind a route serves and its tracker, for the
	// reconciler's enumeration.
	RouteInfo(route string) (RouteInfo, bool)
	// RouteNames lists every route.
	RouteNames() []string
	// Desired computes the issue the route wants for the entity now.
	Desired(route string, e Entity) (Desired, error)
}

// RouteInfo describes a route for enumeration.
type RouteInfo struct {
	Name     string
	Kind     Kind
	Tracker  string
	Projects []string // empty = any
	Project  string   // tracker project (Jira key, GitHub owner/repo)
}

// Tracker is one issue tracker instance (a Jira site, a GitHub org/repo set).
// Adapters classify every failure: Permanent(err) must not be retried,
// RetryAfter(err, d) asks for a wait, anything else is retried with backoff.
type Tracker interface {
	// Create files a new issue carrying the marker.
	Create(ctx context.Context, spec IssueSpec, m Marker) (Issue, error)
	// Find returns the issues in project carrying the marker, oldest first.
	// since bounds the search (only issues created at or after it can
	// match; zero = no bound). It must be read-your-writes consistent or
	// say how stale it can be (see FindSettler).
	Find(ctx context.Context, project string, m Marker, since time.Time) ([]Issue, error)
	// Get reads one issue; ErrNotFound if it no longer exists.
	Get(ctx context.Context, ref IssueRef) (Issue, error)
	// Update changes fields and labels.
	Update(ctx context.Context, ref IssueRef, u Update) error
	// SetStatus moves the issue to status (Jira: via transitions;
	// GitHub: open/closed with reason).
	SetStatus(ctx context.Context, ref IssueRef, status, reason string) error
	// AddComment posts c, stamped with c.ID so HasComment can find it.
	AddComment(ctx context.Context, ref IssueRef, c Comment) error
	// HasComment reports whether a comment stamped with id exists.
	HasComment(ctx context.Context, ref IssueRef, id string) (bool, error)
	// List returns every issue in project carrying the qase-sync marker
	// label, in batches (the reconciler's bulk read), oldest first.
	List(ctx context.Context, project string) ([]Issue, error)
	// Mark stamps the marker on an existing issue exactly as Create does
	// (adoption after an ambiguous create, an issue adopted from a
	// person): afterwards Find, List and Get report it with MarkerID set.
	// Idempotent.
	Mark(ctx context.Context, ref IssueRef, m Marker) error
}

// FindSettler is implemented by trackers whose marker search lags writes
// (Jira's JQL index): look again after this delay before creating.
type FindSettler interface {
	FindSettle() time.Duration
}

// Update is a change to an existing issue; nil/empty means unchanged.
type Update struct {
	Title        *string           `json:"title,omitempty"`
	Body         *string           `json:"body,omitempty"`
	Priority     *string           `json:"priority,omitempty"`
	Assignees    *[]string         `json:"assignees,omitempty"`
	Components   *[]string         `json:"components,omitempty"`
	Fields       map[string]string `json:"fields,omitempty"`
	AddLabels    []string          `json:"add_labels,omitempty"`
	RemoveLabels []string          `json:"remove_labels,omitempty"`
	// Marker is the key's marker, for trackers that keep part of it in
	// text an update rewrites (GitHub's body stamp), so they need not read
	// it from the issue. Set by the engine when it executes an update,
	// never planned; zero: not known.
	Marker Marker `json:"-"`
}

// Empty reports whether u changes nothing.
func (u Update) Empty() bool {
	return u.Title == nil && u.Body == nil && u.Priority == nil && u.Assignees == nil &&
		u.Components == nil && len(u.Fields) == 0 && len(u.AddLabels) == 0 && len(u.RemoveLabels) == 0
}

// EntitySource reads entities from the Qase REST API (optional: without a
// token the engine works from events alone).
type EntitySource interface {
	// Fetch reads the entity; found=false when Qase says it does not exist.
	// The attrs use the same vocabulary as event patches.
	Fetch(ctx context.Context, ref EntityRef) (attrs map[string]any, found bool, err error)
	// List enumerates the project's entities of a kind (reconciler), calling
	// fn for each entity; reads are paged (100 per call).
	List(ctx context.Context, project string, kind Kind, fn func(ref EntityRef, attrs map[string]any) error) error
}

// Clock is injected so tests control time.
type Clock interface{ Now() time.Time }

// ClockFunc adapts a function to Clock.
type ClockFunc func() time.Time

// Now returns f().
func (f ClockFunc) Now() time.Time { return f() }

// SystemClock is the real clock.
var SystemClock Clock = ClockFunc(time.Now)

// AcceptStatus is the inbox's answer to one delivery.
type AcceptStatus string

// Accept statuses.
const (
	StatusAccepted  AcceptStatus = "accepted"
	StatusDuplicate AcceptStatus = "duplicate"
	StatusIgnored   AcceptStatus = "ignored" // no route takes it
)

// Acceptor takes decoded deliveries (implemented by Inbox; used by the
// webhook handler). It returns only once the event is durably stored.
type Acceptor interface {
	Accept(ctx context.Context, ev Event) (AcceptStatus, error)
}

// TrackerAcceptor takes tracker deliveries (implemented by Inbox; used by
// the GitHub and Jira webhook handlers) once they know the key whose issue
// changed. It returns only once the event is durably stored.
type TrackerAcceptor interface {
	AcceptTracker(ctx context.Context, k Key, ev Event) (AcceptStatus, error)
}

// CallObserver is told about every outbound API call, for metrics. status
// is the HTTP status, 0 for a transport failure.
type CallObserver func(system, op string, status int, d time.Duration)

// StatusCommenter is implemented by trackers that can post a comment in
// the request that changes the status (Jira: a comment on the transition's
// screen), so that a status change and the comment that explains it cost
// one write. The engine uses it when a plan's status change is directly
// followed by a comment.
type StatusCommenter interface {
	// SetStatusWithComment does what SetStatus does and posts c, stamped
	// as AddComment stamps it: in the status request where the tracker
	// allows, else as a separate comment. nil: both happened. An
	// *UnreachableError means nothing was written, the comment included.
	SetStatusWithComment(ctx context.Context, ref IssueRef, status, reason string, c Comment) error
}

// CheckpointStore keeps how far the incremental reconciler has read: a
// time per name (one per Qase project and kind it searches, and one for
// the last full sweep).
type CheckpointStore interface {
	// Checkpoints returns every stored checkpoint by name.
	Checkpoints(ctx context.Context) (map[string]time.Time, error)
	// SaveCheckpoints stores the given checkpoints in one transaction. A
	// checkpoint never moves back: an older time leaves a newer one.
	SaveCheckpoints(ctx context.Context, at map[string]time.Time) error
}

// ChangeSource is an EntitySource that can also find the entities that
// changed since a time (Qase's QQL search), so a reconcile pass need not
// list every entity.
type ChangeSource interface {
	// Searchable reports whether kind can be searched by update time.
	Searchable(kind Kind) bool
	// Changed calls fn for every entity of kind in project updated at or
	// after since (whole seconds), with the same attrs List gives. An
	// entity may be reported more than once; a permanent error means the
	// search is not available (the caller lists instead).
	Changed(ctx context.Context, project string, kind Kind, since time.Time, fn func(ref EntityRef, attrs map[string]any) error) error
}
