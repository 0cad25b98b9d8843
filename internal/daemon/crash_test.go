package daemon

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/store"
	"github.com/provisiond/provisiond/internal/transport"
)

// cursorCloud is a Provisioning Service with the real cursor semantics: a fetch returns the
// next commands after the `after` id, so commands not yet processed are served again after a
// crash, as the real service does.
type cursorCloud struct {
	mu      sync.Mutex
	cmds    []proto.Command
	size    int
	uploads [][]proto.Response
	// crashAfterUpload, when set, is called after an upload was accepted.
	crashAfterUpload func()
}

func (c *cursorCloud) Dial(ctx context.Context) (Session, error) { return &cursorSession{c}, nil }

type cursorSession struct{ c *cursorCloud }

func (s *cursorSession) Fetch(ctx context.Context, req transport.FetchRequest) ([]byte, error) {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	start := 0
	if req.After != "" {
		for i, c := range s.c.cmds {
			if c.ID == req.After {
				start = i + 1
			}
		}
	}
	if start >= len(s.c.cmds) {
		return nil, transport.ErrNoCommands
	}
	end := min(start+s.c.size, len(s.c.cmds))
	return proto.EncodeCommands(s.c.cmds[start:end])
}

func (s *cursorSession) Upload(ctx context.Context, req transport.UploadRequest) error {
	rs, err := proto.DecodeResponses(req.Body, 64)
	if err != nil {
		return err
	}
	s.c.mu.Lock()
	s.c.uploads = append(s.c.uploads, rs)
	hook := s.c.crashAfterUpload
	s.c.mu.Unlock()
	if hook != nil {
		hook()
	}
	return nil
}

func (c *cursorCloud) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.uploads)
}

func (s *cursorSession) Stats() transport.Stats { return transport.Stats{} }
func (s *cursorSession) Close() error           { return nil }

// crash is the panic value standing in for SIGKILL.
type crash struct{}

// crashKV panics (after freezing everything) at a chosen Apply, before or after writing.
type crashKV struct {
	KV
	mu     sync.Mutex
	n, at  int
	after  bool
	frozen bool
	kill   func()
}

func (k *crashKV) Apply(changes []store.Change) error {
	k.mu.Lock()
	if k.frozen {
		k.mu.Unlock()
		return fmt.Errorf("process is dead")
	}
	k.n++
	hit := k.n == k.at
	k.mu.Unlock()
	if hit && !k.after {
		k.kill()
		panic(crash{})
	}
	err := k.KV.Apply(changes)
	if hit {
		k.kill()
		panic(crash{})
	}
	return err
}

func (k *crashKV) freeze() {
	k.mu.Lock()
	k.frozen = true
	k.mu.Unlock()
}

