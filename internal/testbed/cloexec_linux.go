package testbed

import (
	"os"
	"strconv"
	"syscall"
)

// withPTYLock runs f, which opens a pty, so that no child process can inherit the pty's
// master: simmodem duplicates the master with dup(2), which leaves FD_CLOEXEC off, and a
// daemon started by another test at that moment would keep the master open, so the slave
// never sees the hang-up of an Unplug. Holding syscall.ForkLock for reading keeps os/exec
// from forking until every descriptor is marked close-on-exec again.
func withPTYLock(f func() error) error {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	err := f()
	closeOnExecAll()
	return err
}

// closeOnExecAll sets FD_CLOEXEC on every descriptor above stderr. The process passes no
// descriptor to children except through os/exec, which sets them up itself.
func closeOnExecAll() {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return
	}
	for _, n := range names {
		if fd, err := strconv.Atoi(n); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}
