package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/testbed"
)

// Storage faults: the settings file's folder turns read-only or full in the middle of a
// batch (at an exact command, through the crash-point test's modem proxy) or holds results
// still to be delivered; the settings file is corrupt. TestFaultStateFolder covers a folder
// that is broken from the start or after the first upload.

// errText is what the daemon's log line must say for this disk's fault.
func (d *stateDisk) errText(full bool) string {
	switch {
	case full:
		return "no space left on device"
	case d.mounted:
		return "read-only file system"
	}
	return "permission denied"
}

// TestStorageFaultMidBatch: the store folder breaks (read-only or full) while a job command
// runs on the modem. The command's result is not lost (it is uploaded from memory), no later
// command is run since none could be journaled, a log line names the error, the modem is put
// back in its mode; once the folder is back, the job completes with the invariants of the
// crash-point test. The "from the start" rows: with a fresh modem, nothing is done to the
// modem that could not be recorded (not even the offline switch for the root CA).
//
// A folder that fills up in the middle of a batch is different: by then the store's slot file
// exists and every write goes into it in place, needing no new block (internal/store), so the
// job goes on to the end with everything recorded; only the settings file's checkpoint fails,
// with a warning, and is made once there is room again.
func TestStorageFaultMidBatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		full bool
		// strike is the job command (line prefix) during which the folder breaks; "" is
		// before the daemon starts.
		strike string
	}{
		{name: "read-only from the start"},
		{name: "read-only during +CGSN", strike: "AT+CGSN=1"},
		{name: "full during +CGSN", full: true, strike: "AT+CGSN=1"},
		{name: "read-only during KEYGEN", strike: "AT%KEYGEN"},
		{name: "full during KEYGEN", full: true, strike: "AT%KEYGEN"},
	}
	for i, tt := range tests {
		for _, tr := range rowTransports(i) {
			t.Run(tr+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				ctx := testCtx(t)
				var disk *stateDisk
				e := cpStartEnv(t, ctx, cpOptions(tr), func(b *testbed.Bed) {
					disk = newStateDisk(t, b, tt.full)
				})
				b := e.b
				queue(t, b, cpJob()...)
				breakDisk := func(broken bool) {
					if tt.full {
						disk.fill(t, broken)
					} else {
						disk.readOnly(t, broken)
					}
				}

				if tt.strike == "" {
					breakDisk(true)
				} else {
					e.modem.setRule(func(_ int, line string) cpAction {
						if strings.HasPrefix(line, tt.strike) {
							return cpHoldAfter
						}
						return cpForward
					})
				}
				p := start(t, ctx, b, "run", "--once")
				if tt.strike != "" {
					select {
					case <-e.modem.final(): // the modem ran the command; the daemon waits for it
					case <-p.Done():
						t.Fatalf("provisiond ended before %s:\n%s", tt.strike, p.Stderr())
					}
					breakDisk(true)
					e.modem.release()
				}
				// The slot file is there once the first journal entry was written.
				inPlace := tt.full && tt.strike != ""
				code, err := p.Wait(ctx)
				if inPlace && (err != nil || code != 0) {
					t.Fatalf("run --once with the store folder full mid-batch: exit %d, %v; want 0 (every write in place)\n%s", code, err, p.Stderr())
				}
				if !inPlace && (err != nil || code == 0) {
					t.Fatalf("run --once with the store folder broken: exit %d, %v; want non-zero", code, err)
				}
				want := disk.errText(tt.full)
				if !cpLogSays(p, want) {
					t.Errorf("no error or warning log line says %q:\n%s", want, p.Stderr())
				}

				// What ran: every job command up to the struck one, once; none after it.
				cmds := mustCommands(t, b)
				log := b.ModemCommands()
				struck := -1
				for i, c := range cmds {
					if c.Kind == proto.KindAT && tt.strike != "" && strings.HasPrefix(c.ATString(), tt.strike) {
						struck = i
					}
				}
				if inPlace {
					struck = len(cmds) // all of them ran
				}
				for i, c := range cmds {
					if c.Kind != proto.KindAT {
						continue
					}
					want := 0
					if i <= struck {
						want = 1
					}
					if n := count(log, c.ATString()); n != want {
						t.Errorf("%s (%s) ran %d times with the folder broken, want %d", c.ID, short(c.ATString()), n, want)
					}
				}
				// Not reported from memory: a result the daemon could not store is not uploaded
				// while the disk is broken (uploading it and then recovering the journal would
				// report the command twice). It is reported exactly once, as interrupted, after
				// the disk is fixed: cpCheckInvariants below checks that.
				switch {
				case inPlace: // everything ran, recorded, and was reported as usual
				case struck >= 0:
					c := cmds[struck]
					if c.Response != nil {
						t.Errorf("%s (%s): the service has %v with the folder broken, want no result yet", c.ID, short(c.ATString()), c.Response)
					}
				default:
					if ups := uploads(t, b); len(ups) != 0 {
						t.Errorf("nothing ran, yet something was uploaded:\n%s", describeUploads(ups))
					}
				}
				if got := b.Modem().FunctionalMode(); got != cpInitialMode {
					t.Errorf("modem mode %d with the folder broken, want %d", got, cpInitialMode)
				}
				if tt.strike == "" {
					if n := count(log, "AT+CFUN=4"); n != 0 {
						t.Errorf("AT+CFUN=4 sent %d times although the mode could not be saved", n)
					}
					for k := range b.Modem().Credentials() {
						// A fresh simulated modem holds none in the user's tags (below 2^31).
						if k.Tag < 1<<31 {
							t.Errorf("credential %d/%d written with the folder broken", k.Tag, k.Type)
						}
					}
				}
				if _, err := b.Settings(ctx, provisiond); err != nil {
					t.Errorf("store unreadable with the folder broken: %v", err)
				}

				breakDisk(false)
				e.modem.reset()
				cpRunUntilClean(t, ctx, b)
				cpCheckInvariants(t, ctx, b, cpInv{lines: e.modem.seen(), staleInterrupted: true})
			})
		}
	}
}

