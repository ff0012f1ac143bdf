package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clkTck is USER_HZ, the unit of utime/stime in /proc/PID/stat; 100 on
// every Linux this runs on (a kernel constant, not the scheduler's HZ).
const clkTck = 100

// proc is a child process the driver started and measures from /proc.
type proc struct {
	name string
	cmd  *exec.Cmd
	addr string // host:port it serves on
	done chan error
}

// start runs cmd with its stdout and stderr appended to logPath.
func start(name string, cmd *exec.Cmd, logPath, addr string) (*proc, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, addr: addr, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); lf.Close() }()
	return p, nil
}

// waitReady polls url until it answers 200 or the process exits.
func (p *proc) waitReady(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("%s exited before it was ready: %v", p.name, err)
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready at %s within %s", p.name, url, timeout)
}

// stop sends SIGTERM and waits (SIGKILL after 30 s).
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// usage is a reading of a process's resource counters.
type usage struct {
	cpu        time.Duration // utime + stime
	writeBytes int64         // bytes it caused to be sent to storage (/proc/PID/io)
	rss, hwm   int64         // bytes
	rssFile    int64         // bytes of RSS that map files (mostly the binary's code)
}

func readUsage(pid int) (usage, error) {
	var u usage
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// The command name (field 2) may contain spaces: fields count from
	// the last ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return u, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64) // field 14
	st, _ := strconv.ParseInt(f[12], 10, 64) // field 15
	u.cpu = time.Duration(ut+st) * time.Second / clkTck
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		u.writeBytes = field(b, "write_bytes:")
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		u.rss = field(b, "VmRSS:") * 1024
		u.hwm = field(b, "VmHWM:") * 1024
		u.rssFile = field(b, "RssFile:") * 1024
	}
	return u, nil
}

func field(b []byte, name string) int64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// usageOf sums the readings of several processes (replicas).
func usageOf(ps []*proc) usage {
	var t usage
	for _, p := range ps {
		u, err := readUsage(p.pid())
		if err != nil {
			continue
		}
		t.cpu += u.cpu
		t.writeBytes += u.writeBytes
		t.rss += u.rss
		t.hwm = max(t.hwm, u.hwm)
		t.rssFile = max(t.rssFile, u.rssFile)
	}
	return t
}

// ticks are the machine's CPU counters (first line of /proc/stat).
type ticks struct{ steal, idle, total uint64 }

func readTicks() ticks {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return ticks{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var t ticks
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i < 8 { // user nice system idle iowait irq softirq steal; guest is inside user
			t.total += n
		}
		if i == 7 {
			t.steal = n
		}
		if i == 3 || i == 4 { // idle, iowait
			t.idle += n
		}
	}
	return t
}

// stealPct is the share of the machine's CPU time its host took between
// two readings.
func stealPct(a, b ticks) float64 {
	if b.total <= a.total {
		return 0
	}
	return 100 * float64(b.steal-a.steal) / float64(b.total-a.total)
}

// freeAddr returns a loopback address nothing listens on (yet).
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// svcMetrics is what the driver reads from a replica's /metrics.
type svcMetrics struct {
	jobs  float64 // qase_sync_jobs_total, all routes and outcomes
	queue float64 // qase_sync_queue_depth (cached by the service for up to 5 s)
	ok    bool
}

func scrape(ctx context.Context, addr string) svcMetrics {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return svcMetrics{}
	}
	defer resp.Body.Close()
	var m svcMetrics
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "qase_sync_jobs_total{"):
			m.jobs += lastFloat(line)
		case strings.HasPrefix(line, "qase_sync_queue_depth "):
			m.queue, m.ok = lastFloat(line), true
		}
	}
	return m
}

func scrapeAll(ctx context.Context, ps []*proc) svcMetrics {
	var t svcMetrics
	for _, p := range ps {
		m := scrape(ctx, p.addr)
		t.jobs += m.jobs
		if m.ok { // every replica reads the same shared queue
			t.queue, t.ok = m.queue, true
		}
	}
	return t
}

func lastFloat(line string) float64 {
	f := strings.Fields(line)
	v, _ := strconv.ParseFloat(f[len(f)-1], 64)
	return v
}

var errNotDrained = errors.New("queue not drained")

// othersCPU is the CPU time the machine spent between two readings in
// processes other than the measured servers and this driver (other
// users of the machine, PostgreSQL's backends): it says how quiet the
// machine was.
func othersCPU(a, b ticks, servers, self time.Duration) time.Duration {
	busy := (b.total - a.total) - (b.idle - a.idle) - (b.steal - a.steal)
	return max(0, time.Duration(busy)*time.Second/clkTck-servers-self)
}

func selfCPU() time.Duration {
	u, _ := readUsage(os.Getpid())
	return u.cpu
}
