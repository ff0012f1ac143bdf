package main

import (
	"slices"
	"sort"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// Webhook coverage. Qase disables a webhook after two days of failed
// deliveries and offers no API to see that; a project whose webhook is
// missing or disabled looks like a quiet one. What the service can see: a
// reconcile pass's verifying sync that repaired drift of these classes
// found a change in Qase that no webhook brought (had one arrived, its own
// sync would have applied the change already). Each such key counts for
// its project.
var webhookGapClasses = []string{qsync.DriftMissing, qsync.DriftFields, qsync.DriftStatus}

// webhookSuspect is one project whose changes reached the service only
// through the reconciler, in one pass (GET /admin/status).
type webhookSuspect struct {
	Project string `json:"project"`
	// MissedChanges counts the keys whose verify repaired a change of
	// class missing, fields or status.
	MissedChanges int       `json:"missed_changes"`
	PassStarted   time.Time `json:"pass_started,omitzero"` // the pass of this process the repairs belong to
	LastDelivery  time.Time `json:"last_delivery,omitzero"`
	Note          string    `json:"note"`
}

const webhookSuspectNote = "changes reached qase-sync only through the reconciler: webhook missing or disabled?"

// isWebhookGap reports whether drift includes a change no webhook brought.
func isWebhookGap(drift []string) bool {
	for _, c := range drift {
		if slices.Contains(webhookGapClasses, c) {
			return true
		}
	}
	return false
}

// gap records a key's repaired change for the current pass; first is true
// for the project's first key in this pass (log it once).
func (o *opsState) gap(k qsync.Key) (first bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.gaps == nil {
		o.gaps = map[string]map[qsync.Key]bool{}
	}
	keys := o.gaps[k.Project]
	if keys == nil {
		keys = map[qsync.Key]bool{}
		o.gaps[k.Project] = keys
	}
	keys[k] = true
	return len(keys) == 1
}

// webhookSuspects lists the projects flagged by the current pass (so far)
// and by the previous one, the current first; lastDelivery fills in each
// project's newest delivery.
func (o *opsState) webhookSuspects(lastDelivery map[string]time.Time) []webhookSuspect {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []webhookSuspect
	add := func(gaps map[string]map[qsync.Key]bool, started time.Time) {
		var ps []string
		for p := range gaps {
			ps = append(ps, p)
		}
		sort.Strings(ps)
		for _, p := range ps {
			out = append(out, webhookSuspect{Project: p, MissedChanges: len(gaps[p]), PassStarted: started,
				LastDelivery: lastDelivery[p], Note: webhookSuspectNote})
		}
	}
	var started time.Time
	if o.last != nil {
		started = o.last.At
	}
	add(o.gaps, started)
	add(o.prevGaps, o.prevStarted)
	return out
}
