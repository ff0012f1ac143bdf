package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

const (
	benchSecret  = "bench-secret"
	benchProject = "BENCH"
	webhookPath  = "/webhooks/qase"
	idSentinel   = 987654321987
)

// template is a real Qase body from testdata/qase split around its
// payload id, so a body costs the load process an append, not a JSON
// encoding (the load runs on the same two cores as the service).
type template struct{ pre, post []byte }

func loadTemplate(dir, name string, ts int64) (template, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return template{}, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return template{}, fmt.Errorf("%s: %w", name, err)
	}
	m["project_code"] = benchProject
	m["timestamp"] = ts
	m["payload"].(map[string]any)["id"] = idSentinel
	out, err := json.Marshal(m)
	if err != nil {
		return template{}, err
	}
	pre, post, ok := bytes.Cut(out, []byte(strconv.FormatInt(idSentinel, 10)))
	if !ok {
		return template{}, fmt.Errorf("%s: id not found", name)
	}
	return template{pre, post}, nil
}

func (t template) body(id int64) []byte {
	b := make([]byte, 0, len(t.pre)+len(t.post)+20)
	b = append(b, t.pre...)
	b = strconv.AppendInt(b, id, 10)
	return append(b, t.post...)
}

// payloads yields the n-th delivery of a run: mostly new defects
// (defect.created, distinct ids), 3 in 20 defect.updated of a defect
// created ten deliveries earlier (the same key: coalesced or synced
// again), 1 in 20 an exact resend of an earlier body (a duplicate by
// content, as Qase's deliveries sometimes are).
type payloads struct {
	created, updated template
	base             int64
}

func newPayloads(dir string, base int64) (*payloads, error) {
	ts := time.Now().Unix()
	c, err := loadTemplate(dir, "defect.created.json", ts)
	if err != nil {
		return nil, err
	}
	u, err := loadTemplate(dir, "defect.updated.json", ts)
	if err != nil {
		return nil, err
	}
	return &payloads{created: c, updated: u, base: base}, nil
}

func (p *payloads) nth(n int64) []byte {
	switch r := n % 20; {
	case r == 0 && n >= 20:
		return p.created.body(p.base + n - 19)
	case r >= 1 && r <= 3 && n >= 10:
		return p.updated.body(p.base + n - 10)
	default:
		return p.created.body(p.base + n)
	}
}

// loadResult is what one load run observed from the client side.
type loadResult struct {
	accepted, failed int64
	elapsed          time.Duration
	lat              []time.Duration // sorted
}

func (r loadResult) rate() float64 { return float64(r.accepted) / r.elapsed.Seconds() }

func (r loadResult) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[int(p*float64(len(r.lat)-1))]
}

func newClient(conns int) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true,
	}}
}

// post sends one delivery; true when it was acknowledged: 202, or 200
// for a delivery the service recognised as a duplicate.
func post(ctx context.Context, c *http.Client, addr string, body []byte) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+webhookPath, bytes.NewReader(body))
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Qase-Secret", benchSecret)
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusOK
}

// closedLoop runs senders that each post, wait for the answer and post
// again, for d; sender i posts to addrs[i % len(addrs)].
func closedLoop(addrs []string, senders int, d time.Duration, p *payloads) loadResult {
	c := newClient(senders)
	defer c.CloseIdleConnections()
	var seq, failed atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for i := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 4096)
			for time.Now().Before(end) {
				body := p.nth(seq.Add(1))
				t0 := time.Now()
				if post(ctx, c, addrs[i%len(addrs)], body) {
					mine = append(mine, time.Since(t0))
				} else {
					failed.Add(1)
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	return loadResult{accepted: int64(len(lat)), failed: failed.Load(), elapsed: elapsed, lat: lat}
}

// openLoop offers rate deliveries per second for d whatever the answers
// take, and measures each acknowledgement from the moment its delivery
// was due (so a stalled server is not flattered by fewer sends).
func openLoop(addrs []string, rate float64, d time.Duration, p *payloads) loadResult {
	const inflight = 1024
	c := newClient(inflight)
	defer c.CloseIdleConnections()
	sem := make(chan struct{}, inflight)
	var failed atomic.Int64
	var mu sync.Mutex
	lat := make([]time.Duration, 0, int(rate*d.Seconds())+1)
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	total := int64(rate * d.Seconds())
	for n := int64(0); n < total; n++ {
		due := start.Add(time.Duration(float64(n) / rate * float64(time.Second)))
		if w := time.Until(due); w > 0 {
			time.Sleep(w)
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(n int64, due time.Time) {
			defer func() { <-sem; wg.Done() }()
			if post(ctx, c, addrs[int(n)%len(addrs)], p.nth(n+1)) {
				l := time.Since(due)
				mu.Lock()
				lat = append(lat, l)
				mu.Unlock()
			} else {
				failed.Add(1)
			}
		}(n, due)
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	return loadResult{accepted: int64(len(lat)), failed: failed.Load(), elapsed: elapsed, lat: lat}
}
