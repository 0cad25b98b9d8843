package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// goneSocket leaves dir/name/provisiond.sock as a killed daemon leaves it: nobody listens.
func goneSocket(t *testing.T, dir, name string) {
	t.Helper()
	p := filepath.Join(dir, name, "provisiond.sock")
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
}

// redraws counts the --watch screens written and ends the command after the third.
type redraws struct {
	mu     sync.Mutex
	b      strings.Builder
	n      int
	cancel context.CancelFunc
}

func (r *redraws) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.b.Write(p)
	if r.n += strings.Count(string(p), clearScreen); r.n >= 3 {
		r.cancel()
	}
	return len(p), nil
}

func TestListWatchRedrawsUntilInterrupted(t *testing.T) {
	dir := t.TempDir()
	goneSocket(t, dir, "ttyACM0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &redraws{cancel: cancel}
	cmd := newRootCmd()
	cmd.SetOut(out)
	cmd.SetErr(out)
	cmd.SetArgs([]string{"list", "--watch", "--every", "10ms", "--run-dir", dir})
	err := cmd.ExecuteContext(ctx)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("list --watch of a gone instance: %v, want exit 2 once interrupted", err)
	}
	got := out.b.String()
	if out.n != 3 || strings.Count(got, "ttyACM0") != 3 || !strings.Contains(got, "gone: nothing listens on its socket") {
		t.Fatalf("%d screens, want 3 each showing the gone instance:\n%q", out.n, got)
	}
}

func TestListExitCodes(t *testing.T) {
	gone := t.TempDir()
	goneSocket(t, gone, "ttyACM0")
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"only gone instances", []string{"list", "--run-dir", gone}, 2},
		{"no run folder", []string{"list", "--run-dir", filepath.Join(gone, "missing")}, 2},
		{"unknown instance", []string{"list", "--run-dir", gone, "--instance", "ttyACM7"}, 1},
		{"bad timeout", []string{"list", "--run-dir", gone, "--timeout", "0s"}, 1},
		{"bad watch interval", []string{"list", "--run-dir", gone, "--watch", "--every", "0s"}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := execute(context.Background(), tc.args); got != tc.want {
				t.Errorf("provisiond %s: exit %d, want %d", strings.Join(tc.args, " "), got, tc.want)
			}
		})
	}
}
