// Package daemon is provisiond's provisioning engine and scheduler: it fetches command batches
// from the nRF Cloud Provisioning Service, runs them on the attached nRF91 modem, and uploads
// the results (docs/protocol.md §1.5, §2.4, §4; docs/design.md for where the host differs).
//
// A Daemon is built once with New and driven by either Run (the long-running scheduler) or
// RunOnce (one attempt for `provisiond run --once`); one of them at a time. Status,
// TriggerNow, SetInterval, Reconfigure, AttestationToken and DeviceUUID are safe to call from
// other goroutines while it runs.
//
// # Crash safety
//
// Results are never held only in memory while the modem works. Before each AT command the
// daemon writes a journal entry (the batch's responses so far plus the id being executed) to
// the store in one Apply, and after it the command's response: two store writes per AT
// command. A config command is one Apply holding its pairs and its response together. Per
// batch come at most three more: the modem's mode before it is set offline, the outbox when
// the batch ends (responses plus cursor, replacing the journal), and after a successful upload
// the cursor with the outbox deleted. On start, a leftover journal is turned into the outbox:
// a command that was started but has no recorded response is reported as
// [id, 99, 0, "interrupted: …"] (never run again) and is the failing last entry. A pending
// outbox is uploaded before anything new is fetched. Nothing is uploaded that the store does
// not hold: when a command's result cannot be stored, the batch stops, and if its outbox
// cannot be stored either (after a few tries) the attempt fails and the next attempt or start
// reports the batch from the journal. A mode saved before the modem was set
// offline, and a CMEE value saved before AT+CMEE=1, are restored when the modem is opened.
package daemon

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/provisiond/provisiond/internal/atmodem"
	conf "github.com/provisiond/provisiond/internal/config" // named apart from the tests' config() helper
	"github.com/provisiond/provisiond/internal/rootca"
	"github.com/provisiond/provisiond/internal/store"
	"github.com/provisiond/provisiond/internal/transport"
)

// Config is what the daemon runs with; cmd/provisiond maps config.Config onto it. The config
// package owns every default and range: New checks a Config and never replaces a value, so
// an explicit zero that the config allows (jwt_valid_time 0, root_ca_sec_tag 0, spread 0)
// reaches the engine as given. Only HookTimeout, which is no config key, has a default here.
type Config struct {
	// Transport is "http" or "coap"; it picks the root CA written into the modem.
	Transport string
	// ClientVersion is sent as cver.
	ClientVersion string
	// MaxCommands is the batch limit sent as `limit`, in the config's range; RxBufSize and
	// TxBufSize (positive) are sent as rxMaxSize and txMaxSize.
	MaxCommands, RxBufSize, TxBufSize int
	// RxBufMax caps the rxMaxSize of a fetch retried because the service named a larger size
	// than RxBufSize (default 65536); a cap at or below RxBufSize means no retry.
	RxBufMax int
	// Uplink is "host" (default: the host's network carries the traffic, no waiting for LTE)
	// or "modem" (wait for LTE registration after a batch before uploading).
	Uplink string
	// JWTSecTag is the modem sec tag whose key signs the JWT (0: the device identity key).
	JWTSecTag int
	// JWTValidTime is the validity asked of the modem, whole seconds; 0 leaves expiry out
	// (and a JWT without expiry is not reused).
	JWTValidTime time.Duration
	// SetClockFromHost lets the daemon set the modem clock from the host's (UTC) when the
	// modem has no valid time before a JWT is needed.
	SetClockFromHost bool
	// ProvisionRootCA writes RootCAPEM into RootCASecTag (0 is a valid tag) at start when that
	// tag holds no CA certificate. An existing one is never overwritten. RootCAPEM defaults to
	// the root of Transport's endpoint.
	ProvisionRootCA bool
	RootCASecTag    int
	RootCAPEM       string
	// AutoStart runs an attempt at start and then on the schedule; without it attempts run
	// only when triggered (TriggerNow: `provisiond now`, SIGUSR1).
	AutoStart bool
	// Interval is the time between attempts (positive) when the store's
	// <StorePrefix>/interval-sec is unset or invalid; a random delay in [0, Spread) is added.
	Interval, Spread time.Duration
	// InitialBackoff is the first delay (positive) after a busy or timed-out attempt; it
	// doubles up to 24h and is reset by a normal outcome.
	InitialBackoff time.Duration
	// OnFinished is "none", "modem-restart" or "exec" (run OnFinishedExec, split on white
	// space, no shell). HooksDir holds executables run on every event ("" for none), each
	// bounded by HookTimeout (default 10s).
	OnFinished, OnFinishedExec, HooksDir string
	HookTimeout                          time.Duration
	// AllowHashCommands lets the service's AT commands include #-commands, which Serial
	// Modem firmware hands to the board's application instead of the modem.
	AllowHashCommands bool
	// StorePrefix is the settings subtree of the protocol's keys.
	StorePrefix string
	// Port names the modem's serial device in status and messages; OpenModem opens it.
	Port string
	// RestoreTimeout bounds putting the modem back after a batch (mode, CMEE, a root CA being
	// written), also when the attempt was cancelled: it must leave room for the modem
	// client's limit for slow commands such as +CFUN writes.
	RestoreTimeout time.Duration
}

