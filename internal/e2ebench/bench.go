package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"gopkg.in/yaml.v3"
)

// options are the knobs of a run (flags; `make bench` passes BENCH_*).
type options struct {
	bin, config, testdata, out, work string
	readcost                         string
	rounds                           int
	duration, rateDuration, drainMax time.Duration
	senders                          []int
	pgSenders                        []int
	rate                             float64
	reconcileKeys                    int
	pgDSN                            string
	pgReplicas                       []int
	quiet                            bool
	profile                          string
}

type bench struct {
	opt  options
	self string
	log  io.Writer
	seq  int64 // run counter: fresh ids, dirs and log files per run
}

func benchMain(args []string, stdout, stderr io.Writer) error {
	var o options
	fs := flag.NewFlagSet("e2ebench", flag.ContinueOnError)
	fs.StringVar(&o.bin, "bin", "bin/qase-sync", "the qase-sync binary to measure")
	fs.StringVar(&o.config, "config", "config.example.yaml", "configuration the bench config is derived from (routes, trackers, workers)")
	fs.StringVar(&o.testdata, "testdata", "testdata/qase", "directory of real Qase bodies")
	fs.StringVar(&o.out, "out", "", "write the report here (default stdout)")
	fs.StringVar(&o.work, "work", "", "directory for databases and logs (default a new temporary one, removed afterwards)")
	fs.StringVar(&o.readcost, "readcost", "", "file with the reconciler read-cost report (TestRecReadCost) to include")
	fs.IntVar(&o.rounds, "rounds", 3, "interleaved rounds (no-op, qase-sync, no-op, …); figures are medians over them")
	fs.DurationVar(&o.duration, "duration", 8*time.Second, "length of each closed-loop run")
	fs.DurationVar(&o.rateDuration, "rate-duration", 20*time.Second, "length of each fixed-rate run")
	fs.DurationVar(&o.drainMax, "drain", 15*time.Second, "how long to watch the workers drain after a run")
	sendersFlag := fs.String("senders", "16,32,128", "closed-loop sender counts (SQLite)")
	pgSendersFlag := fs.String("pg-senders", "32,128", "closed-loop sender counts (PostgreSQL)")
	fs.Float64Var(&o.rate, "rate", 1000, "offered events per second of the fixed-rate runs")
	fs.IntVar(&o.reconcileKeys, "reconcile-keys", 10000, "defects the reconcile measurement syncs and then reconciles unchanged (0 skips it)")
	fs.StringVar(&o.pgDSN, "pg", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL admin DSN; throwaway databases are created and dropped through it (empty skips PostgreSQL)")
	replicasFlag := fs.String("pg-replicas", "1,3", "PostgreSQL replica counts")
	fs.BoolVar(&o.quiet, "q", false, "no progress on stderr")
	fs.StringVar(&o.profile, "profile", "", "directory for CPU profiles of qase-sync during each load of the first round, and heap profiles at their ends (pprof on the admin listener)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if o.senders, err = ints(*sendersFlag); err != nil {
		return err
	}
	if o.pgSenders, err = ints(*pgSendersFlag); err != nil {
		return err
	}
	if o.pgReplicas, err = ints(*replicasFlag); err != nil {
		return err
	}
	for _, p := range []*string{&o.bin, &o.config, &o.testdata} {
		if *p, err = filepath.Abs(*p); err != nil {
			return err
		}
	}
	if _, err := os.Stat(o.bin); err != nil {
		return fmt.Errorf("%w (run `make build`)", err)
	}
	b := &bench{opt: o, log: stderr}
	if o.quiet {
		b.log = io.Discard
	}
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if b.opt.work == "" {
		dir, err := os.MkdirTemp("", "qase-sync-e2ebench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		b.opt.work = dir
	}
	res, err := b.run()
	if err != nil {
		return err
	}
	report := res.markdown(b.opt)
	if o.out == "" {
		_, err = io.WriteString(stdout, report)
		return err
	}
	return os.WriteFile(o.out, []byte(report), 0o644)
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q: want positive integers separated by commas", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// target is one system under test: the no-op server or qase-sync on a
// store with some replicas.
type target struct {
	name     string // noop, sqlite, pg1, pg3
	store    string // "", sqlite, postgres
	replicas int
}

const adminToken = "bench-admin-token"

// serviceConfig derives the bench configuration from the example
// configuration (its routes, trackers in dry-run, workers): only where it
// listens, its store, its secrets, logging and the reconciler change.
func (b *bench) serviceConfig(listen, store, path, dsn string, fake string) ([]byte, error) {
	src, err := os.ReadFile(b.opt.config)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", b.opt.config, err)
	}
	set := func(path string, v any) {
		if err == nil {
			err = setPath(&doc, path, v)
		}
	}
	set("server.listen", listen)
	set("server.admin_token", adminToken)
	set("server.write_timeout", "10m") // a reconcile pass over 10k keys answers on /admin/reconcile
	set("server.shutdown_delay", "0s")
	set("qase.secrets", []string{benchSecret})
	set("store.driver", store)
	if store == "sqlite" {
		set("store.sqlite.path", path)
	} else {
		set("store.postgres", map[string]string{"dsn": dsn})
	}
	set("log.format", "json")
	set("log.level", "info")
	if fake != "" {
		set("qase.api_token", "bench-qase-token")
		set("qase.api_url", fake)
		set("reconcile.enabled", true)
		set("reconcile.schedule", "@every 8760h") // passes are started through /admin/reconcile
		set("reconcile.projects", []string{benchProject})
		// The measured pass is a full sweep, the dearer kind: an
		// incremental pass would search Qase and see no change at all.
		set("reconcile.incremental", false)
	} else {
		set("qase.api_token", "")
		set("reconcile.enabled", false)
	}
	if err != nil {
		return nil, err
	}
	return yaml.Marshal(&doc)
}

// setPath sets a dotted mapping path in a YAML document, creating keys.
func setPath(doc *yaml.Node, path string, v any) error {
	n := doc
	if n.Kind == yaml.DocumentNode {
		n = n.Content[0]
	}
	keys := strings.Split(path, ".")
	for i, k := range keys {
		if n.Kind != yaml.MappingNode {
			return fmt.Errorf("config: %s is not a mapping", strings.Join(keys[:i], "."))
		}
		var next *yaml.Node
		for j := 0; j+1 < len(n.Content); j += 2 {
			if n.Content[j].Value == k {
				next = n.Content[j+1]
			}
		}
		if next == nil {
			next = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k}, next)
		}
		if i == len(keys)-1 {
			var val yaml.Node
			if err := val.Encode(v); err != nil {
				return err
			}
			*next = val
		}
		n = next
	}
	return nil
}

