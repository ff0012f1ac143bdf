// Package sync is the domain core of qase-sync: the types, the ports the
// adapters implement, and the engine (inbox, worker, reconciler) that keeps
// tracker issues level-synced with Qase entities.
//
// It imports only the standard library and logrus; SDKs, drivers, config and
// mapping are reached through the small interfaces in ports.go.
package sync

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Kind is a Qase entity kind the product mirrors.
type Kind string

// The entity kinds qase-sync serves.
const (
	KindDefect Kind = "defect"
	KindReview Kind = "review"
	KindRun    Kind = "run"
	// KindFailure is a failed test result's root cause, keyed by the
	// route's signature (see failure.go); its ids are signature hashes.
	KindFailure Kind = "failure"
)

// Kinds lists every served kind, in a stable order.
var Kinds = []Kind{KindDefect, KindReview, KindRun, KindFailure}

// Valid reports whether k is a served kind.
func (k Kind) Valid() bool {
	return k == KindDefect || k == KindReview || k == KindRun || k == KindFailure
}

// EntityRef names one Qase entity. Qase ids are project-scoped.
type EntityRef struct {
	Project string `json:"project"`
	Kind    Kind   `json:"kind"`
	ID      int64  `json:"id"`
}

func (r EntityRef) String() string {
	return r.Project + "/" + string(r.Kind) + "/" + strconv.FormatInt(r.ID, 10)
}

// Key is the unit of work: one route's view of one entity. At most one
// tracker issue exists per Key (invariant I2).
type Key struct {
	Route string `json:"route"`
	EntityRef
}

func (k Key) String() string { return k.Route + ":" + k.EntityRef.String() }

// ParseKey parses the String form of a Key ("route:PROJ/kind/id").
func ParseKey(s string) (Key, error) {
	route, rest, ok := strings.Cut(s, ":")
	parts := strings.Split(rest, "/")
	if !ok || route == "" || len(parts) != 3 {
		return Key{}, fmt.Errorf("key %q: want route:PROJECT/kind/id", s)
	}
	id, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil || parts[0] == "" || !Kind(parts[1]).Valid() {
		return Key{}, fmt.Errorf("key %q: want route:PROJECT/kind/id", s)
	}
	return Key{Route: route, EntityRef: EntityRef{Project: parts[0], Kind: Kind(parts[1]), ID: id}}, nil
}

// Comment is a comment the tracker issue should carry exactly once. ID is
// stable across retries and re-deliveries; it is what makes posting idempotent.
type Comment struct {
	ID     string    `json:"id"`
	Author string    `json:"author,omitempty"`
	Body   string    `json:"body"`
	At     time.Time `json:"at,omitempty"`
}

// Patch is what one event says about its entity, already normalized by the
// Qase adapter into the attribute vocabulary the mapping sees (docs/mapping.md).
type Patch struct {
	Attrs   map[string]any `json:"attrs,omitempty"`
	Comment *Comment       `json:"comment,omitempty"`
	Deleted bool           `json:"deleted,omitempty"`
}

// Event is one accepted webhook delivery.
type Event struct {
	Seq        int64     `json:"seq,omitempty"` // assigned by the store
	DedupKey   string    `json:"dedup_key"`
	Name       string    `json:"name"` // e.g. "defect.created"
	Ref        EntityRef `json:"ref"`
	Timestamp  time.Time `json:"timestamp"` // when it happened in Qase
	ReceivedAt time.Time `json:"received_at"`
	ActorID    int64     `json:"actor_id,omitempty"`
	Patch      Patch     `json:"patch"`
	Payload    []byte    `json:"-"` // raw body, kept for audit and replay
}

// Action is the part of the event name after the dot ("created").
func (e Event) Action() string {
	_, a, _ := strings.Cut(e.Name, ".")
	return a
}

// Entity is the current, merged view of one Qase entity that the mapping
// turns into a desired issue.
type Entity struct {
	Ref      EntityRef      `json:"ref"`
	Attrs    map[string]any `json:"attrs"`
	Comments []Comment      `json:"comments,omitempty"`
	Deleted  bool           `json:"deleted,omitempty"`
	// LastEvent is the name of the newest event folded in ("" if none).
	LastEvent string `json:"last_event,omitempty"`
	// Events counts events seen per name (e.g. how often a run was aborted).
	Events map[string]int `json:"events,omitempty"`
	// Complete: the entity was read from the Qase API, so an attribute it
	// lacks is absent in Qase, not merely unknown.
	Complete bool `json:"complete,omitempty"`
}

