package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/provisiond/provisiond/internal/control"
	"github.com/provisiond/provisiond/internal/daemon"
	"github.com/provisiond/provisiond/internal/status"
)

// ctlBackend is a stand-in daemon behind a real control socket.
type ctlBackend struct {
	mu       sync.Mutex
	nows     int
	interval int
	status   status.Daemon
}

func (b *ctlBackend) Status() status.Daemon { return b.status }
func (b *ctlBackend) TriggerNow() {
	b.mu.Lock()
	b.nows++
	b.mu.Unlock()
}

func (b *ctlBackend) Interval() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.interval
}

func (b *ctlBackend) SetInterval(_ context.Context, n int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n == 0 {
		n = 86400 // "back to the configured interval"
	}
	b.interval = n
	return nil
}

func (b *ctlBackend) AttestationToken(context.Context) (string, error) {
	return "2dn3hQFQUDYxVDkxRPCAIhIbZAFifUERWA.0oRDoQEmoQRBIfZYQGuXwJliinHc6xDPruiyjsaXyXZbZVpUuOhHG4YpZG", nil
}

func (b *ctlBackend) DeviceUUID(context.Context) (string, error) {
	return "50363154-3931-44f0-8022-121b6401627d", nil
}

var fixedNow = time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC)

func fixtureStatus() status.Daemon {
	next := fixedNow.Add(23*time.Hour + 48*time.Minute)
	return status.Daemon{
		State: status.StateIdle,
		LastAttempt: &status.Attempt{
			Number: 3, Started: fixedNow.Add(-12*time.Minute - 4*time.Second), Finished: fixedNow.Add(-12 * time.Minute),
			Event: daemon.EventDone, Executed: 4,
		},
		NextAttempt:     &next,
		DeviceUUID:      "50363154-3931-44f0-8022-121b6401627d",
		ModemVersion:    "mfw_nrf9161_2.0.2",
		Cursor:          "a1b2c3",
		IntervalSeconds: 86400,
		Attempts:        3,
		Events: []status.Event{
			{Time: fixedNow.Add(-12*time.Minute - 4*time.Second), Event: daemon.EventStart, Attempt: 3},
			{Time: fixedNow.Add(-12 * time.Minute), Event: daemon.EventDone, Attempt: 3},
		},
	}
}

// serveCtl runs a control server for b on a socket in a temp folder.
func serveCtl(t *testing.T, b control.Backend) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "provisiond.sock")
	ln, err := control.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- control.NewServer(b, nil, control.Limits{}).ServeListener(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return path
}

// execCmd runs one subcommand as the CLI would and returns its stdout.
func execCmd(t *testing.T, cmd *cobra.Command, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestCtlCommands(t *testing.T) {
	b := &ctlBackend{interval: 86400, status: fixtureStatus()}
	sock := serveCtl(t, b)
	statusJSON, err := json.Marshal(b.status)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cmd     func() *cobra.Command
		args    []string
		want    string
		wantErr string
	}{
		{name: "now", cmd: newNowCmd, want: "provisioning requested\n"},
		{name: "token", cmd: newTokenCmd, want: "2dn3hQFQUDYxVDkxRPCAIhIbZAFifUERWA.0oRDoQEmoQRBIfZYQGuXwJliinHc6xDPruiyjsaXyXZbZVpUuOhHG4YpZG\n"},
		{name: "uuid", cmd: newUUIDCmd, want: "50363154-3931-44f0-8022-121b6401627d\n"},
		{name: "interval shown", cmd: newIntervalCmd, want: "86400\n"},
		{name: "interval set", cmd: newIntervalCmd, args: []string{"3600"}, want: "interval set to 3600 s (1h0m0s)\n"},
		{name: "interval after set", cmd: newIntervalCmd, want: "3600\n"},
		{name: "interval reset", cmd: newIntervalCmd, args: []string{"0"}, want: "interval back to the configured 86400 s (24h0m0s)\n"},
		{name: "interval negative", cmd: newIntervalCmd, args: []string{"--", "-5"}, wantErr: `0 (the configured interval) or 1..31536000 seconds (365 days), got -5`},
		{name: "interval beyond the config's range", cmd: newIntervalCmd, args: []string{"99999999999"}, wantErr: `0 (the configured interval) or 1..31536000 seconds (365 days), got 99999999999`},
		{name: "interval not a number", cmd: newIntervalCmd, args: []string{"1h"}, wantErr: `"1h" is not a whole number of seconds`},
		{name: "interval two args", cmd: newIntervalCmd, args: []string{"1", "2"}, wantErr: "accepts at most 1 arg(s)"},
		{name: "status json", cmd: newStatusCmd, args: []string{"--json"}, want: string(statusJSON) + "\n"},
		{name: "status", cmd: newStatusCmd, want: "state:          idle\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := execCmd(t, tt.cmd(), append([]string{"--socket", sock}, tt.args...)...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	if b.nows != 1 {
		t.Errorf("daemon saw %d now requests, want 1", b.nows)
	}
}

func TestCtlNotRunning(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "provisiond.sock")
	for name, cmd := range map[string]func() *cobra.Command{
		"now": newNowCmd, "status": newStatusCmd, "token": newTokenCmd, "uuid": newUUIDCmd, "interval": newIntervalCmd,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := execCmd(t, cmd(), "--socket", sock)
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != exitNotRunning {
				t.Fatalf("got %v, want exit code %d", err, exitNotRunning)
			}
			want := "cannot reach provisiond at " + sock + ": is it running?"
			if err.Error() != want {
				t.Errorf("got %q, want %q", err, want)
			}
		})
	}
}