// startTarget starts a target's processes on a fresh store and waits
// until every one is ready.
func (b *bench) startTarget(t target, fake string) ([]*proc, func(), error) {
	b.seq++
	dir := filepath.Join(b.opt.work, fmt.Sprintf("%03d-%s", b.seq, t.name))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	logPath := filepath.Join(dir, "service.log")
	if t.store == "" {
		addr, err := freeAddr()
		if err != nil {
			return nil, nil, err
		}
		p, err := start("noop", exec.Command(b.self, "noop", "-listen", addr), logPath, addr)
		if err != nil {
			return nil, nil, err
		}
		if err := p.waitReady("http://"+addr+"/readyz", 30*time.Second); err != nil {
			p.stop()
			return nil, nil, err
		}
		return []*proc{p}, func() { p.stop() }, nil
	}
	var dsn string
	dropDB := func() {}
	if t.store == "postgres" {
		var err error
		dsn, dropDB, err = b.throwawayDB(fmt.Sprintf("qase_sync_bench_%d_%d", os.Getpid(), b.seq))
		if err != nil {
			return nil, nil, err
		}
	}
	var ps []*proc
	stopAll := func() {
		for _, p := range ps {
			p.stop()
		}
		dropDB()
	}
	for i := range max(1, t.replicas) {
		addr, err := freeAddr()
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		cfg, err := b.serviceConfig(addr, t.store, filepath.Join(dir, "qase-sync.db"), dsn, fake)
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		cfgPath := filepath.Join(dir, fmt.Sprintf("config-%d.yaml", i))
		if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
			stopAll()
			return nil, nil, err
		}
		cmd := exec.Command(b.opt.bin, "serve", "-c", cfgPath)
		cmd.Dir = dir
		p, err := start(fmt.Sprintf("qase-sync[%s/%d]", t.name, i), cmd, filepath.Join(dir, fmt.Sprintf("service-%d.log", i)), addr)
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		ps = append(ps, p)
		// Replicas start one after another: the first migrates the schema.
		if err := p.waitReady("http://"+addr+"/readyz", 60*time.Second); err != nil {
			stopAll()
			return nil, nil, err
		}
	}
	return ps, stopAll, nil
}

