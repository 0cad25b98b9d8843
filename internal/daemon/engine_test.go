package daemon

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/provisiond/provisiond/internal/atmodem"
	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/store"
	"github.com/provisiond/provisiond/internal/transport"
)

// TestOutboxRetry: an upload that fails is delivered by the next attempt before anything is
// fetched, and nothing is executed again.
func TestOutboxRetry(t *testing.T) {
	tests := []struct {
		name        string
		err         error
		wantBackoff bool
	}{
		{"busy backs off", &transport.StatusError{Transport: "http", Op: "upload", Code: "500", Kind: transport.ErrBusy}, true},
		{"timeout backs off", fmt.Errorf("http upload: %w", transport.ErrTimeout), true},
		{"dropped connection", fmt.Errorf("http upload: %w", transport.ErrShutdown), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(), nil, nil)
			h.cloud.push(t, at("a", "%A", ""), config("c", "provisioning/x", "1"), finished("f"))
			h.cloud.uploadErrs = []error{tt.err}
			h.d.running.Store(true) // drive attempts directly, as Run does
			if err := h.d.loadState(h.d.config()); err != nil {
				t.Fatal(err)
			}
			if err := h.d.onModemOpen(context.Background(), h.m); err != nil {
				t.Fatal(err)
			}
			o := h.d.attempt(context.Background())
			if o.res.Event != EventFailed || o.backoff != tt.wantBackoff || !errors.Is(o.res.Err, tt.err) {
				t.Fatalf("first attempt = %+v backoff %v, want FAILED backoff %v", o.res, o.backoff, tt.wantBackoff)
			}
			if !hasKey(h.kv, keyOutbox) {
				t.Fatal("outbox not kept after the failed upload")
			}
			if st := h.d.Status(); st.OutboxPending != 3 {
				t.Errorf("status outbox_pending = %d, want 3", st.OutboxPending)
			}
			if hasKey(h.kv, testConfig().StorePrefix+"/"+subkeyCursor) {
				t.Error("cursor persisted although the upload failed")
			}
			h.cloud.mu.Lock()
			h.cloud.trace = nil
			h.cloud.mu.Unlock()

			o = h.d.attempt(context.Background())
			if o.res.Event != EventDone || !o.res.Finished {
				t.Fatalf("second attempt = %+v, want DONE", o.res)
			}
			if got := h.cloud.traceSnapshot(); !reflect.DeepEqual(got, []string{"dial", "upload", "close"}) {
				t.Errorf("second attempt talked %v, want the upload first and no fetch after DONE", got)
			}
			if got := h.m.batchCommands(); !reflect.DeepEqual(got, []string{"AT%A="}) {
				t.Errorf("modem ran %q, want AT%%A= once", got)
			}
			want := []proto.Response{okResp("a", "OK\r\n"), ack("c"), finAck("f")}
			if ups := h.cloud.allUploads(); len(ups) != 1 || !reflect.DeepEqual(ups[0], want) {
				t.Errorf("uploads = %v, want %v", ups, want)
			}
			if got := getKey(h.kv, testConfig().StorePrefix+"/"+subkeyCursor); got != "f" {
				t.Errorf("cursor = %q, want f", got)
			}
			if hasKey(h.kv, keyOutbox) {
				t.Error("outbox left after delivery")
			}
			h.d.closeModem(h.m)
		})
	}
}

// TestOutboxAcrossRestart: results kept after a failed upload survive a restart (a new Daemon
// on the same store) and are delivered before the next fetch.
func TestOutboxAcrossRestart(t *testing.T) {
	kv := store.NewMemory(store.Limits{})
	h := newHarness(t, testConfig(), nil, kv)
	h.cloud.push(t, at("a", "%A", ""))
	h.cloud.uploadErrs = []error{transport.ErrShutdown}
	if res, err := h.d.RunOnce(context.Background()); err != nil || res.Event != EventFailed {
		t.Fatalf("RunOnce = %+v, %v", res, err)
	}

	h2 := newHarness(t, testConfig(), nil, kv)
	res, err := h2.d.RunOnce(context.Background())
	if err != nil || res.Event != EventNoCommands {
		t.Fatalf("after restart: %+v, %v", res, err)
	}
	if got := h2.cloud.traceSnapshot(); !reflect.DeepEqual(got[:3], []string{"dial", "upload", "fetch"}) {
		t.Errorf("after restart talked %v, want upload before fetch", got)
	}
	if got := h2.cloud.fetches[0].After; got != "a" {
		t.Errorf("fetch after=%q, want a", got)
	}
	if len(h2.m.batchCommands()) != 0 {
		t.Errorf("restart re-executed %q", h2.m.batchCommands())
	}
}

