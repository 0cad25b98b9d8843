package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/rootca"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/simmodem"
	"github.com/provisiond/provisiond/internal/testbed"
)

const rootCATag = 189298

// TestRealisticJob carries the demo's job (client certificate via %KEYGEN and a CSR signed by
// the service, an interval change, FINISHED) with `run --once` and checks everything from the
// outside; a second `run --once` then finds nothing to do and changes nothing.
func TestRealisticJob(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		for _, mode := range []int{0, 1} {
			t.Run(fmt.Sprintf("%s/cfun%d", tr, mode), func(t *testing.T) {
				t.Parallel()
				ctx := testCtx(t)
				b := newBed(t, ctx, testbed.Options{Transport: tr, InitialMode: mode})
				queue(t, b, testbed.RealisticJob()...)

				code, p := runOnce(t, ctx, b)
				if code != 0 {
					t.Fatalf("run --once: exit %d, want 0", code)
				}
				cmds := mustCommands(t, b)
				if got, want := p.Stdout(), "DONE: 5 command(s) executed\n"; got != want {
					t.Errorf("stdout %q, want %q", got, want)
				}
				checkUploads(t, b, realisticUploads(t, b))
				checkExecutedTimes(t, b, cmds, 1)
				checkClientCert(t, b, testbed.ClientCertSecTag)
				if got := b.Modem().FunctionalMode(); got != mode {
					t.Errorf("modem mode after the job: %d, want %d as before", got, mode)
				}
				checkSettings(t, settings(t, ctx, b), cmds[5].ID, "3600")
				checkRootCA(t, b)
				dev, err := b.Cloud().Device(b.UUID())
				if err != nil || dev.ProvisionedAt == nil || dev.ClientVersion == "" {
					t.Errorf("service's device record: %+v, %v; want provisioned with a cver", dev, err)
				}
				for _, c := range mustCommands(t, b) {
					if c.Status != simcloud.StatusSucceeded || c.Deliveries != 1 {
						t.Errorf("command %s: %s after %d deliveries, want SUCCEEDED after 1", c.ID, c.Status, c.Deliveries)
					}
				}
				// The daemon went offline only for the batches and the root CA, and came back
				// each time (mode 1), or never needed to (mode 0).
				log := b.ModemCommands()
				if wantOff := map[int]int{0: 0, 1: 3}[mode]; count(log, "AT+CFUN=4") != wantOff {
					t.Errorf("AT+CFUN=4 sent %d times, want %d", count(log, "AT+CFUN=4"), wantOff)
				}

				// Nothing more to do: NO_COMMANDS, exit 0, nothing executed or uploaded again.
				before := len(b.ModemCommands())
				code, p = runOnce(t, ctx, b)
				if code != 0 || p.Stdout() != "NO_COMMANDS: 0 command(s) executed\n" {
					t.Errorf("second run --once: exit %d, stdout %q; want 0 and NO_COMMANDS", code, p.Stdout())
				}
				if n := len(uploads(t, b)); n != 2 {
					t.Errorf("second run uploaded again: %d uploads", n)
				}
				checkExecutedTimes(t, b, cmds, 1)
				for _, c := range b.ModemCommands()[before:] {
					if strings.HasPrefix(c, "AT%CMNG=0") || strings.HasPrefix(c, "AT+CFUN=4") || strings.HasPrefix(c, "AT%KEYGEN") {
						t.Errorf("second run sent %s", short(c))
					}
				}
				if got := b.Modem().FunctionalMode(); got != mode {
					t.Errorf("modem mode after the second run: %d, want %d", got, mode)
				}
			})
		}
	}
}

// checkRootCA checks the root CA of the configured transport was written once into the CA tag.
func checkRootCA(t *testing.T, b *testbed.Bed) {
	t.Helper()
	c, ok := b.Modem().Credential(rootCATag, simmodem.TypeRootCA)
	if !ok {
		t.Errorf("no root CA in sec tag %d", rootCATag)
		return
	}
	want, err := rootca.ForTransport(b.Transport())
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(c.Content) != strings.TrimSpace(want) {
		t.Errorf("root CA in sec tag %d is not the %s service's root", rootCATag, b.Transport())
	}
	n := 0
	for _, l := range b.ModemCommands() {
		if strings.HasPrefix(l, fmt.Sprintf("AT%%CMNG=0,%d,0,", rootCATag)) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("root CA written %d times, want once", n)
	}
}

func mustCommands(t *testing.T, b *testbed.Bed) []simcloud.Command {
	t.Helper()
	cmds, err := b.Cloud().Commands(b.UUID())
	if err != nil {
		t.Fatal(err)
	}
	return cmds
}

