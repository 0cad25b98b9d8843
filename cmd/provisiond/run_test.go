package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/provisiond/provisiond/internal/control"
	"github.com/provisiond/provisiond/internal/daemon"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/simmodem"
	"github.com/provisiond/provisiond/internal/store"
)

// syncBuffer is a log destination the daemon's goroutines and the test may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func wantExit(t *testing.T, err error, code int, msg string) {
	t.Helper()
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != code {
		t.Fatalf("got %v, want exit code %d", err, code)
	}
	if !strings.Contains(err.Error(), msg) {
		t.Errorf("got %q, want it to contain %q", err, msg)
	}
}

func TestRunConfigErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name     string
		yaml     string // "" = no file
		explicit bool
		want     string
	}{
		{name: "missing explicit file", explicit: true, want: "no such file"},
		{name: "unknown key", yaml: "modem:\n  port: /dev/ttyACM0\n  speed: 9600\n", want: "modem.speed"},
		{name: "out of range", yaml: "modem:\n  port: /dev/ttyACM0\n  baud: -1\n", want: "modem.baud"},
		{name: "no modem port", yaml: "log:\n  level: debug\n", want: "modem.port is not set"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("c%d.yaml", i))
			if tt.yaml != "" {
				writeFile(t, path, tt.yaml+fmt.Sprintf("store:\n  path: %s\n", filepath.Join(dir, "settings")))
			}
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), runOptions{configPath: path, explicit: true}, &stdout, &stderr)
			wantExit(t, err, exitConfig, tt.want)
		})
	}
}

func TestRunCorruptStore(t *testing.T) {
	dir := t.TempDir()
	settings := filepath.Join(dir, "settings")
	writeFile(t, settings, "provisiond-settings 1 3 0000\n{}\n")
	cfg := filepath.Join(dir, "provisiond.yaml")
	writeFile(t, cfg, fmt.Sprintf("modem:\n  port: %s\nstore:\n  path: %s\ncontrol:\n  socket: %s\nlog:\n  format: json\n",
		filepath.Join(dir, "ttyACM0"), settings, filepath.Join(dir, "ctl.sock")))

	for _, once := range []bool{false, true} {
		t.Run(fmt.Sprintf("once=%v", once), func(t *testing.T) {
			writeFile(t, settings, "provisiond-settings 1 3 0000\n{}\n")
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), runOptions{configPath: cfg, explicit: true, once: once}, &stdout, &stderr)
			wantExit(t, err, exitStoreCorrupt, "corrupt")
			if !strings.Contains(stderr.String(), `"level":"error"`) || !strings.Contains(stderr.String(), "moved_to") {
				t.Errorf("no error log naming where the file went: %s", stderr.String())
			}
			if _, err := os.Stat(settings); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("corrupt file still in place (%v); it should be kept aside", err)
			}
			aside, _ := filepath.Glob(settings + ".corrupt-*")
			if len(aside) == 0 {
				t.Error("no .corrupt-* copy kept")
			}
			for _, f := range aside {
				os.Remove(f)
			}
		})
	}
}

// bench is a simulated modem on a pty and a simulated service on loopback, with the device
// registered and claimed, and a config file pointing the daemon at both.
type bench struct {
	modem  *simmodem.PTY
	cloud  *simcloud.Server
	uuid   string
	config string
	store  string
	socket string
}

func newBench(t *testing.T, transport string) *bench {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dir := t.TempDir()
	// The daemon opens the modem through a link, as through /dev/serial/by-id on a gateway:
	// the link goes away with the modem, while the pty's /dev/pts number is handed to the next
	// pty any process opens.
	m, err := simmodem.New(simmodem.Config{Link: filepath.Join(dir, "ttyACM0")})
	if err != nil {
		t.Fatal(err)
	}
	pty, err := m.ServePTY(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pty.Close() })
	cloud, err := simcloud.New(simcloud.Config{StateDir: filepath.Join(dir, "cloud")})
	if err != nil {
		t.Fatal(err)
	}
	if err := cloud.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cloud.Close() })
	if err := cloud.RegisterDevicePEM(m.UUID(), m.PublicKeyPEM()); err != nil {
		t.Fatal(err)
	}
	tok, err := m.AttestationToken()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cloud.Claim(tok); err != nil {
		t.Fatal(err)
	}
	b := &bench{modem: pty, cloud: cloud, uuid: m.UUID(),
		config: filepath.Join(dir, "provisiond.yaml"), store: filepath.Join(dir, "state", "settings"),
		socket: filepath.Join(dir, "run", "ctl.sock")}
	b.writeConfig(t, transport, "debug")
	return b
}