// TestJournalRecovery simulates crashes by leaving a journal in the store and starting anew.
func TestJournalRecovery(t *testing.T) {
	rec := func(r proto.Response) record { return toRecord(r) }
	tests := []struct {
		name       string
		journal    journal
		savedCFUN  string
		want       []proto.Response
		wantCursor string
		wantEvent  Event
	}{
		{
			name:       "command interrupted mid-execution",
			journal:    journal{Responses: []record{rec(okResp("a", "OK\r\n"))}, Cursor: "a", Executing: "b"},
			savedCFUN:  "1",
			want:       []proto.Response{okResp("a", "OK\r\n"), errResp("b", 0, interruptedMessage)},
			wantCursor: "b",
			wantEvent:  EventNoCommands,
		},
		{
			name:       "interrupted first command",
			journal:    journal{Executing: "a", Finished: "f"},
			savedCFUN:  "21",
			want:       []proto.Response{errResp("a", 0, interruptedMessage)},
			wantCursor: "a",
			wantEvent:  EventNoCommands,
		},
		{
			name:       "crash between commands keeps the finished ack",
			journal:    journal{Responses: []record{rec(okResp("a", "OK\r\n")), rec(ack("c"))}, Cursor: "c", Finished: "f"},
			want:       []proto.Response{okResp("a", "OK\r\n"), ack("c"), finAck("f")},
			wantCursor: "c",
			wantEvent:  EventDone,
		},
		{
			name:       "failure recorded before the crash",
			journal:    journal{Responses: []record{rec(errResp("a", 514, "+CME ERROR: 514\r\n"))}, Cursor: "a", Finished: "f"},
			want:       []proto.Response{errResp("a", 514, "+CME ERROR: 514\r\n")},
			wantCursor: "a",
			wantEvent:  EventNoCommands,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kv := store.NewMemory(store.Limits{})
			b, _ := json.Marshal(tt.journal)
			changes := []store.Change{{Key: keyJournal, Value: string(b)}}
			m := newFakeModem()
			if tt.savedCFUN != "" {
				changes = append(changes, store.Change{Key: keySavedCFUN, Value: tt.savedCFUN})
				m.cfun = 4 // the crash left it offline
			}
			if err := kv.Apply(changes); err != nil {
				t.Fatal(err)
			}
			h := newHarness(t, testConfig(), m, kv)
			res, err := h.d.RunOnce(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if res.Event != tt.wantEvent {
				t.Errorf("event = %s (%s), want %s", res.Event, res.Reason, tt.wantEvent)
			}
			ups := h.cloud.allUploads()
			if len(ups) == 0 || !reflect.DeepEqual(ups[0], tt.want) {
				t.Errorf("first upload = %v, want %v", ups, tt.want)
			}
			if got := getKey(kv, testConfig().StorePrefix+"/"+subkeyCursor); got != tt.wantCursor {
				t.Errorf("cursor = %q, want %q", got, tt.wantCursor)
			}
			if len(m.batchCommands()) != 0 {
				t.Errorf("recovery executed %q", m.batchCommands())
			}
			for _, k := range []string{keyJournal, keyOutbox, keySavedCFUN} {
				if hasKey(kv, k) {
					t.Errorf("%s left in the store", k)
				}
			}
			if tt.savedCFUN != "" {
				cmds := m.commands()
				if len(cmds) == 0 || cmds[0] != "AT+CFUN="+tt.savedCFUN {
					t.Errorf("first modem command = %q, want the saved mode restored first", cmds)
				}
			}
		})
	}
}

// TestRecoveryWhenUploadFails: a recovered journal is persisted as the outbox even if its
// upload fails, so a second crash loses nothing.
func TestRecoveryWhenUploadFails(t *testing.T) {
	kv := store.NewMemory(store.Limits{})
	b, _ := json.Marshal(journal{Executing: "a"})
	if err := kv.Apply([]store.Change{{Key: keyJournal, Value: string(b)}}); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, testConfig(), nil, kv)
	h.cloud.uploadErrs = []error{transport.ErrBusy}
	res, _ := h.d.RunOnce(context.Background())
	if res.Event != EventFailed || res.Failed != 1 {
		t.Errorf("result = %+v", res)
	}
	if hasKey(kv, keyJournal) || !hasKey(kv, keyOutbox) {
		t.Errorf("store = %v, want the journal turned into the outbox", kv.All())
	}
	if got := h.cloud.traceSnapshot(); contains(got, "fetch") {
		t.Errorf("fetched with results pending: %v", got)
	}
}

