package capi

import (
	"fmt"
	"testing"
)

// Page splits and merges (inserts and deletes through an index) take
// SQLite's large scratch block; with bigBlocks in place most of those come
// back from the kept blocks instead of a new mapping, and the database
// stays sound.
func TestLargeBlocksAreKept(t *testing.T) {
	c := openT(t)
	if err := c.Exec(`CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID; CREATE INDEX t_v ON t (v)`); err != nil {
		t.Fatal(err)
	}
	hits0, misses0, installed := BigBlockStats()
	if !installed {
		t.Fatal("SQLite's allocator is the default: SQLITE_CONFIG_MALLOC was refused")
	}
	for round := 0; round < 3; round++ {
		if err := c.Exec("BEGIN"); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3000; i++ {
			// Keys out of order: splits all over the b-tree.
			if _, err := c.One(`INSERT OR REPLACE INTO t VALUES (?, ?)`, fmt.Sprintf("%08d", (i*7919)%3000), fmt.Sprintf("value %d of round %d", i, round)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.One(`DELETE FROM t WHERE k > ?`, fmt.Sprintf("%08d", 1000)); err != nil {
			t.Fatal(err)
		}
		if err := c.Exec("COMMIT"); err != nil {
			t.Fatal(err)
		}
	}
	hits, misses, _ := BigBlockStats()
	hits, misses = hits-hits0, misses-misses0
	if hits == 0 || hits < 10*misses {
		t.Errorf("large blocks: %d served from kept ones, %d newly allocated; want nearly all kept", hits, misses)
	}
	s, err := c.Stmt(`PRAGMA integrity_check`)
	if err != nil {
		t.Fatal(err)
	}
	var res string
	if err := s.Run(func(s *Stmt) error { res, _ = s.Value(0).(string); return nil }); err != nil {
		t.Fatal(err)
	}
	if res != "ok" {
		t.Fatalf("integrity_check: %q", res)
	}
	if n := count(t, c, `SELECT count(*) FROM t`); n != 1001 {
		t.Fatalf("%d rows, want 1001", n)
	}
}
