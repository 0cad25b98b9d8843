package attempt

import (
	"strings"
	"testing"

	"github.com/provisiond/provisiond/bench/internal/benchkit"
	"github.com/provisiond/provisiond/internal/daemon"
	"github.com/provisiond/provisiond/internal/testbed"
	"github.com/provisiond/provisiond/internal/transport"
)

// TestJobCost checks the cost targets on both transports: one handshake per
// attempt, the job done, and no more than 1.1 times the AT commands the job needs. The
// first attempt also writes the root CA and sets the clock, so the second one is judged.
// It also checks that the daemon's status carries what the sessions counted on the wire.
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
			// The status reports what the sessions counted: per attempt, and summed since start.
			got := transport.Stats{Handshakes: c.Last.Handshakes, ResumedHandshakes: c.Last.ResumedHandshakes,
				Requests: c.Last.Requests, BytesSent: c.Last.BytesSent, BytesReceived: c.Last.BytesReceived}
			want := c.Wire
			want.DatagramsSent, want.DatagramsReceived = 0, 0
			if got != want || got.BytesSent == 0 || got.BytesReceived == 0 {
				t.Errorf("status last_attempt traffic: got %+v, want the session's %+v", got, want)
			}
			st := r.d.Status()
			gotTotal := [4]int64{int64(st.HandshakesTotal), int64(st.RequestsTotal), st.BytesSentTotal, st.BytesReceivedTotal}
			wantTotal := [4]int64{int64(first.Wire.Handshakes + c.Wire.Handshakes), int64(first.Wire.Requests + c.Wire.Requests),
				first.Wire.BytesSent + c.Wire.BytesSent, first.Wire.BytesReceived + c.Wire.BytesReceived}
			if st.Attempts != 2 || gotTotal != wantTotal {
				t.Errorf("status totals after %d attempts: got %v, want the two attempts' sum %v", st.Attempts, gotTotal, wantTotal)
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