func TestLoadStateOddities(t *testing.T) {
	tests := []struct {
		name        string
		state       map[string]string
		wantPending int
	}{
		{"unreadable journal dropped", map[string]string{keyJournal: "{"}, 0},
		{"unreadable outbox dropped", map[string]string{keyOutbox: "nope"}, 0},
		{"empty outbox dropped", map[string]string{keyOutbox: `{"responses":[],"cursor":""}`}, 0},
		{"outbox and journal merged", map[string]string{
			keyOutbox:  `{"responses":[{"id":"a","kind":100,"msg":"OK"}],"cursor":"a"}`,
			keyJournal: `{"responses":[],"executing":"b"}`,
		}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kv := store.NewMemory(store.Limits{})
			for k, v := range tt.state {
				if err := kv.Apply([]store.Change{{Key: k, Value: v}}); err != nil {
					t.Fatal(err)
				}
			}
			h := newHarness(t, testConfig(), nil, kv)
			if err := h.d.loadState(h.d.config()); err != nil {
				t.Fatal(err)
			}
			got := 0
			if h.d.outbox != nil {
				got = len(h.d.outbox.Responses)
			}
			if got != tt.wantPending {
				t.Errorf("pending = %d, want %d", got, tt.wantPending)
			}
			if hasKey(kv, keyJournal) {
				t.Error("journal left in the store")
			}
		})
	}
}

// TestModeRestoredOnCancel: SIGTERM while a command runs lets it finish, restores the
// mode and keeps the results for the next start.
func TestModeRestoredOnCancel(t *testing.T) {
	kv := store.NewMemory(store.Limits{})
	m := newFakeModem()
	release := make(chan struct{})
	m.replies["AT%KEYGEN=1,2,0"] = reply{lines: []string{`%KEYGEN: "x.y"`}, wait: release}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m.onCommand = func(cmd string) {
		cancel()       // SIGTERM arrives while the modem works
		close(release) // and the modem answers afterwards
	}
	h := newHarness(t, testConfig(), m, kv)
	h.cloud.push(t, at("k", "%KEYGEN", "1,2,0"), at("z", "%Z", ""), finished("f"))
	res, err := h.d.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Event != EventFailed || !errors.Is(res.Err, context.Canceled) {
		t.Errorf("result = %+v, want FAILED cancelled", res)
	}
	if got := m.batchCommands(); !reflect.DeepEqual(got, []string{"AT%KEYGEN=1,2,0"}) {
		t.Errorf("modem ran %q", got)
	}
	if m.mode() != 1 {
		t.Errorf("mode = %d, want 1 restored", m.mode())
	}
	if m.cmee != 0 {
		t.Errorf("cmee = %d, want 0 restored", m.cmee)
	}
	var ob outbox
	if err := json.Unmarshal([]byte(getKey(kv, keyOutbox)), &ob); err != nil {
		t.Fatalf("outbox: %v", err)
	}
	want := []record{toRecord(okResp("k", "%KEYGEN: \"x.y\"\r\nOK\r\n"))}
	if !reflect.DeepEqual(ob.Responses, want) || ob.Cursor != "k" {
		t.Errorf("outbox = %+v, want %+v cursor k", ob, want)
	}
}

// TestGraceExpires: a command that does not finish within the grace period after
// cancellation is reported as interrupted; the mode is restored all the same.
func TestGraceExpires(t *testing.T) {
	m := newFakeModem()
	never := make(chan struct{})
	m.replies["AT%HANG="] = reply{wait: never}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m.onCommand = func(string) { cancel() }
	h := newHarness(t, testConfig(), m, nil)
	h.d.grace = time.Millisecond
	h.cloud.push(t, at("h", "%HANG", ""))
	if _, err := h.d.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	var ob outbox
	if err := json.Unmarshal([]byte(getKey(h.kv, keyOutbox)), &ob); err != nil {
		t.Fatal(err)
	}
	if want := []record{toRecord(errResp("h", 0, msgCancelled))}; !reflect.DeepEqual(ob.Responses, want) {
		t.Errorf("outbox = %+v, want %+v", ob.Responses, want)
	}
	if m.mode() != 1 {
		t.Errorf("mode = %d, want 1", m.mode())
	}
}

