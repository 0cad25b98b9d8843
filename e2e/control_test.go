package e2e

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"

	"github.com/provisiond/provisiond/internal/attest"
	"github.com/provisiond/provisiond/internal/testbed"
)

// statusJSON is the part of `provisiond status --json` the tests read.
type statusJSON struct {
	State       string `json:"state"`
	LastAttempt *struct {
		Event    string `json:"event"`
		Executed int    `json:"executed"`
		Failed   int    `json:"failed"`
	} `json:"last_attempt"`
	DeviceUUID      string `json:"device_uuid"`
	Cursor          string `json:"cursor"`
	OutboxPending   int    `json:"outbox_pending"`
	IntervalSeconds int64  `json:"interval_seconds"`
	Attempts        int    `json:"attempts"`
}

// TestDaemonControl runs the daemon (not --once) and drives it through the control socket:
// status, uuid, token, interval, now; then SIGTERM stops it with exit 0 and the modem's mode
// as it was.
func TestDaemonControl(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			b := newBed(t, ctx, testbed.Options{Transport: tr, InitialMode: 1})
			queue(t, b, testbed.RealisticJob()...)
			p := start(t, ctx, b, "run")

			// auto_start: the job runs at start.
			at := 0
			waitEvent(t, ctx, p, &at, "DONE")
			waitEvent(t, ctx, p, &at, "STOP")
			waitCheckpointed(t, ctx, b) // after the attempt
			cmds := mustCommands(t, b)
			finished := cmds[len(cmds)-1].ID

			st := status(t, b)
			if st.State != "idle" || st.LastAttempt == nil || st.LastAttempt.Event != "DONE" ||
				st.LastAttempt.Executed != 5 || st.LastAttempt.Failed != 0 || st.DeviceUUID != b.UUID() ||
				st.Cursor != finished || st.OutboxPending != 0 || st.IntervalSeconds != 3600 || st.Attempts != 1 {
				t.Errorf("status after the job: %+v (last %+v)", st, st.LastAttempt)
			}
			if got := ctl(t, b, "uuid"); got != b.UUID() {
				t.Errorf("uuid: got %q, want %q", got, b.UUID())
			}
			tok := ctl(t, b, "token")
			if _, err := attest.VerifyToken(tok, b.Modem().IdentityPublicKey()); err != nil {
				t.Errorf("token %q does not verify against the modem's identity: %v", tok, err)
			}
			if id, err := attest.DeviceUUID(tok); err != nil || id != b.UUID() {
				t.Errorf("token names device %q (%v), want %q", id, err, b.UUID())
			}
			if got := ctl(t, b, "interval"); got != "3600" {
				t.Errorf("interval: got %q, want 3600 (set by the job)", got)
			}
			if got := ctl(t, b, "interval", "120"); !strings.Contains(got, "120") {
				t.Errorf("interval 120: got %q", got)
			}
			if got := settings(t, ctx, b)[testbed.IntervalKey]; got != "120" {
				t.Errorf("settings after `interval 120`: interval-sec %q, want 120", got)
			}
			if st := status(t, b); st.IntervalSeconds != 120 {
				t.Errorf("status after `interval 120`: interval_seconds %d", st.IntervalSeconds)
			}

			// `now` runs an attempt at once: a new job is carried out.
			more := queue(t, b, testbed.AT("%CMNG=0,77,3,\"0123456789abcdef\""), testbed.Finished())
			if got := ctl(t, b, "now"); got == "" {
				t.Error("now: no output")
			}
			waitEvent(t, ctx, p, &at, "DONE")
			waitEvent(t, ctx, p, &at, "STOP")
			if n := count(b.ModemCommands(), more[len(more)-2].ATString()); n != 1 {
				t.Errorf("the job queued before `now` reached the modem %d times, want 1", n)
			}
			if st := status(t, b); st.Attempts != 2 || st.Cursor != more[len(more)-1].ID {
				t.Errorf("status after `now`: %+v", st)
			}

			if err := p.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code, err := p.Wait(ctx); err != nil || code != 0 {
				t.Fatalf("SIGTERM: exit %d, %v; want 0", code, err)
			}
			if got := b.Modem().FunctionalMode(); got != 1 {
				t.Errorf("modem mode %d after SIGTERM, want 1", got)
			}
			checkExecutedTimes(t, b, mustCommands(t, b), 1)
			checkSettings(t, settings(t, ctx, b), more[len(more)-1].ID, "120")
			waitCheckpointed(t, ctx, b) // on the way out
			// Stopped: the control commands say so with their own exit code.
			cmd := b.Command(ctx, provisiond, "status")
			if err := cmd.Run(); cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 3 {
				t.Errorf("status with the daemon stopped: %v, want exit 3", err)
			}
		})
	}
}

// ctl runs a control subcommand and returns its trimmed stdout.
func ctl(t *testing.T, b *testbed.Bed, args ...string) string {
	t.Helper()
	out, err := b.Output(testCtx(t), provisiond, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func status(t *testing.T, b *testbed.Bed) statusJSON {
	t.Helper()
	var st statusJSON
	raw := ctl(t, b, "status", "--json")
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		t.Fatalf("status --json: %v: %q", err, raw)
	}
	return st
}
