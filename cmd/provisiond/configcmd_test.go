package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/provisiond/provisiond/internal/config"
	"github.com/provisiond/provisiond/internal/rootca"
)

func TestConfigCheck(t *testing.T) {
	example, err := filepath.Abs("../../configs/provisiond.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", "modem:\n  port: /dev/ttyACM0\n")
	bad := write("bad.yaml", "modem:\n  baud: fast\n  prot: /dev/x\nprovisioning:\n  max_commands: 50\n")
	missing := filepath.Join(dir, "missing.yaml")
	hooks := filepath.Join(dir, "hooks.d")
	if err := os.Mkdir(hooks, 0o755); err != nil {
		t.Fatal(err)
	}
	goodCA := write("ca.pem", rootca.AmazonRootCA1)
	notCA := write("not-ca.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
	notExec := write("done.sh", "#!/bin/sh\n")
	targets := write("targets.yaml", "modem:\n  port: /dev/ttyACM0\nhttp:\n  ca_file: "+filepath.Join(dir, "nope.pem")+
		"\ncoap:\n  ca_file: "+notCA+"\nprovisioning:\n  hooks_dir: "+goodCA+"\n  on_finished: exec\n  on_finished_exec: "+notExec+" --flag\n")
	fine := write("fine.yaml", "modem:\n  port: /dev/ttyACM0\nhttp:\n  ca_file: "+goodCA+"\nprovisioning:\n  hooks_dir: "+filepath.Join(dir, "no-hooks")+"\n")
	hooksEnv := map[string]string{"PROVISIOND_PROVISIONING_HOOKS_DIR": hooks}
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		wantOut    string   // exact stdout
		wantErrOut []string // lines of stderr, in order
		wantErr    string   // substring of the returned error; "" for success
	}{
		{name: "example config", args: []string{"--config", example}, env: hooksEnv,
			wantOut: "ok: " + example + "\nnote: modem.port is empty; `provisiond run` needs it (or PROVISIOND_MODEM_PORT)\n"},
		{name: "good", args: []string{"--config", good}, env: hooksEnv, wantOut: "ok: " + good + "\n"},
		{name: "what the keys point at", args: []string{"--config", targets},
			wantErrOut: []string{
				targets + ": http.ca_file: open " + filepath.Join(dir, "nope.pem") + ": no such file or directory",
				targets + ": coap.ca_file: " + notCA + " holds no PEM certificate",
				targets + ": provisioning.hooks_dir: " + goodCA + " is not a folder",
				targets + ": provisioning.on_finished_exec: " + notExec + " is not an executable file",
			},
			wantErr: "4 problem(s)"},
		{name: "a CA file and no hooks folder", args: []string{"--config", fine},
			wantOut: "ok: " + fine + "\nnote: provisioning.hooks_dir: " + filepath.Join(dir, "no-hooks") + " does not exist, so no hooks run\n"},
		{name: "env makes it bad", args: []string{"--config", good}, env: map[string]string{"PROVISIOND_HTTP_PORT": "99999"},
			wantErrOut: []string{good + ": http.port (from PROVISIOND_HTTP_PORT): must be between 1 and 65535, got 99999"},
			wantErr:    "config " + good + ": 1 problem(s)"},
		{name: "bad lists every problem", args: []string{"--config", bad},
			wantErrOut: []string{
				bad + ": modem.prot: unknown key",
				bad + ": modem.baud: must be an integer, got \"fast\"",
				bad + ": provisioning.max_commands: must be between 5 and 20, got 50",
			},
			wantErr: "3 problem(s)"},
		{name: "explicit missing file", args: []string{"--config", missing}, wantErr: "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			out, errOut, err := runStoreConfigCmd(t, newConfigCmd(), append([]string{"check"}, tc.args...)...)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("error %v, stderr %q", err, errOut)
				}
			} else {
				var ee *exitError
				if !errors.As(err, &ee) || ee.code == 0 || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want a non-zero exit with %q", err, tc.wantErr)
				}
			}
			if out != tc.wantOut {
				t.Errorf("stdout %q, want %q", out, tc.wantOut)
			}
			if got := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n"); tc.wantErrOut != nil && strings.Join(got, "\n") != strings.Join(tc.wantErrOut, "\n") {
				t.Errorf("stderr\n%s\nwant\n%s", errOut, strings.Join(tc.wantErrOut, "\n"))
			}
		})
	}
}

func TestConfigCheckDefaultPath(t *testing.T) {
	if _, err := os.Stat(config.DefaultPath); err == nil {
		t.Skipf("%s exists on this machine", config.DefaultPath)
	}
	out, _, err := runStoreConfigCmd(t, newConfigCmd(), "check")
	if err != nil || !strings.HasPrefix(out, "ok: "+config.DefaultPath+" not found, defaults and environment used\n") {
		t.Fatalf("got %q, %v", out, err)
	}
	// Through the whole CLI: the root's exit code.
	if code := execute(t.Context(), []string{"config", "check", "--config", filepath.Join(t.TempDir(), "x.yaml")}); code != 1 {
		t.Fatalf("exit code %d for a missing explicit file, want 1", code)
	}
}

func TestConfigDefaultsShowReference(t *testing.T) {
	var example bytes.Buffer
	if err := config.WriteExample(&example); err != nil {
		t.Fatal(err)
	}
	out, _, err := runStoreConfigCmd(t, newConfigCmd(), "defaults")
	if err != nil || out != example.String() {
		t.Fatalf("defaults: %v, output differs from WriteExample", err)
	}

	cfg := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(cfg, []byte("modem:\n  baud: 9600\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PROVISIOND_LOG_LEVEL", "debug")
	out, _, err = runStoreConfigCmd(t, newConfigCmd(), "show", "--config", cfg)
	if err != nil || !strings.Contains(out, "\n  baud: 9600\n") || !strings.Contains(out, "\n  level: debug\n") {
		t.Fatalf("show: %v\n%s", err, out)
	}
	// What show prints is itself a valid config with the same content.
	shown := filepath.Join(t.TempDir(), "shown.yaml")
	if err := os.WriteFile(shown, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	a, errA := config.Load(cfg, true)
	b, errB := config.Load(shown, true)
	if errA != nil || errB != nil || *a != *b {
		t.Fatalf("show output loads differently: %v %v", errA, errB)
	}

	out, _, err = runStoreConfigCmd(t, newConfigCmd(), "reference")
	if err != nil || !strings.HasPrefix(out, "| Key |") || !strings.Contains(out, "`PROVISIOND_MODEM_PORT`") {
		t.Fatalf("reference: %v\n%s", err, out)
	}
}
