package benchkit

import (
	"strings"

	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/testbed"
)

// Job is a set of owner requests with what the count of AT commands is judged against.
type Job struct {
	Name string
	Reqs func() []simcloud.Request
	// AT is how many AT commands the job sends to the modem; Batches how many batches (each
	// with AT commands) the service splits it into.
	AT, Batches int
}

// Realistic is the demo's job (testbed.RealisticJob): a client certificate by %KEYGEN and
// %CMNG, an interval change by config command, and FINISHED. The service can only sign the
// certificate once the CSR came back, so the job is two batches in one attempt:
// [%CMNG=3 ×2, %KEYGEN] and [%CMNG write, config, FINISHED].
var Realistic = Job{Name: "realistic", Reqs: testbed.RealisticJob, AT: 4, Batches: 2}

// Batch10 is a 10-command batch: eight AT commands (an IMEI read, two credential lists and
// five deletes of absent credentials with CME 513 ignored), a config command and FINISHED.
// An AT command always goes out as "AT" + command + "=" + parameters (docs/protocol.md §4.3), so
// only commands with parameters can be queued.
var Batch10 = Job{Name: "batch10", Reqs: batch10, AT: 8, Batches: 1}

func batch10() []simcloud.Request {
	return []simcloud.Request{
		testbed.AT("+CGSN=1"), testbed.AT("%CMNG=1"), testbed.AT("%CMNG=1,189298"),
		testbed.AT("%CMNG=3,42,0", 513), testbed.AT("%CMNG=3,42,1", 513), testbed.AT("%CMNG=3,42,2", 513),
		testbed.AT("%CMNG=3,42,3", 513), testbed.AT("%CMNG=3,42,4", 513),
		testbed.Interval(testbed.JobIntervalSeconds), testbed.Finished(),
	}
}

// MinimumAT is the fewest AT commands an attempt of j can send on a modem that starts each
// batch with CMEE 0 and online (+CFUN=1), keeping the per-batch rules of docs/protocol.md §4.1 and
// docs/design.md: per batch, read CMEE and set it to 1, read the mode and set +CFUN=4, and restore
// both afterwards (6 commands); jwts JWTs (one per attempt; none when the previous attempt's
// JWT is still valid, it lives 300 s). AT%CCLK? and AT%ATTESTTOKEN are not needed by the job
// and not counted. A daemon start (run --once) adds %SHORTSWVER (mver) and the root-CA check.
func (j Job) MinimumAT(jwts int, start bool) int {
	n := j.AT + 6*j.Batches + jwts
	if start {
		n += 2
	}
	return n
}

// CountPrefix counts the commands starting with prefix.
func CountPrefix(cmds []string, prefix string) int {
	n := 0
	for _, c := range cmds {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}
