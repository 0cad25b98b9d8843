package daemon

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/provisiond/provisiond/internal/atmodem"
	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/store"
)

func TestBatchResponses(t *testing.T) {
	d4 := []proto.Command{
		at("c1", "%CMNG", "3,42,0", 513),
		config("c2", "provisioning/interval-sec", "3600"),
		finished("c3"),
	}
	tests := []struct {
		name       string
		cfg        func(*Config)
		modem      func(*fakeModem)
		cmds       []proto.Command
		want       []proto.Response
		wantBatch  []string
		wantEvent  Event
		wantFailed int
		wantCursor string
		// next is a second batch queued behind cmds.
		next []proto.Command
		// neverSent are prefixes of commands the modem must not see.
		neverSent []string
		check     func(t *testing.T, h *harness)
	}{
		{
			name:       "vector D4 all succeed",
			cmds:       d4,
			want:       []proto.Response{okResp("c1", "OK\r\n"), ack("c2"), finAck("c3")},
			wantBatch:  []string{"AT%CMNG=3,42,0"},
			wantEvent:  EventDone,
			wantCursor: "c3",
			check: func(t *testing.T, h *harness) {
				if got := getKey(h.kv, "provisioning/interval-sec"); got != "3600" {
					t.Errorf("interval-sec = %q, want 3600", got)
				}
			},
		},
		{
			name:       "ignored CME error counts as success",
			modem:      func(m *fakeModem) { m.replies["AT%CMNG=3,42,0"] = reply{final: "+CME ERROR: 513"} },
			cmds:       d4,
			want:       []proto.Response{okResp("c1", "+CME ERROR: 513\r\n"), ack("c2"), finAck("c3")},
			wantBatch:  []string{"AT%CMNG=3,42,0"},
			wantEvent:  EventDone,
			wantCursor: "c3",
		},
		{
			name:       "vector D6 CME error not ignored stops the batch",
			modem:      func(m *fakeModem) { m.replies["AT%CMNG=3,42,0"] = reply{final: "+CME ERROR: 514"} },
			cmds:       d4,
			want:       []proto.Response{errResp("c1", 514, "+CME ERROR: 514\r\n")},
			wantBatch:  []string{"AT%CMNG=3,42,0"},
			wantEvent:  EventNoCommands,
			wantFailed: 1,
			wantCursor: "c1",
			check: func(t *testing.T, h *harness) {
				if hasKey(h.kv, "provisioning/interval-sec") {
					t.Error("config command after the failure was executed")
				}
			},
		},
		{
			name:       "first failure stops later AT commands",
			modem:      func(m *fakeModem) { m.replies["AT%B="] = reply{final: "+CME ERROR: 518"} },
			cmds:       []proto.Command{at("a", "%A", ""), at("b", "%B", ""), at("c", "%C", ""), finished("f")},
			want:       []proto.Response{okResp("a", "OK\r\n"), errResp("b", 518, "+CME ERROR: 518\r\n")},
			wantBatch:  []string{"AT%A=", "AT%B="},
			wantEvent:  EventNoCommands,
			wantFailed: 1,
			wantCursor: "b",
		},
		{
			// Deviation from the device library, which reports a plain ERROR as success.
			name:       "plain ERROR is a failure with code 0",
			modem:      func(m *fakeModem) { m.replies["AT%X=1"] = reply{final: "ERROR"} },
			cmds:       []proto.Command{at("x", "%X", "1"), at("y", "%Y", "")},
			want:       []proto.Response{errResp("x", 0, "ERROR\r\n")},
			wantBatch:  []string{"AT%X=1"},
			wantEvent:  EventNoCommands,
			wantFailed: 1,
			wantCursor: "x",
		},
		{
			name:       "CMS error is a failure with code 0",
			modem:      func(m *fakeModem) { m.replies["AT+CMGS=1"] = reply{final: "+CMS ERROR: 500"} },
			cmds:       []proto.Command{at("s", "+CMGS", "1")},
			want:       []proto.Response{errResp("s", 0, "+CMS ERROR: 500\r\n")},
			wantBatch:  []string{"AT+CMGS=1"},
			wantEvent:  EventNoCommands,
			wantFailed: 1,
			wantCursor: "s",
		},
		{
			name:       "modem timeout is a local failure",
			modem:      func(m *fakeModem) { m.replies["AT%KEYGEN=17,2,0"] = reply{err: atmodem.ErrTimeout} },
			cmds:       []proto.Command{at("k", "%KEYGEN", "17,2,0"), finished("f")},
			want:       []proto.Response{errResp("k", 0, msgTimeout)},
			wantBatch:  []string{"AT%KEYGEN=17,2,0"},
			wantEvent:  EventNoCommands,
			wantFailed: 1,
			wantCursor: "k",
		},
		{
			name:       "command too long is a local failure",
			modem:      func(m *fakeModem) { m.replies["AT%CMNG=0,1,0,\"x\""] = reply{err: atmodem.ErrCommandTooLong} },
			cmds:       []proto.Command{at("l", "%CMNG", "0,1,0,\"x\"")},
			want:       []proto.Response{errResp("l", 0, msgTooLong)},
			wantBatch:  []string{"AT%CMNG=0,1,0,\"x\""},
			wantEvent:  EventNoCommands,
			wantFailed: 1,
			wantCursor: "l",
		},
		{
			name: "vector D3 response text verbatim",
			modem: func(m *fakeModem) {
				m.replies["AT%KEYGEN=17,2,0"] = reply{lines: []string{`%KEYGEN: "abc.def"`}}
			},
			cmds:       []proto.Command{at("k", "%KEYGEN", "17,2,0")},
			want:       []proto.Response{okResp("k", "%KEYGEN: \"abc.def\"\r\nOK\r\n")},
			wantBatch:  []string{"AT%KEYGEN=17,2,0"},
			wantEvent:  EventNoCommands,
			wantCursor: "k",
		},
		{
			name:       "invalid UTF-8 in modem text is made valid",
			modem:      func(m *fakeModem) { m.replies["AT%T="] = reply{lines: []string{"a\xffb"}} },
			cmds:       []proto.Command{at("t", "%T", "")},
			want:       []proto.Response{okResp("t", "a\uFFFDb\r\nOK\r\n")},
			wantBatch:  []string{"AT%T="},
			wantEvent:  EventNoCommands,
			wantCursor: "t",
		},
		{
			name:       "finished ack is last wherever FINISHED is",
			cmds:       []proto.Command{finished("f"), at("a", "%A", ""), config("c", "k/1", "v")},
			want:       []proto.Response{okResp("a", "OK\r\n"), ack("c"), finAck("f")},
			wantBatch:  []string{"AT%A="},
			wantEvent:  EventDone,
			wantCursor: "c",
		},
		{
			name:       "no finished ack when a later command fails",
			modem:      func(m *fakeModem) { m.replies["AT%A="] = reply{final: "+CME ERROR: 527"} },
			cmds:       []proto.Command{finished("f"), at("a", "%A", "")},
			want:       []proto.Response{errResp("a", 527, "+CME ERROR: 527\r\n")},
			wantBatch:  []string{"AT%A="},
			wantEvent:  EventNoCommands,
			wantFailed: 1,
			wantCursor: "a",
		},
		{
			name: "reserved key refused",
			cmds: []proto.Command{config("c", "provisioning/x", "1", "provisiond/outbox", `{"responses":[]}`), at("a", "%A", "")},
			want: []proto.Response{errResp("c", errnoCode(syscall.EACCES),
				"Unable to store [1](0-indexed) key-value-pair")},
			wantEvent:  EventNoCommands,
			wantFailed: 1,
			wantCursor: "c",
			check: func(t *testing.T, h *harness) {
				if hasKey(h.kv, "provisioning/x") {
					t.Error("a pair of the refused command was stored")
				}
				if hasKey(h.kv, keyOutbox) {
					t.Error("the service wrote the outbox")
				}
			},
		},
		{
			name: "key too long for the store",
			cmds: []proto.Command{config("c", "a", "1", strings.Repeat("k", 300), "2")},
			want: []proto.Response{errResp("c", errnoCode(syscall.E2BIG),
				"Unable to store [1](0-indexed) key-value-pair")},
			wantEvent:  EventNoCommands,
			wantFailed: 1,
			wantCursor: "c",
			check: func(t *testing.T, h *harness) {
				if hasKey(h.kv, "a") {
					t.Error("config write was not all-or-nothing")
				}
			},
		},
		{
			name:       "empty config map is acknowledged",
			cmds:       []proto.Command{config("c")},
			want:       []proto.Response{ack("c")},
			wantEvent:  EventNoCommands,
			wantCursor: "c",
		},
		{
			name:       "config-only batch leaves the modem alone",
			cmds:       []proto.Command{config("c", "provisioning/interval-sec", "60"), finished("f")},
			want:       []proto.Response{ack("c"), finAck("f")},
			wantEvent:  EventDone,
			wantCursor: "f",
			neverSent:  []string{"AT+CFUN", "AT+CMEE"},
		},
		{
			name:       "modem already offline is not switched",
			modem:      func(m *fakeModem) { m.cfun = 4 },
			cmds:       []proto.Command{at("a", "%A", "")},
			want:       []proto.Response{okResp("a", "OK\r\n")},
			wantBatch:  []string{"AT%A="},
			wantEvent:  EventNoCommands,
			wantCursor: "a",
			neverSent:  []string{"AT+CFUN="},
		},
		{
			name:       "modem powered off is not switched",
			modem:      func(m *fakeModem) { m.cfun = 0 },
			cmds:       []proto.Command{at("a", "%A", "")},
			want:       []proto.Response{okResp("a", "OK\r\n")},
			wantBatch:  []string{"AT%A="},
			wantEvent:  EventNoCommands,
			wantCursor: "a",
			neverSent:  []string{"AT+CFUN=4"},
		},
		{
			name:       "CMEE already on is left alone",
			modem:      func(m *fakeModem) { m.cmee = 1 },
			cmds:       []proto.Command{at("a", "%A", "")},
			want:       []proto.Response{okResp("a", "OK\r\n")},
			wantBatch:  []string{"AT%A="},
			wantEvent:  EventNoCommands,
			wantCursor: "a",
			neverSent:  []string{"AT+CMEE="},
		},
		{
			name:       "batches repeat until no commands",
			cmds:       []proto.Command{at("a", "%A", "")},
			want:       []proto.Response{okResp("a", "OK\r\n")},
			wantBatch:  []string{"AT%A=", "AT%B="},
			wantEvent:  EventDone,
			wantCursor: "f",
			next:       []proto.Command{at("b", "%B", ""), finished("f")},
			check: func(t *testing.T, h *harness) {
				ups := h.cloud.allUploads()
				want := []proto.Response{okResp("b", "OK\r\n"), finAck("f")}
				if len(ups) != 2 || !reflect.DeepEqual(ups[1], want) {
					t.Errorf("uploads = %v, want second %v", ups, want)
				}
				if got := h.cloud.fetches[1].After; got != "a" {
					t.Errorf("second fetch after=%q, want a", got)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := rowHarness(t, tt.cfg, tt.modem)
			startMode := h.m.mode()
			h.cloud.push(t, tt.cmds...)
			if tt.next != nil {
				h.cloud.push(t, tt.next...)
			}
			res, err := h.d.RunOnce(context.Background())
			if err != nil {
				t.Fatalf("RunOnce: %v", err)
			}
			if res.Event != tt.wantEvent || res.Failed != tt.wantFailed {
				t.Errorf("result = %s failed %d (%s), want %s failed %d", res.Event, res.Failed, res.Reason, tt.wantEvent, tt.wantFailed)
			}
			ups := h.cloud.allUploads()
			if len(ups) == 0 || !reflect.DeepEqual(ups[0], tt.want) {
				t.Errorf("upload = %#v\nwant %#v", ups, tt.want)
			}
			if got := h.m.batchCommands(); !reflect.DeepEqual(got, tt.wantBatch) && !(len(got) == 0 && len(tt.wantBatch) == 0) {
				t.Errorf("modem ran %q, want %q", got, tt.wantBatch)
			}
			if got := getKey(h.kv, testConfig().StorePrefix+"/"+subkeyCursor); got != tt.wantCursor {
				t.Errorf("persisted cursor = %q, want %q", got, tt.wantCursor)
			}
			if got := h.m.mode(); got != startMode {
				t.Errorf("modem mode = %d after the batch, want %d", got, startMode)
			}
			for _, k := range []string{keyJournal, keyOutbox, keySavedCFUN} {
				if hasKey(h.kv, k) {
					t.Errorf("%s left in the store: %q", k, getKey(h.kv, k))
				}
			}
			for _, c := range h.m.commands() {
				for _, p := range tt.neverSent {
					if strings.HasPrefix(c, p) {
						t.Errorf("modem got %s", c)
					}
				}
			}
			if tt.check != nil {
				tt.check(t, h)
			}
		})
	}
}

// TestBatchModemSequence checks the exact AT conversation of a batch: CMEE on, the mode
// saved before it is switched, restored after, events around it.
func TestBatchModemSequence(t *testing.T) {
	kv := &faultyKV{KV: store.NewMemory(store.Limits{})}
	var savedBeforeSwitch bool
	m := newFakeModem()
	kv.fail = func(n int, changes []store.Change) error {
		if touches(changes, keySavedCFUN) && !changes[0].Delete {
			savedBeforeSwitch = !contains(m.commands(), "AT+CFUN=4")
		}
		return nil
	}
	h := newHarness(t, testConfig(), m, kv)
	h.cloud.push(t, at("a", "%A", ""), at("b", "%B", ""))
	if _, err := h.d.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range m.commands() {
		if !strings.HasPrefix(c, "AT%JWT") && c != "AT%CCLK?" && c != "AT%SHORTSWVER" && c != "AT%ATTESTTOKEN" {
			got = append(got, c)
		}
	}
	want := []string{"AT+CMEE?", "AT+CMEE=1", "AT+CFUN?", "AT+CFUN=4", "AT%A=", "AT%B=", "AT+CMEE=0", "AT+CFUN=1"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("modem conversation = %q\nwant %q", got, want)
	}
	if !savedBeforeSwitch {
		t.Error("the mode was not stored before +CFUN=4")
	}
	evs := h.events()
	i, j := indexOf(eventStrings(evs), "NEED_LTE_DEACTIVATED"), indexOf(eventStrings(evs), "NEED_LTE_ACTIVATED")
	if i < 0 || j < i {
		t.Errorf("events = %v, want NEED_LTE_DEACTIVATED then NEED_LTE_ACTIVATED", evs)
	}
}

// TestJournalWritesPerATCommand: the journal is written once per AT command, just before it
// is sent, and that write carries every earlier result; a batch ending with an AT command adds
// one write for its result before the modem is restored, one ending with a config command
// does not (the config write carries it).
func TestJournalWritesPerATCommand(t *testing.T) {
	tests := []struct {
		name string
		cmds []proto.Command
		want []string // per journal write: executing id, then the ids with results
	}{
		{
			name: "AT commands then FINISHED",
			cmds: []proto.Command{at("a", "%A", ""), at("b", "%B", ""), at("c", "%C", ""), finished("f")},
			want: []string{"a:", "b:a", "c:a,b", ":a,b,c"},
		},
		{
			name: "AT commands then a config command",
			cmds: []proto.Command{at("a", "%A", ""), at("b", "%B", ""), config("k", "x/y", "1"), finished("f")},
			want: []string{"a:", "b:a", ":a,b,k"},
		},
		{
			name: "config only",
			cmds: []proto.Command{config("k", "x/y", "1"), finished("f")},
			want: []string{":k"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kv := &faultyKV{KV: store.NewMemory(store.Limits{})}
			var got []string
			kv.fail = func(_ int, changes []store.Change) error {
				for _, c := range changes {
					if c.Key != keyJournal || c.Delete {
						continue
					}
					var j journal
					if err := json.Unmarshal([]byte(c.Value), &j); err != nil {
						t.Errorf("journal %q: %v", c.Value, err)
					}
					ids := make([]string, len(j.Responses))
					for i, r := range j.Responses {
						ids[i] = r.ID
					}
					got = append(got, j.Executing+":"+strings.Join(ids, ","))
				}
				return nil
			}
			h := newHarness(t, testConfig(), nil, kv)
			h.cloud.push(t, tt.cmds...)
			if _, err := h.d.RunOnce(context.Background()); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("journal writes = %q, want %q", got, tt.want)
			}
		})
	}
}

