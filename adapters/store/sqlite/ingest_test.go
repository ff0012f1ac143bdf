package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/adapters/store/sqlite/internal/capi"
	"github.com/qase-sync/qase-sync/adapters/store/storetest"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// Payloads are stored byte for byte through the ingest connection.
func TestIngestRoundTripsEvents(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "qs.db"))
	ref := qsync.EntityRef{Project: "PRJ", Kind: qsync.KindDefect, ID: 9}
	payload := append([]byte(`{"x":"`), 0, 0xfe, '"', '}')
	now := time.Date(2026, 3, 4, 5, 6, 7, 8000, time.UTC)
	ev := qsync.Event{DedupKey: "k", Name: "defect.updated", Ref: ref, Timestamp: now.Add(-time.Second), ReceivedAt: now,
		ActorID: 3, Patch: qsync.Patch{Attrs: map[string]any{"title": "ünïcode"}}, Payload: payload}
	if _, err := s.AcceptEvents(ctx, []qsync.Inbound{{Event: ev, Routes: []string{"r"}}}, now); err != nil {
		t.Fatal(err)
	}
	got, err := s.EventsAfter(ctx, ref, 0, 0)
	if err != nil || len(got) != 1 {
		t.Fatalf("EventsAfter = %v, %v", got, err)
	}
	if !bytes.Equal(got[0].Payload, payload) || got[0].Patch.Attrs["title"] != "ünïcode" || !got[0].ReceivedAt.Equal(now) || got[0].ActorID != 3 {
		t.Errorf("stored event = %+v, want the accepted one", got[0])
	}
}

