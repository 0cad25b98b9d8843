package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/provisiond/provisiond/internal/config"
	"github.com/provisiond/provisiond/internal/store"
)

// runStoreConfigCmd executes a subcommand on its own, as the root would, and returns its outputs.
func runStoreConfigCmd(t *testing.T, cmd *cobra.Command, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

// writeStoreTestConfig writes a config whose store.path is in a fresh folder and returns both paths.
func writeStoreTestConfig(t *testing.T, extra string) (cfgPath, storePath string) {
	t.Helper()
	dir := t.TempDir()
	storePath = filepath.Join(dir, "state", "settings")
	cfgPath = filepath.Join(dir, "provisiond.yaml")
	if err := os.WriteFile(cfgPath, []byte("store:\n  path: "+storePath+"\n"+extra), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfgPath, storePath
}

func fillTestStore(t *testing.T, path string, kv map[string]string) {
	t.Helper()
	f, err := store.Open(path, store.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range kv {
		if err := f.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	// As the daemon leaves it after an attempt: the settings file current beside its slot file.
	if err := f.Checkpoint(); err != nil {
		t.Fatal(err)
	}
}

func TestSettings(t *testing.T) {
	content := map[string]string{
		"provisioning/interval-sec":         "3600",
		"provisioning/after-correlation-id": "1700000000123-4",
		"provisiond/outbox":                 "line1\nline2",
		"server/quoted":                     `"starts with a quote`,
		"server/empty":                      "",
		"server/html":                       "<a&b>",
	}
	tests := []struct {
		name    string
		content map[string]string
		args    []string
		want    string
	}{
		{name: "plain", content: content, want: strings.Join([]string{
			`provisiond/outbox="line1\nline2"`,
			"provisioning/after-correlation-id=1700000000123-4",
			"provisioning/interval-sec=3600",
			"server/empty=",
			"server/html=<a&b>",
			`server/quoted="\"starts with a quote"`,
			""}, "\n")},
		{name: "json", content: content, args: []string{"--json"},
			want: `{"provisiond/outbox":"line1\nline2","provisioning/after-correlation-id":"1700000000123-4","provisioning/interval-sec":"3600","server/empty":"","server/html":"<a&b>","server/quoted":"\"starts with a quote"}` + "\n"},
		{name: "plain missing store", want: ""},
		{name: "json missing store", args: []string{"--json"}, want: "{}\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, storePath := writeStoreTestConfig(t, "")
			if tc.content != nil {
				fillTestStore(t, storePath, tc.content)
			}
			out, _, err := runStoreConfigCmd(t, newSettingsCmd(), append(tc.args, "--config", cfg)...)
			if err != nil {
				t.Fatal(err)
			}
			if out != tc.want {
				t.Fatalf("got\n%s\nwant\n%s", out, tc.want)
			}
			if tc.name == "json" {
				var got map[string]string
				if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != len(content) || got["provisiond/outbox"] != content["provisiond/outbox"] {
					t.Fatalf("JSON does not decode to the store: %v %q", err, got)
				}
			}
		})
	}
}

func TestSettingsCorruptStoreLeftInPlace(t *testing.T) {
	cfg, storePath := writeStoreTestConfig(t, "")
	fillTestStore(t, storePath, map[string]string{"a": "1"})
	data, _ := os.ReadFile(storePath)
	data[len(data)-3] ^= 0x20
	if err := os.WriteFile(storePath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{nil, {"--json"}} {
		out, _, err := runStoreConfigCmd(t, newSettingsCmd(), append(args, "--config", cfg)...)
		if !errors.Is(err, store.ErrCorrupt) || out != "" {
			t.Fatalf("got %q, %v; want ErrCorrupt and no output", out, err)
		}
		if msg := err.Error(); !strings.Contains(msg, storePath) || !strings.Contains(msg, "checksum mismatch") || !strings.Contains(msg, "left in place") {
			t.Fatalf("message %q", msg)
		}
	}
	if got, _ := os.ReadFile(storePath); !bytes.Equal(got, data) {
		t.Fatal("settings changed the corrupt file")
	}
	if entries, _ := os.ReadDir(filepath.Dir(storePath)); len(entries) != 2 { // settings, settings.slots
		t.Fatalf("settings left %d files in the store folder", len(entries))
	}
}

func TestSettingsConfigErrors(t *testing.T) {
	t.Run("unrelated key invalid", func(t *testing.T) {
		// The store is still found: a mistake elsewhere is for `config check` to report.
		cfg, storePath := writeStoreTestConfig(t, "modem:\n  baud: fast\n")
		fillTestStore(t, storePath, map[string]string{"k": "v"})
		out, errOut, err := runStoreConfigCmd(t, newSettingsCmd(), "--config", cfg)
		if err != nil || out != "k=v\n" {
			t.Fatalf("got %q, %v", out, err)
		}
		if !strings.Contains(errOut, "modem.baud") || !strings.Contains(errOut, "using store.path "+storePath) {
			t.Errorf("stderr %q, want a warning naming the bad key and the store used", errOut)
		}
	})
	t.Run("store path itself invalid", func(t *testing.T) {
		cfg, _ := writeStoreTestConfig(t, "")
		if err := os.WriteFile(cfg, []byte("store:\n  path: 42\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, _, err := runStoreConfigCmd(t, newSettingsCmd(), "--config", cfg)
		if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "store.path") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("instance", func(t *testing.T) {
		// An instance that never ran has no settings yet: nothing to print, no error.
		name := fmt.Sprintf("test-%d-none", os.Getpid())
		if out, _, err := runStoreConfigCmd(t, newSettingsCmd(), "--instance", name); err != nil || out != "" {
			t.Errorf("--instance %s: %q, %v", name, out, err)
		}
		if _, _, err := runStoreConfigCmd(t, newSettingsCmd(), "--instance", "../x"); err == nil || !strings.Contains(err.Error(), "not an instance name") {
			t.Errorf("--instance ../x: %v, want refused", err)
		}
		if _, _, err := runStoreConfigCmd(t, newSettingsCmd(), "--instance", name, "--config", "/x.yaml"); err == nil {
			t.Error("--instance with --config accepted")
		}
	})
	t.Run("explicit config missing", func(t *testing.T) {
		_, _, err := runStoreConfigCmd(t, newSettingsCmd(), "--config", filepath.Join(t.TempDir(), "nope.yaml"))
		if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("store path from the environment", func(t *testing.T) {
		storePath := filepath.Join(t.TempDir(), "settings")
		fillTestStore(t, storePath, map[string]string{"k": "v"})
		t.Setenv("PROVISIOND_STORE_PATH", storePath)
		cfg := filepath.Join(t.TempDir(), "empty.yaml")
		if err := os.WriteFile(cfg, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		out, _, err := runStoreConfigCmd(t, newSettingsCmd(), "--config", cfg)
		if err != nil || out != "k=v\n" {
			t.Fatalf("got %q, %v", out, err)
		}
	})
	t.Run("extra argument", func(t *testing.T) {
		if _, _, err := runStoreConfigCmd(t, newSettingsCmd(), "extra"); err == nil {
			t.Fatal("accepted an argument")
		}
	})
}