// errnoCode is how the device library reports -errno: stored into a uint32.
func errnoCode(e syscall.Errno) uint64 { return uint64(1<<32 - uint64(e)) }

func eventStrings(evs []Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = string(e)
	}
	return out
}

// failWhen fails, with err, every store write that holds a change matching match.
func failWhen(match func(store.Change) bool, err error) func(int, []store.Change) error {
	return func(_ int, changes []store.Change) error {
		for _, c := range changes {
			if match(c) {
				return err
			}
		}
		return nil
	}
}

// breakAfter lets through the first store write that holds a change matching match and fails
// every write after it with err: a store that breaks for good.
func breakAfter(match func(store.Change) bool, err error) func(int, []store.Change) error {
	broken := false
	return func(_ int, changes []store.Change) error {
		if broken {
			return err
		}
		for _, c := range changes {
			broken = broken || match(c)
		}
		return nil
	}
}

// journalling matches the journal entry written just before command id runs.
func journalling(id string) func(store.Change) bool {
	return func(c store.Change) bool {
		return c.Key == keyJournal && strings.Contains(c.Value, `"executing":"`+id+`"`)
	}
}

func TestBatchStoreFaults(t *testing.T) {
	const d2ID = "e5256918-aba9-4d12-8b87-f2c07affec5d.14"
	tests := []struct {
		name       string
		fail       func(n int, changes []store.Change) error
		cmds       []proto.Command
		wantEvent  Event
		wantErr    error // Result.Err must match it; nil: no error
		wantFailed int
		wantBatch  []string
		// wantUpload is the first upload, as responses or (wantUploadHex) as bytes.
		wantUpload    []proto.Response
		wantUploadHex string
		wantCursor    string
	}{
		{
			name: "vector D2: a settings write fails with EIO",
			fail: failWhen(func(c store.Change) bool { return c.Key == "provisioning/interval-sec" },
				fmt.Errorf("store: write: %w", syscall.EIO)),
			cmds:          []proto.Command{config(d2ID, "provisioning/interval-sec", "99"), finished("f")},
			wantEvent:     EventNoCommands,
			wantFailed:    1,
			wantUploadHex: "8184782765353235363931382d616261392d346431322d386238372d6632633037616666656335642e313418631afffffffb782d556e61626c6520746f2073746f7265205b305d28302d696e646578656429206b65792d76616c75652d70616972",
			wantCursor:    d2ID,
		},
		{
			// FINISHED comes after b, so it is not acknowledged; a is reported and b is
			// fetched again.
			name:       "a command whose start cannot be journalled is not run",
			fail:       failWhen(journalling("b"), fmt.Errorf("store: write: %w", syscall.ENOSPC)),
			cmds:       []proto.Command{at("a", "%A", ""), at("b", "%B", ""), finished("f")},
			wantEvent:  EventFailed,
			wantErr:    ErrStore,
			wantBatch:  []string{"AT%A="},
			wantUpload: []proto.Response{okResp("a", "OK\r\n")},
			wantCursor: "a",
		},
		{
			// The journal in the store still marks a as running: uploading a's result from
			// memory would have it reported twice (see TestUnstoredResultReportedOnce).
			name:      "results that cannot be stored are not uploaded from memory",
			fail:      breakAfter(journalling("a"), fmt.Errorf("store: %w", syscall.EROFS)),
			cmds:      []proto.Command{at("a", "%A", ""), at("b", "%B", "")},
			wantEvent: EventFailed,
			wantErr:   ErrStore,
			wantBatch: []string{"AT%A="},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kv := &faultyKV{KV: store.NewMemory(store.Limits{}), fail: tt.fail}
			h := newHarness(t, testConfig(), nil, kv)
			h.cloud.push(t, tt.cmds...)
			res, err := h.d.RunOnce(context.Background())
			if err != nil {
				t.Fatalf("RunOnce: %v", err)
			}
			if res.Event != tt.wantEvent || res.Failed != tt.wantFailed || !errors.Is(res.Err, tt.wantErr) {
				t.Errorf("result = %+v, want %s failed %d err %v", res, tt.wantEvent, tt.wantFailed, tt.wantErr)
			}
			if got := h.m.batchCommands(); !reflect.DeepEqual(got, tt.wantBatch) && !(len(got) == 0 && len(tt.wantBatch) == 0) {
				t.Errorf("modem ran %q, want %q", got, tt.wantBatch)
			}
			h.cloud.mu.Lock()
			reqs := h.cloud.uploadReqs
			h.cloud.mu.Unlock()
			ups := h.cloud.allUploads()
			wantUploads := 1
			if tt.wantUpload == nil && tt.wantUploadHex == "" {
				wantUploads = 0
			}
			if len(reqs) != wantUploads || len(ups) != wantUploads {
				t.Fatalf("%d uploads, want %d", len(reqs), wantUploads)
			}
			if wantUploads == 0 {
				if h.logs.FilterMessageSnippet("not uploading them").Len() == 0 {
					t.Error("no log line saying the results are not uploaded")
				}
				return
			}
			if tt.wantUploadHex != "" {
				if got := hex.EncodeToString(reqs[0].Body); got != tt.wantUploadHex {
					t.Errorf("upload = %s\nwant %s", got, tt.wantUploadHex)
				}
			} else if !reflect.DeepEqual(ups[0], tt.wantUpload) {
				t.Errorf("upload = %v, want %v", ups[0], tt.wantUpload)
			}
			if got := getKey(kv, testConfig().StorePrefix+"/"+subkeyCursor); got != tt.wantCursor {
				t.Errorf("cursor = %q, want %q", got, tt.wantCursor)
			}
			if got := h.m.mode(); got != 1 {
				t.Errorf("modem mode = %d after the batch, want 1 (restored)", got)
			}
		})
	}
}

