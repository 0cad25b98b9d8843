package config

import (
	"fmt"
	"math"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Type is the kind of value a key takes.
type Type string

// Key types.
const (
	TypeString   Type = "string"
	TypeInt      Type = "int"
	TypeBool     Type = "bool"
	TypeDuration Type = "duration" // Go syntax with a unit: 300ms, 30s, 5m, 24h
)

// KeyInfo describes one configuration key. Keys returns the whole table.
type KeyInfo struct {
	Key         string // dotted name, "modem.port"
	Env         string // environment override, "PROVISIOND_MODEM_PORT"
	Type        Type
	Default     string // as written in the YAML file
	Allowed     string // human-readable constraint, "1..65535", "none, rtscts"; "" for any
	Kconfig     string // the device-side Kconfig option it corresponds to; "" for host-only keys
	Description string
	// Restart is set for keys the daemon reads only when it starts: a reload (SIGHUP) leaves
	// a change to them for the next start, and says so.
	Restart bool

	// def is the default in Go form, fed to decode by Default.
	def any
	// decode converts a value (from YAML or the environment), validates it and stores it in
	// c; it returns "" or what is wrong.
	decode func(c *Config, raw any) string
	// format renders the key's value in c as YAML.
	format func(c *Config) string
}

func (k KeyInfo) section() string {
	s, _, _ := strings.Cut(k.Key, ".")
	return s
}

// sections gives the order and the comment of each section in generated files.
var sectionDocs = []struct{ name, doc string }{
	{"modem", "The nRF91 on the serial line."},
	{"provisioning", "The provisioning client: transport, schedule, limits, and what happens when a job is done."},
	{"http", "HTTPS endpoint of the nRF Cloud Provisioning Service (provisioning.transport: http)."},
	{"coap", "CoAP/DTLS endpoint of the nRF Cloud Provisioning Service (provisioning.transport: coap)."},
	{"store", "The settings store: the host's stand-in for the device's Zephyr settings."},
	{"control", "The local control socket used by `provisiond now`, `status`, `token`, `uuid`, `interval`."},
	{"owner", "The owner-side REST API of the Provisioning Service, used by `provisiond claim` (never by the daemon)."},
	{"log", "Logging to stderr (the journal under systemd)."},
}

// Ranges that the engine checks too: it validates what it is given against these rather than
// keeping ranges of its own.
const (
	// MaxCommandsMin and MaxCommandsMax bound provisioning.max_commands, the device library's
	// NRF_PROVISIONING_CBOR_RECORDS range.
	MaxCommandsMin = 5
	MaxCommandsMax = 20
	// MaxSecTag is the largest modem security tag (a positive int32).
	MaxSecTag = math.MaxInt32
	// MaxJWTValidTime bounds modem.jwt_valid_time (NRF_PROVISIONING_JWT_MAX_VALID_TIME_S).
	MaxJWTValidTime = 360 * time.Second
)

// Keys returns the table of every configuration key, in file order. The slice is new on each
// call; changing it changes nothing else.
func Keys() []KeyInfo {
	const maxSecTag = MaxSecTag
	return markRestart([]KeyInfo{
		// modem
		stringKey("modem.port", "", "",
			"Serial device of the nRF91, e.g. /dev/ttyACM0 (a /dev/serial/by-id/ name survives re-plugging). Required by `provisiond run`; the template unit provisiond@.service sets it from the instance name.",
			func(c *Config) *string { return &c.Modem.Port }, absPath(true)),
		intKey("modem.baud", 115200, 1200, 4000000, "",
			"Serial speed. The DKs' virtual COM port ignores it; a real UART must match the modem firmware.",
			func(c *Config) *int { return &c.Modem.Baud }),
		enumKey("modem.flow_control", FlowRTSCTS, []string{FlowNone, FlowRTSCTS}, "",
			"Hardware flow control. The nRF9160/nRF9161 DKs use RTS/CTS; the Thingy:91 and Thingy:91 X have none.",
			func(c *Config) *string { return &c.Modem.FlowControl }),
		enumKey("modem.line_ending", LineEndingCRLF, []string{LineEndingCRLF, LineEndingCR, LineEndingLF}, "",
			"What ends each AT command. CR LF works with the Serial LTE Modem, the AT Client sample and the Serial Modem firmware alike.",
			func(c *Config) *string { return &c.Modem.LineEnding }),
		durationKey("modem.command_timeout", 10*time.Second, time.Second, 10*time.Minute, 0, "",
			"Longest wait for the answer to one AT command; the slow ones get modem.long_command_timeout.",
			func(c *Config) *time.Duration { return &c.Modem.CommandTimeout }),
		durationKey("modem.long_command_timeout", 60*time.Second, time.Second, 10*time.Minute, 0, "",
			"Longest wait for the answer to a slow AT command: key generation and injection (%KEYGEN, %KEYINJECT), +CFUN and %CMNG writes.",
			func(c *Config) *time.Duration { return &c.Modem.LongCommandTimeout }),
		durationKey("modem.restore_timeout", 65*time.Second, time.Second, 15*time.Minute, 0, "",
			"How long putting the modem back after a batch (functional mode, CMEE, a root CA being written) may take, also when the daemon is stopping. Longer than modem.long_command_timeout, so a slow +CFUN can finish.",
			func(c *Config) *time.Duration { return &c.Modem.RestoreTimeout }),
		boolKey("modem.set_clock_from_host", true, "",
			"When the modem has no valid time (no network yet), set its clock from the host's (AT+CCLK, UTC) before asking it for a JWT. The device library instead waits for network time (NRF_PROVISIONING_VALID_DATE_TIME_TIMEOUT_SECONDS).",
			func(c *Config) *bool { return &c.Modem.SetClockFromHost }),
		boolKey("modem.provision_root_ca", true, "NRF_PROVISIONING_WITH_CERT",
			"At start, write the service's root CA to modem.root_ca_sec_tag if that tag is empty (never overwritten).",
			func(c *Config) *bool { return &c.Modem.ProvisionRootCA }),
		intKey("modem.root_ca_sec_tag", 189298, 0, maxSecTag, "NRF_PROVISIONING_ROOT_CA_SEC_TAG",
			"Security tag holding the root CA the modem would use for the service.",
			func(c *Config) *int { return &c.Modem.RootCASecTag }),
		intKey("modem.jwt_sec_tag", 0, 0, maxSecTag, "NRF_PROVISIONING_JWT_SEC_TAG",
			"Security tag of the key that signs the JWT; 0 is the modem's device identity key.",
			func(c *Config) *int { return &c.Modem.JWTSecTag }),
		durationKey("modem.jwt_valid_time", 300*time.Second, 0, MaxJWTValidTime, time.Second, "NRF_PROVISIONING_JWT_MAX_VALID_TIME_S",
			"Lifetime asked of the modem for each JWT (%JWT exp_delta, whole seconds); 0 leaves expiry out. The JWT is reused while valid.",
			func(c *Config) *time.Duration { return &c.Modem.JWTValidTime }),
		boolKey("modem.trace_at", false, "",
			"Log every line written to and read from the modem at debug level, so it shows with log.level: debug (JWTs, tokens and key material redacted).",
			func(c *Config) *bool { return &c.Modem.TraceAT }),

		// provisioning
		enumKey("provisioning.transport", TransportHTTP, []string{TransportHTTP, TransportCoAP}, "NRF_PROVISIONING_HTTP, NRF_PROVISIONING_COAP",
			"How to reach the Provisioning Service: HTTPS (section http) or CoAP over DTLS (section coap).",
			func(c *Config) *string { return &c.Provisioning.Transport }),
		boolKey("provisioning.auto_start", true, "NRF_PROVISIONING_AUTO_START_ON_INIT, NRF_PROVISIONING_SCHEDULED",
			"Run an attempt at start and then on the schedule. Off: attempts only on `provisiond now` or SIGUSR1.",
			func(c *Config) *bool { return &c.Provisioning.AutoStart }),
		durationKey("provisioning.interval", 24*time.Hour, MinInterval, MaxInterval, 0, "NRF_PROVISIONING_INTERVAL_S",
			"Time between attempts. The store's provisioning/interval-sec (set by the service or `provisiond interval`) overrides it.",
			func(c *Config) *time.Duration { return &c.Provisioning.Interval }),
		durationKey("provisioning.spread", 0, 0, 24*time.Hour, 0, "NRF_PROVISIONING_SPREAD_S",
			"Random extra delay (0 up to this) added to each interval, so that many gateways do not ask at once.",
			func(c *Config) *time.Duration { return &c.Provisioning.Spread }),
		durationKey("provisioning.initial_backoff", time.Minute, time.Second, 24*time.Hour, 0, "NRF_PROVISIONING_INITIAL_BACKOFF",
			"First retry delay after a busy service or a timeout; it doubles on each further failure, up to 24h.",
			func(c *Config) *time.Duration { return &c.Provisioning.InitialBackoff }),
		intKey("provisioning.rx_buf_size", 8192, 256, 65536, "NRF_PROVISIONING_RX_BUF_SZ",
			"Receive buffer size in bytes, sent to the service as rxMaxSize: it sends no more commands than fit. The default carries a credential write up to the modem's 4 KB AT command limit with its CBOR and HTTP or CoAP framing; the device library's 1024 cannot carry some of the service's own certificate jobs.",
			func(c *Config) *int { return &c.Provisioning.RxBufSize }),
		intKey("provisioning.tx_buf_size", 49152, 256, 65536, "NRF_PROVISIONING_TX_BUF_SZ",
			"Transmit buffer size in bytes, sent to the service as txMaxSize; bounds the encoded responses. The default carries a batch of 10 results each up to the modem's 4 KB answer (a %KEYGEN answer is about 1 KB) with their CBOR framing.",
			func(c *Config) *int { return &c.Provisioning.TxBufSize }),
		intKey("provisioning.rx_buf_max", 65536, 256, 1048576, "",
			"Hard cap for a fetch retried with a larger rxMaxSize. When the service refuses a fetch as too large and names the size the next command needs, the fetch is retried at once with that size if it is at most this; past it the attempt fails and names this key. A cap at or below rx_buf_size turns the retry off.",
			func(c *Config) *int { return &c.Provisioning.RxBufMax }),
		intKey("provisioning.max_commands", 10, MaxCommandsMin, MaxCommandsMax, "NRF_PROVISIONING_CBOR_RECORDS",
			"Most commands per batch, sent to the service as limit; a larger batch is refused.",
			func(c *Config) *int { return &c.Provisioning.MaxCommands }),
		boolKey("provisioning.allow_hash_commands", false, "",
			"Run AT commands from the service that are #-commands (AT#X…). Serial Modem and Serial LTE Modem firmware hand these to the board's application instead of the modem (reset, sockets, DFU), which the device library never lets the service reach, so by default they are refused and reported to the service as failed.",
			func(c *Config) *bool { return &c.Provisioning.AllowHashCommands }),
		enumKey("provisioning.uplink", UplinkHost, []string{UplinkHost, UplinkModem}, "",
			"Which network carries the traffic to the service. host: the gateway's own, so the modem stays offline while it works. modem: this modem is the only uplink, so it is brought back online (and registered) before each upload, as on the device.",
			func(c *Config) *string { return &c.Provisioning.Uplink }),
		enumKey("provisioning.on_finished", OnFinishedNone, []string{OnFinishedNone, OnFinishedModemRestart, OnFinishedExec}, "",
			"After a FINISHED command: nothing; restart the modem (AT+CFUN=0, then its saved mode) so it loads new credentials; or run provisioning.on_finished_exec. The device library reboots instead.",
			func(c *Config) *string { return &c.Provisioning.OnFinished }),
		stringKey("provisioning.on_finished_exec", "", "",
			"Absolute path of the program run when provisioning.on_finished is exec.",
			func(c *Config) *string { return &c.Provisioning.OnFinishedExec }, absPath(true)),
		stringKey("provisioning.hooks_dir", "/etc/provisiond/hooks.d", "",
			"Folder of executables run on every provisioning event, with the event and its details in environment variables. A missing folder means no hooks; empty turns hooks off.",
			func(c *Config) *string { return &c.Provisioning.HooksDir }, absPath(true)),

		// http
		stringKey("http.hostname", "provisioning-http.nrfcloud.com", "NRF_PROVISIONING_HTTP_HOSTNAME",
			"Host name of the HTTPS endpoint.",
			func(c *Config) *string { return &c.HTTP.Hostname }, hostname()),
		intKey("http.port", 443, 1, 65535, "NRF_PROVISIONING_HTTP_PORT",
			"TCP port of the HTTPS endpoint.",
			func(c *Config) *int { return &c.HTTP.Port }),
		durationKey("http.timeout", 30*time.Second, 100*time.Millisecond, 10*time.Minute, 0, "NRF_PROVISIONING_HTTP_TIMEOUT_MS",
			"Longest wait for each HTTPS exchange.",
			func(c *Config) *time.Duration { return &c.HTTP.Timeout }),
		stringKey("http.ca_file", "", "",
			"PEM file of the roots that verify the service; empty uses the system roots (the service's chain ends at Amazon Root CA 1).",
			func(c *Config) *string { return &c.HTTP.CAFile }, absPath(true)),

		// coap
		stringKey("coap.hostname", "coap.nrfcloud.com", "NRF_PROVISIONING_COAP_HOSTNAME",
			"Host name of the CoAP/DTLS endpoint.",
			func(c *Config) *string { return &c.CoAP.Hostname }, hostname()),
		intKey("coap.port", 5684, 1, 65535, "NRF_PROVISIONING_COAP_PORT",
			"UDP port of the CoAP/DTLS endpoint.",
			func(c *Config) *int { return &c.CoAP.Port }),
		durationKey("coap.timeout", 30*time.Second, 100*time.Millisecond, 10*time.Minute, 0, "NRF_PROVISIONING_COAP_TIMEOUT_SECONDS",
			"Longest wait for each CoAP exchange, retransmissions included.",
			func(c *Config) *time.Duration { return &c.CoAP.Timeout }),
		boolKey("coap.dtls_session_cache", false, "NRF_PROVISIONING_COAP_DTLS_SESSION_CACHE",
			"Resume the DTLS session between attempts instead of a full handshake each time. Off by default: a resumed session negotiates no DTLS Connection ID with the DTLS library provisiond uses, so it does not survive NAT rebinding, and a host that handshakes once per attempt saves little.",
			func(c *Config) *bool { return &c.CoAP.DTLSSessionCache }),
		stringKey("coap.ca_file", "", "",
			"PEM file of the roots that verify the service; empty uses the nRF Cloud CoAP root CA shipped with provisiond.",
			func(c *Config) *string { return &c.CoAP.CAFile }, absPath(true)),

		// store
		stringKey("store.path", "/var/lib/provisiond/settings", "",
			"Settings file: the interval, the cursor, keys written by config commands and the outbox of results not yet uploaded. Show it with `provisiond settings`.",
			func(c *Config) *string { return &c.Store.Path }, absPath(false)),
		stringKey("store.prefix", "provisioning", "NRF_PROVISIONING_SETTINGS_STORAGE_PATH",
			"Settings subtree of the provisioning keys: <prefix>/interval-sec, <prefix>/after-correlation-id.",
			func(c *Config) *string { return &c.Store.Prefix }, settingsPrefix()),

		// control
		stringKey("control.socket", "/run/provisiond/provisiond.sock", "",
			"Unix socket of the control API (mode 0660, group-owned).",
			func(c *Config) *string { return &c.Control.Socket }, socketPath()),

		// owner
		stringKey("owner.api_url", "https://api.provisioning.nrfcloud.com", "",
			"Base URL of the owner API (the service's REST API; /v1/… is appended). The API key is never configured here: `provisiond claim --api-key-file` reads it.",
			func(c *Config) *string { return &c.Owner.APIURL }, httpsURL()),
		stringKey("owner.ca_file", "", "",
			"PEM file of the roots that verify owner.api_url; empty uses the system roots. A simulated service's own CA goes here.",
			func(c *Config) *string { return &c.Owner.CAFile }, absPath(true)),

		// log
		enumKey("log.level", "info", []string{"debug", "info", "warn", "error"}, "NRF_PROVISIONING_LOG_LEVEL",
			"Least severe level logged.",
			func(c *Config) *string { return &c.Log.Level }),
		enumKey("log.format", "auto", []string{"auto", "json", "console"}, "",
			"auto: console lines without timestamps under journald (each with its journal priority), with timestamps on a terminal, JSON otherwise (files and pipes).",
			func(c *Config) *string { return &c.Log.Format }),
	})
}

func envName(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

func newKey(key string, typ Type, def any, shown, allowed, kconfig, desc string) KeyInfo {
	return KeyInfo{Key: key, Env: envName(key), Type: typ, Default: shown, Allowed: allowed, Kconfig: kconfig, Description: desc, def: def}
}

func stringKey(key, def, kconfig, desc string, field func(*Config) *string, rule stringRule) KeyInfo {
	k := newKey(key, TypeString, def, strconv.Quote(def), rule.allowed, kconfig, desc)
	k.decode = func(c *Config, raw any) string {
		s, msg := toString(raw)
		if msg == "" {
			msg = rule.check(s)
		}
		if msg != "" {
			return msg
		}
		*field(c) = s
		return ""
	}
	k.format = func(c *Config) string { return strconv.Quote(*field(c)) }
	return k
}

func enumKey(key, def string, values []string, kconfig, desc string, field func(*Config) *string) KeyInfo {
	k := newKey(key, TypeString, def, def, strings.Join(values, ", "), kconfig, desc)
	k.decode = func(c *Config, raw any) string {
		s, msg := toString(raw)
		if msg != "" {
			return msg
		}
		if !slices.Contains(values, s) {
			return fmt.Sprintf("must be one of %s, got %q", strings.Join(values, ", "), s)
		}
		*field(c) = s
		return ""
	}
	k.format = func(c *Config) string { return *field(c) }
	return k
}

func intKey(key string, def, lo, hi int, kconfig, desc string, field func(*Config) *int) KeyInfo {
	k := newKey(key, TypeInt, def, strconv.Itoa(def), fmt.Sprintf("%d..%d", lo, hi), kconfig, desc)
	k.decode = func(c *Config, raw any) string {
		n, msg := toInt(raw)
		if msg != "" {
			return msg
		}
		if n < int64(lo) || n > int64(hi) {
			return fmt.Sprintf("must be between %d and %d, got %d", lo, hi, n)
		}
		*field(c) = int(n)
		return ""
	}
	k.format = func(c *Config) string { return strconv.Itoa(*field(c)) }
	return k
}

func boolKey(key string, def bool, kconfig, desc string, field func(*Config) *bool) KeyInfo {
	k := newKey(key, TypeBool, def, strconv.FormatBool(def), "true, false", kconfig, desc)
	k.decode = func(c *Config, raw any) string {
		b, msg := toBool(raw)
		if msg != "" {
			return msg
		}
		*field(c) = b
		return ""
	}
	k.format = func(c *Config) string { return strconv.FormatBool(*field(c)) }
	return k
}

// durationKey makes a duration key in lo..hi; a non-zero unit requires whole multiples of it.
func durationKey(key string, def, lo, hi, unit time.Duration, kconfig, desc string, field func(*Config) *time.Duration) KeyInfo {
	allowed := formatDuration(lo) + ".." + formatDuration(hi)
	if unit != 0 {
		allowed += ", whole " + unitName(unit)
	}
	k := newKey(key, TypeDuration, formatDuration(def), formatDuration(def), allowed, kconfig, desc)
	k.decode = func(c *Config, raw any) string {
		d, msg := toDuration(raw)
		if msg != "" {
			return msg
		}
		if d < lo || d > hi {
			return fmt.Sprintf("must be between %s and %s, got %s", formatDuration(lo), formatDuration(hi), formatDuration(d))
		}
		if unit != 0 && d%unit != 0 {
			return fmt.Sprintf("must be whole %s, got %s", unitName(unit), formatDuration(d))
		}
		*field(c) = d
		return ""
	}
	k.format = func(c *Config) string { return formatDuration(*field(c)) }
	return k
}

func unitName(u time.Duration) string {
	switch u {
	case time.Second:
		return "seconds"
	case time.Millisecond:
		return "milliseconds"
	}
	return "multiples of " + u.String()
}

// formatDuration writes d with the largest unit that divides it: 24h, 5m, 30s, 250ms.
func formatDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	case d%time.Millisecond == 0:
		return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
	}
	return d.String()
}

