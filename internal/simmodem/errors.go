package simmodem

import "errors"

var (
	// ErrUnplugged is returned by Serve when an UnplugDuring fault (or Unplug) cut the line.
	ErrUnplugged = errors.New("simmodem: unplugged")
	// ErrClosed is returned by PTY methods after Close.
	ErrClosed = errors.New("simmodem: closed")
	// ErrConfig means a Config field is out of range; the message names it.
	ErrConfig = errors.New("simmodem: invalid config")
)
