//go:build linux

package simmodem

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"unsafe"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// PTY is a Modem served on a pseudo-terminal: clients open SlavePath (or the Link) like a
// serial device. Methods are safe for concurrent use. After Close it cannot be replugged.
type PTY struct {
	m      *Modem
	ctx    context.Context
	cancel context.CancelFunc
	link   string

	mu     sync.Mutex // guards the fields below
	master *os.File   // nil while unplugged
	slave  *os.File   // held open so the master never sees a hang-up between clients
	// release watches the slave for its clients' opens and closes (inotify); closing it
	// ends the goroutine that releases the line when the last client goes away.
	release *os.File
	path    string
	done    chan struct{} // closed when the current serve goroutine ends
	err     error         // why the last serve goroutine ended
	closed  bool
	// unlinkErr is why the Link could not be removed when an UnplugDuring fault or
	// Modem.Unplug cut the line; the next Unplug, Replug or Close returns it.
	unlinkErr error

	closeDone chan struct{} // closed when Close has finished
	closeErr  error         // set before closeDone closes
}

// ServePTY opens a pty pair, puts the slave in raw mode, and serves the modem on the master
// side until ctx is cancelled or Close. With Config.Link set, a symlink there points at the
// slave only while it is plugged, like a udev by-id name: it is removed when the line is
// cut (Unplug, an UnplugDuring fault, Close) and made again, atomically, by Replug.
func (m *Modem) ServePTY(ctx context.Context) (*PTY, error) {
	ctx, cancel := context.WithCancel(ctx)
	p := &PTY{m: m, ctx: ctx, cancel: cancel, link: m.cfg.Link, closeDone: make(chan struct{})}
	p.mu.Lock()
	err := p.plugLocked()
	p.mu.Unlock()
	if err != nil {
		cancel()
		return nil, err
	}
	go func() {
		<-ctx.Done()
		_ = p.Close()
	}()
	return p, nil
}

// plugLocked opens a new pty and starts serving it.
func (p *PTY) plugLocked() error {
	master, slave, err := openRawPTY()
	if err != nil {
		return fmt.Errorf("simmodem: open pty: %w", err)
	}
	p.master, p.slave, p.path = master, slave, slave.Name()
	if p.link != "" {
		if err := relink(p.path, p.link); err != nil {
			_ = master.Close()
			_ = slave.Close()
			p.master, p.slave = nil, nil
			return err
		}
	}
	release, err := watchClients(p.path)
	if err != nil {
		_ = p.removeLink()
		_ = master.Close()
		_ = slave.Close()
		p.master, p.slave = nil, nil
		return err
	}
	p.release = release
	go releaseOnLastClose(release, slave)
	done := make(chan struct{})
	p.done = done
	go func() {
		err := p.m.serve(p.ctx, master, p.cut)
		if errors.Is(err, os.ErrClosed) { // Unplug closed the master under the reader
			err = ErrUnplugged
		}
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// openRawPTY opens a pty pair and returns a non-blocking master (so Close unblocks a
// pending Read, which it does not do on a blocking *os.File) and the slave in raw mode.
func openRawPTY() (master, slave *os.File, err error) {
	m, s, err := pty.Open()
	if err != nil {
		return nil, nil, err
	}
	// pty.Open used m.Fd(), which switched it to blocking mode; a blocked Read would then
	// survive Close. A non-blocking duplicate goes through the runtime poller instead.
	// The duplicate must be close-on-exec like every fd os opens: a copy of the master
	// inherited by a child process (a provisiond started by a test) keeps the pty alive
	// after Unplug, so the client on the slave never sees the hang-up.
	nfd, err := unix.FcntlInt(m.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	_ = m.Close()
	if err != nil {
		_ = s.Close()
		return nil, nil, fmt.Errorf("dup master: %w", err)
	}
	if err := unix.SetNonblock(nfd, true); err != nil {
		_ = unix.Close(nfd)
		_ = s.Close()
		return nil, nil, fmt.Errorf("set master non-blocking: %w", err)
	}
	master = os.NewFile(uintptr(nfd), "/dev/ptmx")
	if err := makeRaw(s); err != nil {
		_ = master.Close()
		_ = s.Close()
		return nil, nil, err
	}
	return master, s, nil
}

// watchClients starts an inotify watch on the slave at path for opens and closes. The
// simulator's own descriptor was opened before the watch, so every event is a client's.
func watchClients(path string) (*os.File, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("simmodem: watch clients: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_OPEN|unix.IN_CLOSE); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("simmodem: watch clients of %s: %w", path, err)
	}
	// Non-blocking, so the runtime poller serves Read and Close ends a pending one.
	return os.NewFile(uintptr(fd), "inotify:"+path), nil
}

// releaseOnLastClose releases the line as the kernel does for a USB ACM port: when the last
// client's descriptor closes (a clean close or the kernel closing a killed process's), the
// tty's exclusive flag (TIOCEXCL, which go.bug.st/serial sets) is cleared. A real port's tty
// is freed on its last close and the flag goes with it; the pty's slave stays allocated
// because the simulator holds it open, so without this a client killed by SIGKILL would
// leave the port busy for every later non-root client ("Serial port busy"; root ignores the
// flag). Events are counted a whole read at a time, so a client that opened in the same
// batch keeps its flag. It returns when watch is closed.
func releaseOnLastClose(watch, slave *os.File) {
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	clients := 0
	for {
		n, err := watch.Read(buf)
		if err != nil {
			return // closed by closeFilesLocked
		}
		closed := false
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			switch {
			case ev.Mask&unix.IN_OPEN != 0:
				clients++
			case ev.Mask&unix.IN_CLOSE != 0:
				clients--
				closed = true
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
		if clients < 0 {
			clients = 0
		}
		if closed && clients == 0 {
			clearExclusive(slave)
		}
	}
}

// clearExclusive issues TIOCNXCL on the tty of f; an error means the line is going away.
func clearExclusive(f *os.File) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_, _, _ = unix.Syscall(unix.SYS_IOCTL, fd, unix.TIOCNXCL, 0)
	})
}

// makeRaw applies cfmakeraw(3) to f: no echo, no CR/LF translation, no signals, 8 bits.
func makeRaw(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ioErr error
	err = rc.Control(func(fd uintptr) {
		t, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
		if err != nil {
			ioErr = err
			return
		}
		t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		t.Oflag &^= unix.OPOST
		t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		t.Cflag &^= unix.CSIZE | unix.PARENB
		t.Cflag |= unix.CS8
		t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
		ioErr = unix.IoctlSetTermios(int(fd), unix.TCSETS, t)
	})
	if err != nil {
		return err
	}
	return ioErr
}

// relink points link at target atomically: a new symlink beside it, renamed over it.
func relink(target, link string) error {
	var r [6]byte
	if _, err := rand.Read(r[:]); err != nil {
		return fmt.Errorf("simmodem: link: %w", err)
	}
	tmp := filepath.Join(filepath.Dir(link), "."+filepath.Base(link)+".tmp-"+hex.EncodeToString(r[:]))
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("simmodem: link %s: %w", link, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("simmodem: link %s: %w", link, err)
	}
	return nil
}

// SlavePath returns the current /dev/pts/N path.
func (p *PTY) SlavePath() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.path
}

