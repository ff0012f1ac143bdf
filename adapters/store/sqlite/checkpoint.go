package sqlite

import (
	"time"

	"github.com/qase-sync/qase-sync/adapters/store/sqlite/internal/capi"
)

// checkpointEvery bounds how often the checkpointer runs: pages written
// again within one interval are copied to the database file once.
const checkpointEvery = 100 * time.Millisecond

// checkpointer copies committed WAL frames into the database file on its
// own connection and goroutine. The writer connections have automatic
// checkpoints turned off: SQLite would otherwise run them inside the
// commit that crosses the threshold, on the ingest path, with every
// waiting webhook delivery held up behind it (a sixth of ingest CPU in
// profiles). A PASSIVE checkpoint runs beside the writer and never blocks
// it.
type checkpointer struct {
	conn *capi.Conn
	kick chan struct{}
	stop chan struct{}
	done chan struct{}
	// report is told about a failure, and about the recovery after one
	// (err nil); a failure that repeats is reported once.
	report  func(error)
	lastErr string
}

func startCheckpointer(conn *capi.Conn, report func(error)) *checkpointer {
	c := &checkpointer{conn: conn, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}), report: report}
	go c.run()
	return c
}

// wake asks for a checkpoint after a commit; it never blocks.
func (c *checkpointer) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *checkpointer) run() {
	defer close(c.done)
	for {
		select {
		case <-c.stop:
			return
		case <-c.kick:
		}
		switch err := c.conn.Exec("PRAGMA wal_checkpoint(PASSIVE)"); {
		case err != nil && err.Error() != c.lastErr:
			c.lastErr = err.Error()
			c.report(err)
		case err == nil && c.lastErr != "":
			c.lastErr = ""
			c.report(nil)
		}
		select {
		case <-c.stop:
			return
		case <-time.After(checkpointEvery):
		}
	}
}

// close stops the goroutine and tries a last checkpoint that also
// truncates the WAL, so a stopped service leaves a compact file. It does
// not wait for readers of another process: then the WAL simply stays,
// as it would after a crash, and is checkpointed later.
func (c *checkpointer) close() error {
	close(c.stop)
	<-c.done
	_ = c.conn.Exec("PRAGMA busy_timeout = 0; PRAGMA wal_checkpoint(TRUNCATE)")
	return c.conn.Close()
}