// TestStoragePendingResultsReadOnly: results wait in the store (the daemon was killed while
// the service held their upload) and the folder is read-only at the next start. The results
// are delivered all the same, nothing new runs (nothing could be journaled), the store still
// holds them until it can record the delivery; once writable, the job completes.
func TestStoragePendingResultsReadOnly(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			var disk *stateDisk
			e := cpStartEnv(t, ctx, cpOptions(tr), func(b *testbed.Bed) {
				disk = newStateDisk(t, b, false)
			})
			b := e.b
			queue(t, b, cpJob()...)
			cpSetFault(t, b, simcloud.Fault{Kind: simcloud.FaultSlow, Count: 1, Op: simcloud.OpUpload, Delay: 10 * time.Minute})
			p := start(t, ctx, b, "run", "--once")
			waitFaultsSpent(t, ctx, b)
			if err := p.Kill(); err != nil {
				t.Fatal(err)
			}
			if code, err := p.Wait(ctx); err != nil || code != -1 {
				t.Fatalf("killed daemon: exit %d, %v", code, err)
			}
			e.modem.reset()
			st := settings(t, ctx, b)
			pending := storedOutbox(t, st)
			if len(pending) != 4 {
				t.Fatalf("pending outbox: %d responses, want the 4 of the first batch", len(pending))
			}
			before := len(b.ModemCommands())

			disk.readOnly(t, true)
			code, p := runOnce(t, ctx, b)
			if code == 0 {
				t.Errorf("run --once on a read-only folder: exit 0, want non-zero")
			}
			if want := disk.errText(false); !cpLogSays(p, want) {
				t.Errorf("no error or warning log line says %q:\n%s", want, p.Stderr())
			}
			ups := uploads(t, b)
			checkSameBytes(t, ups, pending) // delivered, byte for byte
			for _, c := range b.ModemCommands()[before:] {
				for _, j := range mustCommands(t, b) {
					if j.Kind == proto.KindAT && c == j.ATString() {
						t.Errorf("%s ran with a read-only store folder", short(c))
					}
				}
			}
			if got := b.Modem().FunctionalMode(); got != cpInitialMode {
				t.Errorf("modem mode %d, want %d", got, cpInitialMode)
			}
			if now := settings(t, ctx, b); now[outboxKey] != st[outboxKey] || now[testbed.CursorKey] != st[testbed.CursorKey] {
				t.Errorf("store changed on a read-only folder:\nbefore %v\nafter  %v", st, now)
			}

			disk.readOnly(t, false)
			cpRunUntilClean(t, ctx, b)
			cpCheckInvariants(t, ctx, b, cpInv{})
		})
	}
}