// Path returns the Link if one is configured, else SlavePath. While unplugged the Link
// does not exist, so opening it fails with ENOENT, as for a USB modem's by-id name.
func (p *PTY) Path() string {
	if p.link != "" {
		return p.link
	}
	return p.SlavePath()
}

// Modem returns the served modem.
func (p *PTY) Modem() *Modem { return p.m }

// Plugged reports whether a pty is currently served.
func (p *PTY) Plugged() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.master != nil
}

// cut is the session's unplug hook: close the master so the client's reads fail.
func (p *PTY) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.closeFilesLocked(); err != nil {
		p.unlinkErr = err
	}
}

// closeFilesLocked cuts the line. The Link goes first: once the master closes (and the
// client lets go of the slave) the kernel hands the /dev/pts number to the next pty, and a
// link left behind would lead a client that reopens it to some other device.
func (p *PTY) closeFilesLocked() error {
	if p.master == nil {
		return nil
	}
	err := p.removeLink()
	_ = p.release.Close()
	_ = p.master.Close()
	_ = p.slave.Close()
	p.master, p.slave, p.release = nil, nil, nil
	return err
}

func (p *PTY) removeLink() error {
	if p.link == "" {
		return nil
	}
	if err := os.Remove(p.link); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("simmodem: remove link: %w", err)
	}
	return nil
}

// Unplug simulates pulling the USB cable: the Link is removed, the master closes, the
// client gets EIO or a hang-up, and the pty path goes away. The modem keeps its state for
// Replug.
func (p *PTY) Unplug() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	was := p.master != nil
	err := p.closeFilesLocked()
	if err == nil {
		err = p.unlinkErr
	}
	p.unlinkErr = nil
	done := p.done
	p.mu.Unlock()
	if was {
		p.m.mu.Lock()
		p.m.stats.Unplugged++
		p.m.mu.Unlock()
	}
	<-done
	return err
}

// Replug plugs the modem back in on a new pty (a new SlavePath) and makes the Link again,
// pointing at it, with an atomic rename. It unplugs first if still plugged.
func (p *PTY) Replug() error {
	// A link that could not be removed is replaced by plugLocked's rename, so only a
	// closed PTY stops the replug.
	if err := p.Unplug(); errors.Is(err, ErrClosed) {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	return p.plugLocked()
}

// Done is closed when the currently plugged pty stops being served (Unplug, an
// UnplugDuring fault, Close). Replug makes a new one.
func (p *PTY) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Err returns why the last served pty stopped: ErrUnplugged for an UnplugDuring fault, a
// read error after Unplug, context.Canceled after Close. Nil while serving.
func (p *PTY) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// Close stops serving, closes the pty and removes the Link. It waits for the serving
// goroutine; concurrent and later calls wait for the first and return its result.
func (p *PTY) Close() error {
	p.cancel()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.closeDone
		return p.closeErr
	}
	p.closed = true
	done := p.done
	p.mu.Unlock()
	defer close(p.closeDone)
	<-done // cancellation unblocks the non-blocking master through its deadline
	p.mu.Lock()
	_ = p.closeFilesLocked() // its link error is retried just below
	p.closeErr = errors.Join(p.unlinkErr, p.removeLink())
	p.unlinkErr = nil
	p.mu.Unlock()
	return p.closeErr
}
