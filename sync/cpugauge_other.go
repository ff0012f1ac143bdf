//go:build !unix

package sync

import "time"

// processCPUTime is unknown here: the inbox never lingers.
func processCPUTime() (time.Duration, bool) { return 0, false }
