package main

import (
	"net/http"
	"net/http/pprof"
)

// pprofHandler serves Go's runtime profiles under /debug/pprof/ behind the
// admin token, checked as the admin API checks it (adminHandler): without
// a configured token the profiles do not exist (404), without the right
// bearer token the answer is 401.
//
//	GET /debug/pprof/                 index
//	GET /debug/pprof/{profile}        heap, goroutine, allocs, block, mutex, threadcreate
//	GET /debug/pprof/profile?seconds= CPU profile
//	GET /debug/pprof/trace?seconds=   execution trace
//	GET /debug/pprof/cmdline, symbol
//
// A CPU profile or trace must end within server.write_timeout (the
// handler refuses longer ones).
func pprofHandler(token string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return withAdminToken(token, mux)
}
