// Package e2e runs the built provisiond binary against the simulated nRF91 on a pty and the
// simulated Provisioning Service on loopback (internal/testbed), and checks what it did from
// the outside only: the uploads the service recorded, the modem's state and command log, the
// settings file through `provisiond settings --json`, exit codes and the control socket.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/testexec"
)

// provisiond is the binary under test, built once by TestMain (or given by E2E_PROVISIOND).
var provisiond string

// provisiondCmd is the path that a program under test (the demo) starts the daemon by:
// provisiond, or under emulation (internal/testexec) a script that runs it through the
// emulator.
var provisiondCmd string

// demo is the demo program (cmd/provisiond-demo) built by TestMain; "" with -short, which
// skips TestDemo.
var demo string

// TestMain builds ./cmd/provisiond once into a temporary folder, and without -short the demo
// too. E2E_PROVISIOND=/path/to/bin tests an already built binary instead (e.g. bin/provisiond
// from `make build`). The builds are not part of any test's time limit.
func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	if !flagSet("test.parallel") {
		// The tests mostly wait (on the daemons, on backoffs, on the simulated modem), so
		// more of them than cores can run at once; -parallel on the command line still wins.
		_ = flag.Set("test.parallel", strconv.Itoa(max(8, 4*runtime.GOMAXPROCS(0))))
	}
	if _, set := os.LookupEnv("GORACE"); !set {
		// A race-enabled binary sleeps a second at exit (to let other threads report);
		// the tests start dozens of them. A race still fails the run: exit code 66 and a
		// report on stderr, which every test checks.
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	dir, err := os.MkdirTemp("", "provisiond-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if bin := os.Getenv("E2E_PROVISIOND"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		provisiond = abs
	} else {
		provisiond = filepath.Join(dir, "provisiond")
		var flags []string
		if raceEnabled {
			// The daemon's own goroutines get the race detector too.
			flags = append(flags, "-race")
		}
		if err := build(ctx, provisiond, "github.com/provisiond/provisiond/cmd/provisiond", flags...); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
	}
	if provisiondCmd, err = testexec.Wrapper(dir, provisiond); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	if !testing.Short() {
		demo = filepath.Join(dir, "provisiond-demo")
		if err := build(ctx, demo, "github.com/provisiond/provisiond/cmd/provisiond-demo"); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
	}
	return m.Run()
}

// build runs go build for pkg into out.
func build(ctx context.Context, out, pkg string, flags ...string) error {
	args := append(append([]string{"build", "-o", out}, flags...), pkg)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building %s: %w", pkg, err)
	}
	return nil
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