// TestFailingCommand: a CME error outside the command's ignore list is the batch's last
// response; the commands after it never reach the modem and are not answered; the modem's
// mode is restored; `run --once` exits non-zero naming the outcome.
func TestFailingCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// first is the failing command's request; fault, if set, makes the modem fail it.
		first   simcloud.Request
		fault   func(m *simmodem.Modem)
		wantCME uint64
	}{
		// A real failure: deleting a credential that is not there, 513 not ignored.
		{name: "cmng delete of a missing credential", first: testbed.AT("%CMNG=3,42,0"), wantCME: 513},
		// An injected one: the modem answers +CME ERROR: 527 to an otherwise fine command,
		// and 513 in the ignore list does not cover it.
		{name: "injected CME error", first: testbed.AT("%XMODEMUUID", 513), wantCME: 527,
			fault: func(m *simmodem.Modem) { m.CMEErrorFor("AT%XMODEMUUID", 527) }},
	}
	for _, tr := range transports {
		for _, tt := range tests {
			t.Run(tr+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				ctx := testCtx(t)
				b := newBed(t, ctx, testbed.Options{Transport: tr, InitialMode: 1})
				if tt.fault != nil {
					tt.fault(b.Modem())
				}
				cmds := queue(t, b, tt.first, testbed.AT("%CMNG=0,42,0,\"later\""), testbed.Interval(60), testbed.Finished())

				code, p := runOnce(t, ctx, b)
				if code == 0 {
					t.Errorf("run --once: exit 0, want non-zero")
				}
				if !strings.Contains(p.Stderr(), "1 command(s) failed") {
					t.Errorf("stderr does not say a command failed:\n%s", p.Stderr())
				}
				checkUploads(t, b, [][]wantResp{{
					{ID: cmds[0].ID, Kind: proto.KindError, CME: tt.wantCME, Message: fmt.Sprintf("+CME ERROR: %d\r\n", tt.wantCME)},
				}})
				log := b.ModemCommands()
				if n := count(log, cmds[0].ATString()); n != 1 {
					t.Errorf("the failing command reached the modem %d times, want 1", n)
				}
				if n := count(log, cmds[1].ATString()); n != 0 {
					t.Errorf("the command after the failure reached the modem %d times, want 0", n)
				}
				if _, ok := b.Modem().Credential(42, simmodem.TypeRootCA); ok {
					t.Error("the command after the failure wrote its credential")
				}
				if got := b.Modem().FunctionalMode(); got != 1 {
					t.Errorf("modem mode %d after the failed batch, want 1", got)
				}
				if got := b.Modem().CMEE(); got != 0 {
					t.Errorf("CMEE %d after the batch, want 0 restored", got)
				}
				checkSettings(t, settings(t, ctx, b), cmds[0].ID, "")
			})
		}
	}
}

// TestMalformedBatch: batches the daemon must refuse are refused whole: nothing executed,
// nothing uploaded, the cursor unchanged; once the service serves a good batch the job runs.
// (A batch with indefinite lengths is not among them: the device accepts it, and so does
// provisiond; see TestStreamedBatch.)
func TestMalformedBatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		fault     simcloud.FaultKind
		wantEvent string
	}{
		{name: "truncated cbor", fault: simcloud.FaultMalformedCBOR, wantEvent: "FAILED"},
		{name: "too many commands", fault: simcloud.FaultTooMany, wantEvent: "FAILED_TOO_MANY_COMMANDS"},
	}
	for _, tr := range transports {
		for _, tt := range tests {
			t.Run(tr+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				ctx := testCtx(t)
				b := newBed(t, ctx, testbed.Options{Transport: tr, InitialMode: 1})
				cmds := queue(t, b, testbed.RealisticJob()...)
				if err := b.Cloud().SetFault(simcloud.Fault{Kind: tt.fault, Count: 1, Op: simcloud.OpFetch}); err != nil {
					t.Fatal(err)
				}
				code, p := runOnce(t, ctx, b)
				if code == 0 {
					t.Errorf("run --once: exit 0, want non-zero")
				}
				if !strings.Contains(p.Stderr(), "provisiond: "+tt.wantEvent+":") {
					t.Errorf("stderr does not name %s:\n%s", tt.wantEvent, p.Stderr())
				}
				if ups := uploads(t, b); len(ups) != 0 {
					t.Errorf("refused batch uploaded:\n%s", describeUploads(ups))
				}
				checkExecutedTimes(t, b, cmds, 0)
				if n := count(b.ModemCommands(), "AT+CFUN=4"); n != 1 { // the root CA write only
					t.Errorf("AT+CFUN=4 sent %d times, want once (root CA), none for a refused batch", n)
				}
				if got := b.Modem().FunctionalMode(); got != 1 {
					t.Errorf("modem mode %d, want 1", got)
				}
				st := settings(t, ctx, b)
				checkSettings(t, st, "", "")

				// The fault is spent: the same job now runs, each command once.
				if code, _ := runOnce(t, ctx, b); code != 0 {
					t.Fatalf("run --once after the fault: exit %d", code)
				}
				checkUploads(t, b, realisticUploads(t, b))
				checkExecutedTimes(t, b, mustCommands(t, b), 1)
			})
		}
	}
}
