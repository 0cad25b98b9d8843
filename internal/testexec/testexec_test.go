package testexec

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCommand(t *testing.T) {
	dir := t.TempDir()
	elf := filepath.Join(dir, "prog")
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(elf, []byte("\x7fELF\x02\x01\x01rest of the header"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, emu, bin string
		want           []string // the command's argv
	}{
		{"native ELF", "", elf, []string{elf, "-x"}},
		{"emulated ELF", "qemu-arm-static", elf, []string{"qemu-arm-static", elf, "-x"}},
		{"emulated script", "qemu-arm-static", script, []string{script, "-x"}},
		{"emulated PATH name", "qemu-arm-static", "go", []string{"go", "-x"}},
		{"emulated missing file", "qemu-arm-static", filepath.Join(dir, "none"), []string{filepath.Join(dir, "none"), "-x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(Env, tt.emu)
			cmd := Command(context.Background(), tt.bin, "-x")
			if !slices.Equal(cmd.Args, tt.want) {
				t.Errorf("args = %q, want %q", cmd.Args, tt.want)
			}
		})
	}
}

// TestWrapper runs the wrapper with /bin/echo standing in for the emulator: the script must
// pass the binary and every argument through unchanged, quotes and spaces included.
func TestWrapper(t *testing.T) {
	echo, err := exec.LookPath("echo")
	if err != nil {
		t.Skip("no echo command")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "it's a prog")
	if err := os.WriteFile(bin, []byte("\x7fELF rest"), 0o755); err != nil {
		t.Fatal(err)
	}

	t.Setenv(Env, "")
	if got, err := Wrapper(dir, bin); err != nil || got != bin {
		t.Errorf("native: Wrapper = %q, %v; want the binary itself", got, err)
	}

	t.Setenv(Env, echo)
	w, err := Wrapper(dir, bin)
	if err != nil {
		t.Fatal(err)
	}
	if w == bin {
		t.Fatal("emulated: Wrapper returned the binary itself")
	}
	out, err := exec.Command(w, "a b", "$HOME", "'q'").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSuffix(string(out), "\n"), bin+" a b $HOME 'q'"; got != want {
		t.Errorf("wrapper ran %q, want %q", got, want)
	}
	if got, err := Wrapper(dir, w); err != nil || got != w {
		t.Errorf("a script is not wrapped again: Wrapper = %q, %v", got, err)
	}
}

func TestScale(t *testing.T) {
	tests := []struct {
		name, emu string
		emulated  bool
		want      time.Duration
	}{
		{"native", "", false, time.Second},
		{"emulated", "qemu-aarch64-static", true, Slowdown * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(Env, tt.emu)
			if got := Emulated(); got != tt.emulated {
				t.Errorf("Emulated() = %v, want %v", got, tt.emulated)
			}
			if got := Scale(time.Second); got != tt.want {
				t.Errorf("Scale(1s) = %v, want %v", got, tt.want)
			}
		})
	}
}