// IssueFields are the fields of a tracker issue that qase-sync writes. The
// issue a route wants (IssueSpec), the issue as read back (Issue) and what
// was last written (Applied) all embed them; without a JSON tag of their own
// they flatten, so specs (plan output, fingerprints) and issues encode as
// before and stored Applied baselines decode as before (an Applied without
// a title now writes "title":"", which decodes the same).
// Update (ports.go) names the same fields as pointers: nil leaves a field
// alone; Update.ApplyTo writes one onto IssueFields.
type IssueFields struct {
	Title      string            `json:"title"`                // summary
	Body       string            `json:"body,omitempty"`       // description, tracker markup
	Labels     []string          `json:"labels,omitempty"`     // managed labels
	Priority   string            `json:"priority,omitempty"`   // Jira priority name
	Assignees  []string          `json:"assignees,omitempty"`  // Jira account id / GitHub login
	Components []string          `json:"components,omitempty"` // Jira components
	Fields     map[string]string `json:"fields,omitempty"`     // Jira custom fields by id
	Status     string            `json:"status,omitempty"`     // Jira status name; GitHub open|closed
	Reason     string            `json:"reason,omitempty"`     // GitHub state_reason; Jira resolution
}

// IssueSpec is the tracker issue a route wants for an entity. Values are in
// the target tracker's vocabulary (mapping tables translate).
type IssueSpec struct {
	Project string `json:"project"`        // Jira project key, GitHub owner/repo
	Type    string `json:"type,omitempty"` // Jira issue type
	IssueFields
	Comments []Comment `json:"comments,omitempty"`
	// CreateOnly names fields written on create and never again
	// (ownership policy): title, body, labels, priority, assignees,
	// components, status, fields.<id>.
	CreateOnly []string `json:"create_only,omitempty"`
}

// Owns reports whether field is synced after creation.
func (s IssueSpec) Owns(field string) bool {
	for _, f := range s.CreateOnly {
		if f == field || (f == "fields" && strings.HasPrefix(field, "fields.")) {
			return false
		}
	}
	return true
}

// Desired is a route's verdict for an entity.
type Desired struct {
	Route   string `json:"route"`
	Tracker string `json:"tracker"` // tracker instance name from config
	// Skip is true when the route's condition excludes the entity:
	// nothing is created and an existing issue is left alone.
	Skip bool `json:"skip,omitempty"`
	// Create is false when an issue may be updated but must not be
	// created (create_when not met, or the entity is deleted).
	Create bool      `json:"create"`
	Spec   IssueSpec `json:"spec"`
	// LinkBack, when set, is the link the route writes back to Qase once
	// the issue exists (Jira only: a run's external issue, a case's).
	LinkBack *LinkBack `json:"link_back,omitempty"`
	// Unknown names the spec fields computed from attributes the service
	// does not have (a thin event, a lost store, an entity Qase no longer
	// serves): they are written when the issue is created, never over an
	// existing issue.
	Unknown []string `json:"unknown,omitempty"`
}

// Marker is the deterministic correlation stamp carried inside the tracker
// issue, so an issue can be found again without the store (crash-safe create,
// links rebuild).
type Marker struct {
	ID    string `json:"id"`    // "qase-sync:route:PROJ/kind/id"
	Label string `json:"label"` // short, label-safe hash of ID: "qs-<16 hex>"
}

// Issue is a tracker issue as read back.
type Issue struct {
	Ref IssueRef `json:"ref"`
	IssueFields
	// MarkerID is the marker the issue carries, set by the adapter only
	// when every part of it is there (Jira: entity property, marker and
	// shared labels; GitHub: hidden body comment, marker and shared
	// labels); "" otherwise, and then Mark completes it.
	MarkerID   string    `json:"marker_id,omitempty"`
	CommentIDs []string  `json:"comment_ids,omitempty"`
	CreatedAt  time.Time `json:"created_at,omitempty"`
	// UpdatedAt is when the issue last changed (two-way: newest wins);
	// StatusCategory is Jira's category key of its status (new,
	// indeterminate, done), "" where the tracker has none.
	UpdatedAt      time.Time `json:"updated_at,omitzero"`
	StatusCategory string    `json:"status_category,omitempty"`
	Unreachable    bool      `json:"-"`
}

// IssueRef locates a tracker issue. ID is the tracker's stable id (Jira
// issue id, GitHub issue number); Key is the human key, which for Jira
// changes when the issue moves project.
type IssueRef struct {
	Project string `json:"project"`
	ID      string `json:"id"`
	Key     string `json:"key"`
	URL     string `json:"url,omitempty"`
}

func (r IssueRef) String() string {
	if r.Key != "" {
		return r.Key
	}
	return r.Project + "#" + r.ID
}

// LinkState is where a link is in the crash-safe create protocol.
type LinkState string

// Link states.
const (
	LinkCreating LinkState = "creating" // intent recorded; the issue may or may not exist
	LinkLinked   LinkState = "linked"
)

