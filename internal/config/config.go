// Package config holds provisiond's configuration: the typed Config, its defaults, and Load,
// which reads a YAML file with viper, applies PROVISIOND_<SECTION>_<KEY> environment
// overrides and refuses unknown keys, wrong types and out-of-range values by name.
//
// One table, Keys, describes every key (type, default, allowed values, the device-side
// Kconfig option it stands for, a description). Defaults, validation, the example file
// configs/provisiond.yaml and the README's reference are all produced from it, so they cannot
// drift apart. Load uses a fresh viper instance per call and keeps no state, so a reload
// (SIGHUP) is a new Load whose result the caller swaps in.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/viper"
)

// DefaultPath is where the daemon and the CLI look for the configuration file.
const DefaultPath = "/etc/provisiond/provisiond.yaml"

// EnvPrefix starts every environment override: PROVISIOND_MODEM_PORT sets modem.port.
const EnvPrefix = "PROVISIOND"

// maxFileSize bounds what Load reads; a real configuration is a few KiB.
const maxFileSize = 1 << 20

// Values of the enumerated keys.
const (
	FlowNone   = "none"
	FlowRTSCTS = "rtscts"

	LineEndingCRLF = "crlf"
	LineEndingCR   = "cr"
	LineEndingLF   = "lf"

	TransportHTTP = "http"
	TransportCoAP = "coap"

	UplinkHost  = "host"
	UplinkModem = "modem"

	OnFinishedNone         = "none"
	OnFinishedModemRestart = "modem-restart"
	OnFinishedExec         = "exec"
)

// Config is the whole configuration. The zero value is not useful; start from Default or Load.
// The range of provisioning.interval; `provisiond interval` and the control socket accept
// the same (or 0: back to the configured interval).
const (
	MinInterval = time.Second
	MaxInterval = 365 * 24 * time.Hour
)

// A Config is a plain value: copy it freely, and swap a new one in on reload.
type Config struct {
	Modem        ModemConfig
	Provisioning ProvisioningConfig
	HTTP         HTTPConfig
	CoAP         CoAPConfig
	Store        StoreConfig
	Control      ControlConfig
	Owner        OwnerConfig
	Log          LogConfig
}

// ModemConfig is the "modem" section: the serial line and the modem-side choices.
type ModemConfig struct {
	Port             string // serial device; "" means not configured
	Baud             int
	FlowControl      string // FlowNone or FlowRTSCTS
	LineEnding       string // LineEndingCRLF, LineEndingCR or LineEndingLF
	CommandTimeout   time.Duration
	SetClockFromHost bool
	ProvisionRootCA  bool
	RootCASecTag     int
	JWTSecTag        int
	JWTValidTime     time.Duration // whole seconds
	TraceAT          bool

	// LongCommandTimeout bounds the slow commands; RestoreTimeout bounds putting the modem
	// back after a batch and must leave room for one of them.
	LongCommandTimeout, RestoreTimeout time.Duration
}

// ProvisioningConfig is the "provisioning" section: transport, schedule and what to do when done.
type ProvisioningConfig struct {
	Transport      string // TransportHTTP or TransportCoAP
	AutoStart      bool
	Interval       time.Duration
	Spread         time.Duration
	InitialBackoff time.Duration
	RxBufSize      int
	TxBufSize      int
	RxBufMax       int
	MaxCommands    int
	// AllowHashCommands lets the service's AT commands include #-commands.
	AllowHashCommands bool
	Uplink            string // UplinkHost or UplinkModem
	OnFinished        string // OnFinishedNone, OnFinishedModemRestart or OnFinishedExec
	OnFinishedExec    string // absolute path; required when OnFinished is OnFinishedExec
	HooksDir          string // "" disables hooks
}

// HTTPConfig is the "http" section: the HTTPS endpoint of the Provisioning Service.
type HTTPConfig struct {
	Hostname string
	Port     int
	Timeout  time.Duration
	CAFile   string // "" means the system roots
}

// CoAPConfig is the "coap" section: the CoAP/DTLS endpoint of the Provisioning Service.
type CoAPConfig struct {
	Hostname         string
	Port             int
	Timeout          time.Duration
	DTLSSessionCache bool
	CAFile           string // "" means the nRF Cloud CoAP root shipped with provisiond
}

// StoreConfig is the "store" section: the settings file.
type StoreConfig struct {
	Path   string
	Prefix string // settings subtree, like NRF_PROVISIONING_SETTINGS_STORAGE_PATH
}

// ControlConfig is the "control" section: the local control socket.
type ControlConfig struct {
	Socket string
}

// OwnerConfig is the "owner" section: the owner-side REST API that `provisiond claim` uses.
type OwnerConfig struct {
	APIURL string // base URL without /v1, e.g. https://api.provisioning.nrfcloud.com
	CAFile string // "" means the system roots
}

// LogConfig is the "log" section.
type LogConfig struct {
	Level  string // debug, info, warn or error
	Format string // auto, json or console
}

// Default returns the configuration with every key at its default.
func Default() *Config {
	c := &Config{}
	for _, k := range Keys() {
		// The table's defaults are checked by the tests; a failure here is a programming error.
		if msg := k.decode(c, k.def); msg != "" {
			panic("config: default of " + k.Key + ": " + msg)
		}
	}
	return c
}

