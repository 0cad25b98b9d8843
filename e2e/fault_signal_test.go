package e2e

import (
	"syscall"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/simmodem"
	"github.com/provisiond/provisiond/internal/testbed"
)

// TestFaultSignals: SIGTERM in the middle of a command and of an upload stops the daemon
// cleanly (exit 0, modem mode restored, results kept for the next start); SIGHUP with a broken
// config is refused and the daemon carries on; SIGUSR1 provisions now.
func TestFaultSignals(t *testing.T) {
	t.Parallel()
	t.Run("SIGTERM during KEYGEN", func(t *testing.T) {
		t.Parallel()
		eachTransport(t, func(t *testing.T, tr string) {
			ctx := testCtx(t)
			b := newBed(t, ctx, testbed.Options{Transport: tr, InitialMode: 1, Modem: simmodem.Config{Latency: 100 * time.Millisecond}})
			queue(t, b, testbed.RealisticJob()...)
			d := daemon(t, ctx, b)
			waitCommand(t, ctx, b, "AT%KEYGEN")
			stop(t, ctx, d) // exit 0
			if got := b.Modem().FunctionalMode(); got != 1 {
				t.Errorf("modem mode %d after SIGTERM, want 1", got)
			}
			// The command that was running finished and its result is kept, not "unknown".
			kept := storedOutbox(t, settings(t, ctx, b))
			if n := len(kept); n != 3 || kept[2].Kind != proto.KindATResponse {
				t.Errorf("outbox after SIGTERM: %+v, want the batch's 3 results, KEYGEN's answered", kept)
			}
			recoverAll(t, ctx, b)
			invariants(t, ctx, b, 1)
			jobDone(t, b)
		})
	})
	t.Run("SIGTERM during an upload", func(t *testing.T) {
		t.Parallel()
		eachTransport(t, func(t *testing.T, tr string) {
			ctx := testCtx(t)
			b := newBed(t, ctx, testbed.Options{Transport: tr, InitialMode: 1})
			queue(t, b, testbed.RealisticJob()...)
			setFault(t, b, simcloud.Fault{Kind: simcloud.FaultSlow, Count: 1, Op: simcloud.OpUpload, Delay: 10 * time.Minute})
			d := daemon(t, ctx, b)
			waitFaultsSpent(t, ctx, b)
			stop(t, ctx, d)
			if n := len(storedOutbox(t, settings(t, ctx, b))); n != 3 {
				t.Errorf("outbox after SIGTERM: %d results, want 3", n)
			}
			recoverAll(t, ctx, b)
			invariants(t, ctx, b, 1)
			jobDone(t, b)
		})
	})
	t.Run("SIGHUP with a broken config, then SIGUSR1", func(t *testing.T) {
		t.Parallel()
		eachTransport(t, func(t *testing.T, tr string) {
			ctx := testCtx(t)
			b := newBed(t, ctx, testbed.Options{Transport: tr, InitialMode: 1})
			d := daemon(t, ctx, b)
			at := 0
			waitEvent(t, ctx, d, &at, "NO_COMMANDS")
			if err := b.WriteConfig(map[string]any{"modem.no_such_key": true}); err != nil {
				t.Fatal(err)
			}
			if err := d.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			e := waitID(t, ctx, d, &at, "config-reload-refused")
			if e.Level != "error" {
				t.Errorf("refused reload logged at %q, want error", e.Level)
			}
			alive(t, d)
			if err := b.WriteConfig(map[string]any{"modem.no_such_key": nil}); err != nil {
				t.Fatal(err)
			}
			queue(t, b, testbed.RealisticJob()...)
			if err := d.Signal(syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			waitEvent(t, ctx, d, &at, "DONE")
			stop(t, ctx, d)
			invariants(t, ctx, b, 1)
			jobDone(t, b)
		})
	})
}
