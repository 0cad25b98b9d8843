package store

import (
	"errors"
	"fmt"
)

var (
	// ErrNotFound means the key is not in the store.
	ErrNotFound = errors.New("key not found")
	// ErrCorrupt means the settings file failed its integrity check. Open wraps it in a
	// *CorruptError that names where the file was moved.
	ErrCorrupt = errors.New("settings file corrupt")
	// ErrLimit means a write would exceed one of the store's Limits; see *LimitError.
	ErrLimit = errors.New("store limit exceeded")
	// ErrInvalid means a key or value cannot be stored: an empty key, a key with control
	// characters, or text that is not valid UTF-8.
	ErrInvalid = errors.New("invalid key or value")
)

// CorruptError reports a settings file that failed its integrity check.
type CorruptError struct {
	// Path is the settings file that was read.
	Path string
	// Aside is where Open moved the file so that it is kept for inspection; "" when the file
	// was left in place (Load never moves anything).
	Aside string
	// Reason says which check failed, e.g. "checksum mismatch".
	Reason string
}

func (e *CorruptError) Error() string {
	if e.Aside == "" {
		return fmt.Sprintf("store: %s is corrupt: %s", e.Path, e.Reason)
	}
	return fmt.Sprintf("store: %s is corrupt: %s; kept as %s", e.Path, e.Reason, e.Aside)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// LimitError names the limit a write would exceed.
type LimitError struct {
	// Key is the key being written; "" for limits of the whole store ("keys", "file size").
	Key string
	// What is "key length", "value length", "keys" or "file size".
	What string
	// Limit is the configured maximum; Got is what the write would have made it.
	Limit, Got int
}

func (e *LimitError) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("store: %s %d exceeds the limit of %d", e.What, e.Got, e.Limit)
	}
	return fmt.Sprintf("store: key %q: %s %d exceeds the limit of %d", truncKey(e.Key), e.What, e.Got, e.Limit)
}

// Is makes errors.Is(err, ErrLimit) true.
func (e *LimitError) Is(target error) bool { return target == ErrLimit }

// truncKey keeps error messages short when a hostile service sends a huge key.
func truncKey(k string) string {
	const max = 64
	if len(k) <= max {
		return k
	}
	return k[:max] + "…"
}
