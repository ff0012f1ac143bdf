// Package sqlstore is the one program behind the SQLite and PostgreSQL
// stores: every query and transaction of qsync.Store, written once over
// database/sql, with a Dialect for the few places the two databases
// differ (placeholders, time columns, row locks, integer lists, which
// failures to run again) and the ingest batch, which each backend writes
// its own fastest way (Config.Accept).
//
// Adding a query or a table: write the SQL once here with $n placeholders
// (Rebind turns them into SQLite's ?n), pass times through Dialect.Time
// and scan them with At, pass free text through Dialect.Text; put the
// table's CREATE in a new migration file in both backends' migrations/
// directories (SQLite: INTEGER microseconds for times; PostgreSQL:
// timestamptz). Add a Dialect field only where the SQL itself must differ.
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// Dialect is what differs between the databases.
type Dialect struct {
	// Name prefixes errors ("sqlite", "postgres").
	Name string
	// QuestionMarks: placeholders are ?n, not $n.
	QuestionMarks bool
	// Time turns a time into a bind argument.
	Time func(time.Time) any
	// Text makes free text storable (PostgreSQL text holds no NUL).
	Text func(string) string
	// ForUpdate locks the rows a SELECT in a write transaction reads, and
	// SkipLocked also passes over rows locked by others ("" for a database
	// with one writer at a time).
	ForUpdate, SkipLocked string
	// IntList is a subquery yielding the integers of the JSON array bound
	// to param (e.g. "$3").
	IntList func(param string) string
	// Retryable tells a failed transaction that may succeed when run
	// again (a deadlock, a serialization failure); nil: none.
	Retryable func(error) bool
	// TempTrees: the database builds a temporary b-tree, with a page
	// cache of its own, for every execution of an ORDER BY with a LIMIT
	// and of a RETURNING (SQLite; measured, a quarter of a job's store
	// CPU, most of it mapping and unmapping that cache's memory). The hot
	// queries then sort without LIMIT and stop reading, and read a row
	// back after changing it.
	TempTrees bool
	// SharedReads: a key's reads share one read transaction (ReadKey).
	// SQLite takes the WAL's read lock, and empties the connection's page
	// cache if the database changed, per transaction.
	SharedReads bool
}

// AcceptFunc writes an ingest batch in one transaction (see
// qsync.InboxStore.AcceptEvents); patches[i] is in[i]'s patch as JSON.
type AcceptFunc func(ctx context.Context, in []qsync.Inbound, patches [][]byte, now time.Time) ([]qsync.AcceptResult, error)

// Config assembles a Store.
type Config struct {
	Dialect Dialect
	// W runs writes, R reads (R may be W).
	W, R *sql.DB
	// WriteMu, if set, is held around every write (SQLite: the process's
	// writers take turns instead of racing into SQLITE_BUSY).
	WriteMu *sync.Mutex
	// Committed, if set, runs under WriteMu right after every committed
	// write; the function it returns, if not nil, runs once WriteMu is
	// released, and the write is done when it returns nil (SQLite: the
	// group fsync of the WAL).
	Committed func() (durable func() error)
	// Combine: writes that queue for WriteMu run together, up to Combine
	// of them (default 1) in one transaction, each in a savepoint of its
	// own (SQLite: with one writer at a time, a commit's cost, its WAL
	// frames and its turn at the lock, is mostly per transaction).
	Combine int
	Accept  AcceptFunc
}

// Store implements qsync.Store but Close.
type Store struct {
	d         Dialect
	w, r      *sql.DB
	wmu       *sync.Mutex
	committed func() func() error
	accept    AcceptFunc
	rebind    sync.Map // query -> query with the dialect's placeholders

	// Writes taking turns (Config.WriteMu): queue holds the writes
	// waiting; the holder of lead runs the next batch of them.
	combine int
	qmu     sync.Mutex
	queue   []*writeReq
	lead    chan struct{}

	// turn is the project this instance's last Lease batch ended on
	// (fairness; see Lease).
	turnMu sync.Mutex
	turn   string
}