// DefaultHookTimeout bounds each hook when Config.HookTimeout is zero.
const DefaultHookTimeout = 10 * time.Second

// MaxBackoff caps the doubling backoff (docs/protocol.md §4.7).
const MaxBackoff = 24 * time.Hour

// Uplink and OnFinished values.
const (
	UplinkHost             = "host"
	UplinkModem            = "modem"
	OnFinishedNone         = "none"
	OnFinishedModemRestart = "modem-restart"
	OnFinishedExec         = "exec"
)

const (
	transportHTTP           = "http"
	transportCoAP           = "coap"
	reservedPrefix          = "provisiond/"
	reservedPrefixBare      = "provisiond"
	maxRoundsPerAttempt     = 64
	eventRingSize           = 32
	defaultRegistrationWait = 120 * time.Second // NRF_PROVISIONING_MODEM_STATE_WAIT_TIMEOUT_SECONDS
)

// validate checks c against the ranges of the config package, which owns them, and fills in
// only what is no config key (HookTimeout, RootCAPEM).
func (c Config) validate() (Config, error) {
	c.HookTimeout = cmp.Or(c.HookTimeout, DefaultHookTimeout)
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	switch c.Transport {
	case transportHTTP, transportCoAP:
	default:
		bad("transport %q is not http or coap", c.Transport)
	}
	if c.RootCAPEM == "" && c.ProvisionRootCA {
		if pem, err := rootca.ForTransport(c.Transport); err == nil {
			c.RootCAPEM = pem
		}
	}
	if c.MaxCommands < conf.MaxCommandsMin || c.MaxCommands > conf.MaxCommandsMax {
		bad("max commands %d is outside %d..%d", c.MaxCommands, conf.MaxCommandsMin, conf.MaxCommandsMax)
	}
	if c.RxBufSize <= 0 || c.TxBufSize <= 0 {
		bad("buffer sizes must be positive, got rx %d, tx %d", c.RxBufSize, c.TxBufSize)
	}
	if c.RxBufMax < 0 {
		bad("rx_buf_max must not be negative, got %d", c.RxBufMax)
	}
	switch c.Uplink {
	case UplinkHost, UplinkModem:
	default:
		bad("uplink %q is not host or modem", c.Uplink)
	}
	if c.JWTSecTag < 0 || c.RootCASecTag < 0 || c.JWTSecTag > conf.MaxSecTag || c.RootCASecTag > conf.MaxSecTag {
		bad("sec tags must be in 0..%d", conf.MaxSecTag)
	}
	if c.JWTValidTime < 0 || c.JWTValidTime > conf.MaxJWTValidTime || c.JWTValidTime%time.Second != 0 {
		bad("jwt valid time %s is not whole seconds in 0s..%s", c.JWTValidTime, conf.MaxJWTValidTime)
	}
	if c.Interval <= 0 || c.InitialBackoff <= 0 || c.RestoreTimeout <= 0 {
		bad("interval %s, initial backoff %s and restore timeout %s must be positive", c.Interval, c.InitialBackoff, c.RestoreTimeout)
	}
	if c.Spread < 0 || c.HookTimeout < 0 {
		bad("durations must not be negative")
	}
	switch c.OnFinished {
	case OnFinishedNone, OnFinishedModemRestart:
	case OnFinishedExec:
		if c.OnFinishedExec == "" {
			bad("on_finished exec needs on_finished_exec")
		}
	default:
		bad("on_finished %q is not none, modem-restart or exec", c.OnFinished)
	}
	switch {
	case c.StorePrefix == "":
		bad("store prefix is empty")
	case c.StorePrefix == reservedPrefixBare || hasReservedPrefix(c.StorePrefix+"/"):
		bad("store prefix %q is the daemon's own subtree", c.StorePrefix)
	}
	if len(problems) > 0 {
		return c, fmt.Errorf("daemon: %w: %v", ErrInvalidConfig, problems)
	}
	return c, nil
}

