// Package capi drives SQLite connections through SQLite's C API
// (modernc.org/sqlite/lib, the same engine modernc's database/sql driver
// wraps): the store's ingest hot path and WAL checkpoints directly, and
// every other query through a database/sql driver (Connector) whose
// connections keep their statements prepared. It is the one place in the
// store that uses unsafe, and it is here because measurements demand it:
// the shared store program's CPU per job fell by half on it (see
// docs/performance.md). It also keeps SQLite's memory from being mapped
// and unmapped per transaction: modernc's allocator pages stay pinned
// (pinAllocatorPages) and page-sized blocks are kept for reuse (malloc.go).
//
// Why not database/sql: modernc's driver compiles a statement again on
// every execution (prepared or not) and copies each text argument into a
// C allocation of its own.
//
// Why not zombiezen.com/go/sqlite v1.4.2 (same engine, persistent
// prepared statements, no unsafe in our code): it also allocates C memory
// per bound text argument, and the process then loses the allocator-page
// pin below. Measured side by side: the store's insertBatch (16 new events
// per transaction) over this Conn and over a zombiezen Conn behind the
// same one-method seam (One), each engine in its own process, four
// alternating runs, process CPU per event on 2 shared cores:
// synchronous=normal 21.7-23.3 µs here vs 24.1-28.6 µs with zombiezen
// (median +11%); synchronous=full 31.3-38.9 vs 36.2-46.1 µs (median +15%).
// The CPU counted includes building the events, so the engines' own
// difference is larger. More than the ~10% that would have paid for
// dropping this package; docs/performance.md has the numbers.
package capi

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"unsafe"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"
)

// Conn is one SQLite connection driven through the C API
// (modernc.org/sqlite/lib).
//
// Through database/sql, modernc's driver compiles a statement again on
// every execution and copies each text argument into its own C allocation,
// which is freed when the statement ends. For ingest that was most of the
// CPU per event: parsing, building the VDBE program, and the allocator
// mapping and unmapping pages as those short-lived blocks came and went.
// Here statements are prepared once (SQLITE_PREPARE_PERSISTENT) and reset
// between rows, and arguments are copied into one scratch block that lives
// as long as the connection.
//
// A Conn is not safe for concurrent use; its user serializes it.
type Conn struct {
	tls     *libc.TLS
	db      uintptr
	stmts   map[string]*Stmt
	arena   uintptr // scratch C memory for the current row's text and blob arguments
	size    int
	arenaBy *Stmt // the statement whose bindings point into the arena
}

// cptr turns C memory (never Go memory) into a pointer Go can read or
// write. Reading the uintptr's bits keeps vet's unsafeptr check quiet about
// a conversion that is, for memory SQLite owns, the intended one.
func cptr(p uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&p)) }

// Open opens uri (a file: URI) and runs setup, a list of PRAGMAs.
func Open(uri, setup string) (*Conn, error) {
	installMalloc()
	pinAllocatorPages()
	c := &Conn{tls: libc.NewTLS(), stmts: map[string]*Stmt{}}
	if err := c.open(uri); err != nil {
		_ = c.Close()
		return nil, err
	}
	lib.Xsqlite3_extended_result_codes(c.tls, c.db, 1)
	if err := c.Exec(setup); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Conn) open(uri string) error {
	name, err := libc.CString(uri)
	if err != nil {
		return err
	}
	defer libc.Xfree(c.tls, name)
	out := c.alloc(int(unsafe.Sizeof(uintptr(0))))
	if out == 0 {
		return errors.New("sqlite: out of memory")
	}
	defer libc.Xfree(c.tls, out)
	rc := lib.Xsqlite3_open_v2(c.tls, name, out,
		lib.SQLITE_OPEN_READWRITE|lib.SQLITE_OPEN_CREATE|lib.SQLITE_OPEN_URI|lib.SQLITE_OPEN_NOMUTEX, 0)
	c.db = *(*uintptr)(cptr(out)) // set even on failure, and then must be closed
	if rc != lib.SQLITE_OK {
		return c.err(rc)
	}
	return nil
}

func (c *Conn) alloc(n int) uintptr { return libc.Xmalloc(c.tls, libc.Tsize_t(n)) }

// err describes a failed call with SQLite's message for the connection.
func (c *Conn) err(rc int32) error {
	msg := libc.GoString(lib.Xsqlite3_errstr(c.tls, rc))
	if c.db != 0 {
		msg = libc.GoString(lib.Xsqlite3_errmsg(c.tls, c.db))
	}
	return fmt.Errorf("sqlite: %s (%d)", msg, rc)
}

