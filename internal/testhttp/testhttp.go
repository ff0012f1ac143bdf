// Package testhttp sends a test's HTTP request and reads the whole answer,
// failing the test when the request cannot be made, and measures the
// requests a test server saw.
package testhttp

import (
	"io"
	"net/http"
	"slices"
	"testing"
	"time"
)

// Do sends req with c (http.DefaultClient when nil) and returns the
// response, its body already read and closed, and that body.
func Do(t testing.TB, c *http.Client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", req.Method, req.URL, err)
	}
	return resp, b
}

// Busiest is the most requests that arrived (at, in any order) within any
// window of length d: what a rate limit is judged by.
func Busiest(at []time.Time, d time.Duration) int {
	at = slices.Clone(at)
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	best := 0
	for i, j := 0, 0; i < len(at); i++ {
		for at[i].Sub(at[j]) > d {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}