// Conversions accept what YAML produces for the type and, since the environment only holds
// text, its string form; anything else is a type error. They never round or truncate.

func toString(raw any) (string, string) {
	s, ok := raw.(string)
	if !ok {
		return "", fmt.Sprintf("must be a string, got %s", describe(raw))
	}
	return s, ""
}

func toInt(raw any) (int64, string) {
	switch v := raw.(type) {
	case int:
		return int64(v), ""
	case int64:
		return v, ""
	case uint64:
		if v > math.MaxInt64 {
			return 0, fmt.Sprintf("must be an integer in range, got %d", v)
		}
		return int64(v), ""
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
			return int64(v), ""
		}
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err == nil {
			return n, ""
		}
	}
	return 0, fmt.Sprintf("must be an integer, got %s", describe(raw))
}

func toBool(raw any) (bool, string) {
	switch v := raw.(type) {
	case bool:
		return v, ""
	case string:
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "true", "1":
			return true, ""
		case "false", "0":
			return false, ""
		}
	}
	return false, fmt.Sprintf("must be true or false, got %s", describe(raw))
}

func toDuration(raw any) (time.Duration, string) {
	switch v := raw.(type) {
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err == nil {
			return d, ""
		}
	case int:
		// A bare 0 is unambiguous; any other number lacks its unit.
		if v == 0 {
			return 0, ""
		}
	}
	return 0, fmt.Sprintf("must be a duration with a unit such as 500ms, 30s, 5m or 24h, got %s", describe(raw))
}

