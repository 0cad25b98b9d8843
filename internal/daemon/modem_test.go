package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/atmodem"
	"github.com/provisiond/provisiond/internal/rootca"
	"github.com/provisiond/provisiond/internal/store"
)

func upperSHA(s string) string {
	sum := sha256.Sum256([]byte(s))
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

func TestRootCA(t *testing.T) {
	tests := []struct {
		name      string
		cfg       func(*Config)
		modem     func(*fakeModem)
		wantWrite bool
		wantLog   string
		wantCmds  []string // exact sequence of CMNG/CFUN commands
	}{
		{
			name:      "written with the modem offline when missing",
			wantWrite: true,
			wantLog:   "root CA written and verified",
			wantCmds:  []string{"AT%CMNG=1,189298", "AT+CFUN?", "AT+CFUN=4", "AT%CMNG=0,189298,0", "AT%CMNG=1,189298", "AT+CFUN=1"},
		},
		{
			name: "present: never overwritten",
			modem: func(m *fakeModem) {
				m.creds = []atmodem.Credential{{SecTag: 189298, Type: 0, SHA256: "AB"}}
			},
			wantCmds: []string{"AT%CMNG=1,189298"},
		},
		{
			name:      "other types in the tag do not count",
			modem:     func(m *fakeModem) { m.creds = []atmodem.Credential{{SecTag: 189298, Type: 1}} },
			wantWrite: true,
			wantLog:   "root CA written and verified",
		},
		{
			name:     "disabled",
			cfg:      func(c *Config) { c.ProvisionRootCA = false },
			wantCmds: nil,
		},
		{
			name:      "offline modem not switched",
			modem:     func(m *fakeModem) { m.cfun = 4 },
			wantWrite: true,
			wantCmds:  []string{"AT%CMNG=1,189298", "AT+CFUN?", "AT%CMNG=0,189298,0", "AT%CMNG=1,189298"},
		},
		{
			name: "hash of the CRLF form accepted",
			modem: func(m *fakeModem) {
				m.listSHA = func(p string) string { return upperSHA(strings.ReplaceAll(p, "\n", "\r\n")) }
			},
			wantWrite: true,
			wantLog:   "root CA written and verified",
		},
		{
			name:      "no hash listed by old firmware",
			modem:     func(m *fakeModem) { m.listSHA = func(string) string { return "" } },
			wantWrite: true,
			wantLog:   "root CA written; this modem firmware lists no hash to verify it",
		},
		{
			name:      "hash mismatch reported",
			modem:     func(m *fakeModem) { m.listSHA = func(string) string { return strings.Repeat("0", 64) } },
			wantWrite: true,
			wantLog:   "root CA provisioning failed",
		},
		{
			name:      "custom tag and PEM",
			cfg:       func(c *Config) { c.RootCASecTag = 42; c.RootCAPEM = rootca.NRFCloudCoAP },
			wantWrite: true,
			wantCmds:  []string{"AT%CMNG=1,42", "AT+CFUN?", "AT+CFUN=4", "AT%CMNG=0,42,0", "AT%CMNG=1,42", "AT+CFUN=1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := rowHarness(t, func(c *Config) {
				c.ProvisionRootCA = true
				if tt.cfg != nil {
					tt.cfg(c)
				}
			}, tt.modem)
			m := h.m
			startMode := m.mode()
			if err := h.d.onModemOpen(context.Background(), m); err != nil {
				t.Fatal(err)
			}
			var got []string
			writes := 0
			for _, c := range m.commands() {
				if strings.HasPrefix(c, "AT%CMNG") || strings.HasPrefix(c, "AT+CFUN") {
					got = append(got, c)
				}
				if strings.HasPrefix(c, "AT%CMNG=0,") {
					writes++
				}
			}
			if tt.wantCmds != nil && !reflect.DeepEqual(got, tt.wantCmds) {
				t.Errorf("commands = %q\nwant %q", got, tt.wantCmds)
			}
			if tt.name == "disabled" && len(got) != 0 {
				t.Errorf("disabled root CA still sent %q", got)
			}
			if (writes == 1) != tt.wantWrite || writes > 1 {
				t.Errorf("%d writes, want write=%v", writes, tt.wantWrite)
			}
			if tt.wantLog != "" && h.logs.FilterMessage(tt.wantLog).Len() == 0 {
				t.Errorf("no log %q", tt.wantLog)
			}
			if m.mode() != startMode {
				t.Errorf("mode = %d not restored", m.mode())
			}
			if hasKey(h.kv, keySavedCFUN) {
				t.Error("saved mode left behind")
			}
			h.d.closeModem(m)
		})
	}
}

