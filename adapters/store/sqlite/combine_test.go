package sqlite

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/adapters/store/internal/sqlstore"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// Writes that queue while another runs share one transaction, each in a
// savepoint: one that fails (its own error, a constraint, a context
// already ended) undoes only itself, the rest commit together, and an
// ingest batch rides along.
func TestCombinedWritesFailAlone(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "q.db")) // synchronous=full, the default
	insert := func(name string) func(*sqlstore.Tx) error {
		return func(tx *sqlstore.Tx) error {
			_, err := tx.Exec(`INSERT INTO leases (name, owner, until) VALUES ($1, 'o', 0)`, name)
			return err
		}
	}
	commits := func() uint64 {
		s.group.mu.Lock()
		defer s.group.mu.Unlock()
		return s.group.committed
	}

	held, hold := make(chan struct{}), make(chan struct{})
	firstDone := make(chan error, 1)
	go func() {
		firstDone <- s.Tx(ctx, func(tx *sqlstore.Tx) error {
			close(held)
			<-hold
			return insert("first")(tx)
		})
	}()
	<-held
	before := commits()

	errBoom := errors.New("boom")
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	ev := qsync.Event{DedupKey: "d1", Name: "defect.created", Ref: qsync.EntityRef{Project: "P", Kind: qsync.KindDefect, ID: 1},
		Timestamp: time.Unix(1700000000, 0), Patch: qsync.Patch{Attrs: map[string]any{"title": "x"}}}
	writes := []struct {
		name string
		run  func() error
	}{
		{"a", func() error { return s.Tx(ctx, insert("a")) }},
		{"boom", func() error {
			return s.Tx(ctx, func(tx *sqlstore.Tx) error {
				if err := insert("b")(tx); err != nil {
					return err
				}
				return errBoom
			})
		}},
		{"duplicate", func() error { return s.Tx(ctx, insert("a")) }},
		{"ingest", func() error {
			_, err := s.AcceptEvents(ctx, []qsync.Inbound{{Event: ev, Routes: []string{"r"}}}, time.Now())
			return err
		}},
		{"cancelled", func() error { return s.Tx(cancelled, insert("x")) }},
		{"c", func() error { return s.Tx(ctx, insert("c")) }},
	}
	done := make([]chan error, len(writes))
	for i, w := range writes {
		done[i] = make(chan error, 1)
		go func() { done[i] <- w.run() }()
		// Queue them in order: the batch runs them in that order.
		for deadline := time.Now().Add(5 * time.Second); s.QueuedWrites() != i+1; {
			if time.Now().After(deadline) {
				t.Fatalf("write %q never queued", w.name)
			}
			time.Sleep(time.Millisecond)
		}
	}
	close(hold)
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	got := map[string]error{}
	for i, w := range writes {
		got[w.name] = <-done[i]
	}
	for _, name := range []string{"a", "ingest", "c"} {
		if got[name] != nil {
			t.Errorf("write %q: %v", name, got[name])
		}
	}
	if !errors.Is(got["boom"], errBoom) {
		t.Errorf("write boom: %v, want its own error", got["boom"])
	}
	if got["duplicate"] == nil {
		t.Error("write duplicate: nil, want a constraint error")
	}
	if !errors.Is(got["cancelled"], context.Canceled) {
		t.Errorf("write cancelled: %v, want context.Canceled", got["cancelled"])
	}

	if names, want := leaseNames(t, s), []string{"a", "c", "first"}; !slices.Equal(names, want) {
		t.Errorf("rows %v, want %v (the failed writes undone, the others kept)", names, want)
	}
	var events int
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM events`).Scan(&events); err != nil || events != 1 {
		t.Errorf("events = %d, %v; want the ingest batch's 1", events, err)
	}
	if n := commits() - before; n != 2 {
		t.Errorf("%d commits, want 2: the held write's, then one for all six queued behind it", n)
	}
}

// leaseNames lists the leases table, the rows these tests write.
func leaseNames(t *testing.T, s *Store) []string {
	t.Helper()
	rows, err := s.r.QueryContext(context.Background(), `SELECT name FROM leases ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	return names
}

// A write that panics inside a combined transaction panics in the
// goroutine that ran it, rolls the transaction back and leaves the store
// usable: the lock, the lead and the connection are released.
func TestCombinedWritePanicLeavesTheStoreUsable(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "q.db")) // synchronous=full, the default
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("recovered %v, want the write's panic", p)
			}
		}()
		_ = s.Tx(ctx, func(tx *sqlstore.Tx) error {
			if _, err := tx.Exec(`INSERT INTO leases (name, owner, until) VALUES ('p', 'o', 0)`); err != nil {
				return err
			}
			panic("boom")
		})
	}()
	done := make(chan error, 1)
	go func() {
		done <- s.Tx(ctx, func(tx *sqlstore.Tx) error {
			_, err := tx.Exec(`INSERT INTO leases (name, owner, until) VALUES ('q', 'o', 0)`)
			return err
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the next write never ran: the store stayed locked")
	}
	if names := leaseNames(t, s); !slices.Equal(names, []string{"q"}) {
		t.Errorf("rows %v, want [q]: the panicked write rolled back", names)
	}
}
