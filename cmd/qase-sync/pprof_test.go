package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/qase-sync/qase-sync/internal/testhttp"
)

// TestPprofBehindAdminToken: the profiles answer only with the admin
// token, and not at all without a configured token.
func TestPprofBehindAdminToken(t *testing.T) {
	srv := httptest.NewServer(pprofHandler("admin-token"))
	defer srv.Close()
	get := func(path, auth string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, b := testhttp.Do(t, nil, req)
		return resp.StatusCode, string(b)
	}
	for _, auth := range []string{"", "Bearer wrong", "admin-token", "Basic admin-token"} {
		if code, body := get("/debug/pprof/", auth); code != http.StatusUnauthorized || strings.Contains(body, "goroutine") {
			t.Errorf("auth %q: %d %q, want 401 and no profile", auth, code, body)
		}
	}
	if code, body := get("/debug/pprof/", "Bearer admin-token"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("index with token: %d %.200q", code, body)
	}
	if code, body := get("/debug/pprof/goroutine?debug=1", "Bearer admin-token"); code != http.StatusOK || !strings.Contains(body, "goroutine profile") {
		t.Errorf("goroutine profile with token: %d %.200q", code, body)
	}

	off := httptest.NewServer(pprofHandler(""))
	defer off.Close()
	resp, err := http.Get(off.URL + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("without a configured token: %d, want 404", resp.StatusCode)
	}
}

// TestPprofOnServer: the running service serves the profiles beside the
// admin API, behind the same token.
func TestPprofOnServer(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for auth, want := range map[string]int{"": http.StatusUnauthorized, "Bearer nope": http.StatusUnauthorized, "Bearer test-admin-token": http.StatusOK} {
		req, _ := http.NewRequest(http.MethodGet, h.url+"/debug/pprof/", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		if resp, _ := testhttp.Do(t, nil, req); resp.StatusCode != want {
			t.Errorf("auth %q: %d, want %d", auth, resp.StatusCode, want)
		}
	}
}
