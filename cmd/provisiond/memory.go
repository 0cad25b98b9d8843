package main

import (
	"os"
	"runtime/debug"
	"time"
)

// What a running daemon keeps between attempts (BENCHMARKS.md §8b). An attempt leaves well
// under 1 MB live, but with the default GOGC=100 the heap grows to the collector's 4 MB floor
// before each collection and the runtime keeps those pages; attempts are seconds to hours
// apart, so that memory sits unused.
const (
	// gcPercent halves the heap floor (4 MB × GOGC/100): about 2 MiB less private memory
	// while attempts run back to back, for about one more collection every four attempts.
	gcPercent = 50
	// releaseAfter is how long no attempt must end before the free pages go back to the OS:
	// a collection and a release cost several ms of CPU, paid once after a burst of attempts
	// instead of after each one.
	releaseAfter = 30 * time.Second
)

// tuneGC sets the daemon's GC percent unless the GOGC variable chose one.
func tuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
}

// releaser calls release once no attempt has ended for quiet: each attemptEnded restarts the
// wait.
type releaser struct {
	quiet time.Duration
	t     *time.Timer
}

func newReleaser(quiet time.Duration, release func()) *releaser {
	t := time.AfterFunc(time.Hour, release)
	t.Stop()
	return &releaser{quiet: quiet, t: t}
}

func (r *releaser) attemptEnded() { r.t.Reset(r.quiet) }

func (r *releaser) stop() { r.t.Stop() }
