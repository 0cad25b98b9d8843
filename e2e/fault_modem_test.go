package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/simmodem"
	"github.com/provisiond/provisiond/internal/testbed"
)

// TestFaultModemUnplug: the modem's USB cable is pulled before, during and after a batch
// and while the daemon is idle, then plugged back in; modem.port is a stable link, like a
// /dev/serial/by-id name.
func TestFaultModemUnplug(t *testing.T) {
	t.Parallel()
	linked := testbed.Options{StableLink: true}
	runMatrix(t, []matrixRow{
		{name: "before the daemon starts", opts: linked, done: true, run: func(t *testing.T, ctx context.Context, b *testbed.Bed) {
			if err := b.PTY().Unplug(); err != nil {
				t.Fatal(err)
			}
			// --once does not wait: it fails at once, naming the port.
			p := onceFails(t, ctx, b, "FAILED")
			if !strings.Contains(p.Stderr(), b.ModemPath()) {
				t.Errorf("--once without a modem does not name the port:\n%s", p.Stderr())
			}
			// run waits, says so once, and carries on when the modem is back.
			d := daemon(t, ctx, b)
			at := 0
			waitID(t, ctx, d, &at, "modem-missing")
			time.Sleep(1500 * time.Millisecond) // several reopen attempts
			if n := countID(d, "modem-missing"); n != 1 {
				t.Errorf("the missing modem was logged %d times, want once", n)
			}
			if err := b.Replug(); err != nil {
				t.Fatal(err)
			}
			waitID(t, ctx, d, &at, "modem-back")
			waitEvent(t, ctx, d, &at, "DONE")
			stop(t, ctx, d)
		}},
		{name: "during a batch", opts: linked, run: func(t *testing.T, ctx context.Context, b *testbed.Bed) {
			b.Modem().UnplugDuring("AT%KEYGEN")
			d := daemon(t, ctx, b)
			at := 0
			waitID(t, ctx, d, &at, "modem-lost-in-batch")
			waitID(t, ctx, d, &at, "modem-disconnected")
			alive(t, d)
			if got := b.Modem().FunctionalMode(); got != 4 {
				t.Errorf("mode while unplugged: %d, want 4 (offline for the batch)", got)
			}
			if err := b.Replug(); err != nil {
				t.Fatal(err)
			}
			waitID(t, ctx, d, &at, "saved-mode-restore")
			waitEvent(t, ctx, d, &at, "NEED_LTE_ACTIVATED")
			if got := b.Modem().FunctionalMode(); got != 1 {
				t.Errorf("mode after the replug: %d, want 1", got)
			}
			stop(t, ctx, d)
			// The KEYGEN whose answer was cut is reported as lost, not retried.
			checkReported(t, b, "%KEYGEN", proto.Response{Kind: proto.KindError, Message: "modem lost: the serial port went away during the command"})
		}},
		{name: "after a batch, during its upload", opts: linked, done: true, run: func(t *testing.T, ctx context.Context, b *testbed.Bed) {
			if err := b.Cloud().SetFault(simcloud.Fault{Kind: simcloud.FaultSlow, Count: 1, Op: simcloud.OpUpload, Delay: 500 * time.Millisecond}); err != nil {
				t.Fatal(err)
			}
			d := daemon(t, ctx, b)
			waitFaultsSpent(t, ctx, b)
			if err := b.PTY().Unplug(); err != nil {
				t.Fatal(err)
			}
			at := 0
			waitID(t, ctx, d, &at, "results-uploaded")
			waitID(t, ctx, d, &at, "modem-disconnected", "modem-missing", "modem-lost-at-open")
			if err := b.Replug(); err != nil {
				t.Fatal(err)
			}
			waitEvent(t, ctx, d, &at, "DONE")
			stop(t, ctx, d)
		}},
		{name: "while idle", opts: linked, done: true, run: func(t *testing.T, ctx context.Context, b *testbed.Bed) {
			d := daemon(t, ctx, b)
			at := 0
			waitEvent(t, ctx, d, &at, "DONE")
			if err := b.PTY().Unplug(); err != nil {
				t.Fatal(err)
			}
			waitID(t, ctx, d, &at, "modem-disconnected")
			queue(t, b, testbed.AT("%CMNG=0,77,3,\"0123456789abcdef\""), testbed.Finished())
			if err := b.Replug(); err != nil {
				t.Fatal(err)
			}
			waitID(t, ctx, d, &at, "modem-back")
			if out := ctl(t, b, "now"); out == "" {
				t.Error("now: no output")
			}
			waitEvent(t, ctx, d, &at, "DONE")
			stop(t, ctx, d)
		}},
	})
}

