// Package simmodem is a simulated nRF91 cellular modem: an AT command engine with the
// modem's state (functional mode, CMEE, credential store, clock, device identity), real
// cryptographic answers to %KEYGEN, %JWT and %ATTESTTOKEN, a baud-rate limit, and fault
// injection. It serves any io.ReadWriter, or a pseudo-terminal (ServePTY) so that a real
// serial client can open it by path.
//
// A Modem is safe for concurrent use: fault switches and state accessors may be called
// while it serves. Its state outlives a served stream, so an unplugged and replugged pty
// talks to the same modem.
package simmodem

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/provisiond/provisiond/internal/attest"
)

// CredKey names one credential: a security tag and a type.
type CredKey struct {
	Tag  uint32
	Type int
}

// Credential is one entry of the simulated credential store.
type Credential struct {
	Tag  uint32
	Type int
	// Content is the text as written (PEM with its line breaks, or a PSK hex string).
	Content string
	// SHA256 is the upper-case hex digest %CMNG lists.
	SHA256 string
}

// Stats counts what a Modem has done since New.
type Stats struct {
	Commands  int // command lines executed
	Errors    int // answers that were ERROR or +CME ERROR
	URCs      int // unsolicited lines written
	Garbage   int // garbage lines written
	BytesIn   int64
	BytesOut  int64
	Unplugged int // times the line was cut
}

// Modem is one simulated nRF91. Create it with New.
type Modem struct {
	cfg      Config
	identity *ecdsa.PrivateKey
	uuid     [16]byte
	fwUUID   [16]byte
	imei     string

	mu sync.Mutex // guards everything below
	// state
	cfun       int
	cmee       int
	echo       bool
	cereg      int // +CEREG URC mode (0 off, 1 stat, 2+ stat and cell)
	registered bool
	clockValid bool
	clockOff   time.Duration // modem UTC = Clock() + clockOff
	tzQuarters int           // time zone in quarter hours, as +CCLK carries it
	creds      map[CredKey]Credential
	endorse    *ecdsa.PrivateKey // key type 8, made on first %KEYGEN=…,8
	regTimer   *time.Timer
	log        []string
	stats      Stats
	sessions   map[*session]struct{}
	// faults
	stalled     bool
	stallCh     chan struct{} // closed on Resume
	garbage     int
	stormRate   int
	stormCh     chan struct{} // signals storm goroutines to re-read stormRate
	unplugNext  string
	cmeFor      map[string]int
	dropEcho    int
	splitWrites int
}

// New creates a modem from cfg; see Config for the defaults of zero fields.
func New(cfg Config) (*Modem, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	id := cfg.Identity
	if id == nil {
		var err error
		if id, err = attest.GenerateKey(); err != nil {
			return nil, fmt.Errorf("simmodem: identity: %w", err)
		}
	}
	m := &Modem{
		cfg:        cfg,
		identity:   id,
		cfun:       cfg.FunctionalMode,
		echo:       cfg.Echo,
		cereg:      1,
		clockValid: cfg.ClockValid,
		creds:      map[CredKey]Credential{},
		sessions:   map[*session]struct{}{},
		stallCh:    make(chan struct{}),
		stormCh:    make(chan struct{}),
		cmeFor:     map[string]int{},
	}
	close(m.stallCh) // not stalled
	if active(m.cfun) && m.cfun != 2 {
		m.registered, m.clockValid = true, true
	}
	if cfg.UUID != "" {
		u, err := attest.ParseUUID(cfg.UUID)
		if err != nil {
			return nil, fmt.Errorf("%w: uuid: %w", ErrConfig, err)
		}
		m.uuid = u
	} else {
		der, err := x509.MarshalPKIXPublicKey(&id.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("simmodem: identity: %w", err)
		}
		m.uuid = uuidFrom(der)
	}
	if cfg.FirmwareUUID != "" {
		u, err := attest.ParseUUID(cfg.FirmwareUUID)
		if err != nil {
			return nil, fmt.Errorf("%w: firmware uuid: %w", ErrConfig, err)
		}
		m.fwUUID = u
	} else {
		m.fwUUID = uuidFrom([]byte("mfw_" + cfg.FirmwareVersion))
	}
	m.imei = cfg.IMEI
	if m.imei == "" {
		m.imei = imeiFrom(m.uuid)
	}
	if !cfg.HideReserved {
		m.addReserved()
	}
	return m, nil
}

