package sqlite

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// groupSync makes commits durable together (group commit).
//
// With synchronous=full SQLite fsyncs the WAL inside every COMMIT, while
// holding the database's one write lock: every ingest batch and every
// worker commit waited for the fsyncs of all the commits queued before
// it, so the fsync, not the work, set the pace (about 1 ms of lock per
// job, a third of it fsync). Instead the writer connections commit with
// synchronous=normal (the WAL written, not flushed) and each writer, once
// it has released the lock, waits here until an fsync of the WAL that
// began after its commit has returned. Commits that land while one fsync
// runs share the next one: one fsync per round instead of one per commit,
// and none under the lock.
//
// What a caller is told is unchanged: a write returns — a delivery is
// acknowledged, an intent is trusted before the tracker call — only once
// it is on disk. fsync(2) flushes the file, whichever descriptor wrote it,
// and WAL frames are appended in commit order, so one fsync covers every
// commit numbered before it began. Frames are only ever moved out of the
// WAL by a checkpoint, which syncs the WAL before and the database file
// after copying (the checkpointer's connection keeps synchronous=full),
// so a commit a checkpoint has already copied is durable too.
//
// A failed fsync is final (err is sticky), as in PostgreSQL: after one,
// the kernel may have dropped the dirty pages, and a later fsync that
// succeeds proves nothing about them.
type groupSync struct {
	path  string               // the WAL file
	fsync func(*os.File) error // (*os.File).Sync; tests count calls

	mu        sync.Mutex
	cond      sync.Cond
	f         *os.File
	committed uint64 // commits numbered so far
	synced    uint64 // commits known durable
	running   bool
	err       error
}

func newGroupSync(walPath string) *groupSync {
	g := &groupSync{path: walPath, fsync: (*os.File).Sync}
	g.cond.L = &g.mu
	return g
}

// commit numbers a commit for wait. Call it under the write lock, right
// after the COMMIT, so numbers follow the order of the WAL.
func (g *groupSync) commit() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.committed++
	return g.committed
}

// wait returns once commit n is on disk: it joins the fsync round that
// will cover n, or leads one if none is running.
func (g *groupSync) wait(n uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.synced < n && g.err == nil {
		if g.running {
			g.cond.Wait()
			continue
		}
		// Lead a round: it covers every commit numbered so far.
		g.running = true
		upto := g.committed
		g.mu.Unlock()
		err := g.flush()
		g.mu.Lock()
		g.running = false
		if err != nil {
			g.err = fmt.Errorf("sqlite: fsync of the WAL failed; nothing written since the last successful one can be trusted to be on disk (restart the service): %w", err)
		} else {
			g.synced = upto
		}
		g.cond.Broadcast()
	}
	if g.synced >= n {
		return nil
	}
	return g.err
}

// failed returns the sticky error of a failed fsync, or nil.
func (g *groupSync) failed() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// flush fsyncs the WAL; it runs in one round at a time. The first one also
// fsyncs the directory, as SQLite does for a WAL file it creates, so the
// file's name is as durable as its content.
func (g *groupSync) flush() error {
	if g.f == nil {
		f, err := os.Open(g.path)
		if err != nil {
			return err
		}
		if err := syncDir(filepath.Dir(g.path)); err != nil {
			_ = f.Close()
			return err
		}
		g.f = f
	}
	return g.fsync(g.f)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// close releases the WAL descriptor; call it once no writer is left.
func (g *groupSync) close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.running {
		g.cond.Wait()
	}
	if g.f == nil {
		return nil
	}
	err := g.f.Close()
	g.f = nil
	return err
}