func TestAtResponse(t *testing.T) {
	cmd := at("i", "%X", "", 513, 0)
	tests := []struct {
		name string
		resp atmodem.Response
		err  error
		want proto.Response
	}{
		{"ok", atmodem.Response{Raw: "OK\r\n"}, nil, okResp("i", "OK\r\n")},
		{"ignored cme", atmodem.Response{Raw: "+CME ERROR: 513\r\n"}, &atmodem.CMEError{Code: 513, Raw: "+CME ERROR: 513"}, okResp("i", "+CME ERROR: 513\r\n")},
		{"cme without raw", atmodem.Response{}, &atmodem.CMEError{Code: 514, Raw: "+CME ERROR: 514"}, errResp("i", 514, "+CME ERROR: 514\r\n")},
		{"text cme code", atmodem.Response{Raw: "+CME ERROR: no access\r\n"}, &atmodem.CMEError{Code: -1, Raw: "+CME ERROR: no access"}, errResp("i", 0, "+CME ERROR: no access\r\n")},
		{"plain error without raw", atmodem.Response{}, atmodem.ErrError, errResp("i", 0, "ERROR\r\n")},
		{"cms without raw", atmodem.Response{}, &atmodem.CMSError{Code: 5, Raw: "+CMS ERROR: 5"}, errResp("i", 0, "+CMS ERROR: 5\r\n")},
		{"port lost", atmodem.Response{}, atmodem.ErrPortLost, errResp("i", 0, msgPortLost)},
		{"closed", atmodem.Response{}, atmodem.ErrClosed, errResp("i", 0, msgPortLost)},
		{"invalid command", atmodem.Response{}, atmodem.ErrInvalidCommand, errResp("i", 0, msgInvalid)},
		{"line too long", atmodem.Response{}, atmodem.ErrLineTooLong, errResp("i", 0, msgLineTooLong)},
		{"answer too long", atmodem.Response{}, &atmodem.ResponseTooLongError{Limit: 65536, Kept: 64, Dropped: 9}, errResp("i", 0, msgTooMuch)},
		{"#-command refused", atmodem.Response{}, fmt.Errorf("daemon: AT#XRESET: %w", ErrHashCommand), errResp("i", 0, msgHashCommand)},
		{"deadline", atmodem.Response{}, context.DeadlineExceeded, errResp("i", 0, msgTimeout)},
		{"cancelled", atmodem.Response{}, context.Canceled, errResp("i", 0, msgCancelled)},
		{"other", atmodem.Response{}, errors.New("boom"), errResp("i", 0, msgLocal+"boom")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := atResponse(cmd, tt.resp, tt.err); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("atResponse = %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestStoreFailure(t *testing.T) {
	ps := []proto.Property{{Key: "a", Value: "1"}, {Key: "b", Value: "2"}}
	tests := []struct {
		name      string
		err       error
		wantIndex int
		wantErrno syscall.Errno
	}{
		{"value too long names the pair", &store.LimitError{Key: "b", What: "value length", Limit: 1, Got: 2}, 1, syscall.E2BIG},
		{"store full", &store.LimitError{What: "keys", Limit: 1, Got: 2}, 0, syscall.ENOSPC},
		{"read-only file system", fmt.Errorf("write: %w", syscall.EROFS), 0, syscall.EROFS},
		{"invalid", fmt.Errorf("x: %w", store.ErrInvalid), 0, syscall.EINVAL},
		{"unknown", errors.New("boom"), 0, syscall.EIO},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i, errno := storeFailure(ps, tt.err)
			if i != tt.wantIndex || errno != tt.wantErrno {
				t.Errorf("storeFailure = %d, %v; want %d, %v", i, errno, tt.wantIndex, tt.wantErrno)
			}
		})
	}
}

func TestCheckPairs(t *testing.T) {
	tests := []struct {
		name      string
		ps        []proto.Property
		wantBad   bool
		wantIndex int
		wantErrno syscall.Errno
	}{
		{"fine", []proto.Property{{Key: "provisioning/interval-sec", Value: "1"}}, false, 0, 0},
		{"reserved", []proto.Property{{Key: "x", Value: ""}, {Key: "provisiond/journal", Value: ""}}, true, 1, syscall.EACCES},
		{"empty key", []proto.Property{{Key: "", Value: "v"}}, true, 0, syscall.EINVAL},
		{"control char", []proto.Property{{Key: "a\nb", Value: "v"}}, true, 0, syscall.EINVAL},
		{"bad utf8 value", []proto.Property{{Key: "a", Value: "\xff"}}, true, 0, syscall.EINVAL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i, errno, bad := checkPairs(tt.ps)
			if bad != tt.wantBad || (bad && (i != tt.wantIndex || errno != tt.wantErrno)) {
				t.Errorf("checkPairs = %d, %v, %v", i, errno, bad)
			}
		})
	}
}

