package capi

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
)

// Connector makes database/sql connections that keep their statements
// prepared (sql.OpenDB(&Connector{...})): modernc's own driver compiles a
// statement again on every execution, most of the store's CPU per job.
// A statement is prepared on its first use by a connection and reused;
// statements without arguments may hold several SQL statements (a
// migration) and are not kept.
type Connector struct {
	// URI is a file: URI; Setup runs on each new connection (PRAGMAs).
	URI, Setup string
	// Immediate begins transactions IMMEDIATE (take the write lock at
	// once: a writer never fails mid-transaction on a lock upgrade).
	Immediate bool
}

// Connect implements driver.Connector.
func (c *Connector) Connect(context.Context) (driver.Conn, error) {
	conn, err := Open(c.URI, c.Setup)
	if err != nil {
		return nil, err
	}
	begin := "BEGIN"
	if c.Immediate {
		begin = "BEGIN IMMEDIATE"
	}
	return &dconn{c: conn, begin: begin}, nil
}

// Driver implements driver.Connector.
func (c *Connector) Driver() driver.Driver { return drv{} }

type drv struct{}

func (drv) Open(string) (driver.Conn, error) {
	return nil, errors.New("capi: open connections with sql.OpenDB(&capi.Connector{...})")
}

type dconn struct {
	c     *Conn
	begin string
}

// Unwrap returns the Conn under a connection of a Connector's pool, as
// (*sql.Conn).Raw hands it out, so a hot path can drive the C API
// directly on the very connection (and page cache) the pool's other
// statements use.
func Unwrap(driverConn any) (*Conn, bool) {
	d, ok := driverConn.(*dconn)
	if !ok {
		return nil, false
	}
	return d.c, true
}

var (
	_ driver.ExecerContext     = (*dconn)(nil)
	_ driver.QueryerContext    = (*dconn)(nil)
	_ driver.ConnBeginTx       = (*dconn)(nil)
	_ driver.NamedValueChecker = (*dconn)(nil)
)

// CheckNamedValue lets the values Bind takes through as they are.
func (d *dconn) CheckNamedValue(nv *driver.NamedValue) error {
	switch nv.Value.(type) {
	case nil, int64, int, bool, float64, string, []byte:
		return nil
	}
	return driver.ErrSkip // database/sql's default conversion
}

func (d *dconn) Prepare(query string) (driver.Stmt, error) { return &dstmt{d: d, query: query}, nil }

func (d *dconn) Close() error { return d.c.Close() }

func (d *dconn) Begin() (driver.Tx, error) {
	return d.BeginTx(context.Background(), driver.TxOptions{})
}

func (d *dconn) BeginTx(_ context.Context, opts driver.TxOptions) (driver.Tx, error) {
	begin := d.begin
	if opts.ReadOnly {
		begin = "BEGIN"
	}
	if err := d.c.Run(begin); err != nil {
		return nil, err
	}
	return dtx{d.c}, nil
}

type dtx struct{ c *Conn }

func (t dtx) Commit() error {
	if err := t.c.Run("COMMIT"); err != nil {
		// A failed COMMIT may leave the transaction open (SQLITE_BUSY):
		// roll back so the connection is usable again.
		_ = t.c.Run("ROLLBACK")
		return err
	}
	return nil
}

func (t dtx) Rollback() error { return t.c.Run("ROLLBACK") }

func values(args []driver.NamedValue) []any {
	vs := make([]any, len(args))
	for i, a := range args {
		vs[i] = a.Value
	}
	return vs
}

// stmt returns the connection's kept statement for query, or, while that
// one is in use (its rows still open), one of its own that done finalizes.
func (d *dconn) stmt(query string) (s *Stmt, done func(), err error) {
	s, err = d.c.Stmt(query)
	if err != nil || !s.busy {
		return s, func() {}, err
	}
	s, err = d.c.prepare(query, false)
	if err != nil {
		return nil, nil, err
	}
	return s, s.finalize, nil
}

func (d *dconn) ExecContext(_ context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if len(args) == 0 {
		if err := d.c.Exec(query); err != nil {
			return nil, err
		}
		return result{d.c}, nil
	}
	s, done, err := d.stmt(query)
	if err != nil {
		return nil, err
	}
	defer done()
	if err := s.Run(nil, values(args)...); err != nil {
		return nil, err
	}
	return result{d.c}, nil
}

func (d *dconn) QueryContext(_ context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	s, done, err := d.stmt(query)
	if err != nil {
		return nil, err
	}
	if err := s.Bind(values(args)...); err != nil {
		_ = s.Reset()
		done()
		return nil, err
	}
	return &drows{s: s, done: done}, nil
}

// result reads the connection's counters at once: the next statement
// changes them.
type result struct{ c *Conn }

func (r result) LastInsertId() (int64, error) { return r.c.LastInsertID(), nil }
func (r result) RowsAffected() (int64, error) { return r.c.Changes(), nil }

type drows struct {
	s    *Stmt
	done func()
	cols []string
}

func (r *drows) Columns() []string {
	if r.cols == nil {
		r.cols = r.s.Columns()
	}
	return r.cols
}

func (r *drows) Next(dest []driver.Value) error {
	more, err := r.s.Step()
	if err != nil {
		return err
	}
	if !more {
		return io.EOF
	}
	for i := range dest {
		dest[i] = r.s.Value(i)
	}
	return nil
}

func (r *drows) Close() error {
	if r.s == nil {
		return nil
	}
	err := r.s.Reset()
	r.done()
	r.s = nil
	return err
}

// dstmt is a database/sql prepared statement; it runs through the
// connection's kept statements.
type dstmt struct {
	d     *dconn
	query string
}

func (s *dstmt) Close() error  { return nil }
func (s *dstmt) NumInput() int { return -1 }

func (s *dstmt) Exec(args []driver.Value) (driver.Result, error) {
	return s.d.ExecContext(context.Background(), s.query, named(args))
}

func (s *dstmt) Query(args []driver.Value) (driver.Rows, error) {
	return s.d.QueryContext(context.Background(), s.query, named(args))
}

func named(args []driver.Value) []driver.NamedValue {
	nv := make([]driver.NamedValue, len(args))
	for i, a := range args {
		nv[i] = driver.NamedValue{Ordinal: i + 1, Value: a}
	}
	return nv
}
