package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/rootca"
	"github.com/provisiond/provisiond/internal/store"
)

func TestNewValidates(t *testing.T) {
	deps := Deps{
		OpenModem: func(context.Context) (Modem, error) { return nil, errors.New("x") },
		Dial:      func(context.Context) (Session, error) { return nil, errors.New("x") },
		Store:     store.NewMemory(store.Limits{}),
	}
	with := func(f func(*Config)) Config { c := testConfig(); f(&c); return c }
	tests := []struct {
		name    string
		cfg     Config
		deps    func(*Deps)
		wantErr string
	}{
		{name: "the config file's defaults are valid", cfg: testConfig()},
		{name: "explicit zeros the config allows", cfg: with(func(c *Config) {
			c.JWTValidTime, c.RootCASecTag, c.JWTSecTag, c.Spread = 0, 0, 0, 0
		})},
		{name: "zero config", cfg: Config{}, wantErr: "transport"},
		{name: "bad transport", cfg: with(func(c *Config) { c.Transport = "smoke" }), wantErr: "transport"},
		{name: "bad uplink", cfg: with(func(c *Config) { c.Uplink = "wifi" }), wantErr: "uplink"},
		{name: "too many commands", cfg: with(func(c *Config) { c.MaxCommands = 21 }), wantErr: "max commands"},
		{name: "fewer commands than the config allows", cfg: with(func(c *Config) { c.MaxCommands = 4 }), wantErr: "max commands"},
		{name: "zero buffer", cfg: with(func(c *Config) { c.RxBufSize = 0 }), wantErr: "buffer"},
		{name: "negative tag", cfg: with(func(c *Config) { c.JWTSecTag = -1 }), wantErr: "sec tags"},
		{name: "sub-second jwt", cfg: with(func(c *Config) { c.JWTValidTime = time.Millisecond }), wantErr: "jwt valid time"},
		{name: "long jwt", cfg: with(func(c *Config) { c.JWTValidTime = time.Hour }), wantErr: "jwt valid time"},
		{name: "zero interval", cfg: with(func(c *Config) { c.Interval = 0 }), wantErr: "interval"},
		{name: "negative durations", cfg: with(func(c *Config) { c.Spread = -time.Second }), wantErr: "durations"},
		{name: "exec without command", cfg: with(func(c *Config) { c.OnFinished = OnFinishedExec }), wantErr: "on_finished_exec"},
		{name: "bad on_finished", cfg: with(func(c *Config) { c.OnFinished = "reboot" }), wantErr: "on_finished"},
		{name: "empty prefix", cfg: with(func(c *Config) { c.StorePrefix = "" }), wantErr: "prefix"},
		{name: "reserved prefix", cfg: with(func(c *Config) { c.StorePrefix = "provisiond" }), wantErr: "prefix"},
		{name: "reserved prefix subtree", cfg: with(func(c *Config) { c.StorePrefix = "provisiond/x" }), wantErr: "prefix"},
		{name: "missing deps", cfg: testConfig(), deps: func(d *Deps) { d.Store = nil }, wantErr: "required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dd := deps
			if tt.deps != nil {
				tt.deps(&dd)
			}
			d, err := New(tt.cfg, dd)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				// Nothing is filled in or replaced: the config package owns the defaults.
				if got := d.Config(); got != tt.cfg {
					t.Errorf("New changed the config:\n got %+v\nwant %+v", got, tt.cfg)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New = %v, want ErrInvalidConfig naming %q", err, tt.wantErr)
			}
		})
	}
}

func TestRootCADefaultFromTransport(t *testing.T) {
	for _, tr := range []string{"http", "coap"} {
		cfg := testConfig()
		cfg.Transport, cfg.ProvisionRootCA = tr, true
		c, err := cfg.validate()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := rootca.ForTransport(tr)
		if c.RootCAPEM != want {
			t.Errorf("%s: root CA PEM not the transport's", tr)
		}
	}
}

func TestStatusJSON(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	h.cloud.push(t, at("a", "%A", ""))
	if _, err := h.d.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(h.d.Status())
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"state", "last_attempt", "device_uuid", "modem_version", "cursor", "outbox_pending", "interval_seconds", "events", "attempts"} {
		if _, ok := got[k]; !ok {
			t.Errorf("status JSON lacks %q: %s", k, b)
		}
	}
	last := got["last_attempt"].(map[string]any)
	if last["event"] != "NO_COMMANDS" || last["executed"] != 1.0 || last["failed"] != 0.0 {
		t.Errorf("last_attempt = %v", last)
	}
	if got["cursor"] != "a" || got["device_uuid"] != h.m.uuid || got["interval_seconds"] != 86400.0 {
		t.Errorf("status = %s", b)
	}
	evs := got["events"].([]any)
	if len(evs) == 0 || evs[0].(map[string]any)["event"] != "START" {
		t.Errorf("events = %v", evs)
	}
}

func TestEventRing(t *testing.T) {
	var r eventRing
	for i := range eventRingSize + 5 {
		r.push(EventRecord{Attempt: i})
	}
	l := r.list()
	if len(l) != eventRingSize || l[0].Attempt != 5 || l[len(l)-1].Attempt != eventRingSize+4 {
		t.Errorf("ring = %d entries from %d to %d", len(l), l[0].Attempt, l[len(l)-1].Attempt)
	}
}

func TestParseInterval(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"3600", 3600, true},
		{" 60 ", 60, true},
		{"+60", 60, true},
		{"0x10", 16, true},
		{"0X1f", 31, true},
		{"010", 8, true},
		{"0", 0, false},
		{"-1", 0, false},
		{"", 0, false},
		{"0x", 0, false},
		{"1_000", 0, false},
		{"0b11", 0, false},
		{"08", 0, false},
		{"+-1", 0, false},
		{"99999999999999999999", 0, false},
		{fmt.Sprint(int64(1) << 40), 0, false}, // too long for a time.Duration
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := parseInterval(tt.in)
			if got != tt.want || ok != tt.ok {
				t.Errorf("parseInterval(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestIdentityQueries(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	if _, err := h.d.AttestationToken(context.Background()); !errors.Is(err, ErrNoModem) {
		t.Errorf("token without modem: %v", err)
	}
	if _, err := h.d.DeviceUUID(context.Background()); !errors.Is(err, ErrNoModem) {
		t.Errorf("uuid without modem: %v", err)
	}
	h.d.mu.Lock()
	h.d.modem = h.m
	h.d.mu.Unlock()
	if tok, err := h.d.AttestationToken(context.Background()); err != nil || tok != h.m.token {
		t.Errorf("token = %q, %v", tok, err)
	}
	if id, err := h.d.DeviceUUID(context.Background()); err != nil || id != h.m.uuid {
		t.Errorf("uuid = %q, %v", id, err)
	}
	n := len(h.m.commands())
	if _, err := h.d.DeviceUUID(context.Background()); err != nil || len(h.m.commands()) != n {
		t.Error("device UUID not cached")
	}
}

func TestNotify(t *testing.T) {
	res := Result{Event: EventFailed, Reason: "busy", Executed: 2, Failed: 1}
	next := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	want := "last attempt: FAILED (2 executed, 1 failed): busy; next 2026-01-02T03:04:05Z"
	if got := notifyText(res, next, 0); got != want {
		t.Errorf("notifyText = %q, want %q", got, want)
	}
	want = "last attempt: FAILED (2 executed, 1 failed): busy; next 2026-01-02T03:04:05Z (backing off 2m0s)"
	if got := notifyText(res, next, 2*time.Minute); got != want {
		t.Errorf("notifyText with backoff = %q, want %q", got, want)
	}
}
