package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/provisiond/provisiond/internal/atmodem"
	conf "github.com/provisiond/provisiond/internal/config"
	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/store"
	"github.com/provisiond/provisiond/internal/transport"
)

// Compile-time checks that the real client provides what the daemon declares.
var (
	_ Modem         = (*atmodem.Client)(nil)
	_ urcSubscriber = (*atmodem.Client)(nil)
)

// reply scripts the modem's answer to one batch command.
type reply struct {
	lines []string // information lines
	final string   // "OK" (default), "ERROR", "+CME ERROR: 514", "+CMS ERROR: 1"
	err   error    // a local failure instead (atmodem.ErrTimeout, atmodem.ErrPortLost …)
	// wait, if set, is waited on before answering (to cancel the attempt meanwhile).
	wait chan struct{}
}

// fakeModem is a scripted nRF91: it keeps CFUN, CMEE, clock and credentials, records every
// command as its AT text, and answers batch commands from replies (OK by default).
type fakeModem struct {
	mu         sync.Mutex
	log        []string // every command, helpers included, as AT text
	batch      []string // commands run through Command
	cfun, cmee int
	clockValid bool
	clockSet   []time.Time
	jwtCalls   int
	jwtTTL     int64 // exp - iat of the JWTs made; 0: no exp/iat claims
	jwtErr     error // returned by JWT, for reasons other than the clock
	creds      []atmodem.Credential
	listSHA    func(pem string) string // SHA listed after a write; nil: SHA-256 of the PEM
	replies    map[string]reply
	modeErr    error // FunctionalMode fails with it
	// setModeErr, if set, is asked before each mode switch; a non-nil result fails the
	// switch and leaves the mode as it was (a +CFUN write that timed out).
	setModeErr func(mode int) error
	clockErr   error
	version    string
	token      string
	uuid       string
	// registerOnActivate delivers "+CEREG: 1" to subscribers when CFUN goes to 1.
	registerOnActivate bool
	subs               []chan string
	noSubscribe        bool
	// onCommand runs (without the lock) after a batch command is recorded, before it is
	// answered; crash tests panic from it.
	onCommand func(cmd string)
	// dead makes every call fail with ErrPortLost without being recorded (after a "crash").
	dead bool

	done chan struct{} // guarded by mu; replaced by open after a Close
}

func newFakeModem() *fakeModem {
	return &fakeModem{
		cfun: 1, cmee: 0, clockValid: true, jwtTTL: 300,
		replies: map[string]reply{},
		version: "mfw_nrf91x1_2.0.2", token: "YXR0ZXN0.Y29zZQ", uuid: "504d5632-3739-42fb-80c8-1411df972166",
		done: make(chan struct{}),
	}
}

func (m *fakeModem) record(cmd string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dead {
		return fmt.Errorf("fake: %s: %w", cmd, atmodem.ErrPortLost)
	}
	select {
	case <-m.done:
		return fmt.Errorf("fake: %s: %w", cmd, atmodem.ErrPortLost)
	default:
	}
	m.log = append(m.log, cmd)
	return nil
}

func (m *fakeModem) Command(ctx context.Context, cmd string) (atmodem.Response, error) {
	if err := m.record(cmd); err != nil {
		return atmodem.Response{}, err
	}
	m.mu.Lock()
	m.batch = append(m.batch, cmd)
	r, hook := m.replies[cmd], m.onCommand
	m.mu.Unlock()
	if hook != nil {
		hook(cmd)
	}
	if r.wait != nil {
		select {
		case <-r.wait:
		case <-ctx.Done():
			return atmodem.Response{}, fmt.Errorf("fake: %s: %w", cmd, ctx.Err())
		}
	}
	if r.err != nil {
		if errors.Is(r.err, atmodem.ErrPortLost) {
			m.unplug()
		}
		return atmodem.Response{}, fmt.Errorf("fake: %s: %w", cmd, r.err)
	}
	final := r.final
	if final == "" {
		final = "OK"
	}
	var raw strings.Builder
	for _, l := range r.lines {
		raw.WriteString(l + "\r\n")
	}
	raw.WriteString(final + "\r\n")
	resp := atmodem.Response{Lines: r.lines, Final: final, Raw: raw.String()}
	switch {
	case final == "ERROR":
		return resp, fmt.Errorf("fake: %s: %w", cmd, atmodem.ErrError)
	case strings.HasPrefix(final, "+CME ERROR: "):
		code, _ := strconv.Atoi(strings.TrimPrefix(final, "+CME ERROR: "))
		return resp, fmt.Errorf("fake: %s: %w", cmd, &atmodem.CMEError{Code: code, Raw: final})
	case strings.HasPrefix(final, "+CMS ERROR: "):
		code, _ := strconv.Atoi(strings.TrimPrefix(final, "+CMS ERROR: "))
		return resp, fmt.Errorf("fake: %s: %w", cmd, &atmodem.CMSError{Code: code, Raw: final})
	}
	return resp, nil
}

