package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/provisiond/provisiond/internal/config"
	"github.com/provisiond/provisiond/internal/daemon"
	"github.com/provisiond/provisiond/internal/store"
)

// newEngine builds a daemon from cfg the way run does, with deps that do nothing.
func newEngine(t *testing.T, cfg *config.Config) (*daemon.Daemon, error) {
	t.Helper()
	return daemon.New(daemonConfig(cfg), daemon.Deps{
		OpenModem: func(context.Context) (daemon.Modem, error) { return nil, errors.New("no modem") },
		Dial:      func(context.Context) (daemon.Session, error) { return nil, errors.New("no service") },
		Store:     store.NewMemory(store.Limits{}),
	})
}

// zeroValue is the YAML of k's zero value when k allows it: 0, 0s, false or "".
func zeroValue(k config.KeyInfo) (string, bool) {
	switch k.Type {
	case config.TypeBool:
		return "false", true
	case config.TypeInt:
		return "0", strings.HasPrefix(k.Allowed, "0..")
	case config.TypeDuration:
		return "0s", strings.HasPrefix(k.Allowed, "0s..")
	case config.TypeString:
		return `""`, strings.Contains(k.Allowed, "or empty")
	}
	return "", false
}

// The config package owns the defaults: every default, and every zero a key allows, reaches
// the engine unchanged (jwt_valid_time 0 leaves expiry out, root CA tag 0 is a tag).
func TestConfigReachesTheEngineUnchanged(t *testing.T) {
	check := func(t *testing.T, cfg *config.Config) daemon.Config {
		t.Helper()
		d, err := newEngine(t, cfg)
		if err != nil {
			t.Fatalf("daemon.New refuses what the config accepts: %v", err)
		}
		got, want := d.Config(), daemonConfig(cfg)
		// No config key sets these: the engine picks the transport's root and its hook timeout.
		got.RootCAPEM, got.HookTimeout = "", want.HookTimeout
		if got != want {
			t.Errorf("the engine changed the config:\n got %+v\nwant %+v", got, want)
		}
		return got
	}
	t.Run("defaults", func(t *testing.T) { check(t, config.Default()) })
	zeros := 0
	for _, k := range config.Keys() {
		val, ok := zeroValue(k)
		if !ok {
			continue
		}
		zeros++
		t.Run(k.Key+"="+val, func(t *testing.T) {
			section, key, _ := strings.Cut(k.Key, ".")
			path := filepath.Join(t.TempDir(), "provisiond.yaml")
			if err := os.WriteFile(path, []byte(section+":\n  "+key+": "+val+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(path, true)
			if err != nil {
				t.Fatalf("config refuses its own allowed zero: %v", err)
			}
			got := check(t, cfg)
			switch k.Key {
			case "modem.jwt_valid_time":
				if got.JWTValidTime != 0 {
					t.Errorf("JWT validity %s, want 0 (expiry left out)", got.JWTValidTime)
				}
			case "modem.root_ca_sec_tag":
				if got.RootCASecTag != 0 {
					t.Errorf("root CA tag %d, want 0", got.RootCASecTag)
				}
			}
		})
	}
	if zeros < 10 {
		t.Fatalf("only %d keys allow a zero; the table's Allowed texts changed form", zeros)
	}
}

// modem.trace_at is documented to log at debug level.
func TestTraceLogsAtDebug(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	traceLogger(zap.New(core))("tx", "AT+CFUN?")
	all := logs.All()
	if len(all) != 1 || all[0].Level != zapcore.DebugLevel || all[0].LoggerName != "at" ||
		all[0].ContextMap()["line"] != "AT+CFUN?" || all[0].ContextMap()["dir"] != "tx" {
		t.Fatalf("trace logged %+v, want one debug entry of logger at", all)
	}
}