// checkReported checks the command whose set command is set was reported as want (ID aside).
func checkReported(t *testing.T, b *testbed.Bed, set string, want proto.Response) {
	t.Helper()
	var id string
	for _, c := range mustCommands(t, b) {
		if c.SetCommand == set {
			id = c.ID
		}
	}
	for _, u := range uploads(t, b) {
		for _, r := range u.Responses {
			if r.ID == id {
				want.ID = id
				if r != want {
					t.Errorf("%s reported as %s, want %s", set, respString(r), respString(want))
				}
				return
			}
		}
	}
	t.Errorf("%s (%s) never reported", set, id)
}

// TestFaultModemStall: the modem stops answering before a batch and in the middle of one;
// its answers come late, after the daemon gave up on them.
func TestFaultModemStall(t *testing.T) {
	t.Parallel()
	// Short limits, so that a silent modem costs seconds: the slow commands (+CFUN) and the
	// restore after a batch would otherwise wait out their defaults (60 s and 65 s).
	fast := testbed.Options{Settings: map[string]any{"modem.command_timeout": "1s",
		"modem.long_command_timeout": "3s", "modem.restore_timeout": "4s"}}
	// A modem that takes its time, so that a test sees a command arrive before it is answered.
	slow := fast
	slow.Modem.Latency = 50 * time.Millisecond
	runMatrix(t, []matrixRow{
		{name: "before the batch", opts: fast, done: true, run: func(t *testing.T, ctx context.Context, b *testbed.Bed) {
			// A first attempt with nothing queued, so the daemon is idle with the job queued.
			jobs, err := b.Cloud().Jobs(b.UUID())
			if err != nil {
				t.Fatal(err)
			}
			for _, j := range jobs {
				if err := b.Cloud().Discard(b.UUID(), j.ID); err != nil {
					t.Fatal(err)
				}
			}
			d := daemon(t, ctx, b)
			at := 0
			waitEvent(t, ctx, d, &at, "NO_COMMANDS")
			waitEvent(t, ctx, d, &at, "STOP")
			queue(t, b, testbed.RealisticJob()...)
			b.Modem().Stall()
			ctl(t, b, "now")
			waitEvent(t, ctx, d, &at, "STOP") // the attempt gives up on the silent modem
			b.Modem().Resume()
			alive(t, d)
			stop(t, ctx, d)
		}},
		{name: "after KEYGEN, answering late", opts: slow, done: true, run: func(t *testing.T, ctx context.Context, b *testbed.Bed) {
			d := daemon(t, ctx, b)
			waitCommand(t, ctx, b, "AT%KEYGEN")
			b.Modem().Stall() // the restore after the batch stalls
			at := 0
			waitID(t, ctx, d, &at, "cmee-restore-failed")
			b.Modem().Resume() // the +CFUN restore, already sent, is answered late
			waitEvent(t, ctx, d, &at, "STOP")
			alive(t, d)
			stop(t, ctx, d)
		}},
		{name: "after KEYGEN, until the attempt gives up", opts: slow, run: func(t *testing.T, ctx context.Context, b *testbed.Bed) {
			d := daemon(t, ctx, b)
			waitCommand(t, ctx, b, "AT%KEYGEN")
			b.Modem().Stall()
			at := 0
			// The +CFUN restore times out (modem.long_command_timeout): the saved mode must
			// survive for the next start.
			waitID(t, ctx, d, &at, "mode-restore-failed")
			waitEvent(t, ctx, d, &at, "STOP")
			alive(t, d)
			stop(t, ctx, d)
			b.Modem().Resume()
			waitModemIdle(t, ctx, b) // the late answers go nowhere: see the row below
		}},
		{name: "restarted while late answers are still coming", opts: slow, done: true, run: func(t *testing.T, ctx context.Context, b *testbed.Bed) {
			b.Modem().Stall()
			p := start(t, ctx, b, "run", "--once")
			at := 0
			waitID(t, ctx, p, &at, "root-ca-failed") // two commands timed out
			if err := p.Kill(); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			b.Modem().Resume() // the stalled commands are answered now, into the next process
		}},
	})
}

