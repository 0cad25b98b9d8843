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
)

// provisiond is the binary under test, built once by TestMain (or given by E2E_PROVISIOND).
var provisiond string

// TestMain builds ./cmd/provisiond once into a temporary folder. E2E_PROVISIOND=/path/to/bin
// tests an already built binary instead (e.g. bin/provisiond from `make build`).
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
	if bin := os.Getenv("E2E_PROVISIOND"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		provisiond = abs
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "provisiond-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	provisiond = filepath.Join(dir, "provisiond")
	args := []string{"build", "-o", provisiond}
	if raceEnabled {
		// The daemon's own goroutines get the race detector too.
		args = append(args, "-race")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", append(args, "github.com/provisiond/provisiond/cmd/provisiond")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building provisiond:", err)
		return 1
	}
	return m.Run()
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