// Modem is what the daemon needs of the modem; *atmodem.Client provides it. Methods must be
// safe for concurrent use (the control socket asks for tokens while an attempt runs).
type Modem interface {
	Command(ctx context.Context, cmd string) (atmodem.Response, error)
	FunctionalMode(ctx context.Context) (int, error)
	SetFunctionalMode(ctx context.Context, mode int) error
	CMEE(ctx context.Context) (int, error)
	SetCMEE(ctx context.Context, n int) error
	ShortSWVersion(ctx context.Context) (string, error)
	Clock(ctx context.Context) (t time.Time, valid bool, err error)
	SetClock(ctx context.Context, t time.Time) error
	JWT(ctx context.Context, secTag int, validFor time.Duration) (string, error)
	AttestationToken(ctx context.Context) (string, error)
	DeviceUUID(ctx context.Context) (string, error)
	Credentials(ctx context.Context, secTag int) ([]atmodem.Credential, error)
	WriteCredential(ctx context.Context, secTag, typ int, pem string) error
	// Done is closed when the port is lost or closed.
	Done() <-chan struct{}
	Close() error
}

// urcSubscriber is the optional capability of a Modem to deliver unsolicited result codes;
// the daemon needs it only with Uplink "modem", to wait for LTE registration.
type urcSubscriber interface {
	Subscribe(prefixes ...string) (<-chan string, func())
}

// Session is one connection to the Provisioning Service for one attempt; both transports'
// sessions provide it.
type Session interface {
	Fetch(ctx context.Context, req transport.FetchRequest) ([]byte, error)
	Upload(ctx context.Context, req transport.UploadRequest) error
	Stats() transport.Stats
	Close() error
}

// KV is the settings store; *store.File and *store.Memory provide it. Apply must be
// all-or-nothing.
type KV interface {
	Get(key string) (string, error)
	All() map[string]string
	Apply(changes []store.Change) error
}

// Deps are the daemon's collaborators.
type Deps struct {
	// OpenModem opens the modem; called at start and after the modem was lost.
	OpenModem func(ctx context.Context) (Modem, error)
	// Dial opens a session to the service; called once per attempt. Reconfigure can replace
	// it together with the config it was built from.
	Dial DialFunc
	// Store holds the protocol's keys and the daemon's own state under "provisiond/".
	Store KV
	// Logger receives the daemon's log; nil discards it.
	Logger *zap.Logger
	// Notify, if set, receives a one-line status after each attempt (sd_notify STATUS).
	Notify func(state string)
	// Idle, if set, is called by the goroutine of Run after each attempt, once the attempt's
	// outcome is reported and before the wait for the next one: the place to return the
	// attempt's garbage to the OS and to bring the settings file up to date, since attempts
	// are seconds to hours apart.
	Idle func()
	// Now, if set, replaces time.Now.
	Now func() time.Time
	// Heartbeat, if set, is called by the goroutine of Run while it is responsive: every few
	// seconds when idle or waiting for the modem, and before each step of an attempt (a
	// command, a request to the service). quiet is how long it may then go without calling
	// again; a longer silence means it is wedged.
	Heartbeat func(quiet time.Duration)
	// MaxStep is the longest one step of an attempt may take (an AT command with its grace,
	// or a request to the service); the heartbeat allows it. Default 15m.
	MaxStep time.Duration
}

