package postgres

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qase-sync/qase-sync/internal/pgtest"

	"github.com/qase-sync/qase-sync/adapters/store/internal/sqlstore"
	"github.com/qase-sync/qase-sync/adapters/store/storetest"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// testDB creates a fresh database for this test and drops it afterwards.
func testDB(t testing.TB) string { return pgtest.Database(t, "qs_test") }

// schemaDSN creates an empty schema in the database and returns a DSN
// whose search_path points at it: a clean store without a new database.
func schemaDSN(t testing.TB, dsn string, n int64) string {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	schema := fmt.Sprintf("s%d", n)
	if _, err := c.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

func open(t testing.TB, dsn string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Options{DSN: dsn})
	return storetest.Opened(t, s, err)
}

func TestConformance(t *testing.T) {
	dsn := testDB(t)
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) qsync.Store {
		return open(t, schemaDSN(t, dsn, n.Add(1)))
	})
}

// Two Store instances (two replicas) lease from one database.
func TestLeaseExclusiveAcrossReplicas(t *testing.T) {
	dsn := testDB(t)
	storetest.LeaseExclusive(t, open(t, dsn), open(t, dsn))
}

// Replicas race for one named lease (the reconcile tick): one wins.
func TestTryLeaseExclusiveAcrossReplicas(t *testing.T) {
	dsn := testDB(t)
	storetest.TryLeaseExclusive(t, open(t, dsn), open(t, dsn), open(t, dsn))
}

// Replicas starting at once must not trip over each other's migrations.
func TestConcurrentOpenMigratesOnce(t *testing.T) {
	dsn := testDB(t)
	const replicas = 4
	stores := make([]*Store, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = Open(context.Background(), Options{DSN: dsn})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: Open: %v", i, err)
		}
		defer stores[i].Close()
	}
	ctx := context.Background()
	var rows int
	if err := stores[0].db.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	ms, _ := sqlstore.LoadMigrations(migrationFS, "migrations")
	if rows != len(ms) {
		t.Errorf("schema_migrations has %d rows, want %d", rows, len(ms))
	}
	if err := stores[1].Enqueue(ctx, []qsync.Key{{Route: "r", EntityRef: qsync.EntityRef{Project: "P", Kind: qsync.KindRun, ID: 1}}}, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	if n, err := stores[3].QueueDepth(ctx); err != nil || n != 1 {
		t.Errorf("QueueDepth via another replica = %d, %v; want 1", n, err)
	}
}

func TestOpenErrorsHidePassword(t *testing.T) {
	ctx := context.Background()
	for _, dsn := range []string{
		"postgres://postgres:s3cr3t-pw@127.0.0.1:1/x?sslmode=disable&connect_timeout=2",
		"postgres://postgres:s3cr3t-pw@127.0.0.1:notaport/x",
	} {
		_, err := Open(ctx, Options{DSN: dsn})
		if err == nil {
			t.Fatalf("Open(%s) succeeded", dsn)
		}
		if strings.Contains(err.Error(), "s3cr3t-pw") {
			t.Errorf("error leaks the password: %v", err)
		}
	}
	if _, err := Open(ctx, Options{}); err == nil {
		t.Error("Open without DSN succeeded")
	}
}

// A database written before lease tokens and ledger drift keeps its
// ledger readable (no drift), and a lease taken before the upgrade holds
// no token: no call can write through it, and Release(owner) frees it.
func TestMigrationLeaseTokensAndDriftKeepOldRows(t *testing.T) {
	ctx := context.Background()
	dsn := testDB(t)
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	init, err := migrationFS.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		string(init),
		`CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
		`INSERT INTO schema_migrations (version, name) VALUES (1, '0001_init.sql')`,
		`INSERT INTO ledger (at, route, project, kind, entity_id, gen, outcome, ops, detail, issue, request)
			VALUES (now(), 'r', 'P', 'defect', 5, 1, 'applied', '["create"]', 'd', 'P-1', '')`,
		`INSERT INTO jobs (route, project, kind, entity_id, gen, first_at, due_at, lease_owner, lease_until)
			VALUES ('r', 'P', 'defect', 5, 2, now(), now() - interval '1 hour', 'w', now() + interval '1 day')`,
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("seed: %v", err)
		}
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}

	storetest.UpgradedLeaseAndLedger(t, open(t, dsn))
}

// BenchmarkLease: four jobs out of a 10,000-job backlog over 20 projects.
func BenchmarkLease(b *testing.B) {
	storetest.BenchLease(b, open(b, testDB(b)), 20, 500, 4)
}

// Replicas ingest at once, without a global lock: no lost or doubled
// event, and each entity's events appear in seq order.
func TestAcceptAcrossReplicas(t *testing.T) {
	dsn := testDB(t)
	storetest.AcceptAcrossReplicas(t, open(t, dsn), open(t, dsn), open(t, dsn))
}

// BenchmarkAcceptReplicas: two replicas, four senders each, batches of 16
// new defects; ingest throughput across replicas.
func BenchmarkAcceptReplicas(b *testing.B) {
	dsn := testDB(b)
	stores := []*Store{open(b, dsn), open(b, dsn)}
	var n atomic.Int64
	now := time.Now()
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		s := stores[n.Add(1)%2]
		for pb.Next() {
			ins := make([]qsync.Inbound, 16)
			for i := range ins {
				id := n.Add(1)
				ins[i] = qsync.Inbound{Event: qsync.Event{DedupKey: fmt.Sprint("bench-", id), Name: "defect.created",
					Ref: qsync.EntityRef{Project: "BENCH", Kind: qsync.KindDefect, ID: id}, Timestamp: now, ReceivedAt: now,
					Patch: qsync.Patch{Attrs: map[string]any{"title": "t"}}}, Routes: []string{"jira"}}
			}
			if _, err := s.AcceptEvents(context.Background(), ins, now); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*16)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkJob: the store's share of one update job, its bookkeeping as
// one Finish or split as before Finish (see storetest.BenchJob).
func BenchmarkJob(b *testing.B) {
	dsn := testDB(b)
	var n atomic.Int64
	for _, mode := range []string{"finish", "split"} {
		b.Run(mode, func(b *testing.B) {
			storetest.BenchJob(b, open(b, schemaDSN(b, dsn, n.Add(1))), mode == "split")
		})
	}
}
