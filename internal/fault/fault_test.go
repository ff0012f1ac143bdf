package fault

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestFailNextQueues(t *testing.T) {
	var in Injector
	if _, ok := in.Next(); ok {
		t.Fatal("the zero Injector injected a reply")
	}
	h := http.Header{"Retry-After": {"3"}}
	in.FailNext(2, 429, h, "")
	in.FailNext(1, 500, nil, `{"m":1}`)
	h.Set("Retry-After", "9") // the injected reply keeps its own copy
	var got []Reply
	for {
		r, ok := in.Next()
		if !ok {
			break
		}
		got = append(got, r)
	}
	if len(got) != 3 || got[0].Status != 429 || got[1].Header.Get("Retry-After") != "3" || got[2].Status != 500 || got[2].Body != `{"m":1}` {
		t.Fatalf("replies = %+v", got)
	}
}

func TestDelay(t *testing.T) {
	var in Injector
	if !in.Wait(context.Background()) {
		t.Fatal("no delay: Wait must not fail")
	}
	in.Delay(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if in.Wait(ctx) {
		t.Fatal("Wait outlived its request")
	}
	in.Delay(10 * time.Millisecond)
	start := time.Now()
	if !in.Wait(context.Background()) || time.Since(start) < 10*time.Millisecond {
		t.Fatal("Wait did not wait out the delay")
	}
}

func TestAfterCommit(t *testing.T) {
	var in TrackerInjector
	in.CommitThenFail(1)
	in.CommitThenDrop(1)
	for i, want := range []Commit{Drop, Fail, Answer} {
		if got := in.AfterCommit(); got != want {
			t.Fatalf("create %d: %v, want %v", i, got, want)
		}
	}
}

func TestHangup(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !Hangup(w) {
			t.Error("Hangup failed on a server connection")
		}
	}))
	defer srv.Close()
	if resp, err := http.Get(srv.URL); err == nil {
		resp.Body.Close()
		t.Fatal("the client got an answer")
	}
	if Hangup(httptest.NewRecorder()) {
		t.Fatal("Hangup on a recorder")
	}
}
