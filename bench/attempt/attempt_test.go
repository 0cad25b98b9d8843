package attempt

import (
	"strings"
	"testing"

	"github.com/provisiond/provisiond/bench/internal/benchkit"
	"github.com/provisiond/provisiond/internal/daemon"
	"github.com/provisiond/provisiond/internal/testbed"
)

// TestJobCost checks the cost targets on both transports: one handshake per
// attempt, the job done, and no more than 1.1 times the AT commands the job needs. The
// first attempt also writes the root CA and sets the clock, so the second one is judged.
func TestJobCost(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the simulators and a daemon; skipped with -short")
	}
	tests := []struct {
		name, transport string
		job             benchkit.Job
	}{
		{name: "http realistic", transport: testbed.TransportHTTP, job: benchkit.Realistic},
		{name: "coap realistic", transport: testbed.TransportCoAP, job: benchkit.Realistic},
		{name: "http batch10", transport: testbed.TransportHTTP, job: benchkit.Batch10},
		{name: "coap batch10", transport: testbed.TransportCoAP, job: benchkit.Batch10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, tt.transport, patternProvisiond)
			first := r.attempt(t, tt.job.Reqs())
			t.Logf("first attempt: %s", first)
			c := r.attempt(t, tt.job.Reqs())
			t.Logf("second attempt: %s\n  %s", c, strings.Join(short(c.Commands), "\n  "))
			if c.Last.Event != daemon.EventDone || c.Last.Failed != 0 {
				t.Fatalf("got %s with %d failed, want DONE with none", c.Last.Event, c.Last.Failed)
			}
			if c.Wire.Handshakes != 1 {
				t.Errorf("handshakes: got %d, want 1", c.Wire.Handshakes)
			}
			// Back-to-back attempts may reuse a JWT that is still valid; the minimum allows what
			// the daemon did, so only the other commands are judged.
			minimum := tt.job.MinimumAT(benchkit.CountPrefix(c.Commands, "AT%JWT"), false)
			if got := len(c.Commands); float64(got) > 1.1*float64(minimum) {
				t.Errorf("AT commands: got %d, want at most 1.1 × %d", got, minimum)
			}
		})
	}
}

// short shortens long command lines (certificates) for the log.
func short(cmds []string) []string {
	out := make([]string, len(cmds))
	for i, c := range cmds {
		if len(c) > 40 {
			c = c[:40] + "…"
		}
		out[i] = c
	}
	return out
}
