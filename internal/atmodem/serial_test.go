//go:build linux

package atmodem

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// ptyModem is a tiny scripted modem on the master side of a pty: it answers each complete
// command one byte per write, so the client sees chunked reads through a real tty.
type ptyModem struct {
	master  *os.File
	slave   string
	script  map[string]string
	mu      sync.Mutex
	got     []string
	started chan string // receives commands that have no scripted answer (left hanging)
	done    chan struct{}
}

func newPTYModem(t *testing.T, script map[string]string) *ptyModem {
	t.Helper()
	m, s, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	// pty.Open leaves the master in blocking mode, and closing a blocking *os.File does not
	// end a Read in progress. A non-blocking dup goes through the poller.
	nfd, err := syscall.Dup(int(m.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.SetNonblock(nfd, true); err != nil {
		t.Fatal(err)
	}
	master := os.NewFile(uintptr(nfd), "/dev/ptmx")
	m.Close()
	pm := &ptyModem{master: master, slave: s.Name(), script: script, started: make(chan string, 4), done: make(chan struct{})}
	// The slave stays open until the end: with no slave open, a read on the master fails
	// with EIO, and the modem would stop before the client opens the port.
	go pm.serve()
	t.Cleanup(func() { pm.unplug(); <-pm.done; s.Close() })
	return pm
}

func (pm *ptyModem) serve() {
	defer close(pm.done)
	var acc []byte
	buf := make([]byte, 256)
	for {
		n, err := pm.master.Read(buf)
		if err != nil {
			return
		}
		acc = append(acc, buf[:n]...)
		for {
			i := bytes.Index(acc, []byte("\r\n"))
			if i < 0 || bytes.Count(acc[:i], []byte(`"`))%2 == 1 && !bytes.Contains(acc[i:], []byte("\"\r\n")) {
				break
			}
			end := i + 2
			if bytes.Count(acc[:i], []byte(`"`))%2 == 1 {
				end = bytes.Index(acc, []byte("\"\r\n")) + 3
			}
			cmd := string(acc[:end])
			acc = acc[end:]
			pm.mu.Lock()
			pm.got = append(pm.got, cmd)
			pm.mu.Unlock()
			reply, ok := pm.script[cmd]
			if !ok {
				pm.started <- cmd
				continue
			}
			for i := 0; i < len(reply); i++ {
				if _, err := pm.master.Write([]byte{reply[i]}); err != nil {
					return
				}
			}
		}
	}
}

func (pm *ptyModem) unplug() { pm.master.Close() }

func TestOpenPortPTY(t *testing.T) {
	pem := "-----BEGIN CERTIFICATE-----\n" + strings.Repeat("MIIBszCCAVmgAwIBAgIUSZ+Q8fR0qpXy/abcdefghijklmnopqrstuvwxyz012345\n", 50) + "-----END CERTIFICATE-----\n"
	for _, flow := range []string{"none", "rtscts"} {
		t.Run(flow, func(t *testing.T) {
			pm := newPTYModem(t, map[string]string{
				"AT+CMEE?\r\n":                       "+CMEE: 0\r\nOK\r\n", // the opening probe
				"AT+CFUN?\r\n":                       "\r\n+CEREG: 1\r\n+CFUN: 4\r\n\r\nOK\r\n",
				"AT%CMNG=0,42,0,\"" + pem + "\"\r\n": "OK\r\n",
			})
			// Opened before OpenPort takes the port exclusively (TIOCEXCL), so the check works
			// without root too: termios belongs to the tty, not to a descriptor.
			probe, err := unix.Open(pm.slave, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(probe)
			port, err := OpenPort(pm.slave, 115200, flow)
			if err != nil {
				t.Fatal(err)
			}
			checkTermios(t, probe, flow == "rtscts")
			c := New(port, Config{})
			defer c.Close()
			urcs, _ := c.Subscribe()
			resp, err := c.Command(context.Background(), "AT+CFUN?")
			if err != nil || resp.Raw != "+CFUN: 4\r\nOK\r\n" {
				pm.mu.Lock()
				t.Fatalf("got %q, %v; modem got %q; stats %+v", resp.Raw, err, pm.got, c.Stats())
			}
			if u := <-urcs; u != "+CEREG: 1" {
				t.Errorf("URC %q", u)
			}
			if err := c.WriteCredential(context.Background(), 42, CredRootCA, pem); err != nil {
				t.Fatalf("4 KB certificate: %v", err)
			}

			// Unplug while a command runs: it fails at once with ErrPortLost.
			errc := make(chan error, 1)
			go func() {
				_, err := c.Command(context.Background(), "AT%KEYGEN=42,2,0")
				errc <- err
			}()
			if got := <-pm.started; got != "AT%KEYGEN=42,2,0\r\n" {
				t.Fatalf("modem got %q", got)
			}
			pm.unplug()
			err = <-errc
			// A hung-up tty reads as end of file (a pty after its master closed; a USB device
			// that went away also gives EIO).
			if !errors.Is(err, ErrPortLost) || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.EIO)) {
				t.Fatalf("got %v, want ErrPortLost from EOF or EIO", err)
			}
			<-c.Done()
			if _, err := c.Command(context.Background(), "AT"); !errors.Is(err, ErrPortLost) {
				t.Errorf("after unplug: %v", err)
			}
		})
	}
}

// checkTermios reads the line settings OpenPort left on the tty.
func checkTermios(t *testing.T, fd int, wantRTSCTS bool) {
	t.Helper()
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if got := tio.Cflag&unix.CRTSCTS != 0; got != wantRTSCTS {
		t.Errorf("CRTSCTS = %v, want %v", got, wantRTSCTS)
	}
	if tio.Cflag&unix.CSIZE != unix.CS8 || tio.Cflag&(unix.PARENB|unix.CSTOPB) != 0 {
		t.Errorf("cflag %#x is not 8N1", tio.Cflag)
	}
	if tio.Cflag&unix.CBAUD != unix.B115200 {
		t.Errorf("baud bits %#x, want B115200", tio.Cflag&unix.CBAUD)
	}
	if tio.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) != 0 || tio.Oflag&unix.OPOST != 0 || tio.Iflag&unix.ICRNL != 0 {
		t.Errorf("not raw: lflag %#x oflag %#x iflag %#x", tio.Lflag, tio.Oflag, tio.Iflag)
	}
}

func TestOpenPortErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "ttyACM9")
	tests := []struct {
		name    string
		path    string
		baud    int
		flow    string
		wantErr error
	}{
		{name: "zero baud", path: missing, baud: 0, flow: "none", wantErr: ErrInvalidArgument},
		{name: "unknown flow control", path: missing, baud: 115200, flow: "xonxoff", wantErr: ErrInvalidArgument},
		{name: "missing device", path: missing, baud: 115200, flow: "", wantErr: os.ErrNotExist},
		{name: "missing device with rtscts", path: missing, baud: 115200, flow: "RTSCTS", wantErr: os.ErrNotExist},
		{name: "not a tty", path: os.DevNull, baud: 115200, flow: "none"},
		{name: "not a tty with rtscts", path: os.DevNull, baud: 115200, flow: "rtscts"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := OpenPort(tc.path, tc.baud, tc.flow)
			if err == nil {
				p.Close()
				t.Fatal("opened")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("got %v, want %v", err, tc.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "atmodem: open ") {
				t.Errorf("error %q lacks the op prefix", err)
			}
		})
	}
}

// TestOpenPortCloseOnExec: a child the daemon starts (a hook, on_finished_exec) inherits none
// of the port's descriptors, neither the tty nor the library's wake-up pipe; an inherited tty
// would hold the line (and its exclusive flag) open for as long as the child runs.
func TestOpenPortCloseOnExec(t *testing.T) {
	pm := newPTYModem(t, map[string]string{"AT+CMEE?\r\n": "+CMEE: 0\r\nOK\r\n"})
	// What a child inherits from the test process itself (the test runner's descriptors).
	baseline := childFDs(t)
	port, err := OpenPort(pm.slave, 115200, "none")
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	for fd, target := range childFDs(t) {
		if baseline[fd] == target {
			continue
		}
		if target == pm.slave || strings.HasPrefix(target, "pipe:") {
			t.Errorf("a child inherited descriptor %s of the port: %s", fd, target)
		}
	}
}

// childFDs returns the descriptors above stderr that a child process has open, fd -> target.
func childFDs(t *testing.T) map[string]string {
	t.Helper()
	out, err := exec.Command("/bin/sh", "-c",
		`for f in /proc/self/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && echo "$n $(readlink "$f")"; done; true`).Output()
	if err != nil {
		t.Fatal(err)
	}
	fds := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if fd, target, ok := strings.Cut(l, " "); ok {
			fds[fd] = target
		}
	}
	return fds
}