// TestServiceQuota: config commands cannot fill the store so far that the daemon's own state
// (journal, saved mode, outbox, cursor) no longer fits. The service writes one key per command,
// large values first and smaller ones after, as a hostile service would to leave no room. The
// command that would cross the service's share fails with ENOSPC, and a later AT command with
// a large answer is still journalled, run and reported.
func TestServiceQuota(t *testing.T) {
	type fill struct {
		keys  int
		value string
	}
	tests := []struct {
		name  string
		fills []fill
	}{
		{name: "small keys fill the key count", fills: []fill{{300, "v"}}},
		{name: "large values fill the file", fills: []fill{{20, strings.Repeat("x", 60000)}, {60, strings.Repeat("x", 1000)}, {40, "x"}}},
		// The settings file stores a control character as 6 bytes (10000 of them take 60000),
		// so the share must be counted as stored, not as sent.
		{name: "escaped values fill the file", fills: []fill{{20, strings.Repeat("\x01", 10000)}, {60, strings.Repeat("\x01", 170)}, {40, "\x01"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each row encodes its store some hundred times
			answer := strings.Repeat("y", 8<<10)
			h := rowHarness(t, nil, func(m *fakeModem) { m.replies["AT%A="] = reply{lines: []string{answer}} })
			var cmds []proto.Command
			for _, f := range tt.fills {
				for range f.keys {
					id := fmt.Sprintf("c%03d", len(cmds))
					cmds = append(cmds, config(id, "service/"+id, f.value))
				}
			}
			for batch := range slices.Chunk(cmds, testConfig().MaxCommands) {
				h.cloud.push(t, batch...)
			}
			h.cloud.push(t, at("a", "%A", ""), finished("f"))

			res, err := h.d.RunOnce(context.Background())
			if err != nil {
				t.Fatalf("RunOnce: %v", err)
			}
			if res.Event != EventDone {
				t.Errorf("result = %s (%s), want DONE", res.Event, res.Reason)
			}
			ups := h.cloud.allUploads()
			want := []proto.Response{okResp("a", answer+"\r\nOK\r\n"), finAck("f")}
			if len(ups) == 0 || !reflect.DeepEqual(ups[len(ups)-1], want) {
				t.Errorf("last upload is not the AT answer and the FINISHED ack (%d uploads)", len(ups))
			}
			refused := false
			for _, up := range ups {
				for _, r := range up {
					refused = refused || r.Kind == proto.KindError && r.CMEError == errnoCode(syscall.ENOSPC)
				}
			}
			if !refused {
				t.Error("no config command was refused with ENOSPC")
			}
			keys, size := serviceUsage(h.kv)
			if keys > store.DefaultMaxKeys-16 || size > store.DefaultMaxFileSize/4 {
				t.Errorf("%d keys, %d bytes outside %s; want at most %d, %d", keys, size, reservedPrefix,
					store.DefaultMaxKeys-16, store.DefaultMaxFileSize/4)
			}
		})
	}
}

// serviceUsage counts the keys outside provisiond/ and their size as JSON text.
func serviceUsage(kv KV) (keys, size int) {
	for k, v := range kv.All() {
		if !hasReservedPrefix(k) {
			b, _ := json.Marshal(map[string]string{k: v})
			keys, size = keys+1, size+len(b)
		}
	}
	return keys, size
}

func TestCheckQuota(t *testing.T) {
	// MaxKeys 20 and MaxFileSize 4000 leave the service 4 keys and 1000 bytes.
	lim := store.Limits{MaxKeys: 20, MaxFileSize: 4000}
	pairs := func(kv ...string) []proto.Property { return config("c", kv...).Properties }
	tests := []struct {
		name      string
		stored    []string // key, value, … in the store before the command
		cmd       []proto.Property
		wantIndex int
		wantErr   bool
	}{
		{name: "within the share", cmd: pairs("a", "1", "b", "2", "c", "3", "d", "4")},
		{name: "the fifth key is refused", cmd: pairs("a", "1", "b", "2", "c", "3", "d", "4", "e", "5"),
			wantIndex: 4, wantErr: true},
		{name: "overwriting does not add a key", stored: []string{"a", "1", "b", "2", "c", "3", "d", "4"},
			cmd: pairs("a", "x", "d", "y")},
		{name: "a value over the bytes", stored: []string{"a", "1"}, cmd: pairs("b", "2", "c", strings.Repeat("v", 990)),
			wantIndex: 1, wantErr: true},
		{name: "bytes counted as stored", cmd: pairs("a", strings.Repeat("\x01", 200)), wantErr: true},
		{name: "the daemon's keys do not count",
			stored: []string{keyOutbox, strings.Repeat("o", 2000), keyJournal, "{}", keySavedCFUN, "1"},
			cmd:    pairs("a", "1", "b", "2", "c", "3", "d", strings.Repeat("v", 900))},
		{name: "a store over the share takes what does not grow it",
			stored: []string{"a", "1", "b", "2", "c", "3", "d", "4", "e", "5", "f", strings.Repeat("v", 1000)},
			cmd:    pairs("a", "x", "f", strings.Repeat("w", 1000))},
		{name: "a store over the share refuses a new key",
			stored: []string{"a", "1", "b", "2", "c", "3", "d", "4", "e", "5"},
			cmd:    pairs("a", "x", "g", "1"), wantIndex: 1, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kv := store.NewMemory(lim)
			var changes []store.Change
			for i := 0; i < len(tt.stored); i += 2 {
				changes = append(changes, store.Change{Key: tt.stored[i], Value: tt.stored[i+1]})
			}
			if err := kv.Apply(changes); err != nil {
				t.Fatal(err)
			}
			i, err := checkQuota(kv, tt.cmd)
			if (err != nil) != tt.wantErr || i != tt.wantIndex {
				t.Errorf("checkQuota = %d, %v; want %d, error %v", i, err, tt.wantIndex, tt.wantErr)
			}
		})
	}
}

