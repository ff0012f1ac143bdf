package sync

import (
	"runtime"
	"time"
)

// busyThreshold is the share of the process's CPUs in use above which the
// inbox lingers for larger batches. Measured on 2 cores: a closed loop of
// 32 senders keeps the process about two-thirds busy and loses a quarter
// of its throughput to a 1 ms linger; 128 senders keep it about 80% busy
// and gain about 12% from the same linger.
const busyThreshold = 0.75

// CPUGauge tells whether the process is short of CPU: the CPU time it
// used between samples, over the wall time times GOMAXPROCS, smoothed
// over recent samples. It is used by one goroutine (the inbox's).
type CPUGauge struct {
	cpu   func() (time.Duration, bool)
	now   func() time.Time
	procs int

	lastCPU time.Duration
	lastAt  time.Time
	busy    float64 // smoothed utilization, 0..1
}

// NewCPUGauge measures with cpu (the process's CPU time so far; ok=false
// when unknown) against now. Nil arguments use the process's rusage and
// the wall clock.
func NewCPUGauge(cpu func() (time.Duration, bool), now func() time.Time) *CPUGauge {
	if cpu == nil {
		cpu = processCPUTime
	}
	if now == nil {
		now = time.Now
	}
	return &CPUGauge{cpu: cpu, now: now, procs: runtime.GOMAXPROCS(0)}
}

// minSampleWall keeps samples long enough for rusage's resolution.
const minSampleWall = time.Millisecond

// Busy samples the gauge and reports whether the smoothed utilization is
// at or above the threshold.
func (g *CPUGauge) Busy() bool {
	c, ok := g.cpu()
	if !ok {
		return false
	}
	at := g.now()
	if g.lastAt.IsZero() || at.Before(g.lastAt) || c < g.lastCPU {
		g.lastCPU, g.lastAt = c, at
		return g.busy >= busyThreshold
	}
	wall := at.Sub(g.lastAt)
	if wall < minSampleWall {
		return g.busy >= busyThreshold
	}
	u := float64(c-g.lastCPU) / (float64(wall) * float64(g.procs))
	g.busy = 0.7*g.busy + 0.3*min(u, 1)
	g.lastCPU, g.lastAt = c, at
	return g.busy >= busyThreshold
}