// waitModemIdle waits until the modem has answered every command it received and written
// nothing for a while (a late answer goes out after its command's latency).
func waitModemIdle(t *testing.T, ctx context.Context, b *testbed.Bed) {
	t.Helper()
	const quiet = 300 * time.Millisecond
	last, since := b.Modem().Stats().BytesOut, time.Now()
	for b.Modem().Stats().Commands < len(b.ModemCommands()) || time.Since(since) < quiet {
		if out := b.Modem().Stats().BytesOut; out != last {
			last, since = out, time.Now()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the modem never went quiet: %d of %d commands answered", b.Modem().Stats().Commands, len(b.ModemCommands()))
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// waitCommand waits until a command starting with prefix reached the modem.
func waitCommand(t *testing.T, ctx context.Context, b *testbed.Bed, prefix string) {
	t.Helper()
	for {
		for _, c := range b.ModemCommands() {
			if strings.HasPrefix(c, prefix) {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never reached the modem", prefix)
		case <-time.After(time.Millisecond):
		}
	}
}

// TestFaultModemNoise: garbage, URC storms, chunked answers and command echo on the line
// change nothing: the uploads are exactly the realistic job's, byte for byte the modem's
// answers.
func TestFaultModemNoise(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		modem simmodem.Config
		fault func(m *simmodem.Modem)
	}{
		{name: "garbage lines", fault: func(m *simmodem.Modem) { m.SetGarbage(3) }},
		{name: "urc storm", fault: func(m *simmodem.Modem) { m.SetURCStorm(200) }},
		{name: "chunked answers", fault: func(m *simmodem.Modem) { m.SplitWrites(5) }},
		{name: "echo on", modem: simmodem.Config{Echo: true}},
		{name: "ready banner and crlf-only firmware", modem: simmodem.Config{Banner: "Ready", LineEnding: simmodem.LineEndingCRLF}},
		{name: "everything at once", modem: simmodem.Config{Echo: true}, fault: func(m *simmodem.Modem) {
			m.SetGarbage(2)
			m.SetURCStorm(100)
			m.SplitWrites(7)
		}},
	}
	for i, tt := range tests {
		for _, tr := range rowTransports(i) {
			t.Run(tr+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				ctx := testCtx(t)
				b := newBed(t, ctx, testbed.Options{Transport: tr, InitialMode: 1, Modem: tt.modem})
				if tt.fault != nil {
					tt.fault(b.Modem())
				}
				queue(t, b, testbed.RealisticJob()...)
				if code, _ := runOnce(t, ctx, b); code != 0 {
					t.Fatalf("run --once: exit %d", code)
				}
				checkUploads(t, b, realisticUploads(t, b))
				invariants(t, ctx, b, 1)
				jobDone(t, b)
			})
		}
	}
}

// TestFaultCMEErrors: a CME error in the command's ignore list counts as success and the
// batch goes on; one outside it stops the batch (TestFailingCommand checks the details).
func TestFaultCMEErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		ignore  []uint64
		wantOK  bool
		wantMsg string
	}{
		{name: "ignored", ignore: []uint64{513}, wantOK: true, wantMsg: "+CME ERROR: 513\r\n"},
		{name: "ignored among others", ignore: []uint64{50, 513, 518}, wantOK: true, wantMsg: "+CME ERROR: 513\r\n"},
		{name: "not ignored", ignore: []uint64{514}, wantMsg: "+CME ERROR: 513\r\n"},
	}
	for i, tt := range tests {
		for _, tr := range rowTransports(i) {
			t.Run(tr+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				ctx := testCtx(t)
				b := newBed(t, ctx, testbed.Options{Transport: tr, InitialMode: 1})
				cmds := queue(t, b, testbed.AT("%CMNG=3,4242,0", tt.ignore...), testbed.Interval(90), testbed.Finished())
				code, _ := runOnce(t, ctx, b)
				want := [][]wantResp{{{ID: cmds[0].ID, Kind: proto.KindError, CME: 513, Message: tt.wantMsg}}}
				if tt.wantOK {
					want = [][]wantResp{{
						{ID: cmds[0].ID, Kind: proto.KindATResponse, Message: tt.wantMsg},
						{ID: cmds[1].ID, Kind: proto.KindConfigAck},
						{ID: cmds[2].ID, Kind: proto.KindFinishedAck},
					}}
				}
				if (code == 0) != tt.wantOK {
					t.Errorf("run --once: exit %d", code)
				}
				checkUploads(t, b, want)
				interval := ""
				if tt.wantOK {
					interval = "90"
				}
				if got := settings(t, ctx, b)[testbed.IntervalKey]; got != interval {
					t.Errorf("interval %q, want %q (written only when the batch went on)", got, interval)
				}
				invariants(t, ctx, b, 1)
			})
		}
	}
}
