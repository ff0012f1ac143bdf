package capi

import (
	"bytes"
	"context"
	"database/sql"
	"path/filepath"
	"testing"
)

func openDB(t *testing.T) *sql.DB {
	t.Helper()
	db := sql.OpenDB(&Connector{URI: "file:" + filepath.Join(t.TempDir(), "d.db"), Setup: "PRAGMA journal_mode = WAL", Immediate: true})
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// Values round-trip through database/sql as the store scans them, and a
// statement is prepared once per connection.
func TestDriverRoundTrip(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	if _, err := db.ExecContext(ctx, `CREATE TABLE t (i INTEGER, b INTEGER, s TEXT, j BLOB, n TEXT, f REAL); CREATE TABLE u (x)`); err != nil {
		t.Fatal(err)
	}
	const ins = `INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5, ?6)`
	for i := range 3 {
		res, err := db.ExecContext(ctx, ins, int64(i), i == 1, "é\x00x", []byte{0, 1}, nil, 1.5)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			t.Errorf("RowsAffected = %d, want 1", n)
		}
	}
	var i int64
	var b bool
	var s string
	var j []byte
	var n sql.NullString
	var f float64
	if err := db.QueryRowContext(ctx, `SELECT i, b, s, j, n, f FROM t WHERE b = ?`, true).Scan(&i, &b, &s, &j, &n, &f); err != nil {
		t.Fatal(err)
	}
	if i != 1 || !b || s != "é\x00x" || !bytes.Equal(j, []byte{0, 1}) || n.Valid || f != 1.5 {
		t.Errorf("row = %d %v %q %v %v %v", i, b, s, j, n, f)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	err = conn.Raw(func(dc any) error {
		c := dc.(*dconn).c
		if _, ok := c.stmts[ins]; !ok {
			t.Error("the insert was not kept prepared")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A statement run while another one's rows are open, even the same SQL,
// gets its bindings right (the arena holder keeps its own).
func TestDriverNestedStatements(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	if _, err := db.ExecContext(ctx, `CREATE TABLE t (k TEXT, v TEXT)`); err != nil {
		t.Fatal(err)
	}
	for _, kv := range [][2]string{{"a", "1"}, {"b", "2"}, {"c", "3"}} {
		if _, err := db.ExecContext(ctx, `INSERT INTO t VALUES (?, ?)`, kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	const q = `SELECT k, v FROM t WHERE k >= ? ORDER BY k`
	rows, err := tx.QueryContext(ctx, q, "b")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		var inner string
		if err := tx.QueryRowContext(ctx, q, "a").Scan(&inner, new(string)); err != nil || inner != "a" {
			t.Fatalf("inner query = %q, %v", inner, err)
		}
		got = append(got, k+v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	if len(got) != 2 || got[0] != "b2" || got[1] != "c3" {
		t.Errorf("outer rows = %v, want [b2 c3]", got)
	}
}

// Transactions commit and roll back; a failing statement leaves the
// connection usable.
func TestDriverTransactions(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	if _, err := db.ExecContext(ctx, `CREATE TABLE t (k TEXT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	for _, commit := range []bool{false, true} {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO t VALUES (?)`, "k"); err != nil {
			t.Fatal(err)
		}
		if commit {
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO t VALUES (?)`, "k"); err == nil {
		t.Error("duplicate key accepted")
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil || n != 1 {
		t.Errorf("rows = %d, %v; want 1 (the committed one)", n, err)
	}
}
