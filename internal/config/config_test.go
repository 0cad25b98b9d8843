package config

import (
	"bytes"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite configs/provisiond.yaml from the key table")

const examplePath = "../../configs/provisiond.yaml"

// TestDefaults pins the documented defaults independently of the table: the device library's
// where it has one (docs/protocol.md §7), the host-only choices of docs/design.md otherwise.
func TestDefaults(t *testing.T) {
	want := &Config{
		Modem: ModemConfig{Port: "", Baud: 115200, FlowControl: "rtscts", LineEnding: "crlf",
			CommandTimeout: 10 * time.Second, SetClockFromHost: true, ProvisionRootCA: true,
			RootCASecTag: 189298, JWTSecTag: 0, JWTValidTime: 300 * time.Second, TraceAT: false,
			LongCommandTimeout: 60 * time.Second, RestoreTimeout: 65 * time.Second},
		Provisioning: ProvisioningConfig{Transport: "http", AutoStart: true, Interval: 24 * time.Hour,
			Spread: 0, InitialBackoff: 60 * time.Second, RxBufSize: 8192, TxBufSize: 49152, RxBufMax: 65536, MaxCommands: 10,
			Uplink: "host", OnFinished: "none", OnFinishedExec: "", HooksDir: "/etc/provisiond/hooks.d"},
		HTTP:    HTTPConfig{Hostname: "provisioning-http.nrfcloud.com", Port: 443, Timeout: 30 * time.Second},
		CoAP:    CoAPConfig{Hostname: "coap.nrfcloud.com", Port: 5684, Timeout: 30 * time.Second, DTLSSessionCache: false},
		Store:   StoreConfig{Path: "/var/lib/provisiond/settings", Prefix: "provisioning"},
		Control: ControlConfig{Socket: "/run/provisiond/provisiond.sock"},
		Owner:   OwnerConfig{APIURL: "https://api.provisioning.nrfcloud.com"},
		Log:     LogConfig{Level: "info", Format: "auto"},
	}
	if got := Default(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Default() =\n%+v\nwant\n%+v", got, want)
	}
}

// allChanged has every field different from its default, so a round trip through WriteYAML
// and Load proves that every field has a key and every key reaches its field.
func allChanged() *Config {
	return &Config{
		Modem: ModemConfig{Port: "/dev/serial/by-id/usb-SEGGER_J-Link_001050000000-if02", Baud: 1000000,
			FlowControl: "none", LineEnding: "cr", CommandTimeout: 90 * time.Second, SetClockFromHost: false,
			ProvisionRootCA: false, RootCASecTag: 42, JWTSecTag: 16842753, JWTValidTime: 360 * time.Second, TraceAT: true,
			LongCommandTimeout: 2 * time.Minute, RestoreTimeout: 150 * time.Second},
		Provisioning: ProvisioningConfig{Transport: "coap", AutoStart: false, Interval: 90 * time.Minute,
			Spread: 3 * time.Second, InitialBackoff: 1500 * time.Millisecond, RxBufSize: 4096, TxBufSize: 4096, RxBufMax: 16384,
			MaxCommands: 20, AllowHashCommands: true, Uplink: "modem", OnFinished: "exec", OnFinishedExec: "/usr/local/bin/on \"done\"",
			HooksDir: ""},
		HTTP:    HTTPConfig{Hostname: "127.0.0.1", Port: 8443, Timeout: 250 * time.Millisecond, CAFile: "/tmp/ca.pem"},
		CoAP:    CoAPConfig{Hostname: "::1", Port: 15684, Timeout: 5 * time.Second, DTLSSessionCache: true, CAFile: "/tmp/coap ca.pem"},
		Store:   StoreConfig{Path: "/tmp/state/settings", Prefix: "prov/sub"},
		Control: ControlConfig{Socket: "relative.sock"},
		Owner:   OwnerConfig{APIURL: "https://127.0.0.1:8443/base", CAFile: "/tmp/owner ca.pem"},
		Log:     LogConfig{Level: "debug", Format: "json"},
	}
}

func TestEveryFieldHasAKey(t *testing.T) {
	changed, def := reflect.ValueOf(allChanged()).Elem(), reflect.ValueOf(Default()).Elem()
	leaves := 0
	for i := range changed.NumField() {
		for j := range changed.Field(i).NumField() {
			leaves++
			if changed.Field(i).Field(j).Equal(def.Field(i).Field(j)) {
				t.Errorf("allChanged leaves %s.%s at its default", changed.Type().Field(i).Name, changed.Field(i).Type().Field(j).Name)
			}
		}
	}
	if got := len(Keys()); got != leaves {
		t.Fatalf("%d keys for %d Config fields", got, leaves)
	}
	c := allChanged()
	var buf bytes.Buffer
	if err := WriteYAML(&buf, c); err != nil {
		t.Fatal(err)
	}
	got, err := load("x.yaml", buf.Bytes())
	if err != nil {
		t.Fatalf("Load of WriteYAML output: %v\n%s", err, buf.String())
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, c)
	}
}

