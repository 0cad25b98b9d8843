// Package oneproc gives `provisiond run` one Go processor (GOMAXPROCS=1) unless the
// GOMAXPROCS variable chose a number. Package main imports it for that side effect alone.
//
// The daemon's work is one modem's job, one step at a time: it waits on the serial line, the
// network or the disk far longer than it computes. With a second processor, each hand-over
// between goroutines (the AT client's reader, loop and caller; the HTTP client's connection
// loops) wakes a second OS thread that finds nothing to run and sleeps again. Together with
// reading the serial line through the runtime's poller (internal/atmodem), one processor cut
// the CPU of a `run --once` above start-up by about a fifth and a running daemon's attempt by
// a quarter (BENCHMARKS.md §13).
//
// The limit is set here, in an init that runs before most packages' inits, and not in the run
// command: lowering the count hands the second processor's allocation caches back to the heap
// span by span, which costs more the more has run on it (0.2–2.4 ms from the run command,
// 0.1–0.9 ms here). The GOMAXPROCS variable is read by the runtime at start and costs
// nothing; a unit may set it (`Environment=GOMAXPROCS=2`) to undo this.
package oneproc

import (
	"os"
	"runtime"
)

func init() {
	if wanted(os.Args, os.LookupEnv) {
		runtime.GOMAXPROCS(1)
	}
}

// wanted says whether the process is `provisiond run` (the daemon or --once; a subcommand
// cannot follow a flag, the root command has none that take one) with no GOMAXPROCS set.
func wanted(args []string, lookupEnv func(string) (string, bool)) bool {
	if len(args) < 2 || args[1] != "run" {
		return false
	}
	_, set := lookupEnv("GOMAXPROCS")
	return !set
}