func TestTransportOutcomes(t *testing.T) {
	tests := []struct {
		name        string
		setup       func(c *fakeCloud, m *fakeModem)
		cfg         func(*Config)
		wantEvent   Event
		wantBackoff bool
		check       func(t *testing.T, h *harness)
	}{
		{
			name: "not claimed",
			setup: func(c *fakeCloud, m *fakeModem) {
				c.fetchErrs = []error{&transport.StatusError{Kind: transport.ErrNotClaimed, Code: "401"}}
			},
			wantEvent: EventFailedDeviceNotClaimed,
			check: func(t *testing.T, h *harness) {
				found := false
				for _, e := range h.logs.FilterField(zap.String("event", string(EventFailedDeviceNotClaimed))).All() {
					for _, f := range e.Context {
						if f.Key == "attestation_token" {
							found = true
							if strings.Contains(f.String, h.m.token) {
								t.Errorf("attestation token logged in full: %q", f.String)
							}
						}
					}
				}
				if !found {
					t.Error("no attestation token fingerprint logged")
				}
				if h.d.jwt.token != "" {
					t.Error("the rejected JWT is still cached")
				}
			},
		},
		{
			name:      "wrong root CA on dial",
			setup:     func(c *fakeCloud, m *fakeModem) { c.dialErr = fmt.Errorf("tls: %w", transport.ErrWrongRootCA) },
			wantEvent: EventFailedWrongRootCA,
		},
		{
			name:        "busy backs off",
			setup:       func(c *fakeCloud, m *fakeModem) { c.fetchErrs = []error{transport.ErrBusy} },
			wantEvent:   EventFailed,
			wantBackoff: true,
		},
		{
			name:        "timeout backs off",
			setup:       func(c *fakeCloud, m *fakeModem) { c.fetchErrs = []error{transport.ErrTimeout} },
			wantEvent:   EventFailed,
			wantBackoff: true,
		},
		{
			name:        "bad request backs off",
			setup:       func(c *fakeCloud, m *fakeModem) { c.fetchErrs = []error{transport.ErrBadRequest} },
			wantEvent:   EventFailed,
			wantBackoff: true,
		},
		{
			name: "any other 4xx backs off",
			setup: func(c *fakeCloud, m *fakeModem) {
				c.fetchErrs = []error{&transport.StatusError{Transport: "coap", Op: "fetch", Code: "4.04", Kind: transport.ErrUnsupported}}
			},
			wantEvent:   EventFailed,
			wantBackoff: true,
		},
		{
			name: "an unexpected 2xx does not back off",
			setup: func(c *fakeCloud, m *fakeModem) {
				c.fetchErrs = []error{&transport.StatusError{Transport: "http", Op: "fetch", Code: "201", Kind: transport.ErrUnsupported}}
			},
			wantEvent: EventFailed,
		},
		{
			name: "refused as too large: retried at once with the size named",
			setup: func(c *fakeCloud, m *fakeModem) {
				b, _ := proto.EncodeCommands([]proto.Command{config("big", "app/cert", strings.Repeat("x", 2900)), finished("end")})
				c.pushRaw(b)
				c.needRx = 3000
			},
			cfg:       func(c *Config) { c.RxBufSize, c.RxBufMax = 1024, 4096 },
			wantEvent: EventDone,
			check: func(t *testing.T, h *harness) {
				f := h.cloud.fetches
				if len(f) != 2 || f[0].RxMaxSize != 1024 || f[1].RxMaxSize != 3000 {
					t.Fatalf("fetches %+v, want rxMaxSize 1024 then 3000", f)
				}
				if f[1].After != f[0].After || f[1].Limit != f[0].Limit || f[1].TxMaxSize != f[0].TxMaxSize {
					t.Errorf("the retry is not the same fetch: %+v then %+v", f[0], f[1])
				}
				if got := getKey(h.kv, "app/cert"); len(got) != 2900 {
					t.Errorf("the big config value was stored with %d bytes, want 2900", len(got))
				}
				logged := h.logs.FilterMessageSnippet("retrying at once").FilterField(zap.Int("needed", 3000)).Len()
				if logged != 1 {
					t.Errorf("%d log entries about the retry, want 1", logged)
				}
			},
		},
		{
			name: "refused as too large past the cap: own reason, backs off",
			setup: func(c *fakeCloud, m *fakeModem) {
				b, _ := proto.EncodeCommands([]proto.Command{at("big", "%CMNG", "0,42,0,\"x\"")})
				c.pushRaw(b)
				c.needRx = 70000
			},
			wantEvent:   EventFailed,
			wantBackoff: true,
			check: func(t *testing.T, h *harness) {
				if n := len(h.cloud.fetches); n != 1 {
					t.Errorf("%d fetches, want 1 (no retry past the cap)", n)
				}
				last := h.d.Status().LastAttempt
				if last == nil || !strings.Contains(last.Reason, "provisioning.rx_buf_max 65536") || !strings.Contains(last.Reason, "70000") {
					t.Errorf("status reason %+v does not name the size and the key to raise", last)
				}
				if len(h.m.batchCommands()) != 0 {
					t.Errorf("ran %q", h.m.batchCommands())
				}
			},
		},
		{
			name:      "no valid time and not allowed to set it",
			setup:     func(c *fakeCloud, m *fakeModem) { m.clockValid = false },
			cfg:       func(c *Config) { c.SetClockFromHost = false },
			wantEvent: EventFailedNoValidDatetime,
			check: func(t *testing.T, h *harness) {
				for _, c := range h.m.commands() {
					if strings.HasPrefix(c, "AT%JWT") || c == "AT+CCLK" {
						t.Errorf("sent %s without a valid time", c)
					}
				}
				if len(h.cloud.traceSnapshot()) != 0 {
					t.Error("contacted the service without a JWT")
				}
			},
		},
		{
			name: "modem clock unreadable backs off",
			// The JWT fails for want of time, and the clock question that follows times out.
			setup: func(c *fakeCloud, m *fakeModem) {
				m.clockValid = false
				m.clockErr = fmt.Errorf("x: %w", atmodem.ErrTimeout)
			},
			wantEvent:   EventFailed,
			wantBackoff: true,
		},
		{
			name: "malformed batch: nothing executed or uploaded",
			setup: func(c *fakeCloud, m *fakeModem) {
				c.pushRaw([]byte{0x81, 0x82, 0x61, 0x78}) // truncated
			},
			wantEvent: EventFailed,
			check: func(t *testing.T, h *harness) {
				if len(h.m.batchCommands()) != 0 || len(h.cloud.allUploads()) != 0 {
					t.Errorf("ran %q, uploaded %v", h.m.batchCommands(), h.cloud.allUploads())
				}
				if last := h.d.Status().LastAttempt; last == nil || last.Event != EventFailed {
					t.Errorf("status last attempt = %+v, want FAILED", last)
				}
			},
		},
		{
			name: "streamed batch with bytes after it: run as the device runs it, with a warning",
			setup: func(c *fakeCloud, m *fakeModem) {
				// [_ ["a", 1, {_ "k": "v"}], ["x", 2]] with a non-minimal type head, then 2 bytes.
				c.pushRaw([]byte{0x9f, 0x83, 0x61, 'a', 0x01, 0xbf, 0x61, 'k', 0x61, 'v', 0xff,
					0x82, 0x61, 'x', 0x18, 0x02, 0xff, 0x00, 0x00})
			},
			wantEvent: EventDone,
			check: func(t *testing.T, h *harness) {
				if got := getKey(h.kv, "k"); got != "v" {
					t.Errorf("k = %q, want v", got)
				}
				ups := h.cloud.allUploads()
				if len(ups) != 1 || !reflect.DeepEqual(ups[0], []proto.Response{ack("a"), finAck("x")}) {
					t.Errorf("uploads %v, want [a ack, x finished ack]", ups)
				}
				if h.logs.FilterMessage("bytes after the batch ignored").FilterField(zap.Int("trailing_bytes", 2)).Len() != 1 {
					t.Error("no warning about the 2 trailing bytes")
				}
			},
		},
		{
			name: "too many commands: nothing executed or uploaded",
			setup: func(c *fakeCloud, m *fakeModem) {
				var cmds []proto.Command
				for i := range 6 {
					cmds = append(cmds, at(fmt.Sprint(i), "%A", ""))
				}
				b, _ := proto.EncodeCommands(cmds)
				c.pushRaw(b)
			},
			cfg:       func(c *Config) { c.MaxCommands = 5 },
			wantEvent: EventFailedTooManyCommands,
			check: func(t *testing.T, h *harness) {
				if len(h.m.batchCommands()) != 0 || len(h.cloud.allUploads()) != 0 {
					t.Errorf("ran %q, uploaded %v", h.m.batchCommands(), h.cloud.allUploads())
				}
				if h.cloud.fetches[0].Limit != 5 {
					t.Errorf("limit = %d, want 5", h.cloud.fetches[0].Limit)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := rowHarness(t, tt.cfg, nil)
			m := h.m
			if tt.setup != nil {
				tt.setup(h.cloud, m)
			}
			h.d.running.Store(true)
			if err := h.d.onModemOpen(context.Background(), m); err != nil {
				t.Fatal(err)
			}
			h.d.startHooks()
			o := h.d.attempt(context.Background())
			h.d.stopHooks()
			if o.res.Event != tt.wantEvent || o.backoff != tt.wantBackoff {
				t.Errorf("outcome = %s backoff %v (%s), want %s backoff %v", o.res.Event, o.backoff, o.res.Reason, tt.wantEvent, tt.wantBackoff)
			}
			evs := eventStrings(h.events())
			if len(evs) < 3 || evs[len(evs)-3] != "START" || evs[len(evs)-2] != string(tt.wantEvent) || evs[len(evs)-1] != "STOP" {
				t.Errorf("events = %v, want START, %s, STOP", evs, tt.wantEvent)
			}
			if tt.check != nil {
				tt.check(t, h)
			}
			h.d.closeModem(m)
		})
	}
}

func TestJWT(t *testing.T) {
	t.Run("reused within and across attempts", func(t *testing.T) {
		h := newHarness(t, testConfig(), nil, nil)
		h.cloud.push(t, at("a", "%A", ""))
		h.cloud.push(t, at("b", "%B", ""))
		h.d.running.Store(true)
		if err := h.d.onModemOpen(context.Background(), h.m); err != nil {
			t.Fatal(err)
		}
		h.d.attempt(context.Background())
		h.d.attempt(context.Background())
		if h.m.jwtCalls != 1 {
			t.Errorf("modem made %d JWTs, want 1 reused", h.m.jwtCalls)
		}
		h.cloud.mu.Lock()
		defer h.cloud.mu.Unlock()
		for _, f := range h.cloud.fetches {
			if f.JWT == "" || f.ModemVersion != "mfw_nrf91x1_2.0.2" || f.ClientVersion != "test" {
				t.Errorf("fetch request = %+v", f)
			}
		}
		for _, u := range h.cloud.uploadReqs {
			if u.JWT == "" {
				t.Error("upload without JWT")
			}
		}
		h.d.closeModem(h.m)
	})
	t.Run("renewed when about to expire", func(t *testing.T) {
		h := newHarness(t, testConfig(), nil, nil)
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		var mu sync.Mutex
		h.d.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		h.d.running.Store(true)
		if err := h.d.onModemOpen(context.Background(), h.m); err != nil {
			t.Fatal(err)
		}
		h.d.attempt(context.Background())
		mu.Lock()
		now = now.Add(300*time.Second - jwtMargin + time.Second)
		mu.Unlock()
		h.d.attempt(context.Background())
		if h.m.jwtCalls != 2 {
			t.Errorf("modem made %d JWTs, want 2", h.m.jwtCalls)
		}
		h.d.closeModem(h.m)
	})
	t.Run("clock set from host", func(t *testing.T) {
		m := newFakeModem()
		m.clockValid = false
		h := newHarness(t, testConfig(), m, nil)
		host := time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("x", 3600))
		h.d.now = func() time.Time { return host }
		if _, err := h.d.RunOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		// The JWT is asked first; its failure (525) makes the daemon read the clock, set it
		// and ask again.
		cmds := m.commands()
		i := indexOf(cmds, "AT%JWT=0,300")
		want := []string{"AT%JWT=0,300", "AT%CCLK?", "AT+CCLK", "AT%JWT=0,300"}
		if i < 0 || len(cmds) < i+len(want) || !reflect.DeepEqual(cmds[i:i+len(want)], want) {
			t.Errorf("commands = %q, want %q", cmds, want)
		}
		if len(m.clockSet) != 1 || !m.clockSet[0].Equal(host) || m.clockSet[0].Location() != time.UTC {
			t.Errorf("clock set to %v, want %v in UTC", m.clockSet, host)
		}
	})
	t.Run("clock asked only when the JWT needs it", func(t *testing.T) {
		h := newHarness(t, testConfig(), nil, nil)
		if _, err := h.d.RunOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		if cmds := h.m.commands(); indexOf(cmds, "AT%CCLK?") >= 0 || indexOf(cmds, "AT%ATTESTTOKEN") >= 0 {
			t.Errorf("commands = %q: the clock or the attestation token read for a modem with time", cmds)
		}
		if got := h.d.Status().DeviceUUID; got != h.m.uuid {
			t.Errorf("device UUID %q, want %q from the JWT's iss", got, h.m.uuid)
		}
	})
	t.Run("JWT error with valid time is the JWT's", func(t *testing.T) {
		m := newFakeModem()
		m.jwtErr = &atmodem.CMEError{Code: 525, Raw: "+CME ERROR: 525"}
		h := newHarness(t, testConfig(), m, nil)
		h.d.running.Store(true)
		if err := h.d.onModemOpen(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		_, err := h.d.token(context.Background(), h.d.config())
		var cme *atmodem.CMEError
		if !errors.As(err, &cme) || cme.Code != 525 || errors.Is(err, ErrNoValidTime) {
			t.Errorf("token: %v, want the JWT's CME 525", err)
		}
		if len(m.clockSet) != 0 || indexOf(m.commands(), "AT%CCLK?") < 0 {
			t.Errorf("commands %q, clock set %v: want the clock read, not set", m.commands(), m.clockSet)
		}
		h.d.closeModem(m)
	})
	t.Run("clock read first when it may not be set, then not again", func(t *testing.T) {
		cfg := testConfig()
		cfg.SetClockFromHost = false
		h := newHarness(t, cfg, nil, nil)
		h.d.running.Store(true)
		if err := h.d.onModemOpen(context.Background(), h.m); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			h.d.jwt.token = "" // expired
			if _, err := h.d.token(context.Background(), h.d.config()); err != nil {
				t.Fatal(err)
			}
		}
		var cmds []string
		for _, c := range h.m.commands() {
			if strings.Contains(c, "CCLK") || strings.HasPrefix(c, "AT%JWT") {
				cmds = append(cmds, c)
			}
		}
		if !reflect.DeepEqual(cmds, []string{"AT%CCLK?", "AT%JWT=0,300", "AT%JWT=0,300"}) {
			t.Errorf("commands = %q, want the clock once, before the first JWT", cmds)
		}
		h.d.closeModem(h.m)
	})
}