// Exec runs one or more statements without arguments.
func (c *Conn) Exec(sql string) error {
	p, err := libc.CString(sql)
	if err != nil {
		return err
	}
	defer libc.Xfree(c.tls, p)
	if rc := lib.Xsqlite3_exec(c.tls, c.db, p, 0, 0, 0); rc != lib.SQLITE_OK {
		return c.err(rc)
	}
	return nil
}

// Run executes one statement without arguments or results through the
// statement cache (BEGIN, COMMIT: parsed once, not per batch).
func (c *Conn) Run(sql string) error {
	s, err := c.Stmt(sql)
	if err != nil {
		return err
	}
	return s.Run(nil)
}

// Stmt returns the connection's prepared statement for sql, preparing it
// on first use.
func (c *Conn) Stmt(sql string) (*Stmt, error) {
	if s, ok := c.stmts[sql]; ok {
		return s, nil
	}
	s, err := c.prepare(sql, true)
	if err != nil {
		return nil, err
	}
	c.stmts[sql] = s
	return s, nil
}

// prepare compiles sql; persistent: it is kept for many runs.
func (c *Conn) prepare(sql string, persistent bool) (*Stmt, error) {
	p, err := libc.CString(sql)
	if err != nil {
		return nil, err
	}
	defer libc.Xfree(c.tls, p)
	out := c.alloc(int(unsafe.Sizeof(uintptr(0))))
	if out == 0 {
		return nil, errors.New("sqlite: out of memory")
	}
	defer libc.Xfree(c.tls, out)
	var flags uint32
	if persistent {
		flags = lib.SQLITE_PREPARE_PERSISTENT
	}
	if rc := lib.Xsqlite3_prepare_v3(c.tls, c.db, p, int32(len(sql)), flags, out, 0); rc != lib.SQLITE_OK {
		return nil, c.err(rc)
	}
	return &Stmt{c: c, p: *(*uintptr)(cptr(out))}, nil
}

// Kept returns the SQL of the statements the connection keeps prepared.
func (c *Conn) Kept() []string { return slices.Sorted(maps.Keys(c.stmts)) }

// Program returns the opcodes of the program SQLite compiles sql into
// (the opcode column of EXPLAIN).
func (c *Conn) Program(sql string) ([]string, error) {
	s, err := c.prepare("EXPLAIN "+sql, false)
	if err != nil {
		return nil, err
	}
	defer s.finalize()
	var ops []string
	for {
		more, err := s.Step()
		if err != nil || !more {
			return ops, err
		}
		op, _ := s.Value(1).(string)
		ops = append(ops, op)
	}
}

// finalize frees a statement prepare made that the cache does not keep.
func (s *Stmt) finalize() { lib.Xsqlite3_finalize(s.c.tls, s.p) }

// reserve makes the arena hold at least n bytes.
func (c *Conn) reserve(n int) error {
	if n <= c.size && c.arena != 0 {
		return nil // a zero-length argument still needs a non-NULL pointer
	}
	n = max(n, 2*c.size, 4096)
	p := libc.Xrealloc(c.tls, c.arena, libc.Tsize_t(n))
	if p == 0 {
		return errors.New("sqlite: out of memory")
	}
	c.arena, c.size = p, n
	return nil
}

func (c *Conn) Close() error {
	var err error
	for _, s := range c.stmts {
		lib.Xsqlite3_finalize(c.tls, s.p)
	}
	c.stmts = nil
	if c.db != 0 {
		if rc := lib.Xsqlite3_close_v2(c.tls, c.db); rc != lib.SQLITE_OK {
			err = c.err(rc)
		}
		c.db = 0
	}
	if c.arena != 0 {
		libc.Xfree(c.tls, c.arena)
		c.arena, c.size = 0, 0
	}
	c.tls.Close()
	return err
}

// Stmt is a prepared statement of a Conn.
type Stmt struct {
	c    *Conn
	p    uintptr
	busy bool // bound and not yet reset
}

// Reprepares is how many times SQLite compiled the statement again since
// it was prepared (SQLITE_STMTSTATUS_REPREPARE).
func (s *Stmt) Reprepares() int {
	return int(lib.Xsqlite3_stmt_status(s.c.tls, s.p, lib.SQLITE_STMTSTATUS_REPREPARE, 0))
}

// transient tells SQLite to copy a bound value (SQLITE_TRANSIENT).
const transient = ^uintptr(0)

// Run binds args (see Bind), steps through the result rows calling row for
// each, and resets the statement.
func (s *Stmt) Run(row func(*Stmt) error, args ...any) (err error) {
	defer func() {
		if rerr := s.Reset(); err == nil {
			err = rerr
		}
	}()
	if err := s.Bind(args...); err != nil {
		return err
	}
	for {
		more, err := s.Step()
		if err != nil || !more {
			return err
		}
		if row != nil {
			if err := row(s); err != nil {
				return err
			}
		}
	}
}

