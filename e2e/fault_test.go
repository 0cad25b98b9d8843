package e2e

// The fault matrix: every fault is injected into a real run of the built daemon
// against the simulated modem and service, and each test ends with the same invariants:
//   - no executed command unreported: every command of the service's queue that reached the
//     modem has a response recorded by the service;
//   - none executed twice: every queued AT command reached the modem at most once;
//   - a response delivered twice (a retried upload) is identical both times;
//   - the store is readable and consistent: `provisiond settings --json` works and holds no
//     daemon state once everything was delivered;
//   - the modem's functional mode is the one it had (restored, or restored on the next
//     start);
//   - the daemon stayed alive (run mode) or said why it stopped (--once), in a log line.

import (
	"context"
	"strings"
	"syscall"
	"testing"

	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/testbed"
)

// invariants checks the promises above once the daemon is stopped. mode is the modem's
// functional mode before the test.
func invariants(t *testing.T, ctx context.Context, b *testbed.Bed, mode int) {
	t.Helper()
	st, err := b.Settings(ctx, provisiond)
	if err != nil {
		t.Errorf("invariant: store unreadable: %v", err)
	}
	for k, v := range st {
		if strings.HasPrefix(k, ownPrefix) {
			t.Errorf("invariant: daemon state left in the store: %s=%s", k, short(v))
		}
	}
	reported := map[string]proto.Response{}
	for i, u := range uploads(t, b) {
		for _, r := range u.Responses {
			if prev, ok := reported[r.ID]; ok && prev != r {
				t.Errorf("invariant: upload %d reports %s differently: %s, before %s", i, r.ID, respString(r), respString(prev))
			}
			reported[r.ID] = r
		}
	}
	log := b.ModemCommands()
	for _, c := range mustCommands(t, b) {
		if c.Kind != proto.KindAT {
			continue
		}
		n := count(log, c.ATString())
		if n > 1 {
			t.Errorf("invariant: %s (%s) executed %d times", short(c.ATString()), c.ID, n)
		}
		if _, ok := reported[c.ID]; n == 1 && !ok {
			t.Errorf("invariant: %s (%s) executed but never reported", short(c.ATString()), c.ID)
		}
		if c.Status == simcloud.StatusPending || c.Status == simcloud.StatusInProgress {
			t.Errorf("invariant: %s (%s) still %s at the service", short(c.ATString()), c.ID, c.Status)
		}
	}
	if got := b.Modem().FunctionalMode(); got != mode {
		t.Errorf("invariant: modem mode %d, want %d", got, mode)
	}
}

// jobDone checks the realistic job completed: everything SUCCEEDED and the certificate is in
// the modem.
func jobDone(t *testing.T, b *testbed.Bed) {
	t.Helper()
	for _, c := range mustCommands(t, b) {
		if c.Status != simcloud.StatusSucceeded {
			t.Errorf("command %s: %s (%s), want SUCCEEDED", c.ID, c.Status, c.Reason)
		}
	}
	checkClientCert(t, b, testbed.ClientCertSecTag)
}

// recoverAll clears every fault, plugs the modem back in and runs `run --once` until an
// attempt ends cleanly (a pending outbox, a failed job's report and the rest may take one
// attempt each).
func recoverAll(t *testing.T, ctx context.Context, b *testbed.Bed) {
	t.Helper()
	if err := b.Cloud().SetFault(); err != nil {
		t.Fatal(err)
	}
	b.Modem().ClearFaults()
	if !b.PTY().Plugged() {
		if err := b.Replug(); err != nil {
			t.Fatal(err)
		}
	}
	for range 4 {
		if code, _ := runOnce(t, ctx, b); code == 0 {
			return
		}
	}
	t.Fatal("recovery: run --once never succeeded")
}

// daemon starts `provisiond run` and returns it with the index of its first log line.
func daemon(t *testing.T, ctx context.Context, b *testbed.Bed) *testbed.Process {
	t.Helper()
	return start(t, ctx, b, "run")
}

// stop sends SIGTERM and checks the daemon exits 0.
func stop(t *testing.T, ctx context.Context, p *testbed.Process) {
	t.Helper()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(ctx); err != nil || code != 0 {
		t.Errorf("SIGTERM: exit %d, %v; want 0", code, err)
	}
}

// alive checks the daemon has not exited.
func alive(t *testing.T, p *testbed.Process) {
	t.Helper()
	select {
	case <-p.Done():
		t.Fatalf("the daemon exited")
	default:
	}
}

// once runs `run --once` and checks its exit code is non-zero and stderr names the event.
func onceFails(t *testing.T, ctx context.Context, b *testbed.Bed, event string) *testbed.Process {
	t.Helper()
	code, p := runOnce(t, ctx, b)
	if code == 0 {
		t.Errorf("run --once: exit 0, want non-zero")
	}
	if event != "" && !strings.Contains(p.Stderr(), "provisiond: "+event+":") {
		t.Errorf("run --once: stderr does not name %s:\n%s", event, p.Stderr())
	}
	return p
}

// noJobCommands checks none of the queued AT commands reached the modem.
func noJobCommands(t *testing.T, b *testbed.Bed) {
	t.Helper()
	checkExecutedTimes(t, b, mustCommands(t, b), 0)
}

// eachTransport runs f as a parallel subtest per transport.
func eachTransport(t *testing.T, f func(t *testing.T, tr string)) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			f(t, tr)
		})
	}
}

// matrixRow is one fault of a table.
type matrixRow struct {
	name string
	opts testbed.Options
	// run injects the fault and drives the daemon; recoverAll and invariants follow.
	run func(t *testing.T, ctx context.Context, b *testbed.Bed)
	// done: the realistic job must have completed after recovery.
	done bool
}

// rowTransports is the transports row i of a table runs on: both, or with -short one, HTTP
// and CoAP in turn, so that both still run.
func rowTransports(i int) []string {
	if testing.Short() {
		return transports[i%len(transports):][:1]
	}
	return transports
}

// runMatrix runs every row on both transports (see rowTransports) with a realistic job
// queued, then recovers and checks the invariants.
func runMatrix(t *testing.T, rows []matrixRow) {
	for i, row := range rows {
		for _, tr := range rowTransports(i) {
			t.Run(tr+"/"+row.name, func(t *testing.T) {
				t.Parallel()
				ctx := testCtx(t)
				opts := row.opts
				opts.Transport = tr
				if opts.InitialMode == 0 {
					opts.InitialMode = 1
				}
				b := newBed(t, ctx, opts)
				queue(t, b, testbed.RealisticJob()...)
				row.run(t, ctx, b)
				if t.Failed() {
					return
				}
				recoverAll(t, ctx, b)
				invariants(t, ctx, b, opts.InitialMode)
				if row.done {
					jobDone(t, b)
				}
			})
		}
	}
}