// TestCrashPoints kills the daemon (a panic after freezing the store and the modem, so no
// deferred code can write anything, as with SIGKILL) at every store write, before and after
// it lands, after every AT command, and after every accepted upload; then starts a new daemon
// on what the store holds and the same modem, and checks the crash-safety invariants of
// docs/design.md: no executed command unreported, none executed twice, nothing reported as
// done that did not run, the modem's mode restored, and no daemon state left behind.
func TestCrashPoints(t *testing.T) {
	cmds := []proto.Command{
		at("a1", "%A1", ""), config("c1", "provisioning/k1", "v1"), at("a2", "%A2", ""),
		at("a3", "%A3", ""), config("c2", "provisioning/interval-sec", "3600"), finished("f"),
	}
	type point struct {
		kind string // "store-before", "store-after", "command", "upload"
		k    int
	}
	var points []point
	for k := 1; k <= 40; k++ {
		points = append(points, point{"store-before", k}, point{"store-after", k})
	}
	for k := 1; k <= 3; k++ {
		points = append(points, point{"command", k})
	}
	for k := 1; k <= 2; k++ {
		points = append(points, point{"upload", k})
	}
	reached := 0
	for _, p := range points {
		t.Run(fmt.Sprintf("%s-%d", p.kind, p.k), func(t *testing.T) {
			mem := store.NewMemory(store.Limits{})
			cloud := &cursorCloud{cmds: cmds, size: 3}
			m1 := newFakeModem()
			kv := &crashKV{KV: mem}
			kill := func() {
				kv.freeze()
				m1.mu.Lock()
				m1.dead = true
				m1.mu.Unlock()
			}
			kv.kill = kill
			switch p.kind {
			case "store-before", "store-after":
				kv.at, kv.after = p.k, p.kind == "store-after"
			case "command":
				n := 0
				m1.onCommand = func(string) {
					if n++; n == p.k {
						kill()
						panic(crash{})
					}
				}
			case "upload":
				n := 0
				cloud.crashAfterUpload = func() {
					if n++; n == p.k {
						kill()
						panic(crash{})
					}
				}
			}
			crashed := runUntilCrash(t, m1, kv, cloud)
			if !crashed {
				return // this point is past the end of the job
			}
			reached++
			cloud.crashAfterUpload = nil

			// Restart: same store contents, same modem (its state survives the crash).
			m2 := newFakeModem()
			m1.mu.Lock()
			m2.cfun, m2.cmee, m2.creds = m1.cfun, m1.cmee, m1.creds
			m1.mu.Unlock()
			h := newHarness(t, testConfig(), m2, mem)
			h.d.deps.Dial = cloud.Dial
			for range 3 { // enough attempts to finish the job
				if _, err := h.d.RunOnce(context.Background()); err != nil {
					t.Fatalf("RunOnce after restart: %v", err)
				}
			}
			checkInvariants(t, cmds, append(m1.batchCommands(), m2.batchCommands()...), cloud, mem, m2)
		})
	}
	if reached < 20 {
		t.Errorf("only %d crash points were reached; the job should take more writes", reached)
	}
}

// runUntilCrash runs attempts on a first daemon until the injected crash or the end of the
// job; it reports whether the crash happened.
func runUntilCrash(t *testing.T, m *fakeModem, kv KV, cloud *cursorCloud) (crashed bool) {
	t.Helper()
	h := newHarness(t, testConfig(), m, kv)
	h.d.deps.Dial = cloud.Dial
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(crash); !ok {
				panic(r)
			}
			crashed = true
		}
	}()
	for range 3 {
		if _, err := h.d.RunOnce(context.Background()); err != nil {
			t.Fatalf("RunOnce: %v", err)
		}
	}
	return false
}

func checkInvariants(t *testing.T, cmds []proto.Command, executed []string, cloud *cursorCloud, kv KV, m *fakeModem) {
	t.Helper()
	runs := map[string]int{}
	for _, c := range executed {
		runs[c]++
	}
	reported := map[string][]proto.Response{}
	for _, up := range cloud.uploads {
		for _, r := range up {
			reported[r.ID] = append(reported[r.ID], r)
		}
	}
	for _, c := range cmds {
		switch c.Kind {
		case proto.KindAT:
			n := runs[c.ATString()]
			if n > 1 {
				t.Errorf("%s executed %d times", c.ID, n)
			}
			if n == 1 && len(reported[c.ID]) == 0 {
				t.Errorf("%s executed but never reported", c.ID)
			}
			for _, r := range reported[c.ID] {
				if r.Kind == proto.KindATResponse && n == 0 {
					t.Errorf("%s reported as done but never executed", c.ID)
				}
			}
			if len(reported[c.ID]) == 0 {
				t.Errorf("%s never processed", c.ID)
			}
		case proto.KindConfig:
			for _, r := range reported[c.ID] {
				if r.Kind == proto.KindConfigAck && getKey(kv, c.Properties[0].Key) != c.Properties[0].Value {
					t.Errorf("%s acknowledged but %s not stored", c.ID, c.Properties[0].Key)
				}
			}
			if len(reported[c.ID]) == 0 {
				t.Errorf("%s never processed", c.ID)
			}
		}
	}
	if m.mode() != 1 {
		t.Errorf("modem mode = %d at the end, want 1", m.mode())
	}
	m.mu.Lock()
	cmee := m.cmee
	m.mu.Unlock()
	if cmee != 0 {
		t.Errorf("modem CMEE = %d at the end, want 0 as before the job", cmee)
	}
	for _, k := range []string{keyJournal, keyOutbox, keySavedCFUN, keySavedCMEE} {
		if hasKey(kv, k) {
			t.Errorf("%s left in the store: %s", k, getKey(kv, k))
		}
	}
	if got := getKey(kv, "provisioning/after-correlation-id"); got != "f" {
		t.Errorf("cursor = %q, want f", got)
	}
}

