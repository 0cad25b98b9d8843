//go:build linux

package atmodem

import (
	"fmt"
	"io"
	"strings"

	"go.bug.st/serial"
	"golang.org/x/sys/unix"
)

// OpenPort opens the serial device at path for the modem: baud, 8N1, raw, and flow control
// "none" (or "") or "rtscts". The port blocks in Read until data arrives, the port is closed
// or the device disappears (a *serial.PortError with code PortClosed; a write then fails with
// EIO), so a Client sees an unplug at once. Input that arrived before the open is discarded.
//
// go.bug.st/serial v1.8.0 has no flow-control setting and clears CRTSCTS when it opens a
// port; it also takes the port exclusively (TIOCEXCL). For "rtscts" OpenPort therefore opens
// a second descriptor before serial.Open and sets CRTSCTS through it afterwards: termios
// belongs to the tty, not to the descriptor.
func OpenPort(path string, baud int, flow string) (io.ReadWriteCloser, error) {
	if baud <= 0 {
		return nil, fmt.Errorf("atmodem: open %s: baud rate %d: %w", path, baud, ErrInvalidArgument)
	}
	rtscts := false
	switch strings.ToLower(flow) {
	case "", "none":
	case "rtscts":
		rtscts = true
	default:
		return nil, fmt.Errorf("atmodem: open %s: flow control %q (want none or rtscts): %w", path, flow, ErrInvalidArgument)
	}
	hold := -1
	if rtscts {
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("atmodem: open %s: %w", path, err)
		}
		hold = fd
		defer unix.Close(hold)
	}
	port, err := serial.Open(path, &serial.Mode{
		BaudRate: baud,
		DataBits: 8,
		Parity:   serial.NoParity,
		StopBits: serial.OneStopBit,
	})
	if err != nil {
		return nil, fmt.Errorf("atmodem: open %s: %w", path, err)
	}
	if rtscts {
		if err := setCRTSCTS(hold); err != nil {
			port.Close()
			return nil, fmt.Errorf("atmodem: open %s: set rtscts: %w", path, err)
		}
	}
	// Nordic's tools discard stale input on open too: a half answer from before must not be
	// read as the first command's.
	if err := port.ResetInputBuffer(); err != nil {
		port.Close()
		return nil, fmt.Errorf("atmodem: open %s: flush input: %w", path, err)
	}
	return port, nil
}

func setCRTSCTS(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	t.Cflag |= unix.CRTSCTS
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}