// throwawayDB creates an empty database and returns its DSN and a func
// that drops it.
func (b *bench) throwawayDB(name string) (string, func(), error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, b.opt.pgDSN)
	if err != nil {
		return "", nil, fmt.Errorf("postgres: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("postgres: %w", err)
	}
	cfg, err := pgx.ParseConfig(b.opt.pgDSN)
	if err != nil {
		return "", nil, err
	}
	dsn := fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, name)
	if cfg.Password != "" {
		return "", nil, fmt.Errorf("postgres: give a DSN without a password (trust or a .pgpass file)")
	}
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, b.opt.pgDSN); err == nil {
			_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
			c.Close(ctx)
		}
	}
	return dsn, drop, nil
}

func addrs(ps []*proc) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.addr
	}
	return out
}

// run is one measured load against one target.
type run struct {
	round    int
	target   string
	senders  int     // closed loop; 0 for fixed rate
	rate     float64 // fixed rate offered; 0 for closed loop
	load     loadResult
	cpu      time.Duration // server processes, during the load
	loadCPU  time.Duration // this process (the load generator)
	others   time.Duration // everything else on the machine
	steal    float64
	rss, hwm int64 // after the load (VmRSS sum, highest VmHWM)
	rssFile  int64 // after the load: the part of RSS mapping files
	jobs     float64
	drain    drain
}

// drain is what the workers did after the load stopped.
type drain struct {
	watched  bool
	jobs     float64       // finished after the load ended
	elapsed  time.Duration // until the last one finished
	cpu      time.Duration
	complete bool // the queue read empty before drainMax
}

func (b *bench) measure(round int, t target, senders int, rate float64, p *payloads) (run, error) {
	ps, stop, err := b.startTarget(t, "")
	if err != nil {
		return run{}, err
	}
	defer stop()
	r := run{round: round, target: t.name, senders: senders, rate: rate}
	ctx := context.Background()
	m0 := scrapeAll(ctx, ps)
	u0, t0, s0 := usageOf(ps), readTicks(), selfCPU()
	length := b.opt.duration
	if senders == 0 {
		length = b.opt.rateDuration
	}
	var profiled chan error
	base := filepath.Join(b.opt.profile, t.name+"-"+strings.NewReplacer(" ", "-", "/", "-per-").Replace(loadName(senders, rate)))
	if b.opt.profile != "" && round == 1 && t.store != "" {
		profiled = make(chan error, 1)
		go func() { profiled <- cpuProfile(ps[0].addr, length, base+".cpu.pprof") }()
		// Where goroutines wait (off-CPU: locks, SQLite's busy handler),
		// halfway through the load.
		go func() {
			time.Sleep(length / 2)
			if err := fetch(ps[0].addr, "/debug/pprof/goroutine?debug=1", time.Minute, base+".goroutines.txt"); err != nil {
				b.logf("goroutine profile: %v", err)
			}
		}()
	}
	if senders > 0 {
		r.load = closedLoop(addrs(ps), senders, length, p)
	} else {
		r.load = openLoop(addrs(ps), rate, length, p)
	}
	if profiled != nil {
		if err := <-profiled; err != nil {
			b.logf("profile: %v", err)
		}
		// What the heap holds at the end of the load (the RSS goal).
		if err := fetch(ps[0].addr, "/debug/pprof/heap", time.Minute, base+".heap.pprof"); err != nil {
			b.logf("heap profile: %v", err)
		}
	}
	u1, t1, s1 := usageOf(ps), readTicks(), selfCPU()
	m1 := scrapeAll(ctx, ps)
	r.cpu, r.steal, r.rss, r.hwm, r.rssFile, r.jobs = u1.cpu-u0.cpu, stealPct(t0, t1), u1.rss, u1.hwm, u1.rssFile, m1.jobs-m0.jobs
	r.loadCPU = s1 - s0
	r.others = othersCPU(t0, t1, r.cpu, r.loadCPU)
	if t.store == "sqlite" && b.opt.drainMax > 0 { // PostgreSQL: ingest only
		r.drain = b.watchDrain(ps, m1.jobs, u1)
		r.hwm = max(r.hwm, usageOf(ps).hwm)
	}
	b.logf("round %d %-6s %s: %.0f/s accepted (%d failed), p50 %s p99 %s, cpu %s, jobs %.0f+%.0f in drain (%s)",
		round, t.name, loadName(senders, rate), r.load.rate(), r.load.failed, r.load.pct(.5).Round(10*time.Microsecond), r.load.pct(.99).Round(10*time.Microsecond),
		r.cpu.Round(time.Millisecond), r.jobs, r.drain.jobs, r.drain.elapsed.Round(time.Millisecond))
	return r, nil
}