// New returns a Store over the configured databases.
func New(c Config) *Store {
	if c.Dialect.Text == nil {
		c.Dialect.Text = func(s string) string { return s }
	}
	s := &Store{d: c.Dialect, w: c.W, r: c.R, wmu: c.WriteMu, committed: c.Committed, accept: c.Accept}
	if c.WriteMu != nil {
		s.combine, s.lead = max(c.Combine, 1), make(chan struct{}, 1)
	}
	return s
}

// errf prefixes an error with the backend's name.
func (s *Store) errf(format string, args ...any) error {
	return fmt.Errorf(s.d.Name+": "+format, args...)
}

// q returns query with the dialect's placeholders.
func (s *Store) q(query string) string {
	if !s.d.QuestionMarks {
		return query
	}
	if v, ok := s.rebind.Load(query); ok {
		return v.(string)
	}
	var b strings.Builder
	for i := 0; i < len(query); i++ {
		if query[i] == '$' && i+1 < len(query) && query[i+1] >= '0' && query[i+1] <= '9' {
			b.WriteByte('?')
			continue
		}
		b.WriteByte(query[i])
	}
	s.rebind.Store(query, b.String())
	return b.String()
}

// Tx is a write transaction.
type Tx struct {
	s   *Store
	ctx context.Context
	tx  *sql.Tx
}

// Exec runs a statement.
func (t *Tx) Exec(query string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(t.ctx, t.s.q(query), args...)
}

// Query runs a query.
func (t *Tx) Query(query string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(t.ctx, t.s.q(query), args...)
}

// QueryRow runs a query of at most one row.
func (t *Tx) QueryRow(query string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(t.ctx, t.s.q(query), args...)
}

// Tx runs fn in one write transaction, again (up to three times in all)
// when it fails in a way the dialect calls retryable; fn must not keep
// state across runs.
func (s *Store) Tx(ctx context.Context, fn func(*Tx) error) error { return s.tx(ctx, true, fn) }

// txSoon is Tx for a write that need not be on disk before its caller
// goes on (a job's lease, its renewal and its outcome): losing it to a
// power cut only lets work run again, as any crash does. Whatever must be
// durable after it (an acknowledged delivery, an intent before a tracker
// call) commits later and waits, and the log keeps commit order, so that
// wait covers this write too. Where every commit is durable by itself
// (PostgreSQL) it is Tx.
func (s *Store) txSoon(ctx context.Context, fn func(*Tx) error) error { return s.tx(ctx, false, fn) }

func (s *Store) tx(ctx context.Context, wait bool, fn func(*Tx) error) error {
	for attempt := 1; ; attempt++ {
		durable, err := s.commit(ctx, fn)
		if err == nil && wait && durable != nil {
			err = durable()
		}
		if err == nil || attempt == 3 || s.d.Retryable == nil || !s.d.Retryable(err) || ctx.Err() != nil {
			return err
		}
	}
}

// commit runs fn in a transaction and commits it, as one write.
func (s *Store) commit(ctx context.Context, fn func(*Tx) error) (durable func() error, err error) {
	return s.write(&writeReq{ctx: ctx, fn: fn})
}

// RawWrite runs fn on the writer's driver connection (sql.Conn.Raw)
// inside a write transaction the store begins and commits, as one write
// like Tx: under WriteMu, then the Committed hook and its wait. For a
// backend's hot path that drives its driver directly (SQLite's ingest
// batch). It is not run again on failure.
func (s *Store) RawWrite(ctx context.Context, fn func(driverConn any) error) error {
	durable, err := s.write(&writeReq{ctx: ctx, raw: fn})
	if err == nil && durable != nil {
		err = durable()
	}
	return err
}