// Bind binds args (nil, int64, int, bool, float64, string or []byte),
// one per parameter. Text and blob arguments are copied into the
// connection's arena and bound as SQLITE_STATIC: they stay put until
// Reset, after which the bindings are cleared (the arena is reused by the
// next statement). While another statement of the connection holds the
// arena (its rows are still being read), SQLite copies them instead.
func (s *Stmt) Bind(args ...any) error {
	c := s.c
	s.busy = true
	if n := int(lib.Xsqlite3_bind_parameter_count(c.tls, s.p)); n != len(args) {
		return fmt.Errorf("sqlite: statement takes %d arguments, got %d", n, len(args))
	}
	static := c.arenaBy == nil || c.arenaBy == s
	need := 0
	for _, a := range args {
		switch v := a.(type) {
		case string:
			need += len(v)
		case []byte:
			need += len(v)
		}
	}
	if static {
		if err := c.reserve(need); err != nil {
			return err
		}
		c.arenaBy = s
	}
	off := 0
	// bytes binds v as text or a blob: from the arena, or, while another
	// statement holds it, from a block of its own that SQLite copies.
	bytes := func(col int32, str string, b []byte, blob bool) int32 {
		n := len(str) + len(b) // one of them is empty
		p, destr := c.arena+uintptr(off), uintptr(0)
		if static {
			off += n
		} else {
			p, destr = c.alloc(max(n, 1)), transient
			if p == 0 {
				return lib.SQLITE_NOMEM
			}
			defer libc.Xfree(c.tls, p)
		}
		dst := unsafe.Slice((*byte)(cptr(p)), n)
		copy(dst, str)
		copy(dst, b)
		if blob {
			return lib.Xsqlite3_bind_blob(c.tls, s.p, col, p, int32(n), destr)
		}
		return lib.Xsqlite3_bind_text(c.tls, s.p, col, p, int32(n), destr)
	}
	for i, a := range args {
		col := int32(i + 1)
		var rc int32
		switch v := a.(type) {
		case nil:
			rc = lib.Xsqlite3_bind_null(c.tls, s.p, col)
		case int64:
			rc = lib.Xsqlite3_bind_int64(c.tls, s.p, col, v)
		case int:
			rc = lib.Xsqlite3_bind_int64(c.tls, s.p, col, int64(v))
		case bool:
			var n int64
			if v {
				n = 1
			}
			rc = lib.Xsqlite3_bind_int64(c.tls, s.p, col, n)
		case float64:
			rc = lib.Xsqlite3_bind_double(c.tls, s.p, col, v)
		case string:
			rc = bytes(col, v, nil, false)
		case []byte:
			if v == nil {
				rc = lib.Xsqlite3_bind_null(c.tls, s.p, col)
				break
			}
			rc = bytes(col, "", v, true)
		default:
			// reflect.TypeOf, not %T: handing a to fmt would make every
			// argument of every call escape to the heap.
			return fmt.Errorf("sqlite: argument %d: unsupported type %s", i+1, reflect.TypeOf(a))
		}
		if rc != lib.SQLITE_OK {
			return c.err(rc)
		}
	}
	return nil
}

// Step moves to the next result row; false when there is none.
func (s *Stmt) Step() (bool, error) {
	switch rc := lib.Xsqlite3_step(s.c.tls, s.p); rc {
	case lib.SQLITE_ROW:
		return true, nil
	case lib.SQLITE_DONE:
		return false, nil
	default:
		return false, s.c.err(rc)
	}
}

// Reset readies the statement for its next run, clearing its bindings
// (and so freeing the arena).
func (s *Stmt) Reset() error {
	c := s.c
	rc := lib.Xsqlite3_reset(c.tls, s.p)
	lib.Xsqlite3_clear_bindings(c.tls, s.p)
	s.busy = false
	if c.arenaBy == s {
		c.arenaBy = nil
	}
	if rc != lib.SQLITE_OK {
		return c.err(rc)
	}
	return nil
}

// Int64 reads column col of the current row as an integer.
func (s *Stmt) Int64(col int) int64 { return lib.Xsqlite3_column_int64(s.c.tls, s.p, int32(col)) }

// Columns are the result columns' names.
func (s *Stmt) Columns() []string {
	n := int(lib.Xsqlite3_column_count(s.c.tls, s.p))
	names := make([]string, n)
	for i := range names {
		names[i] = libc.GoString(lib.Xsqlite3_column_name(s.c.tls, s.p, int32(i)))
	}
	return names
}

