package sync

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

func TestNeverConnected(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now: the dial is refused
	_, dialErr := (&net.Dialer{Timeout: time.Second}).DialContext(context.Background(), "tcp", addr)
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"refused dial", fmt.Errorf("post: %w", dialErr), dialErr != nil},
		{"unresolved host", &net.DNSError{Err: "no such host", Name: "jira.invalid", IsNotFound: true}, true},
		{"read after connecting", &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset")}, false},
		{"timeout awaiting headers", errors.New("context deadline exceeded (Client.Timeout exceeded while awaiting headers)"), false},
		{"nil", nil, false},
	} {
		if got := NeverConnected(tc.err); got != tc.want {
			t.Errorf("%s: NeverConnected(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
	if dialErr == nil {
		t.Fatal("dialing a closed port succeeded")
	}
}
