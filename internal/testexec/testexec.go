// Package testexec starts the programs that tests build for the CPU under test. Without
// binfmt_misc the kernel cannot exec a binary for another CPU, so when scripts/test-arch.sh
// runs the tests for arm64 or armhf under qemu-user it sets TEST_ARCH_EXEC to the emulator
// (qemu-aarch64-static, qemu-arm-static) and Command starts such binaries through it. Unset,
// Command is exec.CommandContext. Emulated and Scale let a test give such programs more time
// to answer under the emulator than natively. It is for tests and the test harness only.
package testexec

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Env names the emulator that starts ELF binaries; empty or unset means run them directly.
const Env = "TEST_ARCH_EXEC"

// Emulator returns the emulator from Env, "" when the tests run natively.
func Emulator() string { return os.Getenv(Env) }

// Slowdown is how many times the time a test allows natively Scale allows under the emulator:
// qemu-user runs a program for another CPU several times slower than the host runs it
// natively, more on a loaded machine, and the tests start many such programs at once.
const Slowdown = 10

// Emulated reports whether Env names an emulator, i.e. the tests run for another CPU.
func Emulated() bool { return Emulator() != "" }

// Scale returns d natively and d × Slowdown under the emulator. It is for a test's own waits
// and deadlines (how long it lets a program it started take), never for what a test checks
// of a program's timing.
func Scale(d time.Duration) time.Duration {
	if Emulated() {
		return d * Slowdown
	}
	return d
}

// Command returns exec.CommandContext(ctx, name, args...), or, when Env names an emulator
// and name is an ELF file, the same command started through the emulator. Scripts and
// anything else are left alone: the host runs them, and the emulator could not.
func Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if emu := Emulator(); emu != "" && isELF(name) {
		return exec.CommandContext(ctx, emu, append([]string{name}, args...)...)
	}
	return exec.CommandContext(ctx, name, args...)
}

// isELF reports whether the file at path starts with the ELF magic number. A name that is
// not a readable file (e.g. one for exec's PATH search) is not.
func isELF(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := io.ReadFull(f, magic); err != nil {
		return false
	}
	return bytes.Equal(magic, []byte("\x7fELF"))
}

// Wrapper returns a path that runs bin for a program that is itself under test and starts bin
// on its own (the demo starts the daemon): when Env names an emulator and bin is an ELF file,
// a shell script in dir that execs the emulator with bin and its arguments, so the process
// the caller starts and signals is the emulator running bin; otherwise bin itself.
func Wrapper(dir, bin string) (string, error) {
	emu := Emulator()
	if emu == "" || !isELF(bin) {
		return bin, nil
	}
	path := filepath.Join(dir, filepath.Base(bin)+".emulated")
	script := fmt.Sprintf("#!/bin/sh\nexec %s %s \"$@\"\n", shellQuote(emu), shellQuote(bin))
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		return "", fmt.Errorf("testexec: wrapper for %s: %w", bin, err)
	}
	return path, nil
}

// shellQuote quotes s for sh as one word.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
