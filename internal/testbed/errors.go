package testbed

import "errors"

// ErrOptions means an Options field (or a config key passed to WriteConfig) is invalid; the
// message names it.
var ErrOptions = errors.New("testbed: invalid options")
