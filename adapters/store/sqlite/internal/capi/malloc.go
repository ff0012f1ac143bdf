package capi

import (
	"sync"
	"sync/atomic"
	"unsafe"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"
)

// Keeping SQLite's page-sized blocks. modernc's allocator unmaps a page
// of a size class as soon as its last block is freed, and gives every
// block above 16 KiB a mapping of its own. SQLite frees page-sized blocks
// by the hundred at a time: a reader's whole page cache (each entry a page
// and its header, about 4.4 KiB) whenever another connection has written
// since its last read, and the scratch block of every b-tree balance (5 to
// 20 KiB). The pages pinned by pinAllocatorPages do not cover that many,
// and at full ingest speed the mmap and munmap calls were an eighth of the
// service's CPU, munmap the dearer as it makes the kernel flush every
// thread's view of the mapping.
//
// bigBlocks sits between SQLite and its default allocator
// (SQLITE_CONFIG_MALLOC, installed before the first connection opens): a
// block above 4 KiB is rounded up to a multiple of 1 KiB and, when freed,
// kept for the next request of its size, up to bigKeepBytes in all.
// Everything else goes straight to the default methods, which also record
// each block's size (xSize), so either kind can be freed or resized by them.
const (
	bigMin       = 4<<10 + 1
	bigMax       = 256 << 10 // larger blocks are rare: left to the default
	bigRound     = 1 << 10
	bigKeepBytes = 2 << 20 // kept blocks, all sizes together
)

var bigBlocks struct {
	def lib.Tsqlite3_mem_methods // SQLite's default methods

	mu    sync.Mutex
	free  [bigMax/bigRound + 1][]uintptr // kept blocks by size / bigRound
	bytes int                            // kept, in all

	hits, misses atomic.Int64 // large requests served from kept blocks, or not
}

var (
	mallocOnce      sync.Once
	mallocInstalled bool
)

// installMalloc puts bigBlocks in front of SQLite's allocator. It must
// run before SQLite is initialized (the first connection opens); if
// another user of the library got there first, SQLite refuses and its
// default stays.
func installMalloc() {
	mallocOnce.Do(func() {
		tls := libc.NewTLS()
		defer tls.Close()
		m := libc.Xmalloc(tls, libc.Tsize_t(unsafe.Sizeof(lib.Tsqlite3_mem_methods{})))
		if m == 0 {
			return
		}
		defer libc.Xfree(tls, m)
		if config(tls, lib.SQLITE_CONFIG_GETMALLOC, m) != lib.SQLITE_OK {
			return
		}
		bigBlocks.def = *(*lib.Tsqlite3_mem_methods)(cptr(m))
		mine := bigBlocks.def
		mine.FxMalloc = funcPointer(bigMalloc)
		mine.FxFree = funcPointer(bigFree)
		mine.FxRoundup = funcPointer(bigRoundup)
		*(*lib.Tsqlite3_mem_methods)(cptr(m)) = mine
		mallocInstalled = config(tls, lib.SQLITE_CONFIG_MALLOC, m) == lib.SQLITE_OK
	})
}

// config calls sqlite3_config(op, p).
func config(tls *libc.TLS, op int32, p uintptr) int32 {
	va := libc.NewVaList(p)
	defer libc.Xfree(tls, va)
	return lib.Xsqlite3_config(tls, op, va)
}

// funcPointer is a Go function as the C code modernc translated calls it:
// a pointer to the function value (see https://golang.org/s/go11func).
// Top-level functions' values are static, so the pointer stays valid.
func funcPointer[T any](f T) uintptr {
	return *(*uintptr)(unsafe.Pointer(&f))
}

// call* call the default methods through their C function pointers.
func callMalloc(tls *libc.TLS, n int32) uintptr {
	return (*(*func(*libc.TLS, int32) uintptr)(unsafe.Pointer(&struct{ uintptr }{bigBlocks.def.FxMalloc})))(tls, n)
}
func callFree(tls *libc.TLS, p uintptr) {
	(*(*func(*libc.TLS, uintptr))(unsafe.Pointer(&struct{ uintptr }{bigBlocks.def.FxFree})))(tls, p)
}
func callSize(tls *libc.TLS, p uintptr) int32 {
	return (*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&struct{ uintptr }{bigBlocks.def.FxSize})))(tls, p)
}
func callRoundup(tls *libc.TLS, n int32) int32 {
	return (*(*func(*libc.TLS, int32) int32)(unsafe.Pointer(&struct{ uintptr }{bigBlocks.def.FxRoundup})))(tls, n)
}

// bigSize is the size a large request is served at; 0 for other sizes.
func bigSize(n int32) int32 {
	if n < bigMin || n > bigMax {
		return 0
	}
	return (n + bigRound - 1) / bigRound * bigRound
}

func bigMalloc(tls *libc.TLS, n int32) uintptr {
	size := bigSize(n)
	if size == 0 {
		return callMalloc(tls, n)
	}
	b := &bigBlocks
	b.mu.Lock()
	if kept := b.free[size/bigRound]; len(kept) > 0 {
		p := kept[len(kept)-1]
		b.free[size/bigRound] = kept[:len(kept)-1]
		b.bytes -= int(size)
		b.mu.Unlock()
		b.hits.Add(1)
		return p
	}
	b.mu.Unlock()
	b.misses.Add(1)
	return callMalloc(tls, size)
}

func bigFree(tls *libc.TLS, p uintptr) {
	if p == 0 {
		return
	}
	// Blocks in range have rounded sizes: bigMalloc rounds them, and SQLite
	// resizes through bigRoundup. A block of another size is not kept.
	if size := callSize(tls, p); size != 0 && size == bigSize(size) {
		b := &bigBlocks
		b.mu.Lock()
		if b.bytes+int(size) <= bigKeepBytes {
			b.free[size/bigRound] = append(b.free[size/bigRound], p)
			b.bytes += int(size)
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
	}
	callFree(tls, p)
}

func bigRoundup(tls *libc.TLS, n int32) int32 {
	if size := bigSize(n); size != 0 {
		return size
	}
	return callRoundup(tls, n)
}

// BigBlockStats reports large requests served from kept blocks and from
// the allocator since the process started, and whether bigBlocks is in
// place (tests).
func BigBlockStats() (hits, misses int64, installed bool) {
	return bigBlocks.hits.Load(), bigBlocks.misses.Load(), mallocInstalled
}