// TestSavedModeKeptUntilRestored: a batch whose restore of the mode fails leaves the modem
// offline with the mode saved; whatever switches the modem next must bring it back to that
// mode and only then forget it, not take +CFUN=4 for the mode to keep.
func TestSavedModeKeptUntilRestored(t *testing.T) {
	tests := []struct {
		name string
		next func(t *testing.T, h *harness)
	}{
		{name: "next batch", next: func(t *testing.T, h *harness) {
			h.cloud.push(t, at("b", "%B", ""))
			if o := h.d.attempt(context.Background()); o.res.Executed != 1 || o.res.Failed != 0 {
				t.Errorf("second attempt: %+v, want one command run", o.res)
			}
		}},
		{name: "modem restart", next: func(t *testing.T, h *harness) {
			if err := h.d.restartModem(context.Background(), h.m); err != nil {
				t.Errorf("restartModem: %v", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newFakeModem()
			h := newHarness(t, testConfig(), m, nil)
			h.d.running.Store(true)
			if err := h.d.onModemOpen(context.Background(), m); err != nil {
				t.Fatal(err)
			}
			m.mu.Lock()
			m.setModeErr = func(mode int) error {
				if mode != modeOffline {
					return atmodem.ErrTimeout
				}
				return nil
			}
			m.mu.Unlock()
			h.cloud.push(t, at("a", "%A", ""))
			h.d.attempt(context.Background())
			if got, saved := m.mode(), getKey(h.kv, keySavedCFUN); got != modeOffline || saved != "1" {
				t.Fatalf("after the failed restore: mode %d, saved %q; want 4 and 1", got, saved)
			}
			m.mu.Lock()
			m.setModeErr = nil
			m.mu.Unlock()
			tt.next(t, h)
			if got := m.mode(); got != 1 {
				t.Errorf("mode = %d, want the saved mode 1 restored (commands %q)", got, m.commands())
			}
			if hasKey(h.kv, keySavedCFUN) {
				t.Errorf("saved mode %q left behind after it was restored", getKey(h.kv, keySavedCFUN))
			}
			h.d.closeModem(m)
		})
	}
}
