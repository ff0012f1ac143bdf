package sqlite

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"unsafe"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"
)

// rawConn is one SQLite connection driven through the C API
// (modernc.org/sqlite/lib), for the ingest hot path only.
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
// A rawConn is not safe for concurrent use; the Store serializes it with
// its other writes.
type rawConn struct {
	tls   *libc.TLS
	db    uintptr
	stmts map[string]*rawStmt
	arena uintptr // scratch C memory for the current row's text and blob arguments
	size  int
}

// cptr turns C memory (never Go memory) into a pointer Go can read or
// write. Reading the uintptr's bits keeps vet's unsafeptr check quiet about
// a conversion that is, for memory SQLite owns, the intended one.
func cptr(p uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&p)) }

// openRaw opens uri (a file: URI) and runs setup, a list of PRAGMAs.
func openRaw(uri, setup string) (*rawConn, error) {
	pinAllocatorPages()
	c := &rawConn{tls: libc.NewTLS(), stmts: map[string]*rawStmt{}}
	if err := c.open(uri); err != nil {
		_ = c.close()
		return nil, err
	}
	lib.Xsqlite3_extended_result_codes(c.tls, c.db, 1)
	if err := c.exec(setup); err != nil {
		_ = c.close()
		return nil, err
	}
	return c, nil
}

func (c *rawConn) open(uri string) error {
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

func (c *rawConn) alloc(n int) uintptr { return libc.Xmalloc(c.tls, libc.Tsize_t(n)) }

// err describes a failed call with SQLite's message for the connection.
func (c *rawConn) err(rc int32) error {
	msg := libc.GoString(lib.Xsqlite3_errstr(c.tls, rc))
	if c.db != 0 {
		msg = libc.GoString(lib.Xsqlite3_errmsg(c.tls, c.db))
	}
	return fmt.Errorf("sqlite: %s (%d)", msg, rc)
}

// exec runs one or more statements without arguments.
func (c *rawConn) exec(sql string) error {
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

// run executes one statement without arguments or results through the
// statement cache (BEGIN, COMMIT: parsed once, not per batch).
func (c *rawConn) run(sql string) error {
	s, err := c.stmt(sql)
	if err != nil {
		return err
	}
	return s.run(nil)
}

// stmt returns the connection's prepared statement for sql, preparing it
// on first use.
func (c *rawConn) stmt(sql string) (*rawStmt, error) {
	if s, ok := c.stmts[sql]; ok {
		return s, nil
	}
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
	if rc := lib.Xsqlite3_prepare_v3(c.tls, c.db, p, int32(len(sql)), lib.SQLITE_PREPARE_PERSISTENT, out, 0); rc != lib.SQLITE_OK {
		return nil, c.err(rc)
	}
	s := &rawStmt{c: c, p: *(*uintptr)(cptr(out))}
	c.stmts[sql] = s
	return s, nil
}

// reserve makes the arena hold at least n bytes.
func (c *rawConn) reserve(n int) error {
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

func (c *rawConn) close() error {
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

// rawStmt is a prepared statement of a rawConn.
type rawStmt struct {
	c *rawConn
	p uintptr
}

// run binds args (int64, int, string, []byte or nil), one per parameter,
// steps through the result rows calling row for each, and resets the
// statement. Text and blob arguments are copied into the connection's
// arena and bound as SQLITE_STATIC: they stay put until the reset, after
// which the bindings are cleared (the arena is reused by the next run).
func (s *rawStmt) run(row func(*rawStmt) error, args ...any) (err error) {
	c := s.c
	defer func() {
		rc := lib.Xsqlite3_reset(c.tls, s.p)
		lib.Xsqlite3_clear_bindings(c.tls, s.p)
		if err == nil && rc != lib.SQLITE_OK {
			err = c.err(rc)
		}
	}()
	if n := int(lib.Xsqlite3_bind_parameter_count(c.tls, s.p)); n != len(args) {
		return fmt.Errorf("sqlite: statement takes %d arguments, got %d", n, len(args))
	}
	need := 0
	for _, a := range args {
		switch v := a.(type) {
		case string:
			need += len(v)
		case []byte:
			need += len(v)
		}
	}
	if err := c.reserve(need); err != nil {
		return err
	}
	mem := unsafe.Slice((*byte)(cptr(c.arena)), c.size)
	off := 0
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
		case string:
			copy(mem[off:], v)
			rc = lib.Xsqlite3_bind_text(c.tls, s.p, col, c.arena+uintptr(off), int32(len(v)), 0)
			off += len(v)
		case []byte:
			if v == nil {
				rc = lib.Xsqlite3_bind_null(c.tls, s.p, col)
				break
			}
			copy(mem[off:], v)
			rc = lib.Xsqlite3_bind_blob(c.tls, s.p, col, c.arena+uintptr(off), int32(len(v)), 0)
			off += len(v)
		default:
			// reflect.TypeOf, not %T: handing a to fmt would make every
			// argument of every call escape to the heap.
			return fmt.Errorf("sqlite: argument %d: unsupported type %s", i+1, reflect.TypeOf(a))
		}
		if rc != lib.SQLITE_OK {
			return c.err(rc)
		}
	}
	for {
		switch rc := lib.Xsqlite3_step(c.tls, s.p); rc {
		case lib.SQLITE_ROW:
			if row == nil {
				continue
			}
			if err := row(s); err != nil {
				return err
			}
		case lib.SQLITE_DONE:
			return nil
		default:
			return c.err(rc)
		}
	}
}

func (s *rawStmt) int64(col int) int64 { return lib.Xsqlite3_column_int64(s.c.tls, s.p, int32(col)) }

var pinOnce sync.Once

// pinAllocatorPages keeps one block of every small size class of
// modernc's C allocator alive for the life of the process. The allocator
// unmaps a 64 KiB page as soon as its last block is freed, and SQLite's
// short-lived scratch (b-tree balancing, statement journals) made it map
// and unmap pages several times per batch: a fifth of ingest CPU in
// profiles. Cost: at most one page per class, about 700 KiB.
func pinAllocatorPages() {
	pinOnce.Do(func() {
		tls := libc.NewTLS()
		defer tls.Close()
		for log := 4; log <= 14; log++ {
			libc.Xmalloc(tls, libc.Tsize_t(1)<<log)
		}
	})
}