// TestUnstoredResultReportedOnce breaks the store from the write of a command's result until
// the batch's outbox write has failed every try, then heals it. The command ran, but the
// store's journal marks it as running, so the one report of it is "interrupted", made from
// the journal by the next attempt (same process) or the next start, never its result from
// memory as well.
func TestUnstoredResultReportedOnce(t *testing.T) {
	cmds := []proto.Command{at("a", "%A", ""), at("b", "%B", "")}
	tests := []struct {
		name    string
		restart bool // a new daemon on the store (else the same daemon's next attempt)
	}{
		{name: "next start", restart: true},
		{name: "next attempt in the same process"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := store.NewMemory(store.Limits{})
			var broken, healed atomic.Bool
			kv := &faultyKV{KV: mem, fail: func(n int, changes []store.Change) error {
				if healed.Load() {
					return nil
				}
				if broken.Load() {
					return fmt.Errorf("store: %w", syscall.EROFS)
				}
				for _, c := range changes {
					if journalling("a")(c) {
						broken.Store(true) // this write lands; the next ones fail
					}
				}
				return nil
			}}
			cloud := &cursorCloud{cmds: cmds, size: 2}
			m := newFakeModem()
			h := newHarness(t, testConfig(), m, kv)
			h.d.deps.Dial = cloud.Dial
			if tt.restart {
				res, err := h.d.RunOnce(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if res.Event != EventFailed || !errors.Is(res.Err, ErrStore) {
					t.Errorf("first attempt = %s (%v), want FAILED with ErrStore", res.Event, res.Err)
				}
				if n := cloud.count(); n != 0 {
					t.Errorf("%d uploads before the store healed, want 0", n)
				}
				healed.Store(true)
				h2 := newHarness(t, testConfig(), m, mem)
				h2.d.deps.Dial = cloud.Dial
				for range 2 {
					if _, err := h2.d.RunOnce(context.Background()); err != nil {
						t.Fatal(err)
					}
				}
			} else {
				s := startRun(t, h)
				s.next().c <- s.now // first attempt: the store breaks
				r := s.next()
				if n := cloud.count(); n != 0 {
					t.Errorf("%d uploads before the store healed, want 0", n)
				}
				healed.Store(true)
				r.c <- s.now // next attempt: reads the journal back, then goes on
				s.next()
				if err := s.stop(); err != nil {
					t.Fatal(err)
				}
			}
			reported := map[string][]proto.Response{}
			cloud.mu.Lock()
			defer cloud.mu.Unlock()
			for _, up := range cloud.uploads {
				for _, r := range up {
					reported[r.ID] = append(reported[r.ID], r)
				}
			}
			want := map[string][]proto.Response{
				"a": {errResp("a", 0, interruptedMessage)},
				"b": {okResp("b", "OK\r\n")},
			}
			if !reflect.DeepEqual(reported, want) {
				t.Errorf("reported %v, want each command once: %v", reported, want)
			}
			if got := m.batchCommands(); !reflect.DeepEqual(got, []string{"AT%A=", "AT%B="}) {
				t.Errorf("modem ran %q, want each command once", got)
			}
			for _, k := range []string{keyJournal, keyOutbox, keySavedCFUN, keySavedCMEE} {
				if hasKey(mem, k) {
					t.Errorf("%s left in the store: %s", k, getKey(mem, k))
				}
			}
		})
	}
}
