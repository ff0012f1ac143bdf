package main

import (
	"net/http"
	"testing"
	"time"
)

// The first hour of a newcomer, each trap found on a fresh clone.

func TestAdminBearerSchemeIsCaseInsensitive(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for _, c := range []struct {
		auth string
		want int
	}{
		{"Bearer test-admin-token", http.StatusOK},
		{"bearer test-admin-token", http.StatusOK},
		{"BEARER   test-admin-token", http.StatusOK},
		{"Basic test-admin-token", http.StatusUnauthorized},
		{"bearer wrong-token", http.StatusUnauthorized},
		{"bearer ", http.StatusUnauthorized},
		{"test-admin-token", http.StatusUnauthorized},
	} {
		req, _ := http.NewRequest(http.MethodGet, h.url+"/admin/events", nil)
		req.Header.Set("Authorization", c.auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("Authorization %q: %d, want %d", c.auth, resp.StatusCode, c.want)
		}
	}
}

func TestBodyTimeoutLeavesRoomToAnswer(t *testing.T) {
	for _, c := range []struct{ read, write, want time.Duration }{
		{15 * time.Second, 15 * time.Second, 13 * time.Second},
		{5 * time.Second, 15 * time.Second, 5 * time.Second},
		{15 * time.Second, 2 * time.Second, 1500 * time.Millisecond},
		{10 * time.Second, 0, 10 * time.Second},
	} {
		if got := bodyTimeout(c.read, c.write); got != c.want {
			t.Errorf("bodyTimeout(%v, %v) = %v, want %v", c.read, c.write, got, c.want)
		}
	}
}