// Checkpoints run beside ingest: with automatic checkpoints off on the
// writers, only the checkpointer moves pages from the WAL into the
// database file; Close leaves no WAL content behind.
func TestCheckpointerCopiesWALIntoDatabase(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "qs.db")
	s, err := Open(ctx, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	size := func(p string) int64 {
		fi, err := os.Stat(p)
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	before := size(path)
	big := bytes.Repeat([]byte("p"), 2000)
	for b := range 40 {
		var in []qsync.Inbound
		for i := range 25 {
			id := int64(b*25 + i + 1)
			in = append(in, qsync.Inbound{Event: qsync.Event{DedupKey: fmt.Sprint("k", id), Name: "defect.created",
				Ref: qsync.EntityRef{Project: "P", Kind: qsync.KindDefect, ID: id}, Timestamp: time.Now(), ReceivedAt: time.Now(), Payload: big}, Routes: []string{"r"}})
		}
		if _, err := s.AcceptEvents(ctx, in, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	// 1,000 events of 2 KB: about 2 MB that only a checkpoint puts into
	// the main file.
	deadline := time.Now().Add(10 * time.Second)
	for size(path)-before < 1<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("database file grew %d bytes in 10s; the checkpointer did not run", size(path)-before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := size(path + "-wal"); n != 0 {
		t.Errorf("WAL after Close = %d bytes, want 0 (truncated or removed)", n)
	}
}

// Ingest, the other writes of the same store, and a second store on the
// same file (another process) interleave without errors or lost rows.
func TestIngestBesideOtherWriters(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "qs.db")
	a, b := open(t, path), open(t, path)
	const batches, per = 30, 10
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	ingest := func(s *Store, prefix string, base int64) {
		defer wg.Done()
		for i := range batches {
			var in []qsync.Inbound
			for j := range per {
				id := base + int64(i*per+j)
				in = append(in, qsync.Inbound{Event: qsync.Event{DedupKey: fmt.Sprint(prefix, id), Name: "defect.updated",
					Ref: qsync.EntityRef{Project: "P", Kind: qsync.KindDefect, ID: id}, Timestamp: time.Now(), ReceivedAt: time.Now()}, Routes: []string{"r"}})
			}
			if _, err := s.AcceptEvents(ctx, in, time.Now()); err != nil {
				errs <- err
				return
			}
		}
	}
	wg.Add(3)
	go ingest(a, "a", 1)
	go ingest(b, "b", 100000)
	go func() {
		defer wg.Done()
		for i := range batches {
			k := qsync.Key{Route: "other", EntityRef: qsync.EntityRef{Project: "P", Kind: qsync.KindRun, ID: int64(i + 1)}}
			if err := a.Enqueue(ctx, []qsync.Key{k}, true, time.Now()); err != nil {
				errs <- err
				return
			}
			jobs, err := a.Lease(ctx, "w", 5, time.Now(), time.Minute)
			if err != nil {
				errs <- err
				return
			}
			for _, j := range jobs {
				if j.Key.Route != "other" {
					continue
				}
				if err := a.Complete(ctx, j, qsync.OutcomeApplied, qsync.LedgerEntry{Key: j.Key}, time.Now()); err != nil {
					errs <- err
					return
				}
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent writer: %v", err)
	}
	var n int
	if err := a.r.QueryRowContext(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil || n != 2*batches*per {
		t.Errorf("events = %d, %v; want %d", n, err, 2*batches*per)
	}
	if err := a.r.QueryRowContext(ctx, `SELECT count(*) FROM jobs WHERE route = 'r'`).Scan(&n); err != nil || n != 2*batches*per {
		t.Errorf("ingest jobs = %d, %v; want %d", n, err, 2*batches*per)
	}
}

// unmigrated opens a new database file without the store, for a test to
// write it as an older release did; path is where it lives.
func unmigrated(t *testing.T) (db *sql.DB, path string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "qs.db")
	return sql.OpenDB(&capi.Connector{URI: "file:" + path}), path
}

// A database written before migration 2 keeps its events, their
// duplicates are still recognized, and new events get larger seqs.
func TestMigrationDedupPerEntityKeepsEvents(t *testing.T) {
	ctx := context.Background()
	old, path := unmigrated(t)
	init, err := migrationFS.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		string(init),
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`,
		`INSERT INTO schema_migrations VALUES (1, '0001_init.sql', 0)`,
		`INSERT INTO events (seq, dedup_key, name, project, kind, entity_id, ts, received_at, patch)
			VALUES (3, 'a', 'defect.created', 'P', 'defect', 5, 1, 1, '{}'), (7, 'b', 'defect.updated', 'P', 'defect', 5, 2, 2, '{}')`,
	} {
		if _, err := old.ExecContext(ctx, q); err != nil {
			t.Fatalf("seed: %v", err)
		}
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	s := open(t, path)
	ref := qsync.EntityRef{Project: "P", Kind: qsync.KindDefect, ID: 5}
	ev := func(dk string) qsync.Inbound {
		return qsync.Inbound{Event: qsync.Event{DedupKey: dk, Name: "defect.updated", Ref: ref, Timestamp: time.Now(), ReceivedAt: time.Now()}, Routes: []string{"r"}}
	}
	res, err := s.AcceptEvents(ctx, []qsync.Inbound{ev("a"), ev("c")}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Duplicate || res[0].Seq != 3 {
		t.Errorf("pre-migration key: %+v, want duplicate of seq 3", res[0])
	}
	if res[1].Duplicate || res[1].Seq <= 7 {
		t.Errorf("new event: %+v, want a new seq above 7", res[1])
	}
	got, err := s.EventsAfter(ctx, ref, 0, 0)
	if err != nil || len(got) != 3 || got[0].Seq != 3 || got[1].Seq != 7 || got[2].DedupKey != "c" {
		t.Errorf("EventsAfter = %+v, %v; want seqs 3, 7 and the new one", got, err)
	}
}

// A batch that fails part-way leaves nothing behind, and the ingest
// connection works again once the cause is gone.
func TestIngestFailureRollsBackBatch(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "qs.db"))
	batch := func(keys ...string) []qsync.Inbound {
		var in []qsync.Inbound
		for i, k := range keys {
			in = append(in, qsync.Inbound{Event: qsync.Event{DedupKey: k, Name: "defect.updated",
				Ref: qsync.EntityRef{Project: "P", Kind: qsync.KindDefect, ID: int64(i + 1)}, Timestamp: time.Now(), ReceivedAt: time.Now()}, Routes: []string{"r"}})
		}
		return in
	}
	count := func(table string) int {
		var n int
		if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if _, err := s.AcceptEvents(ctx, batch("a", "b"), time.Now()); err != nil {
		t.Fatal(err)
	}
	// The delivery insert, the batch's last statement, now fails.
	if _, err := s.execLocked(ctx, `ALTER TABLE deliveries RENAME TO deliveries_away`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AcceptEvents(ctx, batch("c", "d"), time.Now()); err == nil {
		t.Fatal("batch accepted without its deliveries table")
	}
	if n := count("events"); n != 2 {
		t.Errorf("events after the failed batch = %d, want 2 (rolled back)", n)
	}
	if _, err := s.execLocked(ctx, `ALTER TABLE deliveries_away RENAME TO deliveries`); err != nil {
		t.Fatal(err)
	}
	res, err := s.AcceptEvents(ctx, batch("c", "d"), time.Now())
	if err != nil || res[0].Duplicate || res[1].Duplicate {
		t.Fatalf("retry = %+v, %v; want both new", res, err)
	}
	if n := count("events"); n != 4 {
		t.Errorf("events = %d, want 4", n)
	}
	if n := count("deliveries"); n != 4 {
		t.Errorf("deliveries = %d, want 4", n)
	}
}

// Writes racing Close end with "closed" errors, never a crash or a race.
func TestCloseDuringWrites(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Options{Path: filepath.Join(t.TempDir(), "qs.db")})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				in := []qsync.Inbound{{Event: qsync.Event{DedupKey: fmt.Sprint(g, "-", i), Name: "defect.updated",
					Ref: qsync.EntityRef{Project: "P", Kind: qsync.KindDefect, ID: int64(i + 1)}, Timestamp: time.Now(), ReceivedAt: time.Now()}, Routes: []string{"r"}}}
				if _, err := s.AcceptEvents(ctx, in, time.Now()); err != nil {
					return // closed
				}
			}
		}()
	}
	time.Sleep(5 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	wg.Wait()
	if _, err := s.AcceptEvents(ctx, []qsync.Inbound{{Event: qsync.Event{DedupKey: "late", Ref: qsync.EntityRef{Project: "P", Kind: qsync.KindDefect, ID: 1}}}}, time.Now()); err == nil {
		t.Error("accept after Close succeeded")
	}
}

// A database written before lease tokens and ledger drift keeps its
// ledger readable (no drift), and a lease taken before the upgrade holds
// no token: no call can write through it, and Release(owner) frees it.
func TestMigrationLeaseTokensAndDriftKeepOldRows(t *testing.T) {
	ctx := context.Background()
	old, path := unmigrated(t)
	seed := []string{`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`}
	for i, name := range []string{"0001_init.sql", "0002_events_dedup_per_entity.sql"} {
		b, err := migrationFS.ReadFile("migrations/" + name)
		if err != nil {
			t.Fatal(err)
		}
		seed = append(seed, string(b), fmt.Sprintf(`INSERT INTO schema_migrations VALUES (%d, '%s', 0)`, i+1, name))
	}
	seed = append(seed,
		`INSERT INTO ledger (at, route, project, kind, entity_id, gen, outcome, ops, detail, issue, request)
			VALUES (1, 'r', 'P', 'defect', 5, 1, 'applied', '["create"]', 'd', 'P-1', '')`,
		`INSERT INTO jobs (route, project, kind, entity_id, gen, first_at, due_at, lease_owner, lease_until)
			VALUES ('r', 'P', 'defect', 5, 2, 0, 0, 'w', 9000000000000000)`)
	for _, q := range seed {
		if _, err := old.ExecContext(ctx, q); err != nil {
			t.Fatalf("seed: %v", err)
		}
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	storetest.UpgradedLeaseAndLedger(t, open(t, path))
}

// execLocked runs a statement on the writer, taking turns with the
// store's own writes.
func (s *Store) execLocked(ctx context.Context, q string) (sql.Result, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.w.ExecContext(ctx, q)
}