// TestRootCAWrittenOnce: the second start finds the CA written by the first.
func TestRootCAWrittenOnce(t *testing.T) {
	cfg := testConfig()
	cfg.ProvisionRootCA = true
	m := newFakeModem()
	for range 2 {
		h := newHarness(t, cfg, m, nil)
		if _, err := h.d.RunOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	writes := 0
	for _, c := range m.commands() {
		if strings.HasPrefix(c, "AT%CMNG=0,") {
			writes++
		}
	}
	if writes != 1 {
		t.Errorf("root CA written %d times, want once", writes)
	}
	if len(m.creds) != 1 || m.creds[0].SHA256 != upperSHA(rootca.AmazonRootCA1) {
		t.Errorf("creds = %+v, want the Amazon root for http", m.creds)
	}
}

func TestRootCAHashMatches(t *testing.T) {
	pem := rootca.AmazonRootCA1
	tests := []struct {
		name   string
		listed string
		want   bool
	}{
		{"as written", upperSHA(pem), true},
		{"lower case", strings.ToLower(upperSHA(pem)), true},
		{"crlf", upperSHA(strings.ReplaceAll(pem, "\n", "\r\n")), true},
		{"no final newline", upperSHA(strings.TrimRight(pem, "\n")), true},
		{"other", upperSHA("x"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rootCAHashMatches(tt.listed, pem); got != tt.want {
				t.Errorf("rootCAHashMatches = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRestoreSavedModeAtStart(t *testing.T) {
	tests := []struct {
		name     string
		saved    string
		wantMode int
		wantCmd  string
	}{
		{"normal", "1", 1, "AT+CFUN=1"},
		{"receive only", "2", 2, "AT+CFUN=2"},
		{"unreadable dropped", "x", 4, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kv := store.NewMemory(store.Limits{})
			if err := kv.Apply([]store.Change{{Key: keySavedCFUN, Value: tt.saved}}); err != nil {
				t.Fatal(err)
			}
			m := newFakeModem()
			m.cfun = 4
			h := newHarness(t, testConfig(), m, kv)
			if err := h.d.onModemOpen(context.Background(), m); err != nil {
				t.Fatal(err)
			}
			if m.mode() != tt.wantMode {
				t.Errorf("mode = %d, want %d", m.mode(), tt.wantMode)
			}
			if cmds := m.commands(); tt.wantCmd != "" && cmds[0] != tt.wantCmd {
				t.Errorf("first command = %q, want %q", cmds[0], tt.wantCmd)
			}
			if hasKey(kv, keySavedCFUN) {
				t.Error("saved mode kept after restore")
			}
			h.d.closeModem(m)
		})
	}
}

func TestModeSaveFailureDoesNotSwitch(t *testing.T) {
	kv := &faultyKV{KV: store.NewMemory(store.Limits{})}
	kv.fail = func(n int, changes []store.Change) error {
		if touches(changes, keySavedCFUN) && !changes[0].Delete {
			return errors.New("disk full")
		}
		return nil
	}
	h := newHarness(t, testConfig(), nil, kv)
	h.cloud.push(t, at("a", "%A", ""))
	res, err := h.d.RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if contains(h.m.commands(), "AT+CFUN=4") || len(h.m.batchCommands()) != 0 {
		t.Errorf("switched or ran without a saved mode: %q", h.m.commands())
	}
	if res.Event != EventFailed || !errors.Is(res.Err, ErrStore) {
		t.Errorf("result = %+v", res)
	}
}

func TestRegisteredURC(t *testing.T) {
	tests := []struct {
		line string
		want bool
	}{
		{"+CEREG: 1", true},
		{"+CEREG: 5,\"002F\",\"0012BEEF\",7", true},
		{"+CEREG: 2", false},
		{"+CEREG:0", false},
		{"+CEREG: 10", false},
		{"%CESQ: 1", false},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			if got := registeredURC(tt.line); got != tt.want {
				t.Errorf("registeredURC(%q) = %v", tt.line, got)
			}
		})
	}
}

func TestWaitRegisteredClosedChannel(t *testing.T) {
	ch := make(chan string)
	close(ch)
	if err := waitRegistered(context.Background(), ch, time.Hour); !errors.Is(err, ErrModemLost) {
		t.Errorf("err = %v, want ErrModemLost", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := waitRegistered(ctx, make(chan string), time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want cancelled", err)
	}
}

func TestGraceContext(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	ctx, stop := graceContext(parent, time.Hour)
	cancel()
	if ctx.Err() != nil {
		t.Error("grace context cancelled with its parent")
	}
	stop()
	if ctx.Err() == nil {
		t.Error("grace context alive after stop")
	}

	parent, cancel = context.WithCancel(context.Background())
	defer cancel()
	ctx, stop = graceContext(parent, time.Nanosecond)
	defer stop()
	cancel()
	<-ctx.Done() // the grace ran out
}

// TestSavedCMEE covers the CMEE value a batch saves before its AT+CMEE=1: left in the store by
// a crash, it is restored when the modem is opened, and by the next batch's end when the
// modem could not take it; it is deleted only once restored.
func TestSavedCMEE(t *testing.T) {
	tests := []struct {
		name     string
		saved    string // provisiond/saved-cmee left by the crash
		cmee     int    // the modem's CMEE after the crash
		batch    bool   // a batch with an AT command is queued
		wantCMEE int
		wantLog  string
	}{
		{name: "crash after AT+CMEE=1 is undone on start", saved: "0", cmee: 1, wantCMEE: 0,
			wantLog: "restoring the CMEE value saved before a stop or crash"},
		{name: "crash with a batch queued", saved: "0", cmee: 1, batch: true, wantCMEE: 0},
		{name: "unreadable value dropped", saved: "x", cmee: 1, wantCMEE: 1,
			wantLog: "saved CMEE value unreadable; dropped"},
		{name: "first batch saves and restores", cmee: 2, batch: true, wantCMEE: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kv := store.NewMemory(store.Limits{})
			if tt.saved != "" {
				if err := kv.Apply([]store.Change{{Key: keySavedCMEE, Value: tt.saved}}); err != nil {
					t.Fatal(err)
				}
			}
			m := newFakeModem()
			m.cmee = tt.cmee
			var savedBeforeSwitch bool
			kv2 := &faultyKV{KV: kv, fail: func(n int, changes []store.Change) error {
				if touches(changes, keySavedCMEE) && !changes[0].Delete {
					m.mu.Lock()
					savedBeforeSwitch = m.cmee != 1
					m.mu.Unlock()
				}
				return nil
			}}
			h := newHarness(t, testConfig(), m, kv2)
			if tt.batch {
				h.cloud.push(t, at("a", "%A", ""))
			}
			if _, err := h.d.RunOnce(context.Background()); err != nil {
				t.Fatal(err)
			}
			m.mu.Lock()
			got := m.cmee
			m.mu.Unlock()
			if got != tt.wantCMEE {
				t.Errorf("modem CMEE = %d, want %d", got, tt.wantCMEE)
			}
			if hasKey(kv, keySavedCMEE) {
				t.Errorf("saved CMEE %q left behind", getKey(kv, keySavedCMEE))
			}
			if tt.saved == "" && tt.batch && !savedBeforeSwitch {
				t.Errorf("CMEE not saved before AT+CMEE=1; modem commands %q", m.commands())
			}
			if tt.batch && !contains(m.commands(), "AT+CMEE=1") {
				t.Errorf("batch ran without AT+CMEE=1: %q", m.commands())
			}
			if tt.wantLog != "" && h.logs.FilterMessage(tt.wantLog).Len() == 0 {
				t.Errorf("no log %q", tt.wantLog)
			}
		})
	}
}

// TestSavedCMEEStoreFailure checks that a batch whose CMEE value cannot be saved does not
// switch CMEE (a crash would leave it at 1 for good) and runs nothing.
func TestSavedCMEEStoreFailure(t *testing.T) {
	kv := &faultyKV{KV: store.NewMemory(store.Limits{}), fail: func(n int, changes []store.Change) error {
		if touches(changes, keySavedCMEE) {
			return syscall.EROFS
		}
		return nil
	}}
	h := newHarness(t, testConfig(), nil, kv)
	h.cloud.push(t, at("a", "%A", ""))
	res, _ := h.d.RunOnce(context.Background())
	if res.Event != EventFailed || !errors.Is(res.Err, ErrStore) {
		t.Errorf("result = %s (%v), want FAILED with ErrStore", res.Event, res.Err)
	}
	if contains(h.m.commands(), "AT+CMEE=1") || len(h.m.batchCommands()) != 0 {
		t.Errorf("modem commands %q: want no AT+CMEE=1 and no batch command", h.m.commands())
	}
}
