// Package sqlite implements qsync.Store on a SQLite file (modernc.org/sqlite,
// pure Go). It is the default store: one process, no server. Its queries
// are the shared program of package sqlstore; this package opens the
// connections, holds the migrations and writes ingest batches.
//
// Every connection is driven through SQLite's C API with statements
// prepared once (package capi); the shared program reaches them through
// database/sql (capi.Connector). SQLite admits one writer at a time. All
// writes of this process go through one connection under one mutex, so
// its goroutines never race each other into SQLITE_BUSY, and that
// connection's page cache stays warm: SQLite empties a connection's whole
// cache when another connection has changed the database, and a second
// writer for ingest emptied it at every batch. Ingest batches drive the
// writer's C API directly (the hot path; sql.Conn.Raw). Reads use a
// separate pool of query-only connections, which WAL mode lets run beside
// the writer. WAL checkpoints run on their own
// connection and goroutine (checkpointer), never inside a commit. Another
// process on the same file is handled by busy_timeout and BEGIN IMMEDIATE.
//
// Times are stored as unix microseconds and returned in UTC. JSON columns
// (event patches, snapshot state, applied baselines) decode numbers inside
// map[string]any as float64, as encoding/json does.
//
// A limit <= 0 on a listing (EventsAfter, Links, Ledger, DeadLetters)
// means no limit; Lease with limit <= 0 leases nothing. An event's empty
// Payload reads back as nil.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/qase-sync/qase-sync/adapters/store/internal/sqlstore"
	"github.com/qase-sync/qase-sync/adapters/store/sqlite/internal/capi"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// Options configures Open.
type Options struct {
	// Path is the database file; it is created if missing.
	Path string
	// Synchronous is "full" (default: a commit survives power loss) or
	// "normal" (faster; in WAL mode a power loss may drop the last commits
	// but never corrupts the file).
	Synchronous string
	// Logger receives migration notes; nil discards them.
	Logger *logrus.Entry
}

// Store is a qsync.Store backed by SQLite.
type Store struct {
	*sqlstore.Store
	// wmu serializes the writes of this process on w.
	wmu      sync.Mutex
	w        *sql.DB // exactly one connection: the writer
	ckpt     *checkpointer
	group    *groupSync // nil with synchronous=normal
	path     string
	syncMode string
	r        *sql.DB // read pool (query_only)
	log      *logrus.Entry
}

// dialect is SQLite's side of the shared program: times are unix
// microseconds, one writer at a time needs no row locks, integer lists
// come as JSON arrays.
var dialect = sqlstore.Dialect{
	Name:          "sqlite",
	QuestionMarks: true,
	Time:          func(t time.Time) any { return t.UnixMicro() },
	IntList:       func(p string) string { return `SELECT value FROM json_each(` + p + `)` },
	TempTrees:     true,
	SharedReads:   true,
}

var _ qsync.Store = (*Store)(nil)

const busyTimeoutMS = 10000

//go:embed migrations/*.sql
var migrationFS embed.FS

// Open opens (creating if needed) the database at opts.Path and migrates it.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Path == "" {
		return nil, errors.New("sqlite: empty path")
	}
	syncMode := strings.ToLower(opts.Synchronous)
	switch syncMode {
	case "":
		syncMode = "full"
	case "full", "normal":
	default:
		return nil, fmt.Errorf("sqlite: synchronous %q: want full or normal", opts.Synchronous)
	}
	log := sqlstore.Logger(opts.Logger)
	log = log.WithField("store", "sqlite")

	base := "file:" + (&url.URL{Path: opts.Path}).EscapedPath()
	// temp_store=MEMORY: statement sub-journals and sorts otherwise open a
	// temp file per transaction (measured: a large share of ingest CPU).
	common := fmt.Sprintf("PRAGMA busy_timeout = %d; PRAGMA foreign_keys = 1; PRAGMA temp_store = MEMORY; ", busyTimeoutMS)
	// Both pools run on capi connections, which keep their statements
	// prepared (modernc's database/sql driver parses each one again on
	// every execution: measured, ~40% of a job's store CPU).
	// With "full", the writers commit with synchronous=normal and wait
	// for a shared fsync of the WAL outside the write lock (groupSync);
	// "normal" leaves the WAL to the checkpoints' fsyncs.
	w := sql.OpenDB(&capi.Connector{URI: base, Immediate: true, Setup: common +
		"PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -2000; PRAGMA wal_autocheckpoint = 0"})
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	r := sql.OpenDB(&capi.Connector{URI: base, Setup: common + "PRAGMA query_only = 1"})
	n := max(4, runtime.NumCPU())
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	s := &Store{w: w, r: r, log: log, syncMode: syncMode, path: opts.Path}
	if syncMode == "full" {
		s.group = newGroupSync(opts.Path + "-wal")
	}
	s.Store = sqlstore.New(sqlstore.Config{
		Dialect: dialect, W: w, R: r, WriteMu: &s.wmu,
		Committed: s.committed, Combine: combineWrites,
		Accept: func(ctx context.Context, in []qsync.Inbound, patches [][]byte, now time.Time) ([]qsync.AcceptResult, error) {
			return s.writeBatch(ctx, in, patches, now.UnixMicro())
		},
	})
	if err := s.init(ctx, base); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// combineWrites is how many queued writes (job steps, ingest batches)