// write runs r as one write and returns the Committed hook's wait: where
// writes take turns (WriteMu) queued with the others, which may run
// together (combined), and at once otherwise.
func (s *Store) write(r *writeReq) (durable func() error, err error) {
	r.done = make(chan struct{})
	if s.lead != nil {
		return s.combined(r)
	}
	s.runBatch([]*writeReq{r})
	return r.durable, r.err
}

// writeReq is one write, fn or raw, and how it ended.
type writeReq struct {
	ctx  context.Context
	fn   func(*Tx) error
	raw  func(driverConn any) error
	done chan struct{} // closed once err and durable are set

	err     error
	durable func() error
}

// combined queues r and returns once a batch holding it has run: that
// batch is run by whichever waiting writer takes the lead, often r's
// own, which then serves the writes queued behind it too.
func (s *Store) combined(r *writeReq) (durable func() error, err error) {
	s.qmu.Lock()
	s.queue = append(s.queue, r)
	s.qmu.Unlock()
	for {
		select {
		case <-r.done:
			return r.durable, r.err
		case s.lead <- struct{}{}:
			s.qmu.Lock()
			n := min(len(s.queue), s.combine)
			batch := slices.Clone(s.queue[:n])
			s.queue = append(s.queue[:0:0], s.queue[n:]...)
			s.qmu.Unlock()
			func() {
				defer func() { <-s.lead }() // even if a write panics
				if len(batch) > 0 {
					s.runBatch(batch)
				}
			}()
		}
	}
}

// errBatchPanicked fails the writes of a batch in which one panicked; the
// panic goes on in the goroutine that ran the batch.
var errBatchPanicked = errors.New("a write run in the same transaction panicked")

// runBatch runs batch as one write and tells each of its writes how it
// ended.
func (s *Store) runBatch(batch []*writeReq) {
	committed, err := false, errBatchPanicked
	if s.wmu != nil {
		s.wmu.Lock()
	}
	defer func() {
		var durable func() error
		if committed && s.committed != nil {
			durable = s.committed()
		}
		if s.wmu != nil {
			s.wmu.Unlock()
		}
		for _, r := range batch {
			if r.err == nil {
				r.err, r.durable = err, durable
			}
			close(r.done)
		}
	}()
	committed, err = s.runBatchLocked(batch)
}

// runBatchLocked runs the writes of batch in one transaction, each in a
// savepoint when there are several, so that a write that fails undoes
// only itself. A failure of the transaction itself fails them all. The
// transaction is not bound to any write's context (database/sql rolls a
// transaction back when its context ends); each write's statements are.
func (s *Store) runBatchLocked(batch []*writeReq) (committed bool, err error) {
	ctx := context.Background()
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback() // or the pool's one connection stays in it
			panic(p)
		}
	}()
	abort := func(err error) (bool, error) {
		_ = tx.Rollback()
		return false, err
	}
	several := len(batch) > 1
	wrote := false
	for _, r := range batch {
		if several {
			if _, err := tx.ExecContext(ctx, "SAVEPOINT w"); err != nil {
				return abort(err)
			}
		}
		if r.err = r.ctx.Err(); r.err == nil {
			if r.fn != nil {
				r.err = r.fn(&Tx{s: s, ctx: r.ctx, tx: tx})
			} else {
				r.err = conn.Raw(r.raw)
			}
		}
		if r.err == nil {
			wrote = true
		} else if !several {
			return abort(nil)
		} else if _, err := tx.ExecContext(ctx, "ROLLBACK TO w"); err != nil {
			return abort(err)
		}
		if several {
			if _, err := tx.ExecContext(ctx, "RELEASE w"); err != nil {
				return abort(err)
			}
		}
	}
	if !wrote {
		return abort(nil)
	}
	if err := tx.Commit(); err != nil {
		return false, err
	}
	return true, nil
}

// exec runs one write statement in its own transaction and returns the
// number of rows it changed.
func (s *Store) exec(ctx context.Context, query string, args ...any) (int64, error) {
	return s.execTx(ctx, true, query, args...)
}

