//go:build linux

package atmodem

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

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
//
// The library opens the tty and its wake-up pipe without close-on-exec. A hook or
// on_finished_exec child that inherited the tty would keep the line open (and, after a crash,
// its exclusive flag with it) for as long as it runs, so OpenPort marks every descriptor the
// library made close-on-exec before any child can be forked (see openCloexec).
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
	port, err := openCloexec(func() (serial.Port, error) {
		return serial.Open(path, &serial.Mode{
			BaudRate: baud,
			DataBits: 8,
			Parity:   serial.NoParity,
			StopBits: serial.OneStopBit,
		})
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

// openCloexec runs open, which creates descriptors without close-on-exec, and sets
// close-on-exec on every descriptor that appeared meanwhile. It holds syscall.ForkLock for
// reading throughout, as the standard library does around its own non-atomic
// open-then-cloexec, so os/exec cannot fork between the two. A descriptor another goroutine
// made meanwhile is close-on-exec already (Go opens everything so); marking it again is a
// no-op.
func openCloexec(open func() (serial.Port, error)) (serial.Port, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	before, err := openFDs()
	if err != nil {
		return nil, fmt.Errorf("list descriptors: %w", err)
	}
	port, err := open()
	if err != nil {
		return nil, err
	}
	after, err := openFDs()
	if err != nil {
		port.Close()
		return nil, fmt.Errorf("list descriptors: %w", err)
	}
	for fd := range after {
		if _, old := before[fd]; old {
			continue
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && err != unix.EBADF {
			port.Close()
			return nil, fmt.Errorf("set close-on-exec on descriptor %d: %w", fd, err)
		}
	}
	return port, nil
}

// openFDs lists the process's open descriptors from /proc/self/fd.
func openFDs() (map[int]struct{}, error) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	fds := make(map[int]struct{}, len(names))
	for _, n := range names {
		if fd, err := strconv.Atoi(n); err == nil {
			fds[fd] = struct{}{}
		}
	}
	// The listing's own descriptor is closed on return and its number is free for the port.
	delete(fds, int(d.Fd()))
	return fds, nil
}
