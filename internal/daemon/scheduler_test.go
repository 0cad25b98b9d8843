package daemon

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/provisiond/provisiond/internal/store"
	"github.com/provisiond/provisiond/internal/transport"
)

// timerReq is one timer the scheduler asked for.
type timerReq struct {
	d time.Duration
	c chan time.Time
}

// schedRun runs Daemon.Run with a frozen clock and timers the test fires by hand: every time
// the scheduler goes idle it asks for a timer, which the test receives from reqs. The
// scheduler blocks until the test takes the request, so each step is in lockstep and no test
// depends on real time passing.
type schedRun struct {
	t      *testing.T
	h      *harness
	reqs   chan timerReq
	cancel context.CancelFunc
	done   chan error
	now    time.Time
}

func startRun(t *testing.T, h *harness) *schedRun {
	t.Helper()
	s := &schedRun{t: t, h: h, reqs: make(chan timerReq), done: make(chan error, 1),
		now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	stopped := make(chan struct{})
	h.d.now = func() time.Time { return s.now }
	h.d.after = func(d time.Duration) (<-chan time.Time, func() bool) {
		c := make(chan time.Time, 1)
		select {
		case s.reqs <- timerReq{d: d, c: c}:
		case <-stopped:
		}
		return c, func() bool { return true }
	}
	h.d.reopenMin, h.d.reopenMax = time.Millisecond, 2*time.Millisecond
	go func() {
		s.done <- h.d.Run(ctx)
		close(stopped)
	}()
	t.Cleanup(func() { _ = s.stop() })
	return s
}

// next waits for the scheduler to go idle and returns the timer it asked for.
func (s *schedRun) next() timerReq {
	s.t.Helper()
	select {
	case r := <-s.reqs:
		return r
	case err := <-s.done:
		s.t.Fatalf("Run returned early: %v", err)
	case <-time.After(20 * time.Second): // a hang guard, not a timing assertion
		s.t.Fatal("scheduler never went idle")
	}
	return timerReq{}
}

func (s *schedRun) stop() error {
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(20 * time.Second):
		s.t.Fatal("Run did not return after cancellation")
		return nil
	}
}

func (s *schedRun) attempts() int { return s.h.d.Status().Attempts }

func TestSchedulerInterval(t *testing.T) {
	cfg := testConfig()
	cfg.Interval = 2 * time.Hour
	h := newHarness(t, cfg, nil, nil)
	s := startRun(t, h)

	r := s.next()
	if r.d != 0 {
		t.Fatalf("first timer = %s, want 0 (auto start)", r.d)
	}
	tests := []struct {
		name   string
		stored string
		want   time.Duration
	}{
		{"config interval when unset", "", 2 * time.Hour},
		{"decimal from the store", "90", 90 * time.Second},
		{"hex from the store", "0x3c", 60 * time.Second},
		{"octal from the store", "010", 8 * time.Second},
		{"negative falls back", "-5", 2 * time.Hour},
		{"zero falls back", "0", 2 * time.Hour},
		{"garbage falls back", "12abc", 2 * time.Hour},
	}
	// Rows run in order on the same daemon: each sets the stored value, fires the pending
	// timer, and checks the timer the scheduler asks for after that attempt.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := store.Change{Key: "provisioning/interval-sec", Value: tt.stored, Delete: tt.stored == ""}
			if err := h.kv.Apply([]store.Change{ch}); err != nil {
				t.Fatal(err)
			}
			r.c <- s.now
			r = s.next()
			if r.d != tt.want {
				t.Errorf("timer after the attempt = %s, want %s", r.d, tt.want)
			}
			if got := h.d.Interval(); got != int(tt.want/time.Second) {
				t.Errorf("Interval() = %d, want %d", got, int(tt.want/time.Second))
			}
		})
	}
	if err := s.stop(); err != nil {
		t.Errorf("Run = %v, want nil on cancel", err)
	}
	st := h.d.Status()
	if st.NextAttempt == nil || st.IntervalSeconds != int64(2*time.Hour/time.Second) {
		t.Errorf("status = %+v", st)
	}
}

func TestSchedulerSpread(t *testing.T) {
	cfg := testConfig()
	cfg.Interval = time.Hour
	cfg.Spread = 10 * time.Second
	h := newHarness(t, cfg, nil, nil)
	h.d.randN = func(n int64) int64 {
		if n != int64(10*time.Second) {
			t.Errorf("spread drawn from [0,%d)", n)
		}
		return int64(7 * time.Second)
	}
	s := startRun(t, h)
	r := s.next()
	if r.d != 7*time.Second {
		t.Errorf("first timer = %s, want the spread", r.d)
	}
	r.c <- s.now
	if r = s.next(); r.d != time.Hour+7*time.Second {
		t.Errorf("timer = %s, want 1h7s", r.d)
	}
	if s.attempts() != 1 {
		t.Errorf("attempts = %d, want 1", s.attempts())
	}
}

