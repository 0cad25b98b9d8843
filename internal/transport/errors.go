package transport

import (
	"errors"
	"fmt"
)

// Outcomes of a fetch or upload. Transports wrap one of these (usually inside a *StatusError)
// so callers can pick the provisioning event and the retry policy with errors.Is.
var (
	// ErrNoCommands means the service has nothing queued (HTTP 204, CoAP 2.05 with an empty payload).
	ErrNoCommands = errors.New("no commands")
	// ErrNotClaimed means the service does not know the device as claimed (HTTP 401/403, CoAP 4.01).
	ErrNotClaimed = errors.New("device not claimed")
	// ErrBadRequest means the service rejected the request (HTTP 400, CoAP 4.00/4.06).
	ErrBadRequest = errors.New("bad request")
	// ErrBusy means the service is overloaded (HTTP 500/503, CoAP 5.00/5.03); back off.
	ErrBusy = errors.New("service busy")
	// ErrUnsupported is any other status the protocol does not expect at this step.
	ErrUnsupported = errors.New("unexpected status")
	// ErrTimeout means no answer arrived within the configured timeout; back off.
	ErrTimeout = errors.New("timed out")
	// ErrWrongRootCA means the server's certificate did not verify against the configured roots.
	ErrWrongRootCA = errors.New("server certificate not trusted")
	// ErrDNS means the service's host name did not resolve.
	ErrDNS = errors.New("host name lookup failed")
	// ErrTooLarge means the answer is larger than the advertised rxMaxSize.
	ErrTooLarge = errors.New("response larger than rxMaxSize")
	// ErrShutdown means the connection closed before a status arrived.
	ErrShutdown = errors.New("connection closed without a status")
)

// StatusError is a protocol status that is not the success code of its step.
type StatusError struct {
	// Transport is "http" or "coap".
	Transport string
	// Op names the step: "auth", "fetch" or "upload".
	Op string
	// Code is the status as the transport writes it: "401", "4.01", "5.03".
	Code string
	// Kind is one of the sentinel errors of this package.
	Kind error
	// Detail is a short excerpt of the body or diagnostic payload, if any.
	Detail string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("%s %s: status %s: %v", e.Transport, e.Op, e.Code, e.Kind)
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// Unwrap lets errors.Is match the Kind sentinel.
func (e *StatusError) Unwrap() error { return e.Kind }

// Backoff reports whether err is an outcome after which the scheduler backs off
// (busy or timeout, protocol.md §4.7) instead of waiting a normal interval.
func Backoff(err error) bool {
	return errors.Is(err, ErrBusy) || errors.Is(err, ErrTimeout)
}