func loadName(senders int, rate float64) string {
	if senders > 0 {
		return fmt.Sprintf("%d senders", senders)
	}
	return fmt.Sprintf("%.0f events/s offered", rate)
}

// watchDrain follows the workers after the load until the queue is empty
// (or drainMax): jobs finished, the time until the last one, CPU spent.
func (b *bench) watchDrain(ps []*proc, jobs0 float64, u0 usage) drain {
	start := time.Now()
	d := drain{watched: true}
	lastJobs, lastChange := jobs0, start
	lastCPU := u0.cpu
	for time.Since(start) < b.opt.drainMax {
		time.Sleep(250 * time.Millisecond)
		m := scrapeAll(context.Background(), ps)
		u := usageOf(ps)
		if m.jobs > lastJobs {
			lastJobs, lastChange, lastCPU = m.jobs, time.Now(), u.cpu
		}
		// The service caches the queue depth for up to 5 s: an empty
		// queue counts once jobs have stopped finishing for longer.
		if m.ok && m.queue == 0 && time.Since(lastChange) > 6*time.Second {
			d.complete = true
			break
		}
	}
	d.jobs, d.elapsed, d.cpu = lastJobs-jobs0, lastChange.Sub(start), lastCPU-u0.cpu
	return d
}

// reconcileResult is the measured pass over unchanged keys.
type reconcileResult struct {
	keys          int
	report        map[string]any
	passWall      time.Duration // the pass (listing, enqueueing)
	wall          time.Duration // until its verify jobs finished
	cpu           time.Duration
	writeBytes    int64 // /proc/PID/io write_bytes of the server
	fileGrowth    int64 // SQLite db + WAL + dry-run state files
	logBytes      int64 // the service's log (inside writeBytes)
	jobs          float64
	seedWall      time.Duration
	steal         float64
	others        float64 // CPUs the rest of the machine kept busy
	drained, done bool
}

func (b *bench) reconcile() (reconcileResult, error) {
	res := reconcileResult{keys: b.opt.reconcileKeys}
	fake, fakeURL, err := b.startFake(b.opt.reconcileKeys, "bench-qase-token")
	if err != nil {
		return res, err
	}
	defer fake.stop()
	ps, stop, err := b.startTarget(target{name: "reconcile", store: "sqlite", replicas: 1}, fakeURL)
	if err != nil {
		return res, err
	}
	defer stop()
	dir := ps[0].cmd.Dir
	pass := func() (map[string]any, time.Duration, bool, error) {
		m0 := scrape(context.Background(), ps[0].addr)
		t0 := time.Now()
		rep, err := adminPost(ps[0].addr, "/admin/reconcile")
		if err != nil {
			return nil, 0, false, err
		}
		passWall := time.Since(t0)
		want, _ := rep["enqueued"].(float64)
		// Wait for the pass's verify jobs: jobs finished reach the
		// number enqueued.
		deadline := time.Now().Add(30 * time.Minute)
		for time.Now().Before(deadline) {
			if m := scrape(context.Background(), ps[0].addr); m.jobs-m0.jobs >= want {
				return rep, passWall, true, nil
			}
			time.Sleep(100 * time.Millisecond)
		}
		return rep, passWall, false, nil
	}
	t0 := time.Now()
	for i := 0; i < 2; i++ { // the first pass creates the issues; the second settles anything left
		rep, _, ok, err := pass()
		if err != nil {
			return res, err
		}
		b.logf("reconcile seed pass %d: %v (drained %v, %s)", i+1, rep, ok, time.Since(t0).Round(time.Second))
	}
	res.seedWall = time.Since(t0)
	time.Sleep(2 * time.Second) // let the last writes (WAL checkpoint, state file) land before the reading
	files0, log0 := dirBytes(dir), fileSize(filepath.Join(dir, "service-0.log"))
	m0 := scrape(context.Background(), ps[0].addr)
	u0, tk0, s0 := usageOf(ps), readTicks(), selfCPU()
	w0 := time.Now()
	var profiled chan error
	if b.opt.profile != "" {
		profiled = make(chan error, 1)
		go func() {
			profiled <- cpuProfile(ps[0].addr, 20*time.Second, filepath.Join(b.opt.profile, "reconcile-pass.cpu.pprof"))
		}()
	}
	rep, passWall, ok, err := pass()
	if err != nil {
		return res, err
	}
	res.wall = time.Since(w0)
	time.Sleep(2 * time.Second)
	u1, tk1, s1 := usageOf(ps), readTicks(), selfCPU()
	m1 := scrape(context.Background(), ps[0].addr)
	res.others = othersCPU(tk0, tk1, u1.cpu-u0.cpu, s1-s0).Seconds() / time.Since(w0).Seconds()
	if profiled != nil {
		if err := <-profiled; err != nil {
			b.logf("profile: %v", err)
		}
	}
	res.report, res.passWall, res.drained, res.done = rep, passWall, ok, true
	res.logBytes = fileSize(filepath.Join(dir, "service-0.log")) - log0
	res.cpu, res.writeBytes, res.fileGrowth, res.jobs, res.steal = u1.cpu-u0.cpu, u1.writeBytes-u0.writeBytes, dirBytes(dir)-files0, m1.jobs-m0.jobs, stealPct(tk0, tk1)
	b.logf("reconcile measured pass: %v, cpu %s, wrote %d bytes, files grew %d bytes", rep, res.cpu, res.writeBytes, res.fileGrowth)
	return res, nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// dirBytes sums the sizes of the files in dir (store, WAL, state files).
func dirBytes(dir string) int64 {
	var n int64
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".log") {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
	}
	return n
}