// Value reads column col of the current row as database/sql's driver
// sees values: int64, float64, string, []byte (a copy) or nil.
func (s *Stmt) Value(col int) any {
	c, i := s.c, int32(col)
	switch lib.Xsqlite3_column_type(c.tls, s.p, i) {
	case lib.SQLITE_INTEGER:
		return lib.Xsqlite3_column_int64(c.tls, s.p, i)
	case lib.SQLITE_FLOAT:
		return lib.Xsqlite3_column_double(c.tls, s.p, i)
	case lib.SQLITE_TEXT:
		p := lib.Xsqlite3_column_text(c.tls, s.p, i)
		n := int(lib.Xsqlite3_column_bytes(c.tls, s.p, i))
		if p == 0 || n == 0 {
			return ""
		}
		return string(unsafe.Slice((*byte)(cptr(p)), n))
	case lib.SQLITE_BLOB:
		p := lib.Xsqlite3_column_blob(c.tls, s.p, i)
		n := int(lib.Xsqlite3_column_bytes(c.tls, s.p, i))
		if p == 0 || n == 0 {
			return []byte{}
		}
		return append([]byte(nil), unsafe.Slice((*byte)(cptr(p)), n)...)
	default:
		return nil
	}
}

// Changes is the number of rows the last statement changed.
func (c *Conn) Changes() int64 { return lib.Xsqlite3_changes64(c.tls, c.db) }

// LastInsertID is the rowid of the last row inserted.
func (c *Conn) LastInsertID() int64 { return lib.Xsqlite3_last_insert_rowid(c.tls, c.db) }

// PagesWritten is how many pages the connection has written to the
// database or its WAL since it opened (SQLITE_DBSTATUS_CACHE_WRITE): what
// its transactions cost in writes.
func (c *Conn) PagesWritten() (int64, error) {
	p := c.alloc(8)
	if p == 0 {
		return 0, c.err(lib.SQLITE_NOMEM)
	}
	defer libc.Xfree(c.tls, p)
	if rc := lib.Xsqlite3_db_status(c.tls, c.db, lib.SQLITE_DBSTATUS_CACHE_WRITE, p, p+4, 0); rc != lib.SQLITE_OK {
		return 0, c.err(rc)
	}
	return int64(*(*int32)(cptr(p))), nil
}

var pinOnce sync.Once

// Pinning modernc's C allocator (modernc.org/memory): it hands out blocks
// of each power-of-two size class from 64 KiB pages and unmaps a page as
// soon as its last block is freed.
const (
	allocPage     = 64 << 10
	pinPagesSmall = 1  // classes up to 1 KiB: a page holds 63 blocks or more
	pinPagesLarge = 16 // 2 KiB to 16 KiB: 3 to 31 blocks a page
)

// pinAllocatorPages keeps pages of every small size class mapped for the
// life of the process. SQLite's short-lived page-sized blocks (b-tree
// balancing, statement journals, page caches refilled after another
// connection's write, temporary b-trees) otherwise made the allocator map
// and unmap pages many times per transaction: a fifth of ingest CPU, and
// with one pinned page per class still a sixth of a job's store CPU
// whenever more blocks of a class lived at once than one page holds. It
// fills pinPages pages of each class, then frees every block but one per
// page: the freed blocks are reused first, and no pinned page is ever
// empty. Cost: about 4 MiB mapped, less of it resident.
func pinAllocatorPages() {
	pinOnce.Do(func() {
		tls := libc.NewTLS()
		defer tls.Close()
		for log := 4; log <= 14; log++ {
			pages := pinPagesSmall
			if log > 10 {
				pages = pinPagesLarge
			}
			var blocks []uintptr
			seen := map[uintptr]bool{}
			for {
				p := libc.Xmalloc(tls, libc.Tsize_t(1)<<log)
				if p == 0 {
					break // out of memory: pin what there is
				}
				pg := p &^ (allocPage - 1)
				if !seen[pg] {
					if len(seen) == pages {
						libc.Xfree(tls, p)
						break
					}
					seen[pg] = true
					continue // the page's first block: kept
				}
				blocks = append(blocks, p)
			}
			for _, p := range blocks {
				libc.Xfree(tls, p)
			}
		}
	})
}

// One runs query with args (prepared once, see Stmt) and returns the
// first column of its first row as an integer, 0 if it returns no row.
func (c *Conn) One(query string, args ...any) (int64, error) {
	s, err := c.Stmt(query)
	if err != nil {
		return 0, err
	}
	var v int64
	if err = s.Bind(args...); err == nil {
		for first := true; ; first = false {
			var more bool
			if more, err = s.Step(); err != nil || !more {
				break
			}
			if first {
				v = s.Int64(0)
			}
		}
	}
	if rerr := s.Reset(); err == nil {
		err = rerr
	}
	return v, err
}