// Without auto_start, attempts run only when asked for (`provisiond now`, SIGUSR1): not at
// start, not an interval later, and a failed one is not retried on its own.
func TestNoAutoStartIsManual(t *testing.T) {
	cfg := testConfig()
	cfg.AutoStart = false
	cfg.Interval = time.Hour
	h := newHarness(t, cfg, nil, nil)
	h.cloud.fetchErrs = []error{&transport.StatusError{Transport: "http", Op: "fetch", Code: "503", Kind: transport.ErrBusy}}
	var idles atomic.Int32
	h.d.deps.Idle = func() { idles.Add(1) }
	s := startRun(t, h)
	r := s.next()
	if st := h.d.Status(); st.NextAttempt != nil {
		t.Errorf("next attempt %v announced without auto_start", st.NextAttempt)
	}
	r.c <- s.now.Add(365 * 24 * time.Hour) // however long it waits
	h.d.TriggerNow()
	r = s.next()
	if s.attempts() != 1 {
		t.Fatalf("attempts = %d, want 1 (on the trigger only)", s.attempts())
	}
	if st := h.d.Status(); st.NextAttempt != nil || st.State == StateBackoff {
		t.Errorf("after a busy service: next %v, state %s; want no retry without a trigger", st.NextAttempt, st.State)
	}
	r.c <- s.now.Add(365 * 24 * time.Hour)
	h.d.TriggerNow()
	s.next()
	if s.attempts() != 2 {
		t.Fatalf("attempts = %d, want 2", s.attempts())
	}
	if n := idles.Load(); n != 2 {
		t.Errorf("idle called %d times, want once after each attempt", n)
	}
	for _, e := range h.d.Status().Events {
		if e.Event == EventScheduledProvisioning {
			t.Errorf("SCHEDULED_PROVISIONING %+v without auto_start", e)
		}
	}
}