func TestKeysTable(t *testing.T) {
	seen, envs := map[string]bool{}, map[string]bool{}
	sections := map[string]bool{}
	for _, s := range sectionDocs {
		sections[s.name] = true
	}
	def := Default()
	for _, k := range Keys() {
		t.Run(k.Key, func(t *testing.T) {
			if seen[k.Key] || envs[k.Env] {
				t.Fatalf("duplicate key or env %s %s", k.Key, k.Env)
			}
			seen[k.Key], envs[k.Key] = true, true
			if !sections[k.section()] {
				t.Fatalf("section %q has no doc", k.section())
			}
			if want := "PROVISIOND_" + strings.ToUpper(strings.ReplaceAll(k.Key, ".", "_")); k.Env != want {
				t.Fatalf("Env = %s, want %s", k.Env, want)
			}
			if got := k.format(def); got != k.Default {
				t.Fatalf("shown default %q, but the default formats as %q", k.Default, got)
			}
			if k.Description == "" || !strings.HasSuffix(k.Description, ".") {
				t.Fatalf("description %q: want a sentence", k.Description)
			}
			if k.Kconfig != "" && !strings.HasPrefix(k.Kconfig, "NRF_PROVISIONING_") {
				t.Fatalf("Kconfig %q", k.Kconfig)
			}
		})
	}
}

