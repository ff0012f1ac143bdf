package sqlstore

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// Migration is one numbered schema file (NNNN_name.sql).
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// LoadMigrations reads dir of fsys, in version order.
func LoadMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	ents, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, e := range ents {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %q: want NNNN_name.sql", e.Name())
		}
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: e.Name(), SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	return ms, nil
}

// FillEntry completes a ledger entry from JobStore.Complete's arguments.
func FillEntry(e qsync.LedgerEntry, job qsync.Job, outcome qsync.Outcome, now time.Time) qsync.LedgerEntry {
	if e.At.IsZero() {
		e.At = now
	}
	if e.Key == (qsync.Key{}) {
		e.Key = job.Key
	}
	if e.Gen == 0 {
		e.Gen = job.Gen
	}
	if e.Outcome == "" {
		e.Outcome = outcome
	}
	return e
}

// LeasePrefix starts the fencing tokens of one Lease call: owner, "#", and
// a random nonce; each store appends "." and a number unique within the
// call, so every leased job gets a token never issued before.
func LeasePrefix(owner string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return owner + "#" + hex.EncodeToString(b) + "."
}

// MarshalDrift encodes a ledger entry's drift classes ("[]" for none, the
// column default of rows written before drift was recorded).
func MarshalDrift(d []string) ([]byte, error) {
	if len(d) == 0 {
		return []byte("[]"), nil
	}
	return json.Marshal(d)
}

// UnmarshalDrift decodes drift classes; none reads back as nil.
func UnmarshalDrift(b []byte) ([]string, error) {
	var d []string
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, err
	}
	if len(d) == 0 {
		return nil, nil
	}
	return d, nil
}

// limitClause is " LIMIT n" with n written into the statement (n <= 0:
// no limit). A bound LIMIT is read by SQLite's planner, which marks the
// prepared statement to be compiled again at every new binding: measured,
// 8% of all CPU at 1,000 events/s went to re-preparing the two hot
// statements that bound theirs. For limits the code fixes only, never a
// caller's arbitrary one: each distinct text is a statement prepared and
// kept per connection.
func limitClause(n int) string {
	if n <= 0 {
		return ""
	}
	return " LIMIT " + strconv.Itoa(n)
}
