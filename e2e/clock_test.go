package e2e

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/testbed"
)

// Clock faults. The host's own clock belongs to the machine and is not moved; what can jump
// is the modem's (no valid time at all) and the service's (simcloud's Config.Clock), which
// checks the JWT the modem signs with the modem's time: exp and iat.

// cpClock runs at the host's pace with an offset that a test moves: a clock jump.
type cpClock struct{ off atomic.Int64 }

func (c *cpClock) now() time.Time        { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *cpClock) set(off time.Duration) { c.off.Store(int64(off)) }

// cpClockJump is how far the service's clock jumps: far beyond the JWT's lifetime (300 s) and
// the service's leeway (60 s).
const cpClockJump = time.Hour

// TestClockModemWithoutTime: a modem with no valid time (offline, no network time). With
// modem.set_clock_from_host on (the default) the daemon sets the modem's clock from the
// host's, in UTC, once and before the first JWT, and the job runs. With it off, the attempt
// ends in FAILED_NO_VALID_DATETIME before anything is fetched or run, the modem untouched.
func TestClockModemWithoutTime(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr+"/set from host", func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			b := newBed(t, ctx, testbed.Options{Transport: tr}) // +CFUN=0: no network, no time
			if _, valid := b.Modem().Time(); valid {
				t.Fatal("the simulated modem starts with valid time; the test needs none")
			}
			queue(t, b, cpJob()...)
			if code, p := runOnce(t, ctx, b); code != 0 {
				t.Fatalf("run --once: exit %d:\n%s", code, p.Stderr())
			}
			got, valid := b.Modem().Time()
			// A value check, not a timing one: the clock must be the host's (UTC), not an
			// hour or a time zone off.
			if d := time.Since(got).Abs(); !valid || d > 10*time.Minute {
				t.Errorf("modem clock %v (valid %v), want the host's time %v", got, valid, time.Now().UTC())
			}
			// The daemon asks for the JWT first and sets the clock when the modem's answer
			// (no time: CME 525) calls for it, then asks again: at most one JWT before the set.
			log := b.ModemCommands()
			set, jwt, before := -1, -1, 0
			n := 0
			for i, l := range log {
				switch {
				case strings.HasPrefix(l, "AT+CCLK="):
					n++
					if set < 0 {
						set = i
					}
				case strings.HasPrefix(l, "AT%JWT"):
					if set < 0 {
						before++
					} else if jwt < 0 {
						jwt = i
					}
				}
			}
			if n != 1 || set < 0 || jwt < 0 || before > 1 {
				t.Errorf("AT+CCLK= sent %d times (first at %d), %d AT%%JWT before it, first after it at %d; want once, before the JWT used",
					n, set, before, jwt)
			}
			off := 0
			cpCheckInvariants(t, ctx, b, cpInv{mode: &off})
			cpCheckJobDone(t, b)
		})
		t.Run(tr+"/set_clock_from_host off", func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			b := newBed(t, ctx, testbed.Options{Transport: tr,
				Settings: map[string]any{"modem.set_clock_from_host": false}})
			queue(t, b, cpJob()...)
			code, p := runOnce(t, ctx, b)
			if code != 2 || p.Stdout() != "" {
				t.Errorf("run --once: exit %d, stdout %q; want 2 and nothing", code, p.Stdout())
			}
			if !strings.Contains(p.Stderr(), "provisiond: FAILED_NO_VALID_DATETIME: ") {
				t.Errorf("stderr does not end in FAILED_NO_VALID_DATETIME:\n%s", p.Stderr())
			}
			for _, l := range b.ModemCommands() {
				if strings.HasPrefix(l, "AT+CCLK=") || strings.HasPrefix(l, "AT%JWT") {
					t.Errorf("%s sent although the modem has no time and may not get the host's", short(l))
				}
			}
			if _, valid := b.Modem().Time(); valid {
				t.Error("the modem's clock was set although set_clock_from_host is off")
			}
			cpCheckNothingDone(t, b, 0)
			st := settings(t, ctx, b)
			if _, ok := st[testbed.CursorKey]; ok {
				t.Errorf("cursor stored although nothing was fetched: %v", st)
			}
		})
	}
}

