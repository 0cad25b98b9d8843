package testbed

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/atmodem"
	"github.com/provisiond/provisiond/internal/config"
	"github.com/provisiond/provisiond/internal/simcloud"
)

func TestStart(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{name: "http defaults", opts: Options{}},
		{name: "coap online modem", opts: Options{Transport: TransportCoAP, InitialMode: 1}},
		{name: "stable link unclaimed", opts: Options{StableLink: true, Unclaimed: true, InitialMode: 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			b, err := Start(ctx, tt.opts)
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			defer func() {
				if err := b.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
				if _, err := os.Stat(b.Dir()); !os.IsNotExist(err) {
					t.Errorf("Close left %s behind (stat: %v)", b.Dir(), err)
				}
			}()

			cfg, err := config.Load(b.ConfigPath(), true)
			if err != nil {
				t.Fatalf("the written config does not load: %v", err)
			}
			wantTransport := tt.opts.Transport
			if wantTransport == "" {
				wantTransport = TransportHTTP
			}
			if cfg.Provisioning.Transport != wantTransport || b.Transport() != wantTransport {
				t.Errorf("transport: config %q, bed %q, want %q", cfg.Provisioning.Transport, b.Transport(), wantTransport)
			}
			if cfg.Modem.Port != b.ModemPath() || cfg.Modem.FlowControl != "none" {
				t.Errorf("modem: got port %q flow %q, want %q none", cfg.Modem.Port, cfg.Modem.FlowControl, b.ModemPath())
			}
			if tt.opts.StableLink && filepath.Dir(cfg.Modem.Port) != b.Dir() {
				t.Errorf("stable link: got port %q, want a link in %s", cfg.Modem.Port, b.Dir())
			}
			if cfg.HTTP.CAFile != b.Cloud().CAFile() || cfg.CoAP.CAFile != b.Cloud().CAFile() {
				t.Errorf("ca_file: got %q / %q, want %q", cfg.HTTP.CAFile, cfg.CoAP.CAFile, b.Cloud().CAFile())
			}
			if cfg.Store.Path != b.StorePath() || cfg.Control.Socket != b.SocketPath() {
				t.Errorf("paths: got store %q socket %q", cfg.Store.Path, cfg.Control.Socket)
			}
			if cfg.Provisioning.HooksDir != "" || !cfg.Provisioning.AutoStart || cfg.Log.Format != "json" {
				t.Errorf("got hooks %q auto_start %v log %q, want none, true, json",
					cfg.Provisioning.HooksDir, cfg.Provisioning.AutoStart, cfg.Log.Format)
			}

			dev, err := b.Cloud().Device(b.UUID())
			if err != nil {
				t.Fatalf("device not registered: %v", err)
			}
			if dev.Claimed == tt.opts.Unclaimed {
				t.Errorf("claimed: got %v, want %v", dev.Claimed, !tt.opts.Unclaimed)
			}
			if got := b.Modem().FunctionalMode(); got != tt.opts.InitialMode {
				t.Errorf("initial mode: got %d, want %d", got, tt.opts.InitialMode)
			}
			if got := b.ModemCommands(); len(got) != 0 {
				t.Errorf("ModemCommands after Start: got %q, want none", got)
			}

			// The configured port is a serial device the real client can talk to.
			port, err := atmodem.OpenPort(cfg.Modem.Port, cfg.Modem.Baud, cfg.Modem.FlowControl)
			if err != nil {
				t.Fatalf("OpenPort: %v", err)
			}
			c := atmodem.New(port, atmodem.Config{})
			id, err := c.DeviceUUID(ctx)
			_ = c.Close()
			if err != nil || id != b.UUID() {
				t.Errorf("DeviceUUID over the pty: got %q, %v; want %q", id, err, b.UUID())
			}
			if got := b.ModemCommands(); len(got) == 0 || !strings.Contains(strings.Join(got, "\n"), "ATTESTTOKEN") {
				t.Errorf("ModemCommands: got %q, want the attestation token request", got)
			}
		})
	}
}

func TestStartRefusesBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{name: "transport", opts: Options{Transport: "mqtt"}},
		{name: "initial mode", opts: Options{InitialMode: 21}},
		{name: "config key without section", opts: Options{Settings: map[string]any{"transport": "http"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Start(context.Background(), tt.opts)
			if err == nil {
				_ = b.Close()
				t.Fatal("Start: got nil error")
			}
		})
	}
}

