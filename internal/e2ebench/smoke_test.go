package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/internal/pgtest"
)

// TestMain lets the test binary play the driver's child processes (the
// no-op server, the fake Qase API): the driver starts them by re-running
// its own executable.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && (os.Args[1] == "noop" || os.Args[1] == "qasefake") {
		main()
		return
	}
	os.Exit(m.Run())
}

// TestSmoke runs the whole benchmark in miniature (one round, one-second
// loads, 30 reconcile keys) against a freshly built binary, so the
// driver cannot rot: every measurement must come back non-empty.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "qase-sync")
	args := []string{"build", "-o", bin}
	if raceEnabled { // share the race-built packages of the other tests' builds
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "./cmd/qase-sync")...)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	pg := pgtest.AdminDSN()
	if err := pgReachable(pg); err != nil {
		t.Logf("PostgreSQL not reachable (%v): its runs are skipped", err)
		pg = ""
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b := &bench{self: self, log: testWriter{t}, opt: options{
		bin: bin, config: filepath.Join(root, "config.example.yaml"), testdata: filepath.Join(root, "testdata/qase"), work: t.TempDir(),
		rounds: 1, duration: time.Second, rateDuration: time.Second, drainMax: 3 * time.Second,
		senders: []int{32}, pgSenders: []int{8}, pgReplicas: []int{1}, rate: 50, reconcileKeys: 30, pgDSN: pg,
		profile: filepath.Join(t.TempDir(), "prof"),
	}}
	res, err := b.run()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"noop": false, "sqlite": false}
	if pg != "" {
		want["pg1"] = false
	}
	for _, r := range res.runs {
		want[r.target] = true
		if r.load.accepted == 0 || r.load.failed != 0 {
			t.Errorf("%s, %s: %d acknowledged, %d failed", r.target, loadName(r.senders, r.rate), r.load.accepted, r.load.failed)
		}
		// /proc counts CPU in 10 ms ticks: the no-op's 50 answers at the
		// fixed rate can take less than one.
		idle := r.target == "noop" && r.senders == 0
		if (r.cpu <= 0 && !idle) || r.hwm <= 0 || r.rssFile <= 0 || r.rssFile > r.hwm {
			t.Errorf("%s, %s: no CPU or RSS reading (%s, peak %d, files %d)", r.target, loadName(r.senders, r.rate), r.cpu, r.hwm, r.rssFile)
		}
		if r.target == "sqlite" && r.jobs+r.drain.jobs == 0 {
			t.Errorf("sqlite, %s: no job finished: the workers were not running", loadName(r.senders, r.rate))
		}
	}
	for target, seen := range want {
		if !seen {
			t.Errorf("no run against %s", target)
		}
	}
	// The measured pass is a full sweep over keys in sync: every key is
	// checked and none becomes a job.
	if rec := res.rec; !rec.done || !rec.drained || rec.cpu <= 0 || rec.report["checked"] != float64(30) || rec.report["unchanged"] != float64(30) {
		t.Errorf("reconcile: %+v", rec)
	}
	ents, _ := os.ReadDir(b.opt.profile)
	var cpu, heap int
	for _, e := range ents {
		cpu += map[bool]int{true: 1}[strings.HasSuffix(e.Name(), ".cpu.pprof")]
		heap += map[bool]int{true: 1}[strings.HasSuffix(e.Name(), ".heap.pprof")]
	}
	if cpu == 0 || heap == 0 {
		t.Errorf("profiles saved: %d CPU, %d heap; want both", cpu, heap)
	}
	md := res.markdown(b.opt)
	for _, s := range []string{"durable ingest (SQLite) at 32 senders vs no-op", "ack p99 at 50 events/s offered", "reconcile over 30 unchanged keys: CPU per key", "## All runs"} {
		if !strings.Contains(md, s) {
			t.Errorf("report lacks %q:\n%s", s, md)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