func TestJWTReuseUntil(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(payload string) string {
		return "eyJhbGciOiJFUzI1NiJ9." + b64(payload) + ".sig"
	}
	tests := []struct {
		name string
		tok  string
		want time.Duration
	}{
		{"exp minus iat", mk(`{"iat":100,"exp":400}`), 300*time.Second - jwtMargin},
		{"exp only", mk(fmt.Sprintf(`{"exp":%d}`, now.Unix()+120)), 120*time.Second - jwtMargin},
		{"no claims uses the validity asked", mk(`{}`), 200*time.Second - jwtMargin},
		{"short life halves the margin", mk(`{"iat":100,"exp":140}`), 20 * time.Second},
		{"expired", mk(fmt.Sprintf(`{"exp":%d}`, now.Unix()-10)), 0},
		{"not a JWT", "garbage", 200*time.Second - jwtMargin},
		{"bad base64", "a.!!!.c", 200*time.Second - jwtMargin},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := jwtReuseUntil(tt.tok, now, 200*time.Second).Sub(now); got != tt.want {
				t.Errorf("reuse for %s, want %s", got, tt.want)
			}
		})
	}
}

func TestOnFinished(t *testing.T) {
	t.Run("modem-restart goes through CFUN=0", func(t *testing.T) {
		cfg := testConfig()
		cfg.OnFinished = OnFinishedModemRestart
		h := newHarness(t, cfg, nil, nil)
		h.cloud.push(t, finished("f"))
		res, err := h.d.RunOnce(context.Background())
		if err != nil || res.Event != EventDone {
			t.Fatalf("RunOnce = %+v, %v", res, err)
		}
		cmds := h.m.commands()
		i := indexOf(cmds, "AT+CFUN=0")
		if i < 0 || i+1 >= len(cmds) || cmds[i+1] != "AT+CFUN=1" {
			t.Errorf("commands = %q, want AT+CFUN=0 then AT+CFUN=1", cmds)
		}
		if hasKey(h.kv, keySavedCFUN) {
			t.Error("saved mode left behind")
		}
	})
	t.Run("none does nothing", func(t *testing.T) {
		h := newHarness(t, testConfig(), nil, nil)
		h.cloud.push(t, finished("f"))
		if _, err := h.d.RunOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		if contains(h.m.commands(), "AT+CFUN=0") {
			t.Error("restarted the modem with on_finished none")
		}
	})
}

