package logging

import "errors"

var (
	// ErrBadLevel means Config.Level is not one of debug, info, warn, error.
	ErrBadLevel = errors.New("unknown log level (want debug, info, warn or error)")
	// ErrBadFormat means Config.Format is not one of auto, json, console.
	ErrBadFormat = errors.New("unknown log format (want auto, json or console)")
)