// share one transaction at most: the writers wait for one another
// anyway, and with several in one commit the WAL gets each page they
// share once.
var combineWrites = 32 // a variable for side-by-side benchmarks

func (s *Store) init(ctx context.Context, base string) error {
	if err := s.w.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: open: %w", err)
	}
	// SQLite keeps the old journal mode where WAL is impossible (a file
	// system without shared memory): the writers' durability (groupSync)
	// and the readers beside the writer both rest on WAL.
	var mode string
	if err := s.w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("sqlite: open: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("sqlite: %s: journal mode is %q, not WAL: the file system must support SQLite's WAL (shared memory and locks; not a network file system)", s.path, mode)
	}
	if err := s.migrate(ctx); err != nil {
		return err
	}
	cc, err := capi.Open(base, fmt.Sprintf(`PRAGMA busy_timeout = %d; PRAGMA synchronous = %s`, busyTimeoutMS, s.syncMode))
	if err != nil {
		return fmt.Errorf("sqlite: open checkpoint connection: %w", err)
	}
	s.ckpt = startCheckpointer(cc, func(err error) {
		if err != nil {
			s.log.WithError(err).Warn("WAL checkpoint failed; the WAL file grows until one succeeds")
			return
		}
		s.log.Info("WAL checkpoints succeed again")
	})
	return nil
}

// committed runs under wmu after every commit of this process: it wakes
// the checkpointer and, with synchronous=full, returns the wait for the
// commit's group fsync.
func (s *Store) committed() func() error {
	if s.ckpt != nil { // nil while migrating
		s.ckpt.wake()
	}
	if s.group == nil {
		return nil
	}
	n := s.group.commit()
	return func() error { return s.group.wait(n) }
}

// Ping checks the connections, and fails for good once an fsync of the
// WAL has failed (readiness then reports the store unavailable).
func (s *Store) Ping(ctx context.Context) error {
	if s.group != nil {
		if err := s.group.failed(); err != nil {
			return err
		}
	}
	return s.Store.Ping(ctx)
}

// migrate applies the embedded migrations not yet recorded in
// schema_migrations, in one IMMEDIATE transaction (which also keeps two
// processes opening a fresh file from migrating twice).
func (s *Store) migrate(ctx context.Context) error {
	ms, err := sqlstore.LoadMigrations(migrationFS, "migrations")
	if err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	return s.Migrate(ctx, ms, "", `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT    NOT NULL,
		applied_at INTEGER NOT NULL)`,
		func(name string) { s.log.WithField("migration", name).Info("applied schema migration") })
}

// Close releases the connections.
func (s *Store) Close() error {
	var errs []error
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	// Detach the checkpointer under the write lock: a late writer then
	// wakes none that is being closed. Writes after Close fail on the
	// closed writer pool (sql.ErrConnDone).
	s.wmu.Lock()
	ckpt := s.ckpt
	s.ckpt = nil
	s.wmu.Unlock()
	if ckpt != nil {
		errs = append(errs, ckpt.close())
	}
	errs = append(errs, s.w.Close())
	if s.group != nil {
		errs = append(errs, s.group.close())
	}
	return errors.Join(errs...)
}
