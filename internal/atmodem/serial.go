//go:build linux

package atmodem

import (
	"errors"
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
// (os.ErrClosed) or the device disappears (io.EOF or EIO; a write then fails with EIO), so a
// Client sees an unplug at once. Input that arrived before the open is discarded.
//
// go.bug.st/serial opens and configures the line (termios, the exclusive flag) and closes it;
// reads and writes go through a non-blocking duplicate of its descriptor in the Go runtime's
// network poller instead of the library's Read, which blocks an OS thread in select(2) for
// every wait for the modem. A goroutine parked in the poller holds nothing; a thread in a
// system call holds its processor, and `provisiond run` has only one (internal/oneproc): the
// runtime's monitor takes it back after 20 µs and wakes another thread, at each wait. The two
// changes together cut the CPU of a `run --once` by about a fifth; neither alone did
// (BENCHMARKS.md §13). Non-blocking mode belongs to the open file, so the library's own
// descriptor is non-blocking too; nothing reads or writes through it.
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
	port, made, err := openCloexec(func() (serial.Port, error) {
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
	f, err := pollable(path, made)
	if err != nil {
		port.Close()
		return nil, fmt.Errorf("atmodem: open %s: %w", path, err)
	}
	return &polledPort{File: f, line: port}, nil
}

// polledPort reads and writes through the poller; line is the library's port, closed after.
type polledPort struct {
	*os.File
	line serial.Port
}

// Close ends a Read in progress (os.ErrClosed), then closes the line, which drops the
// exclusive flag.
func (p *polledPort) Close() error {
	err := p.File.Close()
	if lerr := p.line.Close(); err == nil {
		err = lerr
	}
	return err
}

// pollable returns a non-blocking duplicate of the descriptor among made that is the device at
// path (the library's others are the two ends of a pipe, and another goroutine may have opened
// something meanwhile), which the runtime puts in its poller.
func pollable(path string, made []int) (*os.File, error) {
	var want unix.Stat_t
	if err := unix.Stat(path, &want); err != nil {
		return nil, fmt.Errorf("stat: %w", err)
	}
	for _, fd := range made {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != want.Rdev {
			continue
		}
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("duplicate descriptor %d: %w", fd, err)
		}
		if err := unix.SetNonblock(dup, true); err != nil {
			unix.Close(dup)
			return nil, fmt.Errorf("non-blocking descriptor: %w", err)
		}
		return os.NewFile(uintptr(dup), path), nil
	}
	return nil, errors.New("the serial library opened no terminal descriptor")
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
//
// It also returns the descriptors that appeared, among which is the port's.
func openCloexec(open func() (serial.Port, error)) (serial.Port, []int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	before, err := openFDs()
	if err != nil {
		return nil, nil, fmt.Errorf("list descriptors: %w", err)
	}
	port, err := open()
	if err != nil {
		return nil, nil, err
	}
	after, err := openFDs()
	if err != nil {
		port.Close()
		return nil, nil, fmt.Errorf("list descriptors: %w", err)
	}
	var made []int
	for fd := range after {
		if _, old := before[fd]; old {
			continue
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && err != unix.EBADF {
			port.Close()
			return nil, nil, fmt.Errorf("set close-on-exec on descriptor %d: %w", fd, err)
		}
		made = append(made, fd)
	}
	return port, made, nil
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