func describe(raw any) string {
	switch v := raw.(type) {
	case string:
		return strconv.Quote(v)
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case nil:
		return "nothing"
	default:
		return fmt.Sprintf("%v (%T)", v, v)
	}
}

// stringRule constrains a string key: allowed documents it, check returns "" or what is wrong.
type stringRule struct {
	allowed string
	check   func(s string) string
}

func absPath(emptyOK bool) stringRule {
	r := stringRule{allowed: "absolute path"}
	if emptyOK {
		r.allowed += ", or empty"
	}
	r.check = func(s string) string {
		switch {
		case s == "" && emptyOK:
			return ""
		case s == "":
			return "must not be empty"
		case !filepath.IsAbs(s):
			return fmt.Sprintf("must be an absolute path, got %q", s)
		}
		return ""
	}
	return r
}

func hostname() stringRule {
	return stringRule{allowed: "host name or IP address", check: func(s string) string {
		if s == "" {
			return "must not be empty"
		}
		if strings.ContainsAny(s, "/ \t\r\n") {
			return fmt.Sprintf("must be a bare host name or IP address (no scheme, path or port), got %q", s)
		}
		return ""
	}}
}

func httpsURL() stringRule {
	return stringRule{allowed: "https:// URL without query", check: func(s string) string {
		u, err := url.Parse(s)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return fmt.Sprintf("must be an https:// URL with a host and no query, fragment or user, got %q", s)
		}
		return ""
	}}
}

func settingsPrefix() stringRule {
	return stringRule{allowed: "settings path without leading or trailing /", check: func(s string) string {
		if s == "" || strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/") || strings.ContainsFunc(s, unicode.IsControl) {
			return fmt.Sprintf("must be a settings path such as \"provisioning\", without leading or trailing /, got %q", s)
		}
		return ""
	}}
}

// maxSocketPath is sun_path's size less the terminating NUL on Linux.
const maxSocketPath = 107

func socketPath() stringRule {
	return stringRule{allowed: fmt.Sprintf("path of at most %d bytes", maxSocketPath), check: func(s string) string {
		if s == "" {
			return "must not be empty"
		}
		if len(s) > maxSocketPath {
			return fmt.Sprintf("must be at most %d bytes (a Unix socket path), got %d", maxSocketPath, len(s))
		}
		return ""
	}}
}