func TestSchedulerBackoff(t *testing.T) {
	cfg := testConfig()
	cfg.Interval = 24 * time.Hour
	cfg.InitialBackoff = time.Minute
	h := newHarness(t, cfg, nil, nil)
	busy := &transport.StatusError{Transport: "http", Op: "fetch", Code: "503", Kind: transport.ErrBusy}
	h.cloud.fetchErrs = []error{busy, busy, transport.ErrTimeout, nil, busy}
	var notes []string
	var mu sync.Mutex
	h.d.deps.Notify = func(s string) { mu.Lock(); notes = append(notes, s); mu.Unlock() }
	h.d.deps.Idle = func() { mu.Lock(); notes = append(notes, "(idle)"); mu.Unlock() }
	s := startRun(t, h)
	want := []time.Duration{0, time.Minute, 2 * time.Minute, 4 * time.Minute, 24 * time.Hour, time.Minute}
	for i, w := range want {
		r := s.next()
		if r.d != w {
			t.Errorf("timer %d = %s, want %s", i, r.d, w)
		}
		if i == 2 {
			if st := h.d.Status(); st.State != StateBackoff || st.BackoffSeconds != 120 {
				t.Errorf("status = %s backoff %ds, want backoff 120s", st.State, st.BackoffSeconds)
			}
		}
		if i < len(want)-1 {
			r.c <- s.now
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// Each attempt: its status, then Idle before the wait for the next one.
	if len(notes) != 10 {
		t.Fatalf("notify and idle called %d times, want 5 each: %q", len(notes), notes)
	}
	for i, n := range notes {
		if idle := n == "(idle)"; idle != (i%2 == 1) {
			t.Errorf("call %d = %q: want the status of each attempt followed by idle: %q", i, n, notes)
			break
		}
	}
}

func TestNextBackoff(t *testing.T) {
	tests := []struct {
		name         string
		cur, initial time.Duration
		want         time.Duration
	}{
		{"first", 0, time.Minute, time.Minute},
		{"doubles", time.Minute, time.Minute, 2 * time.Minute},
		{"capped", 20 * time.Hour, time.Minute, MaxBackoff},
		{"huge initial capped", 0, 48 * time.Hour, MaxBackoff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nextBackoff(tt.cur, tt.initial); got != tt.want {
				t.Errorf("nextBackoff = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestTriggerNowCoalesces(t *testing.T) {
	cfg := testConfig()
	cfg.AutoStart = false
	h := newHarness(t, cfg, nil, nil)
	var once sync.Once
	h.cloud.onFetch = func() {
		once.Do(func() {
			// "now" requests during an attempt coalesce into one more attempt.
			h.d.TriggerNow()
			h.d.TriggerNow()
		})
	}
	// Requests before the scheduler is idle coalesce into one.
	h.d.TriggerNow()
	h.d.TriggerNow()
	h.d.TriggerNow()
	s := startRun(t, h)
	s.next() // idle with a trigger pending: runs attempt 1 without the timer firing
	s.next() // idle again with the trigger from attempt 1 pending: attempt 2
	s.next() // idle, nothing pending
	if got := s.attempts(); got != 2 {
		t.Errorf("attempts = %d, want 2", got)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if got := s.attempts(); got != 2 {
		t.Errorf("attempts after stop = %d, want 2", got)
	}
}

func TestTriggerNowDuringBackoff(t *testing.T) {
	cfg := testConfig()
	h := newHarness(t, cfg, nil, nil)
	h.cloud.fetchErrs = []error{transport.ErrBusy}
	s := startRun(t, h)
	s.next().c <- s.now // attempt 1: busy
	if r := s.next(); r.d != testConfig().InitialBackoff {
		t.Fatalf("timer = %s, want the initial backoff", r.d)
	}
	h.d.TriggerNow()
	r := s.next() // attempt 2 ran at once, succeeded, backoff reset
	if r.d != testConfig().Interval || s.attempts() != 2 {
		t.Errorf("timer = %s after %d attempts, want %s after 2", r.d, s.attempts(), testConfig().Interval)
	}
}

func TestSetIntervalReschedules(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	s := startRun(t, h)
	s.next().c <- s.now
	if r := s.next(); r.d != testConfig().Interval {
		t.Fatalf("timer = %s", r.d)
	}
	if err := h.d.SetInterval(context.Background(), 120); err != nil {
		t.Fatal(err)
	}
	if r := s.next(); r.d != 120*time.Second {
		t.Errorf("timer after SetInterval = %s, want 2m", r.d)
	}
	if got := getKey(h.kv, "provisioning/interval-sec"); got != "120" {
		t.Errorf("stored interval = %q", got)
	}
	if err := h.d.SetInterval(context.Background(), -1); !errors.Is(err, ErrInvalidInterval) {
		t.Errorf("SetInterval(-1) = %v, want ErrInvalidInterval", err)
	}
	// Reconfigure also reschedules, with the new default interval (the stored one wins).
	cfg := testConfig()
	cfg.Interval = time.Hour
	if err := h.d.SetInterval(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if r := s.next(); r.d != testConfig().Interval {
		t.Errorf("timer after SetInterval(0) = %s, want the configured interval", r.d)
	}
	if err := h.d.Reconfigure(cfg, nil); err != nil {
		t.Fatal(err)
	}
	if r := s.next(); r.d != time.Hour {
		t.Errorf("timer after Reconfigure = %s, want 1h", r.d)
	}
	if err := h.d.Reconfigure(Config{Uplink: "carrier-pigeon"}, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Reconfigure(bad) = %v", err)
	}
}

func TestModemLostAndReopened(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	first := h.m
	second := newFakeModem()
	var mu sync.Mutex
	opens := 0
	h.d.deps.OpenModem = func(ctx context.Context) (Modem, error) {
		mu.Lock()
		defer mu.Unlock()
		opens++
		switch {
		case opens == 1:
			return first, nil
		case opens < 5:
			return nil, errors.New("open /dev/ttyACM0: no such file or directory")
		}
		return second, nil
	}
	s := startRun(t, h)
	s.next()       // idle on the first modem, attempt due now; unplug instead
	first.unplug() // the scheduler notices, closes, waits, reopens
	r := s.next()
	if r.d != 0 {
		t.Errorf("timer after reopen = %s, want 0 (the attempt is still due)", r.d)
	}
	r.c <- s.now
	s.next()
	if len(second.commands()) == 0 || indexOf(second.commands(), "AT%JWT=0,300") < 0 {
		t.Errorf("second modem not used: %q", second.commands())
	}
	// One warning for the whole outage (three failed opens), one line when it is over.
	warns := h.logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("modem").All()
	if len(warns) != 1 || warns[0].Message != "modem disconnected, waiting for it to come back" {
		t.Errorf("outage warnings = %v, want the disconnect once", warns)
	}
	if n := h.logs.FilterMessage("modem is back").Len(); n != 1 {
		t.Errorf("logged the return %d times, want once", n)
	}
	select {
	case <-h.d.Ready():
	default:
		t.Error("Ready not closed")
	}
}

func TestRunTwice(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	s := startRun(t, h)
	s.next()
	if err := h.d.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}
	if _, err := h.d.RunOnce(context.Background()); !errors.Is(err, ErrRunning) {
		t.Errorf("RunOnce during Run = %v, want ErrRunning", err)
	}
}

// TestModemDiesAtStartup: a port that opens but whose modem is gone at once is retried with a
// backoff and logged once, not in a tight loop.
func TestModemDiesAtStartup(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	var mu sync.Mutex
	opens := 0
	good := h.m
	h.d.deps.OpenModem = func(ctx context.Context) (Modem, error) {
		mu.Lock()
		defer mu.Unlock()
		opens++
		if opens <= 3 {
			dead := newFakeModem()
			dead.dead = true
			return dead, nil
		}
		return good.open(), nil
	}
	s := startRun(t, h)
	s.next()
	mu.Lock()
	n := opens
	mu.Unlock()
	if n != 4 {
		t.Errorf("opened %d times, want 4", n)
	}
	if got := h.logs.FilterMessage("modem lost while starting up, waiting for it").FilterLevelExact(zapcore.WarnLevel).Len(); got != 1 {
		t.Errorf("startup loss warned %d times, want once", got)
	}
	if st := h.d.Status(); st.ModemVersion != good.version {
		t.Errorf("status = %+v", st)
	}
}
