package e2e

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/simmodem"
	"github.com/provisiond/provisiond/internal/testbed"
)

// skewClock is a clock that runs at the host's pace with an adjustable offset: a clock jump
// is a Set.
type skewClock struct{ off atomic.Int64 }

func (c *skewClock) Now() time.Time         { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *skewClock) Set(skew time.Duration) { c.off.Store(int64(skew)) }

// TestFaultClock: clocks that jump. The daemon's JWT comes from the modem and is checked by
// the service, so a jump of either clock past the JWT's lifetime makes the service refuse
// it: nothing is fetched or run, the log says why, and once the clocks agree again the job
// completes. A modem without valid time gets the host's when allowed, else the attempt ends
// in FAILED_NO_VALID_DATETIME. (The host's own clock is not touched: it is the machine's.)
func TestFaultClock(t *testing.T) {
	t.Parallel()
	t.Run("modem network time a day behind", func(t *testing.T) {
		t.Parallel()
		eachTransport(t, func(t *testing.T, tr string) {
			ctx := testCtx(t)
			var clock skewClock
			clock.Set(-24 * time.Hour)
			b := newBed(t, ctx, testbed.Options{Transport: tr, InitialMode: 1, Modem: simmodem.Config{Clock: clock.Now}})
			queue(t, b, testbed.RealisticJob()...)
			p := onceFails(t, ctx, b, "")
			if !strings.Contains(p.Stderr(), "expired") {
				t.Errorf("no log line says the JWT was refused as expired:\n%s", p.Stderr())
			}
			noJobCommands(t, b)
			clock.Set(0) // the network hands out the right time again
			recoverAll(t, ctx, b)
			invariants(t, ctx, b, 1)
			jobDone(t, b)
		})
	})
	t.Run("service clock jumps an hour ahead between attempts", func(t *testing.T) {
		t.Parallel()
		eachTransport(t, func(t *testing.T, tr string) {
			ctx := testCtx(t)
			var clock skewClock
			b := newBed(t, ctx, testbed.Options{Transport: tr, InitialMode: 1, Cloud: simcloud.Config{Clock: clock.Now}})
			queue(t, b, testbed.AT("%CMNG=0,77,3,\"0123456789abcdef\""))
			d := daemon(t, ctx, b)
			at := 0
			waitEvent(t, ctx, d, &at, "NO_COMMANDS") // the first job, with a JWT now cached
			clock.Set(time.Hour)
			queue(t, b, testbed.RealisticJob()...)
			ctl(t, b, "now")
			e := waitEvent(t, ctx, d, &at, "FAILED_DEVICE_NOT_CLAIMED")
			if !strings.Contains(e.Str("reason"), "expired") {
				t.Errorf("reason %q does not say the JWT expired", e.Str("reason"))
			}
			alive(t, d)
			clock.Set(0)
			ctl(t, b, "now")
			waitEvent(t, ctx, d, &at, "DONE")
			stop(t, ctx, d)
			invariants(t, ctx, b, 1)
			jobDone(t, b)
		})
	})
	t.Run("no valid time, set_clock_from_host off", func(t *testing.T) {
		t.Parallel()
		eachTransport(t, func(t *testing.T, tr string) {
			ctx := testCtx(t)
			b := newBed(t, ctx, testbed.Options{Transport: tr, // +CFUN=0: no network, no time
				Settings: map[string]any{"modem.set_clock_from_host": false}})
			queue(t, b, testbed.RealisticJob()...)
			onceFails(t, ctx, b, "FAILED_NO_VALID_DATETIME")
			noJobCommands(t, b)
			if _, valid := b.Modem().Time(); valid {
				t.Error("the modem's clock was set although set_clock_from_host is off")
			}
			if err := b.WriteConfig(map[string]any{"modem.set_clock_from_host": nil}); err != nil {
				t.Fatal(err)
			}
			recoverAll(t, ctx, b)
			if got, valid := b.Modem().Time(); !valid || time.Until(got).Abs() > time.Minute {
				t.Errorf("modem clock after the recovery: %v (valid %v), want the host's", got, valid)
			}
			invariants(t, ctx, b, 0)
			jobDone(t, b)
		})
	})
}