// TestClockServiceJump: the service's clock is an hour ahead (the modem's JWT looks expired)
// or behind (issued in the future), from the start of an attempt or from the moment the first
// batch has run until its upload. The service answers 401, which the daemon reports as
// FAILED_DEVICE_NOT_CLAIMED with the service's reason: nothing is fetched or run on a refused
// JWT; over HTTP the batch's results stay in the store, undelivered but not lost, while over
// CoAP the upload still rides on the session authenticated before the jump and the next
// round's authentication is refused. Once the clocks agree again the job completes with each
// command run once.
func TestClockServiceJump(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		jump time.Duration
		// midAttempt: the jump happens when the modem is put back online after the first
		// batch, i.e. between the batch and its upload.
		midAttempt bool
	}{
		{name: "ahead from the start", jump: cpClockJump},
		{name: "behind from the start", jump: -cpClockJump},
		{name: "ahead before the upload", jump: cpClockJump, midAttempt: true},
		{name: "behind before the upload", jump: -cpClockJump, midAttempt: true},
	}
	for i, tt := range tests {
		for _, tr := range rowTransports(i) {
			t.Run(tr+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				ctx := testCtx(t)
				var clock cpClock
				opts := cpOptions(tr)
				opts.Cloud = simcloud.Config{Clock: clock.now}
				e := cpStartEnv(t, ctx, opts, nil)
				b := e.b
				queue(t, b, cpJob()...)
				if tt.midAttempt {
					// The rule runs on the proxy's goroutine only.
					ranKeygen, jumped := false, false
					e.modem.setRule(func(_ int, line string) cpAction {
						switch {
						case strings.HasPrefix(line, "AT%KEYGEN"):
							ranKeygen = true
						case ranKeygen && !jumped && line == "AT+CFUN=1":
							clock.set(tt.jump)
							jumped = true
						}
						return cpForward
					})
				} else {
					clock.set(tt.jump)
				}

				code, p := runOnce(t, ctx, b)
				if code != 2 {
					t.Errorf("run --once with the service's clock %v off: exit %d, want 2", tt.jump, code)
				}
				last := ""
				for _, e := range p.Entries() {
					if strings.HasPrefix(e.Raw, "provisiond: ") {
						last = e.Raw
					}
				}
				t.Logf("outcome: %s", last)
				if !strings.HasPrefix(last, "provisiond: FAILED_DEVICE_NOT_CLAIMED: ") {
					t.Errorf("outcome %q, want FAILED_DEVICE_NOT_CLAIMED (the service's 401)", last)
				}
				// The service's reason reaches the operator: the token's time is what it refused.
				if low := strings.ToLower(last); !strings.Contains(low, "expired") && !strings.Contains(low, "before issued") &&
					!strings.Contains(low, "used before") && !strings.Contains(low, "iat") {
					t.Errorf("outcome %q does not say the token's time was refused", last)
				}
				if got := b.Modem().FunctionalMode(); got != cpInitialMode {
					t.Errorf("modem mode %d, want %d", got, cpInitialMode)
				}
				ups := uploads(t, b)
				switch {
				case tt.midAttempt && tr == testbed.TransportCoAP:
					// CoAP authenticates the DTLS session with the JWT (POST /p/auth-jwt) when
					// a round starts; the upload rides on that session and is taken. The next
					// round's authentication is refused: the second batch is not fetched.
					cmds := mustCommands(t, b)
					checkExecutedTimes(t, b, cmds[:4], 1)
					if len(ups) != 1 || len(ups[0].Responses) != 4 {
						t.Errorf("uploads:\n%s\nwant the first batch's, taken before the jump was noticed", describeUploads(ups))
					}
					if st := settings(t, ctx, b); st[outboxKey] != "" {
						t.Errorf("results delivered, yet an outbox is left: %s", short(st[outboxKey]))
					}
					for _, c := range cmds[4:] {
						if c.Deliveries != 0 {
							t.Errorf("%s fetched on a refused JWT", c.ID)
						}
					}
					clock.set(0)
					cpRunUntilClean(t, ctx, b)
				case tt.midAttempt:
					// HTTP sends the JWT with every request: the upload is refused, and the
					// first batch's results (it ran once) wait in the store.
					cmds := mustCommands(t, b)
					checkExecutedTimes(t, b, cmds[:4], 1)
					if len(ups) != 0 {
						t.Errorf("an upload with a refused JWT was recorded:\n%s", describeUploads(ups))
					}
					pending := storedOutbox(t, settings(t, ctx, b))
					if len(pending) != 4 {
						t.Fatalf("pending outbox: %d responses, want the first batch's 4", len(pending))
					}
					clock.set(0)
					cpRunUntilClean(t, ctx, b)
					checkSameBytes(t, uploads(t, b), pending)
				default:
					if len(ups) != 0 {
						t.Errorf("an upload with a refused JWT was recorded:\n%s", describeUploads(ups))
					}
					cpCheckNothingDone(t, b, cpInitialMode)
					clock.set(0)
					cpRunUntilClean(t, ctx, b)
				}
				cpCheckInvariants(t, ctx, b, cpInv{})
				cpCheckJobDone(t, b)
			})
		}
	}
}

// cpCheckNothingDone checks that no job command reached the modem or was even fetched, the
// modem was not taken offline for a batch, and it is in mode.
func cpCheckNothingDone(t *testing.T, b *testbed.Bed, mode int) {
	t.Helper()
	log := b.ModemCommands()
	for _, c := range mustCommands(t, b) {
		if c.Deliveries != 0 {
			t.Errorf("%s was fetched (%d times)", c.ID, c.Deliveries)
		}
		if c.Kind == proto.KindAT && count(log, c.ATString()) != 0 {
			t.Errorf("%s (%s) ran", c.ID, short(c.ATString()))
		}
	}
	if n := count(log, "AT+CMEE=1"); n != 0 {
		t.Errorf("a batch was started (AT+CMEE=1 sent %d times)", n)
	}
	if got := b.Modem().FunctionalMode(); got != mode {
		t.Errorf("modem mode %d, want %d", got, mode)
	}
}

// cpCheckJobDone checks the crash-point job completed: every command succeeded and the modem
// holds the certificate the service issued for the key it generated.
func cpCheckJobDone(t *testing.T, b *testbed.Bed) {
	t.Helper()
	for _, c := range mustCommands(t, b) {
		if c.Status != simcloud.StatusSucceeded {
			t.Errorf("command %s (%s): %s, want SUCCEEDED", c.ID, short(c.ATString()), c.Status)
		}
	}
	checkClientCert(t, b, testbed.ClientCertSecTag)
	if dev, err := b.Cloud().Device(b.UUID()); err != nil || dev.ProvisionedAt == nil {
		t.Errorf("service's device record: %+v, %v; want provisioned", dev, err)
	}
}