func adminPost(addr, path string) (map[string]any, error) {
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := (&http.Client{Timeout: 15 * time.Minute}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("POST %s: %s: %s", path, resp.Status, body)
	}
	var out map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("POST %s: %w", path, err)
	}
	return out, nil
}

// results is everything a benchmark run measured.
type results struct {
	started, ended time.Time
	runs           []run
	rec            reconcileResult
	version        string
	pgSkipped      string // why PostgreSQL was not measured
}

func pgReachable(dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	return c.Close(ctx)
}

func (b *bench) run() (*results, error) {
	res := &results{started: time.Now()}
	if out, err := exec.Command(b.opt.bin, "version").Output(); err == nil {
		res.version = strings.TrimSpace(string(out))
	}
	if b.opt.pgDSN != "" {
		if err := pgReachable(b.opt.pgDSN); err != nil {
			b.logf("PostgreSQL skipped: %v", err)
			res.pgSkipped = err.Error()
			b.opt.pgDSN = ""
		}
	}
	noop := target{name: "noop"}
	sqlite := target{name: "sqlite", store: "sqlite", replicas: 1}
	var pgs []target
	if b.opt.pgDSN != "" {
		for _, n := range b.opt.pgReplicas {
			pgs = append(pgs, target{name: fmt.Sprintf("pg%d", n), store: "postgres", replicas: n})
		}
	}
	for round := 1; round <= b.opt.rounds; round++ {
		add := func(t target, senders int, rate float64) error {
			p, err := newPayloads(b.opt.testdata, b.seq*10_000_000)
			if err != nil {
				return err
			}
			r, err := b.measure(round, t, senders, rate, p)
			if err != nil {
				return fmt.Errorf("%s, %s: %w", t.name, loadName(senders, rate), err)
			}
			res.runs = append(res.runs, r)
			return nil
		}
		for _, s := range b.opt.senders {
			if err := add(noop, s, 0); err != nil {
				return nil, err
			}
			if err := add(sqlite, s, 0); err != nil {
				return nil, err
			}
		}
		for _, s := range b.opt.pgSenders {
			for _, t := range pgs {
				if err := add(noop, s, 0); err != nil {
					return nil, err
				}
				if err := add(t, s, 0); err != nil {
					return nil, err
				}
			}
		}
		if b.opt.rate > 0 {
			if err := add(noop, 0, b.opt.rate); err != nil {
				return nil, err
			}
			if err := add(sqlite, 0, b.opt.rate); err != nil {
				return nil, err
			}
		}
	}
	if b.opt.reconcileKeys > 0 {
		rec, err := b.reconcile()
		if err != nil {
			return nil, fmt.Errorf("reconcile: %w", err)
		}
		res.rec = rec
	}
	res.ended = time.Now()
	return res, nil
}

// cpuProfile saves a CPU profile of the service over d (the admin
// listener's /debug/pprof, behind the admin token).
func cpuProfile(addr string, d time.Duration, path string) error {
	return fetch(addr, fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(1, int(d.Seconds()))), d+time.Minute, path)
}

// fetch saves an admin endpoint's answer to path.
func fetch(addr, endpoint string, timeout time.Duration, path string) error {
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+endpoint, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", endpoint, resp.Status)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
