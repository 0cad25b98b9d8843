package attempt

import (
	"testing"

	"github.com/provisiond/provisiond/bench/internal/benchkit"
	"github.com/provisiond/provisiond/internal/daemon"
	"github.com/provisiond/provisiond/internal/testbed"
)

// BenchmarkAttempt runs one attempt per iteration of a long-running daemon (daemon.Run,
// triggered like `provisiond now`) against the simulators, on each transport, with
// provisiond's connection pattern and with the device library's replayed, for the realistic
// job and a 10-command batch. The time per op includes the simulators (same process); the
// counts per attempt are the point. The first attempt (root CA write, clock set, first
// handshake) runs before the timer starts.
func BenchmarkAttempt(b *testing.B) {
	jobs := []benchkit.Job{benchkit.Realistic, benchkit.Batch10}
	for _, tr := range []string{testbed.TransportHTTP, testbed.TransportCoAP} {
		for _, pattern := range []string{patternProvisiond, patternDevice} {
			for _, job := range jobs {
				b.Run(tr+"/"+pattern+"/"+job.Name, func(b *testing.B) {
					r := newRig(b, tr, pattern)
					r.attempt(b, job.Reqs())
					var total cost
					var jwts int
					b.ResetTimer()
					for range b.N {
						c := r.attempt(b, job.Reqs())
						if c.Last.Event != daemon.EventDone || c.Last.Failed != 0 {
							b.Fatalf("got %s with %d failed (%s), want DONE", c.Last.Event, c.Last.Failed, c.Last.Reason)
						}
						total.Commands = append(total.Commands, c.Commands...)
						total.SerialIn += c.SerialIn
						total.SerialOut += c.SerialOut
						total.Wire = total.Wire.Add(c.Wire)
						jwts += benchkit.CountPrefix(c.Commands, "AT%JWT")
					}
					b.StopTimer()
					n := float64(b.N)
					b.ReportMetric(float64(len(total.Commands))/n, "at-cmds/op")
					b.ReportMetric(float64(job.MinimumAT(0, false)), "min-at-cmds")
					b.ReportMetric(float64(jwts)/n, "jwt/op")
					b.ReportMetric(float64(total.SerialIn+total.SerialOut)/n, "serial-B/op")
					b.ReportMetric(float64(total.Wire.Handshakes)/n, "handshakes/op")
					b.ReportMetric(float64(total.Wire.Requests)/n, "requests/op")
					b.ReportMetric(float64(total.Wire.BytesSent+total.Wire.BytesReceived)/n, "wire-B/op")
					if total.Wire.DatagramsSent > 0 {
						b.ReportMetric(float64(total.Wire.DatagramsSent+total.Wire.DatagramsReceived)/n, "datagrams/op")
					}
				})
			}
		}
	}
}
