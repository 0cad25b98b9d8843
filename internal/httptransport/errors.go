package httptransport

import "errors"

// ErrClosed is returned by a Session's Fetch and Upload after Close.
var ErrClosed = errors.New("session closed")
