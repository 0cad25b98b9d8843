//go:build linux

package simmodem

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/atmodem"
	"github.com/provisiond/provisiond/internal/testexec"
	"golang.org/x/sys/unix"
)

// clientHelperEnv, when set to a port path, makes the test binary a serial client (TestMain):
// it opens the port as the daemon does, runs AT, prints "ready" and, with
// clientHelperHoldEnv set, waits to be killed; otherwise it closes the port and exits 0.
const (
	clientHelperEnv     = "SIMMODEM_TEST_CLIENT_PORT"
	clientHelperHoldEnv = "SIMMODEM_TEST_CLIENT_HOLD"
)

func runClientHelper(path string) int {
	port, err := atmodem.OpenPort(path, 115200, "none")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c := atmodem.New(port, atmodem.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.Command(ctx, "AT"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	if os.Getenv(clientHelperHoldEnv) != "" {
		select {} // until SIGKILL, which never clears the port's exclusive flag
	}
	_ = c.Close()
	return 0
}

// TestPTYReleasedAfterKilledClient: a client that takes the port exclusively (TIOCEXCL, as
// go.bug.st/serial does) and dies by SIGKILL never clears the flag; like a USB ACM port the
// simulated line must still be free for its successor when that runs as a non-root user (root
// ignores the flag, which is why it needs a non-root client to show). The clients are this
// test binary run as "nobody".
func TestPTYReleasedAfterKilledClient(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the serial clients as another user (the flag binds non-root users only)")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	_, p := startPTY(t, Config{})
	// As udev gives a modem's port to the provisiond user.
	if err := os.Chown(p.SlavePath(), uid, gid); err != nil {
		t.Fatal(err)
	}
	// Asked before any client runs, so that a skip leaves none behind.
	if exclusive(t, p) {
		t.Fatal("the port is exclusive before any client opened it")
	}
	bin := helperBinary(t)

	client := func(hold bool) (*exec.Cmd, *bufio.Reader, *strings.Builder) {
		cmd := testexec.Command(context.Background(), bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), clientHelperEnv+"="+p.SlavePath())
		if hold {
			cmd.Env = append(cmd.Env, clientHelperHoldEnv+"=1")
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		stderr := &strings.Builder{}
		cmd.Stderr = stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, bufio.NewReader(out), stderr
	}

	first, out, stderr := client(true)
	if line, err := out.ReadString('\n'); line != "ready\n" {
		_ = first.Process.Kill()
		_ = first.Wait()
		t.Fatalf("first client: %q, %v; stderr: %s", line, err, stderr)
	}
	if !exclusive(t, p) {
		t.Fatal("the first client holds the port without TIOCEXCL: the test would prove nothing")
	}
	// While its client lives the line stays exclusive: a second client is turned away.
	intruder, _, intruderErr := client(false)
	if err := intruder.Wait(); err == nil || !strings.Contains(intruderErr.String(), "busy") {
		t.Errorf("a second client opened the port while the first held it: %v; stderr: %s", err, intruderErr)
	}
	if !exclusive(t, p) {
		t.Error("the turned-away client's close cleared the first client's exclusive flag")
	}
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()

	second, out, stderr := client(false)
	line, _ := out.ReadString('\n')
	_, _ = io.Copy(io.Discard, out)
	if err := second.Wait(); err != nil || line != "ready\n" {
		t.Fatalf("the killed client's successor, as a non-root user: %v, %q; stderr: %s", err, line, stderr)
	}
}

// exclusive reports whether the slave's tty has its exclusive flag set (TIOCGEXCL).
func exclusive(t *testing.T, p *PTY) bool {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	rc, err := p.slave.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	if cerr := rc.Control(func(fd uintptr) { v, err = unix.IoctlGetInt(int(fd), unix.TIOCGEXCL) }); cerr != nil {
		t.Fatal(cerr)
	}
	if errors.Is(err, unix.ENOSYS) {
		// Linux has answered it since 3.8; qemu-user (make test-arch) does not pass it through.
		t.Skip("TIOCGEXCL is not implemented here (qemu-user?): cannot tell whether a client holds the port exclusively")
	}
	if err != nil {
		t.Fatalf("TIOCGEXCL: %v", err)
	}
	return v != 0
}

// helperBinary copies this test binary where another user may run it: go test builds it in
// a folder only its owner can enter.
func helperBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "simmodem-client-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "client")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestPTYDescriptorsNotInherited: a process started while the simulator serves (a daemon a
// test starts) inherits none of its descriptors: a copy of the master held by a child would
// keep the line alive after Unplug, and a copy of the slave would count as a client.
func TestPTYDescriptorsNotInherited(t *testing.T) {
	_, p := startPTY(t, Config{})
	if err := p.Replug(); err != nil { // the replug path opens a new pty too
		t.Fatal(err)
	}
	out, err := exec.Command("/bin/sh", "-c",
		`for f in /proc/self/fd/*; do readlink "$f"; done; true`).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range strings.Fields(string(out)) {
		if target == "/dev/ptmx" || target == p.SlavePath() || strings.HasPrefix(target, "anon_inode:inotify") {
			t.Errorf("a child inherited the simulator's %s", target)
		}
	}
}
