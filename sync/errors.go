package sync

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// ErrNotFound is returned by trackers and stores when the thing asked for
// does not exist.
var ErrNotFound = errors.New("not found")

// ErrLeaseLost is returned by JobStore.Complete/Retry when the job's lease
// is no longer held by the caller (it expired and another worker took it).
var ErrLeaseLost = errors.New("job lease lost")

// ErrPermanent marks an error that retrying cannot fix (bad request, auth,
// validation, mapping). Test with errors.Is(err, ErrPermanent).
var ErrPermanent = errors.New("permanent failure")

type permanentError struct{ err error }

func (e permanentError) Error() string        { return e.err.Error() }
func (e permanentError) Unwrap() []error      { return []error{e.err, ErrPermanent} }
func (e permanentError) Is(target error) bool { return target == ErrPermanent }

// Permanent wraps err so the engine dead-letters instead of retrying.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// Permanentf is fmt.Errorf wrapped in Permanent.
func Permanentf(format string, args ...any) error { return Permanent(fmt.Errorf(format, args...)) }

// IsPermanent reports whether err must not be retried.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }

// RetryAfterError asks the engine to wait at least Wait before retrying
// (Retry-After, X-RateLimit-Reset, GitHub secondary limits).
type RetryAfterError struct {
	Err  error
	Wait time.Duration
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("%v (retry after %s)", e.Err, e.Wait.Round(time.Millisecond))
}
func (e *RetryAfterError) Unwrap() error { return e.Err }

// RetryAfter wraps err with a server-requested wait.
func RetryAfter(err error, wait time.Duration) error {
	if err == nil {
		return nil
	}
	if wait < 0 {
		wait = 0
	}
	return &RetryAfterError{Err: err, Wait: wait}
}

// RetryWait returns the server-requested wait carried by err, if any.
func RetryWait(err error) (time.Duration, bool) {
	var ra *RetryAfterError
	if errors.As(err, &ra) {
		return ra.Wait, true
	}
	return 0, false
}

// ErrNotApplied marks a failed write the tracker certainly did not carry
// out: it was refused before processing (a 4xx answer, 429) or the
// connection was never made. A create that failed this way may be sent
// again at once; any other failure of a create is ambiguous (the tracker
// may have committed it) and is resolved by looking for the marker.
var ErrNotApplied = errors.New("not applied")

type notAppliedError struct{ err error }

func (e notAppliedError) Error() string   { return e.err.Error() }
func (e notAppliedError) Unwrap() []error { return []error{e.err, ErrNotApplied} }

// NeverConnected reports a transport failure before any byte of the
// request left: the dial failed (refused, unreachable, dial timeout) or
// the host name did not resolve. Such a call changed nothing; adapters
// mark it NotApplied.
func NeverConnected(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// NotApplied wraps err as certainly not carried out by the tracker.
func NotApplied(err error) error {
	if err == nil {
		return nil
	}
	return notAppliedError{err}
}

// IsNotApplied reports whether the write that failed with err certainly
// did not happen. Permanent errors are refusals, so they count.
func IsNotApplied(err error) bool {
	return errors.Is(err, ErrNotApplied) || IsPermanent(err)
}

// UnreachableError says the tracker's workflow offers no path from the
// issue's status to the wanted one. Nothing was moved: the path is planned
// before the first transition.
type UnreachableError struct {
	From, To string
	Detail   string // what the tracker offers instead
}

func (e *UnreachableError) Error() string {
	msg := fmt.Sprintf("status %q is unreachable from %q", e.To, e.From)
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// ErrRateWait wraps a context that ended while a call waited for rate
// tokens: the attempt never reached the tracker and is not charged.
var ErrRateWait = errors.New("waiting for rate tokens")
