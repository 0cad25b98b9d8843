package e2e

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/provisiond/provisiond/internal/testbed"
)

// TestRunOneProcessor reads the Go runtime's own scheduler trace (GODEBUG=schedtrace) of a
// `provisiond run --once`: one processor by default (internal/oneproc), the number GOMAXPROCS
// names when it is set, and any other command left at the runtime's choice (this test's own
// when nothing set it).
func TestRunOneProcessor(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	b := newBed(t, ctx, testbed.Options{})
	_, ownSet := os.LookupEnv("GOMAXPROCS")
	tests := []struct {
		name string
		args []string
		env  string
		want string
		// runtimeDefault: want is this test's own processor count, the runtime's choice
		// only when nothing set GOMAXPROCS for the test itself.
		runtimeDefault bool
	}{
		{"run", []string{"run", "--once"}, "", "gomaxprocs=1 ", false},
		{"run with GOMAXPROCS=3", []string{"run", "--once"}, "GOMAXPROCS=3", "gomaxprocs=3 ", false},
		{"settings", []string{"settings"}, "", fmt.Sprintf("gomaxprocs=%d ", runtime.GOMAXPROCS(0)), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.runtimeDefault && ownSet {
				t.Skip("GOMAXPROCS is set for the test itself: the runtime's own choice is unknown here")
			}
			cmd := b.Command(ctx, provisiond, tt.args...)
			cmd.Env = slices.DeleteFunc(cmd.Env, func(kv string) bool {
				return strings.HasPrefix(kv, "GOMAXPROCS=") || strings.HasPrefix(kv, "GODEBUG=")
			})
			cmd.Env = append(cmd.Env, "GODEBUG=schedtrace=1")
			if tt.env != "" {
				cmd.Env = append(cmd.Env, tt.env)
			}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("provisiond %s: %v\n%s", strings.Join(tt.args, " "), err, out)
			}
			var last string
			for _, line := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(line, "SCHED ") {
					last = line
				}
			}
			if last == "" {
				t.Fatalf("no scheduler trace in the output:\n%s", out)
			}
			if !strings.Contains(last, tt.want) {
				t.Errorf("last scheduler trace %q, want %q", last, tt.want)
			}
		})
	}
}