func (b *bench) writeConfig(t *testing.T, transport, level string) {
	t.Helper()
	port := func(addr string) string { return addr[strings.LastIndex(addr, ":")+1:] }
	writeFile(t, b.config, fmt.Sprintf(`modem:
  port: %s
  flow_control: none
provisioning:
  transport: %s
  interval: 24h
http:
  hostname: 127.0.0.1
  port: %s
  ca_file: %s
coap:
  hostname: 127.0.0.1
  port: %s
  ca_file: %s
store:
  path: %s
control:
  socket: %s
log:
  level: %s
  format: json
`, b.modem.Path(), transport, port(b.cloud.HTTPAddr()), b.cloud.CAFile(), port(b.cloud.CoAPAddr()), b.cloud.CAFile(), b.store, b.socket, level))
}

func (b *bench) enqueue(t *testing.T, reqs ...simcloud.Request) {
	t.Helper()
	if _, err := b.cloud.Enqueue(b.uuid, reqs...); err != nil {
		t.Fatal(err)
	}
}

func TestRunOnce(t *testing.T) {
	for _, transport := range []string{"http", "coap"} {
		t.Run(transport, func(t *testing.T) {
			b := newBench(t, transport)
			opts := runOptions{configPath: b.config, explicit: true, once: true}
			b.enqueue(t,
				simcloud.Request{ATRequest: &simcloud.ATRequest{Command: "+CGSN", Parameters: "1"}},
				simcloud.Request{Finished: &simcloud.FinishedRequest{}})

			var stdout, stderr syncBuffer
			if err := run(context.Background(), opts, &stdout, &stderr); err != nil {
				t.Fatalf("first --once: %v\n%s", err, stderr.String())
			}
			if got := stdout.String(); got != "DONE: 1 command(s) executed\n" { // FINISHED is not counted
				t.Errorf("first --once printed %q", got)
			}
			if strings.Contains(stderr.String(), `"level":"error"`) {
				t.Errorf("errors logged:\n%s", stderr.String())
			}

			var again syncBuffer
			if err := run(context.Background(), opts, &again, &stderr); err != nil {
				t.Fatalf("second --once: %v", err)
			}
			if got := again.String(); got != "NO_COMMANDS: 0 command(s) executed\n" {
				t.Errorf("second --once printed %q", got)
			}

			// A command failing with a CME error not in its ignore list: exit 2 naming the event.
			b.enqueue(t, simcloud.Request{ATRequest: &simcloud.ATRequest{Command: "%CMNG", Parameters: "3,42,0"}})
			err := run(context.Background(), opts, &again, &stderr)
			wantExit(t, err, exitOnceFailed, "NO_COMMANDS: 1 command(s) failed")

			settings, err := store.Load(b.store, store.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if settings["provisioning/after-correlation-id"] == "" {
				t.Errorf("no cursor persisted: %q", settings)
			}
		})
	}
}

func TestRunOnceWithoutModem(t *testing.T) {
	b := newBench(t, "http")
	if err := b.modem.Close(); err != nil { // unplugged for good: its link is gone
		t.Fatal(err)
	}
	var stdout, stderr syncBuffer
	err := run(context.Background(), runOptions{configPath: b.config, explicit: true, once: true}, &stdout, &stderr)
	wantExit(t, err, exitOnceFailed, string(daemon.EventFailed)+": ")
}

// waitFor polls cond: the daemon works in the background and offers no event to wait on.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if t.Context().Err() != nil {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRunDaemon(t *testing.T) {
	b := newBench(t, "http")
	b.enqueue(t,
		simcloud.Request{ATRequest: &simcloud.ATRequest{Command: "+CGSN", Parameters: "1"}},
		simcloud.Request{Finished: &simcloud.FinishedRequest{}})
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reloaded := make(chan error)
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, runOptions{configPath: b.config, explicit: true, reloaded: reloaded}, &stdout, &stderr)
	}()

	c := control.Dial(b.socket)
	status := func() daemon.Status {
		t.Helper()
		st, err := c.Status(ctx)
		if errors.Is(err, control.ErrNotRunning) {
			return daemon.Status{}
		}
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	waitFor(t, "the first attempt", func() bool { return status().Attempts >= 1 && status().State == daemon.StateIdle })
	if st := status(); st.LastAttempt == nil || st.LastAttempt.Event != daemon.EventDone || st.DeviceUUID != b.uuid {
		t.Fatalf("after the first attempt: %+v", st)
	}
	if id, err := c.UUID(ctx); err != nil || id != b.uuid {
		t.Errorf("uuid over the socket: %q %v, want %q", id, err, b.uuid)
	}
	tok, err := c.Token(ctx)
	if err != nil || !strings.Contains(tok, ".") {
		t.Errorf("token over the socket: %q %v", tok, err)
	}
	if strings.Contains(stderr.String(), tok) {
		t.Error("the attestation token appears in the log")
	}

	// --once next to a running daemon would fight over the modem and the settings file.
	err = run(ctx, runOptions{configPath: b.config, explicit: true, once: true}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "a provisiond daemon is running") {
		t.Errorf("run --once beside the daemon: got %v, want a refusal", err)
	}

	// Interval: set over the socket, persisted in the store under the protocol's key.
	if err := c.SetInterval(ctx, 3600); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Interval(ctx); err != nil || n != 3600 {
		t.Errorf("interval = %d %v, want 3600", n, err)
	}

	// SIGUSR1 means "provision now".
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the SIGUSR1 attempt", func() bool { st := status(); return st.Attempts >= 2 && st.State == daemon.StateIdle })
	if st := status(); st.LastAttempt.Event != daemon.EventNoCommands {
		t.Errorf("second attempt: %+v", st.LastAttempt)
	}

	// SIGHUP with a broken config: refused, logged, the daemon keeps going.
	good, err := os.ReadFile(b.config)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, b.config, string(good)+"bogus: 1\n")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := <-reloaded; err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("reload of a broken config: got %v, want the unknown key named", err)
	}
	if !strings.Contains(stderr.String(), "config reload refused") {
		t.Error("refused reload not logged")
	}
	// SIGHUP with a valid one: level change applies (debug -> warn drops info entries).
	b.writeConfig(t, "coap", "warn")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := <-reloaded; err != nil {
		t.Fatalf("reload of a valid config: %v", err)
	}
	before := len(stderr.String())
	if err := c.Now(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the attempt over CoAP", func() bool { st := status(); return st.Attempts >= 3 && st.State == daemon.StateIdle })
	if st := status(); st.LastAttempt.Event != daemon.EventNoCommands {
		t.Errorf("attempt after switching to CoAP: %+v", st.LastAttempt)
	}
	if tail := stderr.String()[before:]; strings.Contains(tail, `"level":"info"`) || strings.Contains(tail, `"level":"debug"`) {
		t.Errorf("info entries after switching to warn:\n%s", tail)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run after cancel: %v", err)
	}
	if _, err := os.Lstat(b.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left behind: %v", err)
	}
	settings, err := store.Load(b.store, store.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if settings["provisioning/interval-sec"] != "3600" {
		t.Errorf("interval not persisted: %v", settings)
	}
}

func TestHelp(t *testing.T) {
	tests := []struct {
		name  string
		cmd   func() *cobra.Command
		flags []string
	}{
		{name: "run", cmd: newRunCmd, flags: []string{"--config", "--once", "Exit codes"}},
		{name: "now", cmd: newNowCmd, flags: []string{"--config", "--socket"}},
		{name: "status", cmd: newStatusCmd, flags: []string{"--config", "--socket", "--json"}},
		{name: "token", cmd: newTokenCmd, flags: []string{"--config", "--socket"}},
		{name: "uuid", cmd: newUUIDCmd, flags: []string{"--config", "--socket"}},
		{name: "interval", cmd: newIntervalCmd, flags: []string{"--config", "--socket", "interval [SECONDS]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := execCmd(t, tt.cmd(), "--help")
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range tt.flags {
				if !strings.Contains(out, f) {
					t.Errorf("help lacks %q:\n%s", f, out)
				}
			}
		})
	}
}