// TestExampleFile keeps configs/provisiond.yaml equal to the generator's output and valid.
func TestExampleFile(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteExample(&buf); err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(examplePath, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, buf.Bytes()) {
		t.Fatalf("%s differs from WriteExample output; run go test ./internal/config -run TestExampleFile -update", examplePath)
	}
	c, err := Load(examplePath, true)
	if err != nil {
		t.Fatalf("Load(example): %v", err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Fatalf("example loads as %+v, want the defaults", c)
	}
	for _, k := range Keys() {
		name := k.Key[len(k.section())+1:]
		if !bytes.Contains(data, []byte("\n  "+name+": ")) || !bytes.Contains(data, []byte(k.Env)) {
			t.Errorf("example lacks %s or %s", k.Key, k.Env)
		}
		if k.Kconfig != "" && !bytes.Contains(data, []byte(k.Kconfig)) {
			t.Errorf("example lacks Kconfig %s", k.Kconfig)
		}
	}
}

func TestMarkdown(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteMarkdown(&buf); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2+len(Keys()) {
		t.Fatalf("%d lines for %d keys", len(lines), len(Keys()))
	}
	for i, k := range Keys() {
		line := lines[2+i]
		if !strings.HasPrefix(line, "| `"+k.Key+"`") || strings.Count(line, " | ") != 4 {
			t.Errorf("row %q", line)
		}
	}
}

type wantProblem struct{ key, msg string }

func TestLoad(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		env   map[string]string
		check func(t *testing.T, c *Config)
		want  []wantProblem // nil: must load
	}{
		{name: "empty file is all defaults", yaml: "",
			check: func(t *testing.T, c *Config) { eq(t, c, Default()) }},
		{name: "comments only", yaml: "# nothing\n",
			check: func(t *testing.T, c *Config) { eq(t, c, Default()) }},
		{name: "empty section", yaml: "modem:\n",
			check: func(t *testing.T, c *Config) { eq(t, c, Default()) }},
		{name: "null value keeps default", yaml: "modem:\n  baud:\n",
			check: func(t *testing.T, c *Config) { eq(t, c.Modem.Baud, 115200) }},
		{name: "values", yaml: "modem:\n  port: /dev/ttyACM0\n  baud: 9600\n  command_timeout: 2s\nprovisioning:\n  auto_start: false\n  spread: 0\n",
			check: func(t *testing.T, c *Config) {
				eq(t, c.Modem.Port, "/dev/ttyACM0")
				eq(t, c.Modem.Baud, 9600)
				eq(t, c.Modem.CommandTimeout, 2*time.Second)
				eq(t, c.Provisioning.AutoStart, false)
				eq(t, c.Provisioning.Spread, time.Duration(0))
			}},
		{name: "keys are case-insensitive", yaml: "Modem:\n  Baud: 9600\n",
			check: func(t *testing.T, c *Config) { eq(t, c.Modem.Baud, 9600) }},
		{name: "quoted numbers and bools accepted", yaml: "modem:\n  baud: \"9600\"\n  trace_at: \"true\"\n",
			check: func(t *testing.T, c *Config) { eq(t, c.Modem.Baud, 9600); eq(t, c.Modem.TraceAT, true) }},
		{name: "env beats file",
			yaml: "modem:\n  port: /dev/ttyACM0\nprovisioning:\n  auto_start: true\n",
			env:  map[string]string{"PROVISIOND_MODEM_PORT": "/dev/ttyACM1", "PROVISIOND_PROVISIONING_AUTO_START": "false", "PROVISIOND_PROVISIONING_MAX_COMMANDS": "20", "PROVISIOND_HTTP_TIMEOUT": "5s"},
			check: func(t *testing.T, c *Config) {
				eq(t, c.Modem.Port, "/dev/ttyACM1")
				eq(t, c.Provisioning.AutoStart, false)
				eq(t, c.Provisioning.MaxCommands, 20)
				eq(t, c.HTTP.Timeout, 5*time.Second)
			}},
		{name: "empty env var clears the file's setting",
			yaml: "modem:\n  port: /dev/ttyACM0\n  baud: 9600\n  trace_at: true\nprovisioning:\n  hooks_dir: /srv/hooks\n  spread: 1m\n",
			env: map[string]string{"PROVISIOND_MODEM_PORT": "", "PROVISIOND_PROVISIONING_HOOKS_DIR": "",
				"PROVISIOND_MODEM_BAUD": "", "PROVISIOND_MODEM_TRACE_AT": "", "PROVISIOND_PROVISIONING_SPREAD": ""},
			check: func(t *testing.T, c *Config) {
				eq(t, c.Modem.Port, "")
				eq(t, c.Provisioning.HooksDir, "") // hooks off
				eq(t, c.Modem.Baud, 115200)        // not a string: back to the default
				eq(t, c.Modem.TraceAT, false)
				eq(t, c.Provisioning.Spread, time.Duration(0))
			}},
		{name: "empty env var for a key that needs a value", env: map[string]string{"PROVISIOND_COAP_HOSTNAME": ""},
			want: []wantProblem{{"coap.hostname (from PROVISIOND_COAP_HOSTNAME)", "must not be empty"}}},
		{name: "unrelated env var ignored", env: map[string]string{"PROVISIOND_EVENT": "x", "PROVISIONDX_MODEM_PORT": "y"},
			check: func(t *testing.T, c *Config) { eq(t, c, Default()) }},
		{name: "exec with program", yaml: "provisioning:\n  on_finished: exec\n  on_finished_exec: /usr/bin/true\n",
			check: func(t *testing.T, c *Config) { eq(t, c.Provisioning.OnFinished, "exec") }},
		{name: "short modem timeouts", yaml: "modem:\n  long_command_timeout: 2s\n  restore_timeout: 3s\n",
			check: func(t *testing.T, c *Config) {
				eq(t, c.Modem.LongCommandTimeout, 2*time.Second)
				eq(t, c.Modem.RestoreTimeout, 3*time.Second)
			}},
		{name: "edges of ranges", yaml: "modem:\n  jwt_valid_time: 0s\n  baud: 4000000\nprovisioning:\n  max_commands: 5\nhttp:\n  port: 65535\n",
			check: func(t *testing.T, c *Config) { eq(t, c.Provisioning.MaxCommands, 5); eq(t, c.HTTP.Port, 65535) }},

		{name: "yaml syntax", yaml: "modem:\n  port: [\n", want: []wantProblem{{"", "yaml"}}},
		{name: "tab indentation", yaml: "modem:\n\tport: x\n", want: []wantProblem{{"", "yaml"}}},
		{name: "duplicate key", yaml: "modem:\n  baud: 1200\n  baud: 2400\n", want: []wantProblem{{"", "already defined"}}},
		{name: "top level list", yaml: "- a\n- b\n", want: []wantProblem{{"", ""}}},
		{name: "unknown key", yaml: "modem:\n  prot: /dev/x\n", want: []wantProblem{{"modem.prot", "unknown key"}}},
		{name: "unknown section", yaml: "cloud:\n  psk: x\n", want: []wantProblem{{"cloud.psk", "unknown key"}}},
		{name: "unknown top key", yaml: "verbose: true\n", want: []wantProblem{{"verbose", "unknown key"}}},
		{name: "section not a mapping", yaml: "modem: 5\n", want: []wantProblem{{"modem", "must be a mapping"}}},
		{name: "key with children", yaml: "modem:\n  port:\n    a: 1\n",
			want: []wantProblem{{"modem.port", "must be a string, got a mapping"}}},
		{name: "wrong types", yaml: "modem:\n  baud: fast\n  trace_at: yes\n  port: 5\n  command_timeout: 10\nhttp:\n  port: 443.5\n",
			want: []wantProblem{
				{"modem.port", "must be a string, got 5"},
				{"modem.baud", `must be an integer, got "fast"`},
				{"modem.command_timeout", "must be a duration with a unit"},
				{"modem.trace_at", `must be true or false, got "yes"`},
				{"http.port", "must be an integer, got 443.5"},
			}},
		{name: "list for scalar", yaml: "log:\n  level: [info]\n", want: []wantProblem{{"log.level", "must be a string, got a list"}}},
		{name: "out of range", yaml: strings.Join([]string{
			"modem:", "  baud: 5", "  jwt_valid_time: 361s", "  command_timeout: 0s", "  root_ca_sec_tag: -1",
			"provisioning:", "  max_commands: 4", "  rx_buf_size: 100", "  tx_buf_size: 1000000", "  interval: 0s", "  spread: -1s",
			"http:", "  port: 0", "coap:", "  port: 70000", ""}, "\n"),
			want: []wantProblem{
				{"modem.baud", "must be between 1200 and 4000000, got 5"},
				{"modem.command_timeout", "must be between 1s and 10m, got 0s"},
				{"modem.root_ca_sec_tag", "must be between 0 and 2147483647, got -1"},
				{"modem.jwt_valid_time", "must be between 0s and 6m, got 361s"},
				{"provisioning.interval", "must be between 1s and 8760h"},
				{"provisioning.spread", "got -1s"},
				{"provisioning.rx_buf_size", "must be between 256 and 65536, got 100"},
				{"provisioning.tx_buf_size", "got 1000000"},
				{"provisioning.max_commands", "must be between 5 and 20, got 4"},
				{"http.port", "must be between 1 and 65535, got 0"},
				{"coap.port", "got 70000"},
			}},
		{name: "jwt_valid_time whole seconds", yaml: "modem:\n  jwt_valid_time: 1500ms\n",
			want: []wantProblem{{"modem.jwt_valid_time", "must be whole seconds"}}},
		{name: "enums", yaml: "modem:\n  flow_control: xonxoff\n  line_ending: CRLF\nprovisioning:\n  transport: mqtt\n  uplink: lte\n  on_finished: reboot\nlog:\n  level: trace\n  format: text\n",
			want: []wantProblem{
				{"modem.flow_control", `must be one of none, rtscts, got "xonxoff"`},
				{"modem.line_ending", `must be one of crlf, cr, lf, got "CRLF"`},
				{"provisioning.transport", "must be one of http, coap"},
				{"provisioning.uplink", "must be one of host, modem"},
				{"provisioning.on_finished", "must be one of none, modem-restart, exec"},
				{"log.level", "must be one of debug, info, warn, error"},
				{"log.format", "must be one of auto, json, console"},
			}},
		{name: "strings", yaml: "modem:\n  port: ttyACM0\nhttp:\n  hostname: https://example.com\ncoap:\n  hostname: \"\"\nstore:\n  path: \"\"\n  prefix: /provisioning/\ncontrol:\n  socket: /" + strings.Repeat("s", 120) + "\nprovisioning:\n  hooks_dir: hooks\n",
			want: []wantProblem{
				{"modem.port", "must be an absolute path"},
				{"provisioning.hooks_dir", "must be an absolute path"},
				{"http.hostname", "must be a bare host name"},
				{"coap.hostname", "must not be empty"},
				{"store.path", "must not be empty"},
				{"store.prefix", "must be a settings path"},
				{"control.socket", "must be at most 107 bytes"},
			}},
		{name: "restore no longer than a long command", yaml: "modem:\n  long_command_timeout: 90s\n",
			want: []wantProblem{{"modem.restore_timeout", "must be longer than modem.long_command_timeout (90s), got 65s"}}},
		{name: "exec without program", yaml: "provisioning:\n  on_finished: exec\n",
			want: []wantProblem{{"provisioning.on_finished_exec", "must be set when provisioning.on_finished is \"exec\""}}},
		{name: "bad env value names the variable", env: map[string]string{"PROVISIOND_MODEM_BAUD": "fast"},
			want: []wantProblem{{"modem.baud (from PROVISIOND_MODEM_BAUD)", "must be an integer"}}},
		{name: "unknown env var of a known section", env: map[string]string{"PROVISIOND_MODEM_PROT": "/dev/x"},
			want: []wantProblem{{"PROVISIOND_MODEM_PROT", "unknown environment variable"}}},
		{name: "all problems together", yaml: "modem:\n  baud: x\n  nope: 1\nlog:\n  level: loud\n",
			env:  map[string]string{"PROVISIOND_HTTP_PORT": "0"},
			want: []wantProblem{{"modem.nope", "unknown key"}, {"modem.baud", "integer"}, {"http.port (from PROVISIOND_HTTP_PORT)", "between"}, {"log.level", "one of"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			path := filepath.Join(t.TempDir(), "provisiond.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := Load(path, true)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				tc.check(t, c)
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) || c != nil {
				t.Fatalf("Load = %v, %v; want *ValidationError", c, err)
			}
			if ve.File != path {
				t.Errorf("File = %q, want %q", ve.File, path)
			}
			if len(ve.Problems) != len(tc.want) {
				t.Fatalf("got %d problems %q, want %d", len(ve.Problems), ve.Problems, len(tc.want))
			}
			for i, w := range tc.want {
				p := ve.Problems[i]
				if p.Key != w.key || !strings.Contains(p.Msg, w.msg) {
					t.Errorf("problem %d = %q: %q, want %q: …%s…", i, p.Key, p.Msg, w.key, w.msg)
				}
				if !strings.Contains(err.Error(), p.String()) {
					t.Errorf("Error() %q lacks %q", err, p)
				}
			}
		})
	}
}

func eq[T any](t *testing.T, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	t.Run("default path missing is fine", func(t *testing.T) {
		t.Setenv("PROVISIOND_STORE_PATH", "/tmp/x/settings")
		c, err := Load(missing, false)
		if err != nil {
			t.Fatal(err)
		}
		want := Default()
		want.Store.Path = "/tmp/x/settings"
		eq(t, c, want)
	})
	t.Run("explicit path missing is an error", func(t *testing.T) {
		_, err := Load(missing, true)
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
			t.Fatalf("got %v, want not-exist naming the file", err)
		}
	})
	t.Run("a folder is an error", func(t *testing.T) {
		if _, err := Load(t.TempDir(), false); err == nil {
			t.Fatal("Load of a folder succeeded")
		}
	})
	t.Run("too large", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "big.yaml")
		if err := os.WriteFile(path, bytes.Repeat([]byte("# padding\n"), maxFileSize/10+1), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(path, true); !errors.Is(err, ErrInvalid) {
			t.Fatalf("got %v", err)
		}
	})
}

