// Package postgres implements qsync.Store on PostgreSQL (pgx v5 through
// database/sql), for running several qase-sync replicas against one
// database. Its queries are the shared program of package sqlstore; this
// package opens the connections, holds the migrations and writes ingest
// batches (pipelined, see ingest.go).
//
// Replica safety:
//   - migrations run under a transaction-scoped advisory lock, so replicas
//     may start at once;
//   - Lease picks jobs with FOR UPDATE SKIP LOCKED, so a key is leased by
//     one owner at a time across replicas;
//   - AcceptEvents locks the entities of its batch (see ingest.go), so the
//     events of one entity commit in seq order while batches of other
//     entities, from any replica, run beside it.
//
// Times are timestamptz (microseconds), returned in UTC. Free-text columns
// (errors, details, reasons) are stripped of NUL bytes and invalid UTF-8,
// which PostgreSQL text cannot hold. JSON columns decode numbers inside
// map[string]any as float64, as encoding/json does.
//
// A limit <= 0 on a listing (EventsAfter, Links, Ledger, DeadLetters)
// means no limit; Lease with limit <= 0 leases nothing. An event's empty
// Payload reads back as nil.
package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/sirupsen/logrus"

	"github.com/qase-sync/qase-sync/adapters/store/internal/sqlstore"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// Options configures Open.
type Options struct {
	// DSN is a libpq-style URL or key=value string. Extra parameters such
	// as search_path=schema are passed to the server; pool_max_conns
	// bounds the connections.
	DSN string
	// Logger receives migration notes; nil discards them.
	Logger *logrus.Entry
}

// Store is a qsync.Store backed by PostgreSQL.
type Store struct {
	*sqlstore.Store
	db  *sql.DB
	log *logrus.Entry
}

var _ qsync.Store = (*Store)(nil)

// lockMigrate is the migrations' advisory lock key (arbitrary, fixed: "qs" + 1).
const lockMigrate int64 = 0x7173_0001

//go:embed migrations/*.sql
var migrationFS embed.FS

// dialect is PostgreSQL's side of the shared program.
var dialect = sqlstore.Dialect{
	Name:       "postgres",
	Time:       func(t time.Time) any { return t },
	Text:       clean,
	ForUpdate:  " FOR UPDATE",
	SkipLocked: " FOR UPDATE SKIP LOCKED",
	IntList:    func(p string) string { return `SELECT json_array_elements_text(` + p + `::json)::bigint` },
	Retryable:  retryable,
}

// retryable: a deadlock or serialization failure aborted the transaction;
// running it again may succeed.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

// clean makes s storable as PostgreSQL text (no NUL, valid UTF-8).
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

// Open connects, checks the server and migrates the schema.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.DSN == "" {
		return nil, errors.New("postgres: empty DSN")
	}
	log := sqlstore.Logger(opts.Logger)
	// pgxpool's parser, for its pool_ parameters (pgx's would send them
	// to the server).
	cfg, err := pgxpool.ParseConfig(opts.DSN)
	if err != nil {
		// pgx errors can echo the DSN, password included: keep them out.
		return nil, errors.New("postgres: invalid DSN")
	}
	log = log.WithFields(logrus.Fields{"store": "postgres", "host": cfg.ConnConfig.Host, "database": cfg.ConnConfig.Database})
	db := stdlib.OpenDB(*cfg.ConnConfig)
	db.SetMaxOpenConns(int(cfg.MaxConns))
	db.SetMaxIdleConns(int(cfg.MaxConns))
	db.SetConnMaxLifetime(cfg.MaxConnLifetime)
	db.SetConnMaxIdleTime(cfg.MaxConnIdleTime)
	s := &Store{db: db, log: log}
	s.Store = sqlstore.New(sqlstore.Config{Dialect: dialect, W: db, R: db, Accept: s.accept})
	if err := s.Ping(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	ms, err := sqlstore.LoadMigrations(migrationFS, "migrations")
	if err == nil {
		err = s.Migrate(ctx, ms, fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d)`, lockMigrate), `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer PRIMARY KEY,
			name       text        NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`,
			func(name string) { log.WithField("migration", name).Info("applied schema migration") })
	}
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the connections.
func (s *Store) Close() error { return s.db.Close() }
