package sync

import (
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
)

// Stamp orders observations: Qase's event time first, arrival order (store
// sequence) second. Qase gives second precision, so same-second events are
// ordered by arrival.
type Stamp struct {
	At  int64 `json:"at"`  // unix nanoseconds
	Seq int64 `json:"seq"` // store sequence; API reads use 0
}

// After reports whether s is newer than o.
func (s Stamp) After(o Stamp) bool {
	if s.At != o.At {
		return s.At > o.At
	}
	return s.Seq > o.Seq
}

// Attr is one attribute value with the stamp of the observation that set it.
type Attr struct {
	V     any   `json:"v"`
	Stamp Stamp `json:"s"`
}

// State is the folded history of one entity: a last-writer-wins map per
// attribute plus a set of comments. Folding is commutative and idempotent,
// so duplicate and reordered deliveries converge to the same state.
type State struct {
	Attrs     map[string]Attr `json:"attrs,omitempty"`
	Comments  []Comment       `json:"comments,omitempty"`
	Deleted   bool            `json:"deleted,omitempty"`
	LastEvent string          `json:"last_event,omitempty"`
	LastStamp Stamp           `json:"last_stamp"`
	Events    map[string]int  `json:"events,omitempty"`
	// Read: an API read of the entity was folded in (see Entity.Complete).
	Read bool `json:"read,omitempty"`
	// Seen holds the dedup keys of folded events, so a re-fold (two workers
	// racing on one entity) never double-counts.
	Seen map[string]bool `json:"seen,omitempty"`
}

// Fold merges one event into the state.
func (s *State) Fold(ev Event) {
	if s.Seen[ev.DedupKey] {
		return
	}
	if s.Seen == nil {
		s.Seen = map[string]bool{}
	}
	s.Seen[ev.DedupKey] = true
	if IsTrackerEvent(ev.Name) {
		// A tracker delivery says the issue changed, nothing about the
		// entity: it must not become the entity's last event.
		return
	}
	st := Stamp{At: ev.Timestamp.UnixNano(), Seq: ev.Seq}
	s.set(ev.Patch.Attrs, st)
	if c := ev.Patch.Comment; c != nil {
		s.addComment(*c)
	}
	if ev.Patch.Deleted {
		s.Deleted = true // Qase never reuses ids: deletion is final
	}
	if s.Events == nil {
		s.Events = map[string]int{}
	}
	s.Events[ev.Name]++
	if st.After(s.LastStamp) {
		s.LastStamp, s.LastEvent = st, ev.Name
	}
}

// Observe merges a read of the entity from the Qase API taken at time at.
// The read is the truth at that moment, so it beats every event older than
// it. found=false means the API answered "not found": the entity is gone.
func (s *State) Observe(attrs map[string]any, found bool, at time.Time) {
	if !found {
		s.Deleted = true
		return
	}
	s.Read = true
	st := Stamp{At: at.UnixNano(), Seq: 1<<62 - 1}
	// A read lists a group's members completely: members it does not name
	// are gone (e.g. a reviewer removed while a webhook was lost).
	groups := map[string]bool{}
	for k := range attrs {
		if g, _, ok := strings.Cut(k, "/"); ok {
			groups[g] = true
		}
	}
	for k, cur := range s.Attrs {
		g, _, ok := strings.Cut(k, "/")
		if _, named := attrs[k]; ok && groups[g] && !named && st.After(cur.Stamp) {
			s.Attrs[k] = Attr{V: nil, Stamp: st}
		}
	}
	s.set(attrs, st)
}

func (s *State) set(attrs map[string]any, st Stamp) {
	if len(attrs) == 0 {
		return
	}
	if s.Attrs == nil {
		s.Attrs = make(map[string]Attr, len(attrs))
	}
	for k, v := range attrs {
		if cur, ok := s.Attrs[k]; ok && !st.After(cur.Stamp) {
			continue
		}
		s.Attrs[k] = Attr{V: jsonClone(v), Stamp: st}
	}
}

func (s *State) addComment(c Comment) {
	for _, x := range s.Comments {
		if x.ID == c.ID {
			return
		}
	}
	s.Comments = append(s.Comments, c)
	sort.SliceStable(s.Comments, func(i, j int) bool { return s.Comments[i].At.Before(s.Comments[j].At) })
}

// Entity flattens the state into what the mapping sees.
func (s State) Entity(ref EntityRef) Entity {
	e := Entity{Ref: ref, Attrs: make(map[string]any, len(s.Attrs)+2), Deleted: s.Deleted, LastEvent: s.LastEvent, Complete: s.Read}
	for _, k := range slices.Sorted(maps.Keys(s.Attrs)) {
		v := jsonClone(s.Attrs[k].V)
		// "group/member" attributes (e.g. reviewers/jane@x.io) fold per
		// member and surface as a nested map; nil removes the member.
		group, member, nested := strings.Cut(k, "/")
		if !nested {
			e.Attrs[k] = v
			continue
		}
		m, _ := e.Attrs[group].(map[string]any)
		if m == nil {
			m = map[string]any{}
			e.Attrs[group] = m
		}
		if v != nil {
			m[member] = v
		}
	}
	e.Attrs["id"] = ref.ID
	e.Attrs["project"] = ref.Project
	e.Comments = append([]Comment(nil), s.Comments...)
	if len(s.Events) > 0 {
		e.Events = make(map[string]int, len(s.Events))
		for k, v := range s.Events {
			e.Events[k] = v
		}
	}
	return e
}