// uuidFrom derives a version-4-shaped UUID from data, so derived UUIDs look like the
// modem's (which are version 4, variant 10).
func uuidFrom(data []byte) [16]byte {
	h := sha256.Sum256(data)
	var u [16]byte
	copy(u[:], h[:16])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// imeiFrom derives a 15-digit IMEI: a fixed test TAC, six digits from the UUID, and the
// Luhn check digit.
func imeiFrom(u [16]byte) string {
	n := (uint32(u[12])<<16 | uint32(u[13])<<8 | uint32(u[14])) % 1000000
	body := fmt.Sprintf("35000099%06d", n)
	sum := 0
	for i := range 14 {
		d := int(body[i] - '0')
		if i%2 == 1 {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return body + strconv.Itoa((10-sum%10)%10)
}

// addReserved stores two modem-owned entries above the user range, as real modems list
// them; their content is a placeholder and they cannot be read, written or deleted.
func (m *Modem) addReserved() {
	for _, k := range []CredKey{{Tag: 4294967292, Type: 10}, {Tag: 4294967293, Type: 11}} {
		content := fmt.Sprintf("reserved %d,%d", k.Tag, k.Type)
		m.creds[k] = Credential{Tag: k.Tag, Type: k.Type, Content: content, SHA256: shaHex(content)}
	}
}

func shaHex(s string) string {
	h := sha256.Sum256([]byte(s))
	return fmt.Sprintf("%X", h[:])
}

// UUID returns the device UUID in 8-4-4-4-12 lower-case form.
func (m *Modem) UUID() string { return attest.FormatUUID(m.uuid) }

// FirmwareUUID returns the modem firmware UUID (%XMODEMUUID).
func (m *Modem) FirmwareUUID() string { return attest.FormatUUID(m.fwUUID) }

// IMEI returns the 15-digit IMEI (+CGSN).
func (m *Modem) IMEI() string { return m.imei }

// Chip returns the simulated chip name.
func (m *Modem) Chip() string { return m.cfg.Chip }

// IdentityPublicKey returns the device identity public key.
func (m *Modem) IdentityPublicKey() *ecdsa.PublicKey { return &m.identity.PublicKey }

// PublicKeyPEM returns the device identity public key as a "PUBLIC KEY" PEM block, the
// form a service registers.
func (m *Modem) PublicKeyPEM() []byte {
	b, err := attest.MarshalPublicKeyPEM(&m.identity.PublicKey)
	if err != nil { // a P-256 key always marshals
		panic("simmodem: marshal identity public key: " + err.Error())
	}
	return b
}

// AttestationToken returns a fresh attestation token, as %ATTESTTOKEN would answer it.
func (m *Modem) AttestationToken() (string, error) {
	return m.attestToken([16]byte{}, true)
}

// FunctionalMode returns the +CFUN mode.
func (m *Modem) FunctionalMode() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfun
}

// CMEE returns the +CMEE setting (0 plain ERROR, 1 numeric +CME ERROR).
func (m *Modem) CMEE() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmee
}

// Echo reports whether command echo (ATE1) is on.
func (m *Modem) Echo() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.echo
}

// Registered reports whether the modem has reported network registration.
func (m *Modem) Registered() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.registered
}

// Time returns the modem clock (UTC) and whether it is valid.
func (m *Modem) Time() (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nowLocked(), m.clockValid
}

func (m *Modem) nowLocked() time.Time { return m.cfg.Clock().Add(m.clockOff).UTC() }

// Credentials returns a copy of the credential store.
func (m *Modem) Credentials() map[CredKey]Credential {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.creds)
}

// Credential returns one stored credential.
func (m *Modem) Credential(tag uint32, typ int) (Credential, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.creds[CredKey{tag, typ}]
	return c, ok
}

// SetCredential stores a credential directly (test setup), bypassing the CFUN check.
func (m *Modem) SetCredential(tag uint32, typ int, content string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.creds[CredKey{tag, typ}] = Credential{Tag: tag, Type: typ, Content: content, SHA256: shaHex(content)}
}

// maxCommandLog bounds CommandLog for long-running simulators; the oldest half is dropped.
const maxCommandLog = 8192

// CommandLog returns the command lines received, in order, as executed. A long-running
// modem forgets the oldest: it keeps at least the latest 4096.
func (m *Modem) CommandLog() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.log)
}

// Stats returns the counters.
func (m *Modem) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats
}

// Stall makes the modem stop answering: commands keep arriving but are executed only
// after Resume, so their answers come late.
func (m *Modem) Stall() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.stalled {
		m.stalled = true
		m.stallCh = make(chan struct{})
	}
}

// Resume ends a Stall.
func (m *Modem) Resume() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stalled {
		m.stalled = false
		close(m.stallCh)
	}
}

// SetGarbage writes n garbage lines (control bytes and invalid UTF-8, or blank) before and
// after every answer; 0 turns it off.
func (m *Modem) SetGarbage(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.garbage = max(n, 0)
}

// SetURCStorm emits perSecond unsolicited lines per second on every served stream, and one
// before every line of every answer (so URCs land inside responses); 0 turns it off.
func (m *Modem) SetURCStorm(perSecond int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stormRate = max(perSecond, 0)
	close(m.stormCh)
	m.stormCh = make(chan struct{})
}

// UnplugDuring cuts the line in the middle of the answer to the next command that starts
// with prefix (case-insensitive, e.g. "AT%KEYGEN"). Over a pty the master is closed, so the
// client sees a hang-up; Serve returns ErrUnplugged.
func (m *Modem) UnplugDuring(prefix string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.unplugNext = prefix
}

// CMEErrorFor makes every command starting with prefix (case-insensitive) answer
// +CME ERROR: code (plain ERROR while CMEE is 0) without executing, until ClearFaults.
func (m *Modem) CMEErrorFor(prefix string, code int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cmeFor[prefix] = code
}

// DropEcho suppresses the echo of the next n commands even while ATE1 is on.
func (m *Modem) DropEcho(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dropEcho = max(n, 0)
}

// SplitWrites writes every answer in pieces of n bytes with a short pause between them, so
// the client sees chunked reads; 0 turns it off.
func (m *Modem) SplitWrites(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.splitWrites = max(n, 0)
}

// ClearFaults turns every fault off (and resumes a stall).
func (m *Modem) ClearFaults() {
	m.Resume()
	m.SetURCStorm(0)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.garbage, m.unplugNext, m.dropEcho, m.splitWrites = 0, "", 0, 0
	clear(m.cmeFor)
}

// Unplug cuts every stream the modem serves right now, as if the USB cable were pulled:
// a pty's master is closed (see PTY.Unplug, which also allows Replug) and Serve returns
// ErrUnplugged. A stream blocked in a read returns once its rw is closed or its deadline hits.
func (m *Modem) Unplug() {
	for _, s := range m.liveSessions() {
		s.unplug()
	}
}