// Without --socket the control subcommands take control.socket from the config file.
func TestCtlSocketFromConfig(t *testing.T) {
	sock := serveCtl(t, &ctlBackend{interval: 42})
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, good, fmt.Sprintf("control:\n  socket: %s\n", sock))
	// A mistake elsewhere in the file must not keep the verbs from the daemon: they warn
	// and use the socket the file names.
	writeFile(t, bad, fmt.Sprintf("modem:\n  baud: fast\ncontrol:\n  socket: %s\n", sock))

	if got, err := execCmd(t, newIntervalCmd(), "--config", good); err != nil || got != "42\n" {
		t.Errorf("with --config: got %q, %v; want 42", got, err)
	}
	for _, mk := range []func() *cobra.Command{newIntervalCmd, newStatusCmd, newUUIDCmd} {
		out, errOut, err := execCmdStderr(t, mk(), "--config", bad)
		if err != nil || out == "" {
			t.Errorf("%s with an unrelated bad key: %q, %v; want an answer", mk().Name(), out, err)
		}
		if !strings.Contains(errOut, "modem.baud") || !strings.Contains(errOut, "using control.socket "+sock) {
			t.Errorf("%s with an unrelated bad key: stderr %q, want a warning naming the key and the socket used", mk().Name(), errOut)
		}
	}
	t.Setenv("PROVISIOND_CONTROL_SOCKET", sock)
	writeFile(t, bad, "modem:\n  baud: fast\n")
	if got, _, err := execCmdStderr(t, newIntervalCmd(), "--config", bad); err != nil || got != "42\n" {
		t.Errorf("socket from the environment with a bad file: %q, %v", got, err)
	}
	if _, err := execCmd(t, newIntervalCmd(), "--config", filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("a missing --config file was accepted")
	}
}

// --instance talks to the template unit's instance socket.
func TestCtlInstance(t *testing.T) {
	name := fmt.Sprintf("test-%d-none", os.Getpid())
	for _, arg := range []string{name, "provisiond@" + name + ".service"} {
		_, err := execCmd(t, newStatusCmd(), "--instance", arg)
		want := "cannot reach provisiond at /run/provisiond/" + name + "/provisiond.sock"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--instance %s: %v, want %q", arg, err, want)
		}
	}
	for _, bad := range []string{"", "..", "a/b"} {
		if _, err := execCmd(t, newNowCmd(), "--instance", bad); err == nil || !strings.Contains(err.Error(), "not an instance name") {
			t.Errorf("--instance %q: %v, want refused", bad, err)
		}
	}
	if _, err := execCmd(t, newNowCmd(), "--instance", "x", "--socket", "/tmp/s"); err == nil {
		t.Error("--instance with --socket accepted")
	}
	if got := instanceOfSocket(instanceSocket("ttyACM0")); got != "ttyACM0" {
		t.Errorf("instance of its socket: %q", got)
	}
	if got := instanceOfSocket("/run/provisiond/provisiond.sock"); got != "" {
		t.Errorf("instance of the plain unit's socket: %q, want none", got)
	}
}