// TestLoadConcurrent runs loads side by side, as a SIGHUP reload does next to a running
// daemon; with -race it shows no state is shared between viper instances.
func TestLoadConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "provisiond.yaml")
	if err := os.WriteFile(path, []byte("modem:\n  baud: 9600\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			c, err := Load(path, true)
			if err != nil || c.Modem.Baud != 9600 {
				t.Errorf("Load = %+v, %v", c, err)
			}
		})
	}
	wg.Wait()
}

func TestValidationErrorMessage(t *testing.T) {
	e := &ValidationError{File: "/etc/p.yaml", Problems: []Problem{{"modem.baud", "must be an integer"}, {"", "yaml: line 2: bad"}}}
	if got, want := e.Error(), "config /etc/p.yaml: modem.baud: must be an integer; yaml: line 2: bad"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// FuzzLoadConfig feeds arbitrary bytes as the YAML file: Load must not panic, and must return
// either a valid Config or an error.
func FuzzLoadConfig(f *testing.F) {
	if data, err := os.ReadFile(examplePath); err == nil {
		f.Add(data)
	}
	for _, s := range []string{"", "modem:\n  baud: 9600\n", "modem: 5\n", "a: [1, {b: c}]\n", "modem:\n  port: !!binary aGVsbG8=\n",
		"modem:\n  command_timeout: 2562047h\n", "&a [*a]", "provisioning:\n  interval: 1e400s\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := load("fuzz.yaml", data)
		if (c == nil) == (err == nil) {
			t.Fatalf("load = %v, %v", c, err)
		}
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("error %v is not a ValidationError with problems", err)
			}
			return
		}
		// What loads must survive a write and a reload unchanged.
		var buf bytes.Buffer
		if err := WriteYAML(&buf, c); err != nil {
			t.Fatal(err)
		}
		c2, err := load("again.yaml", buf.Bytes())
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, c, c2)
		}
	})
}
