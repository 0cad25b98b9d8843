package proto

import (
	"errors"
	"fmt"
	"strconv"
)

var (
	// ErrMalformed means the bytes are not a valid batch: bad CBOR, a wrong element count or
	// type, an unknown type number, an empty batch, a correlation id the host refuses, or (for
	// responses) trailing bytes. The device answers such a batch with nothing (-EINVAL, no
	// upload).
	ErrMalformed = errors.New("malformed")
	// ErrTooMany means a count is over a receive limit: commands per batch, ignore codes per AT
	// command or pairs per config command. The device raises FAILED_TOO_MANY_COMMANDS for it
	// (docs/protocol.md §3.2, -ENOMEM). Returned inside a *LimitError.
	ErrTooMany = errors.New("too many elements")
	// ErrInvalid means a value handed to an encoder has no wire form: an unknown kind, text
	// that is not UTF-8, an empty batch, or a batch mixing commands and responses.
	ErrInvalid = errors.New("invalid value")
)

// LimitError reports a count over a receive limit. errors.Is(err, ErrTooMany) holds for it.
type LimitError struct {
	What  string // "commands", "responses", "ignore_cme_errors" or "properties"
	Limit int    // the most allowed
	Got   int    // the count declared on the wire (for indefinite arrays: the count reached)
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("too many %s: %d, limit %d", e.What, e.Got, e.Limit)
}

// Is makes errors.Is(err, ErrTooMany) true.
func (e *LimitError) Is(target error) bool { return target == ErrTooMany }

// DecodeError names the batch element a decode failure belongs to. Err wraps ErrMalformed or a
// *LimitError.
type DecodeError struct {
	Index int    // 0-based position of the element in the batch
	ID    string // its correlation id, when it was read before the failure
	Err   error
}

func (e *DecodeError) Error() string {
	if e.ID != "" {
		return "element " + strconv.Itoa(e.Index) + " (id " + strconv.Quote(e.ID) + "): " + e.Err.Error()
	}
	return "element " + strconv.Itoa(e.Index) + ": " + e.Err.Error()
}

func (e *DecodeError) Unwrap() error { return e.Err }

// malformed builds an error wrapping ErrMalformed with a reason.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// invalid builds an error wrapping ErrInvalid with a reason.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}