// Load reads the configuration file at path ("" means DefaultPath), applies environment
// overrides and validates the result. A missing file is not an error when explicit is false
// (the path is the default, not one the user named): the defaults and environment are used.
//
// Invalid content gives a *ValidationError (errors.Is ErrInvalid) listing every problem:
// YAML syntax, unknown keys, values of the wrong type or out of range, unknown PROVISIOND_*
// variables of a known section. A file that cannot be read gives a wrapped fs error.
func Load(path string, explicit bool) (*Config, error) {
	if path == "" {
		path = DefaultPath
	}
	data, err := readFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return load("", nil)
	}
	if err != nil {
		return nil, err
	}
	return load(path, data)
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: read %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, &ValidationError{File: path, Problems: []Problem{{Msg: fmt.Sprintf("file is larger than %d bytes", maxFileSize)}}}
	}
	return data, nil
}

// load parses data (nil: no file) named file, with the process environment on top.
func load(file string, data []byte) (*Config, error) {
	keys := Keys()
	verr := &ValidationError{File: file}

	// A fresh instance per call: viper instances are not safe for concurrent use, and a reload
	// must not see the previous file's keys.
	v := viper.New()
	v.SetConfigType("yaml")
	// Every key is bound explicitly: viper's Unmarshal ignores AutomaticEnv keys it does not
	// otherwise know, and we want exact, documented variable names.
	for _, k := range keys {
		if err := v.BindEnv(k.Key, k.Env); err != nil {
			return nil, fmt.Errorf("config: bind %s: %w", k.Env, err)
		}
	}
	if data != nil {
		if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
			verr.add("", "%s", yamlError(err))
			return nil, verr
		}
	}

	known := make(map[string]bool, len(keys))
	sections := map[string]bool{}
	for _, k := range keys {
		known[k.Key] = true
		sections[k.section()] = true
	}
	unknown := slices.Sorted(func(yield func(string) bool) {
		for _, key := range v.AllKeys() {
			if !known[key] && !yield(key) {
				return
			}
		}
	})
	for _, key := range unknown {
		if sections[key] {
			// Viper shows a section that is a scalar or a list as a leaf key. An empty
			// section ("modem:" with nothing under it) is null, which is harmless.
			if v.Get(key) != nil {
				verr.add(key, "must be a mapping of keys")
			}
			continue
		}
		verr.add(key, "unknown key")
	}
	verr.Problems = append(verr.Problems, unknownEnv(keys, sections)...)

	c := Default()
	for _, k := range keys {
		raw := v.Get(k.Key)
		if val, ok := os.LookupEnv(k.Env); ok && val == "" {
			// Viper takes an empty variable for an unset one and lets the file win. The
			// environment beats the file: empty is the empty string for a string key and
			// the default for any other.
			if k.Type != TypeString {
				continue
			}
			raw = ""
		}
		if raw == nil {
			continue // not set: keep the default
		}
		if msg := k.decode(c, raw); msg != "" {
			key := k.Key
			if _, ok := os.LookupEnv(k.Env); ok {
				key += " (from " + k.Env + ")"
			}
			verr.add(key, "%s", msg)
		}
	}
	crossCheck(c, verr)
	if len(verr.Problems) > 0 {
		return nil, verr
	}
	return c, nil
}

// crossCheck validates rules that involve more than one key.
func crossCheck(c *Config, verr *ValidationError) {
	if c.Provisioning.OnFinished == OnFinishedExec && c.Provisioning.OnFinishedExec == "" {
		verr.add("provisioning.on_finished_exec", "must be set when provisioning.on_finished is %q", OnFinishedExec)
	}
	if m := c.Modem; m.RestoreTimeout <= m.LongCommandTimeout {
		verr.add("modem.restore_timeout", "must be longer than modem.long_command_timeout (%s), got %s",
			formatDuration(m.LongCommandTimeout), formatDuration(m.RestoreTimeout))
	}
}

// unknownEnv reports PROVISIOND_<SECTION>_* variables that match no key, so a typo in a unit
// file or /etc/default/provisiond does not silently do nothing. Variables outside the known
// sections are left alone: they may belong to something else.
func unknownEnv(keys []KeyInfo, sections map[string]bool) []Problem {
	envs := map[string]bool{}
	for _, k := range keys {
		envs[k.Env] = true
	}
	var ps []Problem
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if envs[name] || !strings.HasPrefix(name, EnvPrefix+"_") {
			continue
		}
		for s := range sections {
			if strings.HasPrefix(name, EnvPrefix+"_"+strings.ToUpper(s)+"_") {
				ps = append(ps, Problem{Key: name, Msg: "unknown environment variable (no such key)"})
				break
			}
		}
	}
	slices.SortFunc(ps, func(a, b Problem) int { return strings.Compare(a.Key, b.Key) })
	return ps
}

// yamlError shortens viper's wrapping of a YAML parse error to the parser's own message.
func yamlError(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "yaml: "); i >= 0 {
		return msg[i:]
	}
	return msg
}
