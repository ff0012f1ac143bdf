// Command e2ebench measures qase-sync as a user runs it: the real
// bin/qase-sync serving with its workers running against dry-run
// trackers and JSON logs written to a file, driven over loopback HTTP by
// a load generator in this process (never the server's), against a no-op
// server (its own process too: read the body, check the secret, 202)
// measured in the same run, interleaved round by round. CPU, RSS and
// bytes written are read from /proc for the server processes only; steal
// time from /proc/stat. It writes docs/benchmarks.md (`make bench`).
//
//	e2ebench [flags]               run the benchmark, write the report
//	e2ebench noop -listen ADDR     the no-op server (started by the driver)
//	e2ebench qasefake -defects N   a fake Qase API with N defects (ditto)
package main

import (
	"bufio"
	"context"
	"crypto/subtle"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/qase-sync/qase-sync/adapters/qase/qasefake"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "noop":
			exit(noopMain(os.Args[2:]))
			return
		case "qasefake":
			exit(fakeMain(os.Args[2:]))
			return
		}
	}
	exit(benchMain(os.Args[1:], os.Stdout, os.Stderr))
}

func exit(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2ebench:", err)
		os.Exit(1)
	}
}

// noopMain serves the baseline: the same net/http server settings as
// qase-sync's (config.example.yaml's timeouts), a handler that reads the
// body within the same size limit, checks the secret in constant time and
// answers 202 with the same body. No store, no log line.
func noopMain(args []string) error {
	fs := flag.NewFlagSet("noop", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	accepted := []byte(`{"status":"accepted"}` + "\n")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil || len(body) == 0 {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("X-Qase-Secret")), []byte(benchSecret)) != 1 {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write(accepted)
	})
	mux := http.NewServeMux()
	mux.Handle(webhookPath, h)
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second,
		WriteTimeout: 15 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 64 << 10}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// fakeMain serves qasefake with project BENCH holding n open defects and
// prints its base URL on the first line of stdout.
func fakeMain(args []string) error {
	fs := flag.NewFlagSet("qasefake", flag.ContinueOnError)
	n := fs.Int("defects", 10000, "defects in project BENCH")
	token := fs.String("token", "", "API token")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s := qasefake.New(*token)
	defer s.Close()
	s.AddProject(benchProject)
	sev := []string{"critical", "major", "normal", "minor"}
	for i := 1; i <= *n; i++ {
		s.PutDefect(benchProject, map[string]any{"id": i, "title": fmt.Sprintf("Defect %d", i),
			"actual_result": "Actual result of defect " + fmt.Sprint(i), "severity": sev[i%len(sev)], "status": "open"})
	}
	fmt.Println(s.URL)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	<-ctx.Done()
	return nil
}

// startFake starts the fake Qase API as a child process.
func (b *bench) startFake(n int, token string) (*proc, string, error) {
	cmd := exec.Command(b.self, "qasefake", "-defects", fmt.Sprint(n), "-token", token)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	p := &proc{name: "qasefake", cmd: cmd, done: make(chan error, 1)}
	line, err := bufio.NewReader(out).ReadString('\n')
	go func() { _, _ = io.Copy(io.Discard, out); p.done <- cmd.Wait() }()
	if err != nil {
		p.stop()
		return nil, "", fmt.Errorf("qasefake: %w", err)
	}
	return p, strings.TrimSpace(line), nil
}