// TestStorageCorrupt: a settings file that fails its check stops `run` with exit 65 before the
// modem is touched; the file is moved aside byte for byte, never replaced by an empty store.
// `provisiond settings` reports it and leaves it where it is. The transport plays no part.
func TestStorageCorrupt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		corrupt func(data []byte) []byte
	}{
		{name: "flipped byte", corrupt: func(d []byte) []byte {
			d = bytes.Clone(d)
			d[len(d)-5] ^= 0x01
			return d
		}},
		{name: "truncated", corrupt: func(d []byte) []byte { return bytes.Clone(d[:len(d)/2]) }},
		{name: "hand edit", corrupt: func(d []byte) []byte {
			return bytes.Replace(d, []byte(`"3600"`), []byte(`"60"`), 1)
		}},
		{name: "garbage", corrupt: func(d []byte) []byte { return []byte("\x00\xff not a settings file\n") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			b := newBed(t, ctx, testbed.Options{InitialMode: cpInitialMode})
			queue(t, b, testbed.RealisticJob()...)
			if code, p := runOnce(t, ctx, b); code != 0 {
				t.Fatalf("first run: exit %d:\n%s", code, p.Stderr())
			}
			queued := len(mustCommands(t, b))
			fresh := queue(t, b, testbed.AT("+CGSN=1"), testbed.Finished())[queued:]
			good, err := os.ReadFile(b.StorePath())
			if err != nil {
				t.Fatal(err)
			}
			bad := tt.corrupt(good)
			if bytes.Equal(bad, good) {
				t.Fatal("the corruption changed nothing")
			}
			if err := os.WriteFile(b.StorePath(), bad, 0o600); err != nil {
				t.Fatal(err)
			}

			if _, err := b.Settings(ctx, provisiond); err == nil {
				t.Errorf("settings --json read a corrupt file without error")
			}
			if got, err := os.ReadFile(b.StorePath()); err != nil || !bytes.Equal(got, bad) {
				t.Errorf("settings --json changed the corrupt file (%v)", err)
			}

			before := len(b.ModemCommands())
			code, p := runOnce(t, ctx, b)
			if code != 65 {
				t.Errorf("run --once on a corrupt settings file: exit %d, want 65:\n%s", code, p.Stderr())
			}
			var aside string
			for _, e := range p.Entries() {
				if e.Level == "error" && e.Str("moved_to") != "" {
					aside = e.Str("moved_to")
				}
			}
			if aside == "" {
				t.Fatalf("no error log line names the corrupt file and where it went:\n%s", p.Stderr())
			}
			if got, err := os.ReadFile(aside); err != nil || !bytes.Equal(got, bad) {
				t.Errorf("moved-aside file %s is not the corrupt file byte for byte (%v)", aside, err)
			}
			if _, err := os.Stat(b.StorePath()); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a settings file is in place after the corrupt one was moved aside (%v): never replace it silently", err)
			}
			matches, _ := filepath.Glob(b.StorePath() + ".corrupt-*")
			if len(matches) != 1 || matches[0] != aside {
				t.Errorf("corrupt copies %v, want just %s", matches, aside)
			}
			if n := len(b.ModemCommands()) - before; n != 0 {
				t.Errorf("the modem got %d command(s) from a daemon with a corrupt store: %q", n, b.ModemCommands()[before:])
			}
			if got := b.Modem().FunctionalMode(); got != cpInitialMode {
				t.Errorf("modem mode %d, want %d", got, cpInitialMode)
			}
			for _, c := range mustCommands(t, b)[queued:] {
				if c.Deliveries != 0 {
					t.Errorf("%s fetched by a daemon with a corrupt store", c.ID)
				}
			}
			if len(fresh) != 2 {
				t.Errorf("queued 2 commands, the service lists %d new ones", len(fresh))
			}
		})
	}
}

// cpLogSays reports whether an error or warning log line (or the final "provisiond: …"
// line) of p contains text, case-insensitively.
func cpLogSays(p *testbed.Process, text string) bool {
	for _, e := range p.Entries() {
		if (e.Level == "error" || e.Level == "warn" || !e.JSON()) && strings.Contains(strings.ToLower(e.Raw), text) {
			return true
		}
	}
	return false
}

// cpRunUntilClean runs `run --once` until one exits 0; exit 2 (an attempt that delivered
// failures) is allowed on the way, anything else fails the test.
func cpRunUntilClean(t *testing.T, ctx context.Context, b *testbed.Bed) {
	t.Helper()
	for run := 1; run <= cpMaxRestarts; run++ {
		code, p := runOnce(t, ctx, b)
		switch code {
		case 0:
			return
		case 2:
		default:
			t.Fatalf("restart %d: exit %d:\n%s", run, code, p.Stderr())
		}
	}
	t.Errorf("no clean run --once after %d restarts", cpMaxRestarts)
}