// DialFunc opens a session to the Provisioning Service.
type DialFunc func(ctx context.Context) (Session, error)

// Daemon is the provisioning engine and scheduler. See the package documentation.
type Daemon struct {
	deps Deps
	log  *zap.Logger
	now  func() time.Time

	// Test seams; set by New to the real thing.
	after     func(time.Duration) (<-chan time.Time, func() bool) // scheduler timers
	randN     func(n int64) int64                                 // spread
	reopenMin time.Duration                                       // modem reopen backoff
	reopenMax time.Duration
	grace     time.Duration // how long an AT command may finish after cancellation
	regWait   time.Duration // Uplink "modem": registration wait
	storeWait time.Duration // pause between tries of a batch's final store write

	trigger   chan struct{} // TriggerNow → scheduler, coalescing (capacity 1)
	resched   chan struct{} // SetInterval/Reconfigure → scheduler (capacity 1)
	ready     chan struct{}
	readyOnce sync.Once
	running   atomic.Bool

	beatEvery time.Duration // idle heartbeat period

	mu     sync.Mutex // guards the fields below
	cfg    Config
	dial   DialFunc // built from cfg; nil: Deps.Dial
	modem  Modem
	hooks  *hookRunner
	status statusState

	// Only accessed by the goroutine in Run or RunOnce (one at a time, see running).
	jwt    jwtCache
	cursor string
	outbox *outbox // pending upload; only ever what provisiond/outbox holds
	// unstored is set when a batch's results could not be stored: the store's journal, not
	// memory, says what to report, so the next attempt reads it again before anything else.
	unstored bool
	attempts int
	backoff  time.Duration
	next     time.Time
	outage   bool // a modem outage was logged; the next successful open says it is back
}

// New checks cfg and returns a Daemon. It does no I/O.
func New(cfg Config, deps Deps) (*Daemon, error) {
	cfg, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	if deps.OpenModem == nil || deps.Dial == nil || deps.Store == nil {
		return nil, fmt.Errorf("daemon: %w: OpenModem, Dial and Store are required", ErrInvalidConfig)
	}
	d := &Daemon{
		deps:      deps,
		log:       deps.Logger,
		now:       deps.Now,
		randN:     rand.Int64N,
		reopenMin: time.Second,
		reopenMax: 30 * time.Second,
		grace:     20 * time.Second,
		storeWait: 200 * time.Millisecond,
		regWait:   defaultRegistrationWait,
		beatEvery: 5 * time.Second,
		trigger:   make(chan struct{}, 1),
		resched:   make(chan struct{}, 1),
		ready:     make(chan struct{}),
		cfg:       cfg,
	}
	if d.log == nil {
		d.log = zap.NewNop()
	}
	if d.now == nil {
		d.now = time.Now
	}
	d.after = func(dur time.Duration) (<-chan time.Time, func() bool) {
		t := time.NewTimer(dur)
		return t.C, t.Stop
	}
	if d.deps.MaxStep <= 0 {
		d.deps.MaxStep = 15 * time.Minute
	}
	d.status.state = StateStarting
	return d, nil
}

// Config returns the configuration the daemon runs with, as New or Reconfigure checked it.
func (d *Daemon) Config() Config { return d.config() }

// config returns the current configuration.
func (d *Daemon) config() Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// snapshot returns the configuration and the transport built from it, taken together: an
// attempt takes one snapshot at its start and uses nothing else.
func (d *Daemon) snapshot() (Config, DialFunc) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dial == nil {
		return d.cfg, d.deps.Dial
	}
	return d.cfg, d.dial
}

// Reconfigure swaps in a new configuration and the transport built from it (SIGHUP) in one
// step; dial nil keeps the current transport. An attempt in progress finishes with the
// old pair, the next one starts with the new pair: no attempt mixes them. The scheduler
// recomputes the next attempt time with the new config.
func (d *Daemon) Reconfigure(cfg Config, dial DialFunc) error {
	cfg, err := cfg.validate()
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.cfg = cfg
	if dial != nil {
		d.dial = dial
	}
	d.mu.Unlock()
	d.signalResched()
	return nil
}

