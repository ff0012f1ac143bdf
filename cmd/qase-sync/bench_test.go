package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/qase-sync/qase-sync/adapters/qase"
	"github.com/qase-sync/qase-sync/adapters/store/sqlite"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// benchMapper routes every served event to one route.
type benchMapper struct{}

func (benchMapper) Routes(string, string, qsync.Kind) []string { return []string{"bench"} }
func (benchMapper) RouteInfo(string) (qsync.RouteInfo, bool)   { return qsync.RouteInfo{}, false }
func (benchMapper) RouteNames() []string                       { return []string{"bench"} }
func (benchMapper) Desired(string, qsync.Entity) (qsync.Desired, error) {
	return qsync.Desired{Skip: true}, nil
}

// BenchmarkWebhook compares durable ingest (real handler, inbox with group
// commit, SQLite) with a no-op handler that only reads the body, measured
// in the same run with the same client load. A micro-benchmark for
// changing the ingest path: load generator in the same process, no
// workers, logs discarded. The figures users get come from `make bench`
// (internal/e2ebench, docs/benchmarks.md).
func BenchmarkWebhook(b *testing.B) {
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	log := logrus.NewEntry(quiet)

	// Two offered loads: 32 and 128 concurrent senders (a burst). Group
	// commit batches what is in flight, so ingest scales with concurrency
	// until the store's CPU cost per event is the limit.
	for _, clients := range []int{32, 128} {
		b.Run(fmt.Sprintf("c%d/noop", clients), func(b *testing.B) {
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusAccepted)
				_, _ = w.Write([]byte(`{"status":"accepted"}`))
			})
			benchLoad(b, h, clients)
		})
		for _, syncMode := range []string{"full", "normal"} {
			b.Run(fmt.Sprintf("c%d/ingest-sqlite-%s", clients, syncMode), func(b *testing.B) {
				benchIngest(b, log, syncMode, clients)
			})
		}
	}
}

func benchIngest(b *testing.B, log *logrus.Entry, syncMode string, clients int) {
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: filepath.Join(b.TempDir(), "bench.db"), Synchronous: syncMode})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	inbox := qsync.NewInbox(qsync.InboxOptions{Store: st, Mapper: benchMapper{}, Logger: log})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { inbox.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	h := qase.NewHandler(qase.HandlerOptions{Acceptor: inbox, Secrets: []string{"bench-secret"}, Logger: log})
	benchLoad(b, h, clients)
}

var benchSeq atomic.Int64

// benchLoad drives h through a real loopback HTTP server with the given
// number of concurrent keep-alive clients, each request a distinct defect
// event.
func benchLoad(b *testing.B, h http.Handler, clients int) {
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}}
	var mu sync.Mutex
	var lat []time.Duration
	b.SetParallelism(max(1, clients/runtime.GOMAXPROCS(0)))
	b.ReportAllocs()
	b.ResetTimer()
	stealBefore, stealOK := cpuSteal()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			id := benchSeq.Add(1)
			body := fmt.Sprintf(`{"event_name":"defect.created","timestamp":1700000000,"project_code":"BENCH","team_member_id":1,"payload":{"id":%d,"title":"Defect %d","severity":"major","actual_result":"it broke","attachments":[]}}`, id, id)
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/webhooks/qase", bytes.NewBufferString(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Qase-Secret", "bench-secret")
			t0 := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
			mine = append(mine, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "req/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	if after, ok := cpuSteal(); ok && stealOK && after.total > stealBefore.total {
		// The VM's host taking CPU away: a run with much steal time
		// measures the host, not qase-sync.
		b.ReportMetric(100*float64(after.steal-stealBefore.steal)/float64(after.total-stealBefore.total), "steal-%")
	}
}

type cpuTicks struct{ steal, total uint64 }

// cpuSteal reads the machine's CPU tick counters (Linux /proc/stat).
func cpuSteal() (cpuTicks, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTicks{}, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTicks{}, false
	}
	var t cpuTicks
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return cpuTicks{}, false
		}
		if i < 8 { // user nice system idle iowait irq softirq steal (guest time is inside user)
			t.total += n
		}
		if i == 7 {
			t.steal = n
		}
	}
	return t, true
}
