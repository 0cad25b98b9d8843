package config

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid is wrapped by every *ValidationError, for callers that only need to know that the
// configuration was refused (as opposed to unreadable).
var ErrInvalid = errors.New("invalid configuration")

// Problem is one reason a configuration was refused.
type Problem struct {
	// Key is the configuration key ("modem.baud"), the environment variable for an unknown
	// PROVISIOND_* variable, or "" for a problem with the file as a whole (YAML syntax).
	Key string
	// Msg says what is wrong, e.g. `must be between 1 and 65535, got 70000`.
	Msg string
}

func (p Problem) String() string {
	if p.Key == "" {
		return p.Msg
	}
	return p.Key + ": " + p.Msg
}

// ValidationError lists every problem found in one configuration, so that a user fixes them
// all in one round.
type ValidationError struct {
	// File is the configuration file read, or "" when only defaults and the environment were.
	File     string
	Problems []Problem
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("config")
	if e.File != "" {
		b.WriteString(" " + e.File)
	}
	for i, p := range e.Problems {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

func (e *ValidationError) add(key, format string, args ...any) {
	e.Problems = append(e.Problems, Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
}