func TestUplinkModem(t *testing.T) {
	t.Run("waits for registration then uploads", func(t *testing.T) {
		cfg := testConfig()
		cfg.Uplink = UplinkModem
		m := newFakeModem()
		m.registerOnActivate = true
		h := newHarness(t, cfg, m, nil)
		h.cloud.push(t, at("a", "%A", ""))
		res, err := h.d.RunOnce(context.Background())
		if err != nil || res.Event != EventNoCommands {
			t.Fatalf("RunOnce = %+v, %v", res, err)
		}
		if len(h.cloud.allUploads()) != 1 {
			t.Error("not uploaded")
		}
		cmds := m.commands()
		if i, j := indexOf(cmds, "AT+CEREG=1"), indexOf(cmds, "AT+CFUN=1"); i < 0 || j < i {
			t.Errorf("commands = %q, want registration reports on before the mode is restored", cmds)
		}
	})
	t.Run("no registration keeps the outbox and backs off", func(t *testing.T) {
		cfg := testConfig()
		cfg.Uplink = UplinkModem
		h := newHarness(t, cfg, nil, nil)
		h.d.regWait = time.Millisecond
		h.cloud.push(t, at("a", "%A", ""))
		h.d.running.Store(true)
		if err := h.d.onModemOpen(context.Background(), h.m); err != nil {
			t.Fatal(err)
		}
		o := h.d.attempt(context.Background())
		if o.res.Event != EventFailed || !o.backoff {
			t.Errorf("outcome = %+v backoff %v", o.res, o.backoff)
		}
		if len(h.cloud.allUploads()) != 0 || !hasKey(h.kv, keyOutbox) {
			t.Error("uploaded without registration, or lost the results")
		}
		if h.m.mode() != 1 {
			t.Error("mode not restored")
		}
		h.d.closeModem(h.m)
	})
}

