package control

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalid marks a request the backend refuses as malformed (an out-of-range interval);
	// the server answers 400. Backends wrap it around their own error.
	ErrInvalid = errors.New("invalid request")
	// ErrNotRunning means nothing answers on the control socket.
	ErrNotRunning = errors.New("is it running?")
	// ErrInUse means a live daemon already serves the socket path.
	ErrInUse = errors.New("control socket in use by a running daemon")
	// ErrNotSocket means the socket path exists and is something else; it is never removed.
	ErrNotSocket = errors.New("path exists and is not a socket")
)

// DialError explains why the client could not reach the daemon.
type DialError struct {
	Path string
	Err  error // ErrNotRunning, or the underlying error (permission denied…)
}

func (e *DialError) Error() string {
	return fmt.Sprintf("cannot reach provisiond at %s: %v", e.Path, e.Err)
}

func (e *DialError) Unwrap() error { return e.Err }

// APIError is an error answer of the daemon: the HTTP status and the {"error": …} text.
type APIError struct {
	Op      string // the request, e.g. "GET /v1/token"
	Status  int
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s: %s (status %d)", e.Op, e.Message, e.Status)
}
