package capi

import (
	"path/filepath"
	"strings"
	"testing"
)

func openT(t *testing.T) *Conn {
	t.Helper()
	c, err := Open("file:"+filepath.Join(t.TempDir(), "raw.db"), "PRAGMA journal_mode = WAL")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

func count(t *testing.T, c *Conn, query string, args ...any) int64 {
	t.Helper()
	n, err := c.One(query, args...)
	if err != nil {
		t.Fatalf("run %q: %v", query, err)
	}
	return n
}

// Empty strings and blobs stay empty values, not NULL, even as the first
// arguments a connection binds (its scratch block is allocated lazily);
// nil is NULL; bytes round-trip exactly.
func TestRawConnBindsValues(t *testing.T) {
	c := openT(t)
	if err := c.Exec(`CREATE TABLE t (a TEXT, b BLOB, c BLOB, d INTEGER, e TEXT)`); err != nil {
		t.Fatal(err)
	}
	ins, err := c.Stmt(`INSERT INTO t VALUES (?, ?, ?, ?, ?)`)
	if err != nil {
		t.Fatal(err)
	}
	if err := ins.Run(nil, "", []byte(nil), []byte{}, 7, ""); err != nil {
		t.Fatal(err)
	}
	if n := count(t, c, `SELECT count(*) FROM t WHERE typeof(a) = 'text' AND a = '' AND b IS NULL
		AND typeof(c) = 'blob' AND length(c) = 0 AND d = 7 AND e = ''`); n != 1 {
		t.Errorf("row with '', NULL, empty blob, 7, '' not found (%d)", n)
	}
	// A later, larger row must not see the previous row's bytes.
	odd := string([]byte{0, 0xff, 'q', 0}) + strings.Repeat("é", 3000)
	if err := ins.Run(nil, odd, []byte{1, 0, 2}, []byte("z"), int64(-1), ""); err != nil {
		t.Fatal(err)
	}
	if n := count(t, c, `SELECT count(*) FROM t WHERE a = ? AND b = ? AND d = -1 AND e = ''`, odd, []byte{1, 0, 2}); n != 1 {
		t.Errorf("second row did not round-trip (%d)", n)
	}
	if err := ins.Run(nil, "too", "few"); err == nil || !strings.Contains(err.Error(), "takes 5 arguments, got 2") {
		t.Errorf("short argument list: err = %v", err)
	}
	if err := ins.Run(nil, struct{}{}, nil, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "struct {}") {
		t.Errorf("struct argument: err = %v, want unsupported type", err)
	}
	// The failed run reset the statement; it is usable again.
	if err := ins.Run(nil, "ok", nil, nil, 1, "ok"); err != nil {
		t.Errorf("statement after a failed run: %v", err)
	}
	if _, err := c.Stmt(`SELEC nonsense`); err == nil || !strings.Contains(err.Error(), "syntax error") {
		t.Errorf("bad SQL: err = %v, want SQLite's syntax error", err)
	}
	if err := c.Exec(`CREATE UNIQUE INDEX t_a ON t (a); INSERT INTO t (a) VALUES ('ok')`); err == nil || !strings.Contains(err.Error(), "UNIQUE") {
		t.Errorf("constraint: err = %v, want SQLite's UNIQUE message", err)
	}
}

func TestOpenFailures(t *testing.T) {
	if _, err := Open("file:"+filepath.Join(t.TempDir(), "missing", "x.db"), ""); err == nil || !strings.Contains(err.Error(), "unable to open") {
		t.Errorf("missing directory: err = %v, want SQLite's open error", err)
	}
	if _, err := Open("file:"+filepath.Join(t.TempDir(), "x.db"), "PRAGMA nonsense("); err == nil {
		t.Error("bad setup SQL accepted")
	}
}

// One answers the first column of the first row, 0 without a row, and
// runs statements that return nothing.
func TestOne(t *testing.T) {
	c := openT(t)
	if err := c.Exec(`CREATE TABLE t (a INTEGER)`); err != nil {
		t.Fatal(err)
	}
	for _, v := range []int64{5, 9} {
		if n, err := c.One(`INSERT INTO t VALUES (?) RETURNING a * 2`, v); err != nil || n != 2*v {
			t.Fatalf("insert %d: %d, %v", v, n, err)
		}
	}
	if n := count(t, c, `SELECT a FROM t ORDER BY a DESC`); n != 9 {
		t.Errorf("first row = %d, want 9", n)
	}
	if n := count(t, c, `SELECT a FROM t WHERE a > 100`); n != 0 {
		t.Errorf("no row = %d, want 0", n)
	}
	if err := c.Run("BEGIN"); err != nil {
		t.Fatal(err)
	}
	if err := c.Run("ROLLBACK"); err != nil {
		t.Fatal(err)
	}
}

// SQLite's planner reads a bound LIMIT, and every new binding of it makes
// the statement compile again: the reason the store writes the limits it
// fixes into the statement text (sqlstore.limitClause).
func TestBoundLimitRecompiles(t *testing.T) {
	c := openT(t)
	if err := c.Exec(`CREATE TABLE t (a INTEGER PRIMARY KEY, b INTEGER); CREATE INDEX t_b ON t (b, a)`); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		count(t, c, `INSERT INTO t (b) VALUES (?) RETURNING a`, i%3)
	}
	runs := func(query string, args ...any) int {
		st, err := c.Stmt(query)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 10; i++ {
			if err := st.Run(nil, args...); err != nil {
				t.Fatal(err)
			}
		}
		return st.Reprepares()
	}
	if n := runs(`SELECT a FROM t WHERE b = ? AND a > ? ORDER BY a LIMIT ?`, 1, 0, 500); n < 9 {
		t.Errorf("bound LIMIT: %d recompilations in 10 runs; SQLite no longer re-plans on it (limitClause may go)", n)
	}
	if n := runs(`SELECT a FROM t WHERE b = ? AND a > ? ORDER BY a LIMIT 500`, 1, 0); n != 0 {
		t.Errorf("LIMIT written in: %d recompilations in 10 runs, want 0", n)
	}
}
