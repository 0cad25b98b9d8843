//go:build !unix

package daemon

import "os/exec"

// setProcessGroup is a no-op where process groups do not exist; the timeout kills the hook only.
func setProcessGroup(*exec.Cmd) {}