// Applied is what was last written to the tracker for a key: the baseline
// the next diff starts from.
type Applied struct {
	IssueFields
	// Comments are the ids of comments posted; Pending the ids whose post
	// was attempted but not confirmed (look before re-posting).
	Comments []string `json:"comments,omitempty"`
	Pending  []string `json:"pending,omitempty"`
	// Unverified marks a baseline rebuilt from the tracker (links rebuild,
	// adoption) whose posted comments are not all known: look for each
	// comment on the issue before posting it.
	Unverified bool `json:"unverified,omitempty"`
	// Unmarked: the linked issue does not carry the whole marker yet
	// (adopted, or its create could not store every part): Mark it.
	Unmarked bool `json:"unmarked,omitempty"`
	// Blocked records a status the tracker's workflow cannot reach from
	// the issue's status: it is reported once and not tried again until
	// either changes.
	Blocked *Blocked `json:"blocked,omitempty"`
	// Sides is the two-way baseline: per two-way field, what Qase and the
	// tracker held when they last agreed (see twoway.go).
	Sides map[string]Side `json:"sides,omitempty"`
	// LinkedBack is the issue key last written back to Qase (LinkBack).
	LinkedBack string `json:"linked_back,omitempty"`
}

// Blocked is a status transition the workflow does not offer.
type Blocked struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// Link is the correlation between a Key and its tracker issue.
type Link struct {
	Key         Key       `json:"key"`
	State       LinkState `json:"state"`
	Tracker     string    `json:"tracker"`
	Marker      Marker    `json:"marker"`
	Issue       IssueRef  `json:"issue"`
	Applied     Applied   `json:"applied"`
	Fingerprint string    `json:"fingerprint,omitempty"` // of the last fully applied Desired
	IntentAt    time.Time `json:"intent_at,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Outcome is how a job (and the events behind it) ended: invariant I1.
type Outcome string

// Outcomes.
const (
	OutcomeApplied Outcome = "applied"
	OutcomeNoop    Outcome = "noop"
	OutcomeDead    Outcome = "dead"
)

// Job is a leased unit of work for one Key.
type Job struct {
	Key       Key       `json:"key"`
	Gen       int64     `json:"gen"` // bumped by every enqueue; completion only clears the gen it saw
	Attempts  int       `json:"attempts"`
	LastError string    `json:"last_error,omitempty"`
	Verify    bool      `json:"verify,omitempty"` // compare with the live issue (reconcile)
	FirstAt   time.Time `json:"first_at"`         // when the key was first enqueued since last success
	DueAt     time.Time `json:"due_at"`
	// Lease is the fencing token of the current lease (set by Lease).
	Lease string `json:"lease,omitempty"`
}

// LedgerEntry records one job outcome.
type LedgerEntry struct {
	ID      int64     `json:"id"`
	At      time.Time `json:"at"`
	Key     Key       `json:"key"`
	Gen     int64     `json:"gen"`
	Outcome Outcome   `json:"outcome"`
	Ops     []string  `json:"ops,omitempty"`
	Drift   []string  `json:"drift,omitempty"` // drift classes a verifying sync found
	Detail  string    `json:"detail,omitempty"`
	Issue   string    `json:"issue,omitempty"`
	// Request describes the last tracker request of a failed attempt
	// (method, path, status; never credentials), taken from an error with a
	// Request() string method. Kept on dead letters.
	Request string `json:"request,omitempty"`
}

// DeadLetter is a key whose sync failed permanently or exhausted retries.
type DeadLetter struct {
	ID          int64     `json:"id"`
	Key         Key       `json:"key"`
	Reason      string    `json:"reason"`
	Attempts    int       `json:"attempts"`
	LastRequest string    `json:"last_request,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
}

// EventStatus summarizes the ledger for accepted events.
type EventStatus struct {
	Pending int `json:"pending"`
	Applied int `json:"applied"`
	Noop    int `json:"noop"`
	Dead    int `json:"dead"`
}

// Snapshot is the stored, event-folded state of one entity.
type Snapshot struct {
	Ref     EntityRef `json:"ref"`
	LastSeq int64     `json:"last_seq"` // highest event seq folded in
	State   State     `json:"state"`
}

// jsonClone deep-copies JSON-shaped values so folded state never aliases
// event data.
func jsonClone(v any) any {
	switch t := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(t))
		for k, x := range t {
			m[k] = jsonClone(x)
		}
		return m
	case []any:
		s := make([]any, len(t))
		for i, x := range t {
			s[i] = jsonClone(x)
		}
		return s
	case []string:
		return append([]string(nil), t...)
	default:
		return v
	}
}

// MarkerFor derives the key's marker. It depends only on the key, so a
// retry after a crash computes the same marker and can find the issue.
func MarkerFor(k Key) Marker {
	id := "qase-sync:" + k.String()
	sum := sha256.Sum256([]byte(id))
	return Marker{ID: id, Label: "qs-" + hex.EncodeToString(sum[:8])}
}

// ParseMarkerID is the inverse of MarkerFor(k).ID.
func ParseMarkerID(id string) (Key, bool) {
	rest, ok := strings.CutPrefix(id, "qase-sync:")
	if !ok {
		return Key{}, false
	}
	k, err := ParseKey(rest)
	return k, err == nil
}