func (m *fakeModem) FunctionalMode(ctx context.Context) (int, error) {
	if err := m.record("AT+CFUN?"); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfun, m.modeErr
}

func (m *fakeModem) SetFunctionalMode(ctx context.Context, mode int) error {
	if err := m.record("AT+CFUN=" + strconv.Itoa(mode)); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.setModeErr != nil {
		if err := m.setModeErr(mode); err != nil {
			return fmt.Errorf("fake: +CFUN=%d: %w", mode, err)
		}
	}
	m.cfun = mode
	if mode == 1 && m.registerOnActivate {
		for _, s := range m.subs {
			s <- "+CEREG: 2"
			s <- "+CEREG: 1,\"002F\",\"0012BEEF\",7"
		}
	}
	return nil
}

func (m *fakeModem) CMEE(ctx context.Context) (int, error) {
	if err := m.record("AT+CMEE?"); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmee, nil
}

func (m *fakeModem) SetCMEE(ctx context.Context, n int) error {
	if err := m.record("AT+CMEE=" + strconv.Itoa(n)); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cmee = n
	return nil
}

func (m *fakeModem) ShortSWVersion(ctx context.Context) (string, error) {
	if err := m.record("AT%SHORTSWVER"); err != nil {
		return "", err
	}
	return m.version, nil
}

