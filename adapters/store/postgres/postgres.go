// Package postgres implements qsync.Store on PostgreSQL (pgx v5, pgxpool),
// for running several qase-sync replicas against one database.
//
// Replica safety:
//   - migrations run under a transaction-scoped advisory lock, so replicas
//     may start at once;
//   - Lease picks jobs with FOR UPDATE SKIP LOCKED, so a key is leased by
//     one owner at a time across replicas;
//   - AcceptEvents takes a transaction-scoped advisory lock before drawing
//     sequence numbers, so events commit in seq order. Without it a reader
//     could fold event n+1 into a snapshot (LastSeq = n+1) before event n
//     commits, and EventsAfter(n+1) would never return n.
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
	"embed"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/sirupsen/logrus"

	"github.com/qase-sync/qase-sync/adapters/store/internal/storeutil"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// Options configures Open.
type Options struct {
	// DSN is a libpq-style URL or key=value string. Extra parameters such
	// as search_path=schema are passed to the server.
	DSN string
	// Logger receives migration notes; nil discards them.
	Logger *logrus.Entry
}

// Store is a qsync.Store backed by PostgreSQL.
type Store struct {
	pool *pgxpool.Pool
	log  *logrus.Entry
	// turn is the project this instance's last Lease batch ended on
	// (fairness; see Lease).
	turnMu sync.Mutex
	turn   string
}

var _ qsync.Store = (*Store)(nil)

// Advisory lock keys (arbitrary, fixed: "qs" + purpose).
const (
	lockMigrate int64 = 0x7173_0001
	lockAccept  int64 = 0x7173_0002
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Open connects, checks the server and migrates the schema.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.DSN == "" {
		return nil, errors.New("postgres: empty DSN")
	}
	log := opts.Logger
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = logrus.NewEntry(l)
	}
	cfg, err := pgxpool.ParseConfig(opts.DSN)
	if err != nil {
		// pgx errors can echo the DSN, password included: keep them out.
		return nil, errors.New("postgres: invalid DSN")
	}
	log = log.WithFields(logrus.Fields{"store": "postgres", "host": cfg.ConnConfig.Host, "database": cfg.ConnConfig.Database})
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s := &Store{pool: pool, log: log}
	if err := s.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// migrate applies pending migrations in one transaction holding an
// advisory lock: a replica that starts concurrently waits, then finds
// nothing left to do. DDL is transactional, so a failure leaves no trace.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := storeutil.LoadMigrations(migrationFS, "migrations")
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockMigrate); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer PRIMARY KEY,
			name       text        NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT version FROM schema_migrations`)
		if err != nil {
			return err
		}
		done, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return err
		}
		applied := map[int]bool{}
		for _, v := range done {
			applied[int(v)] = true
		}
		for _, m := range ms {
			if applied[m.Version] {
				continue
			}
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
			s.log.WithField("migration", m.Name).Info("applied schema migration")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	return nil
}

// Ping checks the server is reachable.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

// Close closes the pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// CreatedAt implements qsync.Store: when the first migration was applied.
func (s *Store) CreatedAt(ctx context.Context) (time.Time, error) {
	var at time.Time
	if err := s.pool.QueryRow(ctx, `SELECT applied_at FROM schema_migrations ORDER BY version LIMIT 1`).Scan(&at); err != nil {
		return time.Time{}, fmt.Errorf("postgres: created at: %w", err)
	}
	return at.UTC(), nil
}