// beat reports to Deps.Heartbeat that the scheduler is responsive for the next quiet.
func (d *Daemon) beat(quiet time.Duration) {
	if d.deps.Heartbeat != nil {
		d.deps.Heartbeat(quiet)
	}
}

// idleQuiet is the silence allowed between idle heartbeats.
func (d *Daemon) idleQuiet() time.Duration { return 3 * d.beatEvery }

// TriggerNow asks for an attempt as soon as possible, also during a backoff. Requests made
// while one is pending or an attempt runs coalesce into one more attempt.
func (d *Daemon) TriggerNow() {
	select {
	case d.trigger <- struct{}{}:
	default:
	}
}

func (d *Daemon) signalResched() {
	select {
	case d.resched <- struct{}{}:
	default:
	}
}

// Ready is closed once the store's state was loaded and the modem answered for the first time.
func (d *Daemon) Ready() <-chan struct{} { return d.ready }

func (d *Daemon) markReady() { d.readyOnce.Do(func() { close(d.ready) }) }

// currentModem returns the open modem, or nil.
func (d *Daemon) currentModem() Modem {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.modem
}

// AttestationToken asks the modem for its attestation token (for claiming the device).
func (d *Daemon) AttestationToken(ctx context.Context) (string, error) {
	m := d.currentModem()
	if m == nil {
		return "", fmt.Errorf("daemon: attestation token: %w", ErrNoModem)
	}
	tok, err := m.AttestationToken(ctx)
	if err != nil {
		return "", fmt.Errorf("daemon: attestation token: %w", err)
	}
	return tok, nil
}

// DeviceUUID returns the modem's device UUID: the one the modem's JWT named, else read with
// %ATTESTTOKEN once per modem open.
func (d *Daemon) DeviceUUID(ctx context.Context) (string, error) {
	d.mu.Lock()
	id, m := d.status.deviceUUID, d.modem
	d.mu.Unlock()
	if id != "" {
		return id, nil
	}
	if m == nil {
		return "", fmt.Errorf("daemon: device uuid: %w", ErrNoModem)
	}
	id, err := m.DeviceUUID(ctx)
	if err != nil {
		return "", fmt.Errorf("daemon: device uuid: %w", err)
	}
	d.mu.Lock()
	d.status.deviceUUID = id
	d.mu.Unlock()
	return id, nil
}

// hasReservedPrefix reports whether key lies in the daemon's own subtree, which the service
// must not be able to write (a hostile batch could otherwise forge the outbox).
func hasReservedPrefix(key string) bool {
	return len(key) >= len(reservedPrefix) && key[:len(reservedPrefix)] == reservedPrefix
}

// FromFile maps the validated file config onto the engine's plain values; the config package
// owns every default and range, so nothing is filled in here. The root CA to
// write into the modem is left to the engine, which picks the one of the configured transport.
func FromFile(cfg *conf.Config, clientVersion string) Config {
	p := cfg.Provisioning
	return Config{
		Transport:         p.Transport,
		ClientVersion:     clientVersion,
		MaxCommands:       p.MaxCommands,
		RxBufSize:         p.RxBufSize,
		TxBufSize:         p.TxBufSize,
		RxBufMax:          p.RxBufMax,
		Uplink:            p.Uplink,
		JWTSecTag:         cfg.Modem.JWTSecTag,
		JWTValidTime:      cfg.Modem.JWTValidTime,
		SetClockFromHost:  cfg.Modem.SetClockFromHost,
		ProvisionRootCA:   cfg.Modem.ProvisionRootCA,
		RootCASecTag:      cfg.Modem.RootCASecTag,
		AutoStart:         p.AutoStart,
		Interval:          p.Interval,
		Spread:            p.Spread,
		InitialBackoff:    p.InitialBackoff,
		OnFinished:        p.OnFinished,
		OnFinishedExec:    p.OnFinishedExec,
		HooksDir:          p.HooksDir,
		AllowHashCommands: p.AllowHashCommands,
		StorePrefix:       cfg.Store.Prefix,
		RestoreTimeout:    cfg.Modem.RestoreTimeout,
		Port:              cfg.Modem.Port,
	}
}