func TestWriteConfigAndQueue(t *testing.T) {
	ctx := context.Background()
	b, err := Start(ctx, Options{Settings: map[string]any{"provisioning.max_commands": 12}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.WriteConfig(map[string]any{"http.ca_file": "/nonexistent/ca.pem", "log.level": "debug"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(b.ConfigPath(), true)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.CAFile != "/nonexistent/ca.pem" || cfg.Log.Level != "debug" || cfg.Provisioning.MaxCommands != 12 {
		t.Errorf("got ca_file %q level %q max_commands %d", cfg.HTTP.CAFile, cfg.Log.Level, cfg.Provisioning.MaxCommands)
	}
	if err := b.WriteConfig(map[string]any{"http.ca_file": nil}); err != nil {
		t.Fatal(err)
	}
	if cfg, err = config.Load(b.ConfigPath(), true); err != nil || cfg.HTTP.CAFile != b.Cloud().CAFile() {
		t.Errorf("after removing the override: ca_file %q, %v", cfg.HTTP.CAFile, err)
	}

	jobs, err := b.QueueRealisticJob()
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, j := range jobs {
		types = append(types, j.Request.Type())
	}
	if got, want := strings.Join(types, ","), "clientCertificate,config,finished"; got != want {
		t.Errorf("jobs: got %s, want %s", got, want)
	}
	cmds, err := b.Cloud().Commands(b.UUID())
	if err != nil {
		t.Fatal(err)
	}
	if len(cmds) != 5 || cmds[2].SetCommand != "%KEYGEN" || cmds[3].Properties[0].Key != IntervalKey {
		t.Errorf("queued commands: got %+v", cmds)
	}
	for _, c := range cmds {
		if c.Status != simcloud.StatusPending {
			t.Errorf("command %s: got %s, want PENDING", c.ID, c.Status)
		}
	}
}

func TestParseLogLine(t *testing.T) {
	tests := []struct {
		name, line       string
		json             bool
		msg, event, want string
	}{
		{name: "event", line: `{"level":"info","ts":"x","caller":"c","msg":"provisioning event","event":"START","attempt":1}`,
			json: true, msg: "provisioning event", event: "START", want: "1"},
		{name: "other entry", line: `{"level":"warn","msg":"command failed","attempt":2}`, json: true, msg: "command failed", want: "2"},
		{name: "plain", line: "provisiond: FAILED: 1 command(s) failed"},
		{name: "broken json", line: `{"level":`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := ParseLogLine(tt.line)
			if e.JSON() != tt.json || e.Msg != tt.msg || e.Event() != tt.event || e.Str("attempt") != tt.want || e.Raw != tt.line {
				t.Errorf("got %+v", e)
			}
		})
	}
}

// TestStableLinkFollowsThePlug: the link goes away with the modem (as a by-id name does)
// and comes back, pointing at the new pty, on Replug.
func TestStableLinkFollowsThePlug(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Start(ctx, Options{StableLink: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	link := b.ModemPath()
	for i := range 3 {
		if err := b.PTY().Unplug(); err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := os.Lstat(link); os.IsNotExist(err) {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("round %d: link still there after Unplug", i)
			case <-time.After(time.Millisecond):
			}
		}
		if err := b.Replug(); err != nil {
			t.Fatal(err)
		}
		if target, err := os.Readlink(link); err != nil || target != b.PTY().SlavePath() {
			t.Fatalf("round %d: link -> %q (%v), want %s", i, target, err, b.PTY().SlavePath())
		}
	}
}

// TestProcess runs a stand-in for provisiond (a shell script) through Bed.Start: stderr lines
// are parsed and waited for in order, stdout is kept, the exit code comes back, and the
// environment is cleaned of PROVISIOND_* variables.
func TestProcess(t *testing.T) {
	t.Setenv("PROVISIOND_LOG_LEVEL", "debug")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	script := filepath.Join(t.TempDir(), "fake-provisiond")
	body := `#!/bin/sh
echo "args: $*"
echo "env: ${PROVISIOND_LOG_LEVEL:-unset}"
echo '{"level":"info","msg":"provisioning event","event":"START","attempt":1}' >&2
echo '{"level":"warn","msg":"command failed","cme_error":513}' >&2
echo '{"level":"info","msg":"provisioning event","event":"STOP","attempt":1}' >&2
echo 'provisiond: FAILED: 1 command(s) failed' >&2
exit 2
`
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	var seen []string
	p, err := b.Start(ctx, script, func(e LogEntry) { seen = append(seen, e.Msg) }, "run", "--once")
	if err != nil {
		t.Fatal(err)
	}
	e, next, err := p.WaitEvent(ctx, 0, "START")
	if err != nil || e.Str("attempt") != "1" || next != 1 {
		t.Fatalf("WaitEvent START: %+v, next %d, %v", e, next, err)
	}
	if _, _, err := p.WaitEvent(ctx, next, "START"); err == nil {
		t.Error("WaitEvent found START again after it")
	}
	code, err := p.Wait(ctx)
	if err != nil || code != 2 {
		t.Fatalf("Wait: exit %d, %v; want 2", code, err)
	}
	want := "args: run --once --config " + b.ConfigPath() + "\nenv: unset\n"
	if got := p.Stdout(); got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
	entries := p.Entries()
	if len(entries) != 4 || entries[1].Str("cme_error") != "513" || entries[3].JSON() || !strings.HasPrefix(p.Stderr(), "{") {
		t.Errorf("entries: %+v", entries)
	}
	if strings.Join(seen, ",") != "provisioning event,command failed,provisioning event," {
		t.Errorf("onLog saw %q", seen)
	}
	if _, _, err := p.WaitLog(ctx, 4, func(LogEntry) bool { return true }); !errors.Is(err, ErrExited) {
		t.Errorf("WaitLog past the end of an exited process: %v, want ErrExited", err)
	}
}