func (s *Store) execTx(ctx context.Context, wait bool, query string, args ...any) (int64, error) {
	var n int64
	err := s.tx(ctx, wait, func(tx *Tx) error {
		res, err := tx.Exec(query, args...)
		if err == nil {
			n, err = res.RowsAffected()
		}
		return err
	})
	return n, err
}

// reader runs reads: the read pool, or one read transaction.
type reader interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (s *Store) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return s.r.QueryContext(ctx, s.q(query), args...)
}

func (s *Store) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	return s.r.QueryRowContext(ctx, s.q(query), args...)
}

// collect scans every row of rows with scan.
func collect[T any](rows *sql.Rows, err error, scan func(*sql.Rows) (T, error)) ([]T, error) {
	return collectN(rows, err, 0, scan)
}

// collectN is collect that stops after limit rows (0: no limit).
func collectN[T any](rows *sql.Rows, err error, limit int, scan func(*sql.Rows) (T, error)) ([]T, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for (limit <= 0 || len(out) < limit) && rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// At scans a time column (SQLite: unix microseconds; PostgreSQL:
// timestamptz) into t, in UTC; NULL is the zero time.
func At(t *time.Time) sql.Scanner { return timeDest{t} }

type timeDest struct{ t *time.Time }

func (d timeDest) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		*d.t = time.Time{}
	case int64:
		*d.t = time.UnixMicro(x).UTC()
	case time.Time:
		*d.t = x.UTC()
	default:
		return fmt.Errorf("time column holds %T", v)
	}
	return nil
}

// Ping checks the writer and the readers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.w.PingContext(ctx); err != nil {
		return s.errf("ping: %w", err)
	}
	if err := s.r.PingContext(ctx); err != nil {
		return s.errf("ping: %w", err)
	}
	return nil
}

// CreatedAt implements qsync.Store: when the first migration was applied.
func (s *Store) CreatedAt(ctx context.Context) (time.Time, error) {
	var at time.Time
	if err := s.queryRow(ctx, `SELECT applied_at FROM schema_migrations ORDER BY version LIMIT 1`).Scan(At(&at)); err != nil {
		return time.Time{}, s.errf("created at: %w", err)
	}
	return at, nil
}

// Migrate applies the migrations not yet recorded in schema_migrations,
// all in one transaction (DDL is transactional in both databases, so a
// failure leaves no trace). lock, if set, is run first (PostgreSQL: an
// advisory lock, so replicas starting at once migrate once; SQLite's
// IMMEDIATE transactions already exclude each other). table creates
// schema_migrations (version, name, applied_at) if missing.
func (s *Store) Migrate(ctx context.Context, ms []Migration, lock, table string, applied func(name string)) error {
	err := s.Tx(ctx, func(tx *Tx) error {
		// Migration files go to the driver as they are: no rebinding.
		for _, q := range []string{lock, table} {
			if q == "" {
				continue
			}
			if _, err := tx.tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		rows, err := tx.Query(`SELECT version FROM schema_migrations`)
		versions, err := collect(rows, err, func(r *sql.Rows) (int, error) {
			var v int
			return v, r.Scan(&v)
		})
		if err != nil {
			return err
		}
		for _, m := range ms {
			if slices.Contains(versions, m.Version) {
				continue
			}
			if _, err := tx.tx.ExecContext(ctx, m.SQL); err != nil {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
			if _, err := tx.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
				m.Version, m.Name, s.d.Time(time.Now())); err != nil {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
			applied(m.Name)
		}
		return nil
	})
	if err != nil {
		return s.errf("migrate: %w", err)
	}
	return nil
}

// Logger is log, or one that discards everything when log is nil.
func Logger(log *logrus.Entry) *logrus.Entry {
	if log != nil {
		return log
	}
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// errNoRows reports a QueryRow that found nothing.
func errNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// QueuedWrites is how many writes wait for their turn (Config.WriteMu).
func (s *Store) QueuedWrites() int {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return len(s.queue)
}
