package simcloud

import (
	"errors"
	"fmt"
)

// Sentinel errors of the in-process API. The owner REST API maps them onto HTTP statuses
// (see statusOf in owner.go).
var (
	// ErrUnknownDevice means no device with that UUID is registered with the simulator.
	ErrUnknownDevice = errors.New("device not registered")
	// ErrNotClaimed means the device is registered but not claimed by the owner.
	ErrNotClaimed = errors.New("device not claimed")
	// ErrAlreadyClaimed means a second claim of the same device.
	ErrAlreadyClaimed = errors.New("device already claimed")
	// ErrInvalid means a request, UUID, key or token was malformed.
	ErrInvalid = errors.New("invalid request")
	// ErrQueueFull means the device already has Config.MaxJobs unresolved jobs.
	ErrQueueFull = errors.New("too many queued provisioning commands")
	// ErrUnknownJob means no job with that id exists for the device.
	ErrUnknownJob = errors.New("provisioning command not found")
	// ErrAlreadyExists means a provisioning tag of that name exists already.
	ErrAlreadyExists = errors.New("already exists")
	// ErrUnknownRule means no provisioning rule with that id exists.
	ErrUnknownRule = errors.New("provisioning rule not found")
	// ErrJobStarted means a job can no longer be discarded because the device has seen it.
	ErrJobStarted = errors.New("provisioning command already delivered")
	// ErrClosed means the server was closed.
	ErrClosed = errors.New("server closed")
	// ErrStarted means Start was called twice.
	ErrStarted = errors.New("server already started")
)

// AuthError says why a device request was refused with 401 / 4.01.
type AuthError struct {
	// Reason is a short diagnostic such as "signature invalid" or "token expired".
	Reason string
	// Err is the underlying cause, if any (a jwt error, ErrUnknownDevice, ErrNotClaimed).
	Err error
}

func (e *AuthError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("unauthorized: %s: %v", e.Reason, e.Err)
	}
	return "unauthorized: " + e.Reason
}

// Unwrap exposes the cause so callers can test for ErrUnknownDevice or ErrNotClaimed.
func (e *AuthError) Unwrap() error { return e.Err }