func TestModemLostDuringBatch(t *testing.T) {
	m := newFakeModem()
	m.replies["AT%B="] = reply{err: atmodem.ErrPortLost}
	h := newHarness(t, testConfig(), m, nil)
	h.cloud.push(t, at("a", "%A", ""), at("b", "%B", ""), at("c", "%C", ""))
	res, err := h.d.RunOnce(context.Background())
	if !errors.Is(err, ErrModemLost) {
		t.Errorf("RunOnce error = %v, want ErrModemLost", err)
	}
	want := []proto.Response{okResp("a", "OK\r\n"), errResp("b", 0, msgPortLost)}
	if ups := h.cloud.allUploads(); len(ups) != 1 || !reflect.DeepEqual(ups[0], want) {
		t.Errorf("uploads = %v, want %v (the cached JWT still works)", ups, want)
	}
	if res.Event != EventFailed {
		t.Errorf("event = %s", res.Event)
	}
	if getKey(h.kv, keySavedCFUN) != "1" {
		t.Errorf("saved mode = %q, want 1 kept for the next start", getKey(h.kv, keySavedCFUN))
	}
}

func TestRunOnceOpenFails(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	h.d.deps.OpenModem = func(context.Context) (Modem, error) { return nil, errors.New("no such device") }
	if _, err := h.d.RunOnce(context.Background()); err == nil {
		t.Error("RunOnce succeeded without a modem")
	}
}

func TestTxBufSizeExceeded(t *testing.T) {
	cfg := testConfig()
	cfg.TxBufSize = 16
	m := newFakeModem()
	m.replies["AT%K="] = reply{lines: []string{strings.Repeat("x", 100)}}
	h := newHarness(t, cfg, m, nil)
	h.cloud.push(t, at("k", "%K", ""))
	if _, err := h.d.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(h.cloud.allUploads()) != 1 {
		t.Error("results over tx_buf_size were not uploaded")
	}
	if h.logs.FilterMessageSnippet("tx_buf_size").Len() == 0 {
		t.Error("no warning about tx_buf_size")
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
