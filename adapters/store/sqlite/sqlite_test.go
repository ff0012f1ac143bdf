package sqlite

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/adapters/store/internal/sqlstore"
	"github.com/qase-sync/qase-sync/adapters/store/storetest"
	qsync "github.com/qase-sync/qase-sync/sync"
)

func open(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Options{Path: path})
	return storetest.Opened(t, s, err)
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) qsync.Store {
		return open(t, filepath.Join(t.TempDir(), "qs.db"))
	})
}

// Two Store instances over one file behave like two processes: busy_timeout
// and IMMEDIATE transactions must keep leasing exclusive.
func TestLeaseExclusiveAcrossInstances(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qs.db")
	storetest.LeaseExclusive(t, open(t, path), open(t, path))
}

// Processes on one file race for one named lease: one wins.
func TestTryLeaseExclusiveAcrossInstances(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qs.db")
	storetest.TryLeaseExclusive(t, open(t, path), open(t, path))
}

func TestReopenKeepsDataAndSkipsMigrations(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dir with space?#", "qs.db")
	if err := mkdirAll(filepath.Dir(path)); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, Options{Path: path, Synchronous: "NORMAL"})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	k := qsync.Key{Route: "r", EntityRef: qsync.EntityRef{Project: "P", Kind: qsync.KindRun, ID: 1}}
	if err := s.Enqueue(ctx, []qsync.Key{k}, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := open(t, path)
	if n, err := s2.QueueDepth(ctx); err != nil || n != 1 {
		t.Fatalf("QueueDepth after reopen = %d, %v; want 1", n, err)
	}
	var versions, mode string
	if err := s2.r.QueryRowContext(ctx, `SELECT group_concat(version) FROM schema_migrations`).Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if want := migrationVersions(t); versions != want {
		t.Errorf("schema_migrations = %q, want one row per migration", versions)
	}
	if err := s2.r.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
	if _, err := s2.r.ExecContext(ctx, `DELETE FROM jobs`); err == nil {
		t.Error("read pool accepted a write; want query_only")
	}
}

func TestOpenOptions(t *testing.T) {
	ctx := context.Background()
	if _, err := Open(ctx, Options{}); err == nil {
		t.Error("Open without a path succeeded")
	}
	if _, err := Open(ctx, Options{Path: filepath.Join(t.TempDir(), "x.db"), Synchronous: "off"}); err == nil {
		t.Error("Open with synchronous=off succeeded")
	}
	if _, err := Open(ctx, Options{Path: filepath.Join(t.TempDir(), "missing", "dir", "x.db")}); err == nil {
		t.Error("Open in a missing directory succeeded")
	}
}

// BenchmarkAcceptEvents measures the inbox write path. With
// synchronous=full a batch of one is bound by the fsync of its commit;
// "normal" shows the CPU cost. Keys are content-derived (SHA-256 hex, as
// the webhook decoder makes them), each event a new defect.
func BenchmarkAcceptEvents(b *testing.B) {
	for _, bc := range []struct {
		sync string
		size int
	}{{"full", 1}, {"full", 64}, {"normal", 1}, {"normal", 64}} {
		b.Run(fmt.Sprintf("%s/batch%d", bc.sync, bc.size), func(b *testing.B) {
			size := bc.size
			s, err := Open(context.Background(), Options{Path: filepath.Join(b.TempDir(), "bench.db"), Synchronous: bc.sync})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			now := time.Now()
			payload := []byte(`{"event_name":"defect.created","timestamp":1700000000,"project_code":"BENCH","team_member_id":1,"payload":{"id":12345,"title":"Defect 12345","severity":"major","actual_result":"it broke","attachments":[]}}`)
			n := 0
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				ins := make([]qsync.Inbound, size)
				for i := range ins {
					n++
					h := sha256.Sum256([]byte(fmt.Sprint("bench-", n)))
					ins[i] = qsync.Inbound{
						Event: qsync.Event{
							DedupKey: hex.EncodeToString(h[:]), Name: "defect.created",
							Ref:       qsync.EntityRef{Project: "BENCH", Kind: qsync.KindDefect, ID: int64(n)},
							Timestamp: now, ReceivedAt: now,
							Patch:   qsync.Patch{Attrs: map[string]any{"title": "Defect 12345", "severity": "major", "actual_result": "it broke"}},
							Payload: payload,
						},
						Routes: []string{"jira"},
					}
				}
				if _, err := s.AcceptEvents(ctx, ins, now); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

func mkdirAll(dir string) error { return os.MkdirAll(dir, 0o755) }

// BenchmarkLease: four jobs out of a 10,000-job backlog over 20 projects.
func BenchmarkLease(b *testing.B) {
	storetest.BenchLease(b, open(b, filepath.Join(b.TempDir(), "qs.db")), 20, 500, 4)
}

// migrationVersions lists the embedded migrations' versions as
// group_concat prints them.
func migrationVersions(t *testing.T) string {
	t.Helper()
	ms, err := sqlstore.LoadMigrations(migrationFS, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	vs := make([]string, len(ms))
	for i, m := range ms {
		vs[i] = strconv.Itoa(m.Version)
	}
	return strings.Join(vs, ",")
}

// Processes on one file ingest at once: no lost or doubled event, and
// each entity's events appear in seq order.
func TestAcceptAcrossInstances(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qs.db")
	storetest.AcceptAcrossReplicas(t, open(t, path), open(t, path))
}

// BenchmarkJob: the store's share of one update job, its bookkeeping as
// one Finish or split as before Finish (see storetest.BenchJob).
func BenchmarkJob(b *testing.B) {
	for _, sync := range []string{"normal", "full"} {
		for _, mode := range []string{"finish", "split"} {
			b.Run(sync+"/"+mode, func(b *testing.B) {
				s, err := Open(context.Background(), Options{Path: filepath.Join(b.TempDir(), "qs.db"), Synchronous: sync})
				storetest.BenchJob(b, storetest.Opened(b, s, err), mode == "split")
			})
		}
	}
}
