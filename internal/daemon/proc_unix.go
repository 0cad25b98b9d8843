//go:build unix

package daemon

import (
	"os/exec"
	"syscall"
)

// setProcessGroup puts a hook in its own process group so that a timeout kills the whole
// group (a shell script's children included), not only the script.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