func (m *fakeModem) Clock(ctx context.Context) (time.Time, bool, error) {
	if err := m.record("AT%CCLK?"); err != nil {
		return time.Time{}, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return time.Time{}, m.clockValid, m.clockErr
}

func (m *fakeModem) SetClock(ctx context.Context, t time.Time) error {
	if err := m.record("AT+CCLK"); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clockSet = append(m.clockSet, t)
	m.clockValid = true
	return nil
}

func (m *fakeModem) JWT(ctx context.Context, secTag int, validFor time.Duration) (string, error) {
	if err := m.record(fmt.Sprintf("AT%%JWT=0,%d", int(validFor/time.Second))); err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.clockValid && validFor > 0 {
		// Like the modem: iat and exp need valid time (docs/modem.md §1.3).
		return "", &atmodem.CMEError{Code: 525, Raw: "+CME ERROR: 525"}
	}
	if m.jwtErr != nil {
		return "", m.jwtErr
	}
	m.jwtCalls++
	claims := fmt.Sprintf(`{"iss":"nrf9160.%s","jti":"%d"}`, m.uuid, m.jwtCalls)
	if m.jwtTTL > 0 {
		claims = fmt.Sprintf(`{"iss":"nrf9160.%s","jti":"%d","iat":1700000000,"exp":%d}`, m.uuid, m.jwtCalls, 1700000000+m.jwtTTL)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"ES256","typ":"JWT"}`)) + "." + enc([]byte(claims)) + ".c2ln", nil
}

func (m *fakeModem) AttestationToken(ctx context.Context) (string, error) {
	if err := m.record("AT%ATTESTTOKEN"); err != nil {
		return "", err
	}
	return m.token, nil
}

func (m *fakeModem) DeviceUUID(ctx context.Context) (string, error) {
	if err := m.record("AT%ATTESTTOKEN"); err != nil {
		return "", err
	}
	return m.uuid, nil
}

func (m *fakeModem) Credentials(ctx context.Context, secTag int) ([]atmodem.Credential, error) {
	if err := m.record("AT%CMNG=1," + strconv.Itoa(secTag)); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []atmodem.Credential
	for _, c := range m.creds {
		if c.SecTag == int64(secTag) {
			out = append(out, c)
		}
	}
	return out, nil
}

func (m *fakeModem) WriteCredential(ctx context.Context, secTag, typ int, pem string) error {
	if err := m.record(fmt.Sprintf("AT%%CMNG=0,%d,%d", secTag, typ)); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cfun == 1 || m.cfun == 2 || m.cfun == 21 {
		return &atmodem.CMEError{Code: 518, Raw: "+CME ERROR: 518"}
	}
	sum := sha256.Sum256([]byte(pem))
	sha := strings.ToUpper(hex.EncodeToString(sum[:]))
	if m.listSHA != nil {
		sha = m.listSHA(pem)
	}
	m.creds = append(m.creds, atmodem.Credential{SecTag: int64(secTag), Type: typ, SHA256: sha})
	return nil
}

func (m *fakeModem) Subscribe(prefixes ...string) (<-chan string, func()) {
	ch := make(chan string, 64)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.noSubscribe {
		return ch, func() {}
	}
	m.subs = append(m.subs, ch)
	return ch, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		for i, s := range m.subs {
			if s == ch {
				m.subs = append(m.subs[:i], m.subs[i+1:]...)
			}
		}
	}
}

func (m *fakeModem) Done() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.done
}

func (m *fakeModem) Close() error {
	m.unplug()
	return nil
}

func (m *fakeModem) unplug() {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-m.done:
	default:
		close(m.done)
	}
}

// open gives a new connection to the same modem after a Close, as Deps.OpenModem does.
func (m *fakeModem) open() *fakeModem {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-m.done:
		m.done = make(chan struct{})
	default:
	}
	return m
}

func (m *fakeModem) commands() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.log...)
}

func (m *fakeModem) batchCommands() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.batch...)
}

func (m *fakeModem) mode() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfun
}

// fakeCloud is a scripted Provisioning Service: it serves queued batches in order and
// records fetches and uploads. Dial gives sessions on it.
type fakeCloud struct {
	mu         sync.Mutex
	queue      [][]byte
	fetchErrs  []error // popped per fetch before the queue is looked at; nil entries pass
	uploadErrs []error // popped per upload; nil entries pass
	dialErr    error
	// needRx, when set, is the rxMaxSize the next batch needs: a smaller fetch is refused
	// with a *transport.RxTooSmallError naming it, as the service does.
	needRx     int
	fetches    []transport.FetchRequest
	uploads    [][]proto.Response
	uploadReqs []transport.UploadRequest
	trace      []string // "dial", "fetch", "upload", "close" in order
	sessions   []*fakeSession
	onFetch    func() // runs before a fetch is answered
	onUpload   func() // runs before an upload is answered
}

func (c *fakeCloud) push(t *testing.T, cmds ...proto.Command) {
	t.Helper()
	b, err := proto.EncodeCommands(cmds)
	if err != nil {
		t.Fatalf("encode batch: %v", err)
	}
	c.mu.Lock()
	c.queue = append(c.queue, b)
	c.mu.Unlock()
}

func (c *fakeCloud) pushRaw(b []byte) {
	c.mu.Lock()
	c.queue = append(c.queue, b)
	c.mu.Unlock()
}

func (c *fakeCloud) Dial(ctx context.Context) (Session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.trace = append(c.trace, "dial")
	if c.dialErr != nil {
		return nil, c.dialErr
	}
	s := &fakeSession{c: c, stats: transport.Stats{Handshakes: 1}}
	c.sessions = append(c.sessions, s)
	return s, nil
}

func (c *fakeCloud) allUploads() [][]proto.Response {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]proto.Response(nil), c.uploads...)
}

func (c *fakeCloud) traceSnapshot() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.trace...)
}

// fakeSession counts its traffic as a transport would, so that tests can follow the counts
// into the status: one handshake when dialled, a request per fetch and upload, the bodies as
// bytes (a request line's worth each way besides).
type fakeSession struct {
	c     *fakeCloud
	stats transport.Stats // guarded by c.mu
}

// fakeRequestBytes is what a fake request costs besides its body.
const fakeRequestBytes = 100

func (s *fakeSession) Fetch(ctx context.Context, req transport.FetchRequest) ([]byte, error) {
	c := s.c
	c.mu.Lock()
	hook := c.onFetch
	c.mu.Unlock()
	if hook != nil {
		hook()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.trace = append(c.trace, "fetch")
	c.fetches = append(c.fetches, req)
	s.stats.Requests++
	s.stats.BytesSent += fakeRequestBytes
	s.stats.BytesReceived += fakeRequestBytes
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(c.fetchErrs) > 0 {
		err := c.fetchErrs[0]
		c.fetchErrs = c.fetchErrs[1:]
		if err != nil {
			return nil, err
		}
	}
	if len(c.queue) == 0 {
		return nil, fmt.Errorf("fake fetch: %w", transport.ErrNoCommands)
	}
	if c.needRx > req.RxMaxSize {
		return nil, &transport.RxTooSmallError{RxMaxSize: req.RxMaxSize, Need: c.needRx,
			Status: &transport.StatusError{Transport: "fake", Op: "fetch", Code: "400", Kind: transport.ErrBadRequest,
				Detail: fmt.Sprintf("rxMaxSize %d too small: the next command needs %d bytes", req.RxMaxSize, c.needRx)}}
	}
	b := c.queue[0]
	c.queue = c.queue[1:]
	s.stats.BytesReceived += int64(len(b))
	return b, nil
}

func (s *fakeSession) Upload(ctx context.Context, req transport.UploadRequest) error {
	c := s.c
	c.mu.Lock()
	hook := c.onUpload
	c.mu.Unlock()
	if hook != nil {
		hook()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.trace = append(c.trace, "upload")
	s.stats.Requests++
	s.stats.BytesSent += fakeRequestBytes + int64(len(req.Body))
	s.stats.BytesReceived += fakeRequestBytes
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(c.uploadErrs) > 0 {
		err := c.uploadErrs[0]
		c.uploadErrs = c.uploadErrs[1:]
		if err != nil {
			return err
		}
	}
	rs, err := proto.DecodeResponses(req.Body, 64)
	if err != nil {
		return fmt.Errorf("fake upload: %w", err)
	}
	c.uploads = append(c.uploads, rs)
	c.uploadReqs = append(c.uploadReqs, req)
	return nil
}

func (s *fakeSession) Stats() transport.Stats {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.stats
}

func (s *fakeSession) Close() error {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	s.c.trace = append(s.c.trace, "close")
	return nil
}

// faultyKV wraps a store; fail decides per Apply whether it fails (before writing).
type faultyKV struct {
	KV
	mu    sync.Mutex
	fail  func(n int, changes []store.Change) error
	calls int
}

func (f *faultyKV) Apply(changes []store.Change) error {
	f.mu.Lock()
	f.calls++
	n, fail := f.calls, f.fail
	f.mu.Unlock()
	if fail != nil {
		if err := fail(n, changes); err != nil {
			return err
		}
	}
	return f.KV.Apply(changes)
}

// touches reports whether changes write key.
func touches(changes []store.Change, key string) bool {
	for _, c := range changes {
		if c.Key == key {
			return true
		}
	}
	return false
}

// harness is a daemon on fakes.
type harness struct {
	d     *Daemon
	m     *fakeModem
	cloud *fakeCloud
	kv    KV
	logs  *observer.ObservedLogs
	opens int
}

// testConfig is the config file's defaults, with no root CA to provision and no hooks folder
// (the tests add those where they test them).
func testConfig() Config {
	c := FromFile(conf.Default(), "test")
	c.ProvisionRootCA = false
	c.HooksDir = ""
	c.HookTimeout = 5 * time.Second
	return c
}

func newHarness(t *testing.T, cfg Config, m *fakeModem, kv KV) *harness {
	t.Helper()
	if m == nil {
		m = newFakeModem()
	}
	if kv == nil {
		kv = store.NewMemory(store.Limits{})
	}
	h := &harness{m: m, cloud: &fakeCloud{}, kv: kv}
	core, logs := observer.New(zapcore.DebugLevel)
	h.logs = logs
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	d, err := New(cfg, Deps{
		OpenModem: func(ctx context.Context) (Modem, error) { h.opens++; return h.m.open(), nil },
		Dial:      h.cloud.Dial,
		Store:     kv,
		Logger:    log,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	d.grace = 5 * time.Second
	d.storeWait = time.Millisecond
	h.d = d
	return h
}

// rowHarness builds the harness of a table row: testConfig and a fresh fake modem, each changed
// by the row's function when it has one.
func rowHarness(t *testing.T, cfg func(*Config), modem func(*fakeModem)) *harness {
	t.Helper()
	c := testConfig()
	if cfg != nil {
		cfg(&c)
	}
	m := newFakeModem()
	if modem != nil {
		modem(m)
	}
	return newHarness(t, c, m, nil)
}

// events returns the names of the events kept for Status.
func (h *harness) events() []Event {
	var out []Event
	for _, e := range h.d.Status().Events {
		out = append(out, e.Event)
	}
	return out
}

func at(id, cmd, params string, ignore ...uint64) proto.Command {
	return proto.Command{ID: id, Kind: proto.KindAT, SetCommand: cmd, Parameters: params, IgnoreCMEErrors: ignore}
}

func config(id string, kv ...string) proto.Command {
	c := proto.Command{ID: id, Kind: proto.KindConfig}
	for i := 0; i+1 < len(kv); i += 2 {
		c.Properties = append(c.Properties, proto.Property{Key: kv[i], Value: kv[i+1]})
	}
	return c
}

func finished(id string) proto.Command { return proto.Command{ID: id, Kind: proto.KindFinished} }

func okResp(id, msg string) proto.Response {
	return proto.Response{ID: id, Kind: proto.KindATResponse, Message: msg}
}

func errResp(id string, code uint64, msg string) proto.Response {
	return proto.Response{ID: id, Kind: proto.KindError, CMEError: code, Message: msg}
}

func ack(id string) proto.Response       { return proto.Response{ID: id, Kind: proto.KindConfigAck} }
func finAck(id string) proto.Response    { return proto.Response{ID: id, Kind: proto.KindFinishedAck} }
func getKey(kv KV, key string) string    { v, _ := kv.Get(key); return v }
func hasKey(kv KV, key string) bool      { _, err := kv.Get(key); return err == nil }
func contains(s []string, x string) bool { return indexOf(s, x) >= 0 }

func indexOf(s []string, x string) int {
	for i, v := range s {
		if v == x {
			return i
		}
	}
	return -1
}