// execCmdStderr is execCmd that also returns stderr.
func execCmdStderr(t *testing.T, cmd *cobra.Command, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func TestPrintStatus(t *testing.T) {
	failed := fixtureStatus()
	failed.State = status.StateBackoff
	failed.LastAttempt.Event = daemon.EventFailed
	failed.LastAttempt.Reason = "service busy"
	failed.LastAttempt.Failed = 1
	failed.BackoffSeconds = 120
	failed.OutboxPending = 2
	failed.Events = append(failed.Events, status.Event{Time: fixedNow.Add(-time.Minute), Event: daemon.EventFailed, Reason: "service busy"})

	busy := fixtureStatus()
	busy.Instance, busy.Port, busy.State = "ttyACM0", "/dev/ttyACM0", status.StateProvisioning
	busy.Progress = &status.Progress{Attempt: 4, Started: fixedNow.Add(-30 * time.Second), Step: "executing commands",
		Batch: 2, Command: 3, Commands: 5, CorrelationID: "c3"}
	busy.LastAttempt.Event, busy.LastAttempt.Failed = daemon.EventNoCommands, 1
	busy.LastAttempt.FailedCommand = &status.FailedCommand{CorrelationID: "b7", Command: "AT%KEYGEN", Error: "+CME ERROR: 514"}
	busy.Events = nil
	traffic := fixtureStatus()
	traffic.LastAttempt.Handshakes, traffic.LastAttempt.ResumedHandshakes, traffic.LastAttempt.Requests = 1, 1, 4
	traffic.LastAttempt.BytesSent, traffic.LastAttempt.BytesReceived = 4963, 2893
	traffic.HandshakesTotal, traffic.RequestsTotal, traffic.BytesSentTotal, traffic.BytesReceivedTotal = 3, 10, 14000, 9000
	traffic.Events = nil
	waiting := status.Daemon{Port: "/dev/ttyACM0", State: status.StateWaitingForModem, WaitingFor: "the modem on /dev/ttyACM0", IntervalSeconds: 60}

	tests := []struct {
		name string
		st   status.Daemon
		want string
	}{
		{name: "attempt running after a failed command", st: busy, want: `instance:       ttyACM0
port:           /dev/ttyACM0
state:          provisioning
attempt:        #4 batch 2, command 3 of 5 (c3), started 2026-11-25 17:59:30 UTC (30s ago)
last attempt:   #3 NO_COMMANDS: 4 executed, 1 failed, 2026-11-25 17:48:00 UTC (12m0s ago)
  failed:       AT%KEYGEN (b7): +CME ERROR: 514
next attempt:   2026-11-26 17:48:00 UTC (in 23h48m0s)
interval:       86400 s (24h0m0s)
device uuid:    50363154-3931-44f0-8022-121b6401627d
modem version:  mfw_nrf9161_2.0.2
cursor:         a1b2c3
outbox pending: 0 response(s)
attempts:       3
`},
		{name: "with what the attempts cost on the wire", st: traffic, want: `state:          idle
last attempt:   #3 DONE: 4 executed, 0 failed, 2026-11-25 17:48:00 UTC (12m0s ago)
  network:      1 handshake (1 resumed), 4 requests, 4963 B sent, 2893 B received
next attempt:   2026-11-26 17:48:00 UTC (in 23h48m0s)
interval:       86400 s (24h0m0s)
device uuid:    50363154-3931-44f0-8022-121b6401627d
modem version:  mfw_nrf9161_2.0.2
cursor:         a1b2c3
outbox pending: 0 response(s)
attempts:       3
network:        3 handshakes, 10 requests, 14000 B sent, 9000 B received since start
`},
		{name: "waiting for the modem", st: waiting, want: `port:           /dev/ttyACM0
state:          waiting_for_modem
  waiting for:  the modem on /dev/ttyACM0
last attempt:   none yet
next attempt:   -
interval:       60 s (1m0s)
device uuid:    -
modem version:  -
cursor:         -
outbox pending: 0 response(s)
attempts:       0
`},
		{name: "fresh daemon", st: status.Daemon{State: status.StateWaitingForModem, IntervalSeconds: 86400}, want: `state:          waiting_for_modem
last attempt:   none yet
next attempt:   -
interval:       86400 s (24h0m0s)
device uuid:    -
modem version:  -
cursor:         -
outbox pending: 0 response(s)
attempts:       0
`},
		{name: "after a success", st: fixtureStatus(), want: `state:          idle
last attempt:   #3 DONE: 4 executed, 0 failed, 2026-11-25 17:48:00 UTC (12m0s ago)
next attempt:   2026-11-26 17:48:00 UTC (in 23h48m0s)
interval:       86400 s (24h0m0s)
device uuid:    50363154-3931-44f0-8022-121b6401627d
modem version:  mfw_nrf9161_2.0.2
cursor:         a1b2c3
outbox pending: 0 response(s)
attempts:       3
recent events:
  2026-11-25 17:47:56  START
  2026-11-25 17:48:00  DONE
`},
		{name: "backing off with results pending", st: failed, want: `state:          backoff
last attempt:   #3 FAILED: 4 executed, 1 failed, 2026-11-25 17:48:00 UTC (12m0s ago)
  reason:       service busy
next attempt:   2026-11-26 17:48:00 UTC (in 23h48m0s)
backoff:        2m0s
interval:       86400 s (24h0m0s)
device uuid:    50363154-3931-44f0-8022-121b6401627d
modem version:  mfw_nrf9161_2.0.2
cursor:         a1b2c3
outbox pending: 2 response(s)
attempts:       3
recent events:
  2026-11-25 17:47:56  START
  2026-11-25 17:48:00  DONE
  2026-11-25 17:59:00  FAILED: service busy
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := printStatus(&b, tt.st, fixedNow); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Errorf("got\n%s\nwant\n%s", b.String(), tt.want)
			}
		})
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
