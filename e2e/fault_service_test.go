package e2e

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/testbed"
	"github.com/provisiond/provisiond/internal/testexec"
)

// setFault installs fault rules on the service.
func setFault(t *testing.T, b *testbed.Bed, faults ...simcloud.Fault) {
	t.Helper()
	if err := b.Cloud().SetFault(faults...); err != nil {
		t.Fatal(err)
	}
}

// TestFaultService: the service is busy, slow, drops connections, fails uploads, presents a
// certificate from the wrong CA, refuses the device, or cannot fit a command in the receive
// buffer. Each attempt fails cleanly; the job completes afterwards with every command run
// once.
func TestFaultService(t *testing.T) {
	t.Parallel()
	short := testbed.Options{Timeout: time.Second}
	// The busy row reads the state while the daemon backs off, for the initial backoff (1 s,
	// the testbed's) and then twice that. Under emulation `provisiond status` alone can take
	// longer than that on a loaded machine, and the window is scaled with it.
	backoff := testbed.Options{Settings: map[string]any{"provisioning.initial_backoff": testexec.Scale(time.Second).String()}}
	runMatrix(t, []matrixRow{
		{name: "busy 500 on fetch, twice, daemon backs off", opts: backoff, done: true, run: func(t *testing.T, ctx context.Context, b *testbed.Bed) {
			setFault(t, b, simcloud.Fault{Kind: simcloud.FaultBusy, Count: 2, Op: simcloud.OpFetch})
			d := daemon(t, ctx, b)
			at := 0
			for range 2 {
				waitEvent(t, ctx, d, &at, "FAILED")
				if st := status(t, b); st.State != "backoff" && st.State != "provisioning" {
					t.Errorf("state after a busy service: %q, want backoff", st.State)
				}
			}
			waitEvent(t, ctx, d, &at, "DONE") // by its own retries, no `now`
			stop(t, ctx, d)
		}},
		{name: "busy 503 on upload", done: true, run: func(t *testing.T, ctx context.Context, b *testbed.Bed) {
			setFault(t, b, simcloud.Fault{Kind: simcloud.FaultBusy, Count: 1, Op: simcloud.OpUpload, HTTPStatus: http.StatusServiceUnavailable})
			onceFails(t, ctx, b, "FAILED")
			if len(storedOutbox(t, settings(t, ctx, b))) != 3 {
				t.Error("the refused results are not kept")
			}
		}},
		{name: "timeout on fetch", opts: short, done: true, run: func(t *testing.T, ctx context.Context, b *testbed.Bed) {
			setFault(t, b, simcloud.Fault{Kind: simcloud.FaultSlow, Count: 1, Op: simcloud.OpFetch, Delay: 3 * time.Second})
			onceFails(t, ctx, b, "FAILED")
			noJobCommands(t, b)
		}},
		{name: "timeout on upload", opts: short, done: true, run: func(t *testing.T, ctx context.Context, b *testbed.Bed) {
			// The service may still take the late upload (CoAP has no connection to close):
			// the retry then delivers it a second time, identical.
			setFault(t, b, simcloud.Fault{Kind: simcloud.FaultSlow, Count: 1, Op: simcloud.OpUpload, Delay: 3 * time.Second})
			onceFails(t, ctx, b, "FAILED")
		}},
		{name: "connection dropped on fetch", opts: short, done: true, run: func(t *testing.T, ctx context.Context, b *testbed.Bed) {
			setFault(t, b, simcloud.Fault{Kind: simcloud.FaultDrop, Count: 1, Op: simcloud.OpFetch})
			onceFails(t, ctx, b, "FAILED")
			noJobCommands(t, b)
		}},
		{name: "connection dropped on upload", opts: short, done: true, run: func(t *testing.T, ctx context.Context, b *testbed.Bed) {
			setFault(t, b, simcloud.Fault{Kind: simcloud.FaultDrop, Count: 1, Op: simcloud.OpUpload})
			onceFails(t, ctx, b, "FAILED")
			if ups := uploads(t, b); len(ups) != 0 {
				t.Errorf("a dropped upload was recorded:\n%s", describeUploads(ups))
			}
		}},
		{name: "dropped authentication", opts: short, done: true, run: func(t *testing.T, ctx context.Context, b *testbed.Bed) {
			if b.Transport() != testbed.TransportCoAP {
				t.Skip("only CoAP has an authentication request (POST /p/auth-jwt)")
			}
			setFault(t, b, simcloud.Fault{Kind: simcloud.FaultDrop, Count: 1, Op: simcloud.OpAuth})
			onceFails(t, ctx, b, "FAILED")
			noJobCommands(t, b)
		}},
		{name: "upload failing four times", done: true, run: func(t *testing.T, ctx context.Context, b *testbed.Bed) {
			setFault(t, b, simcloud.Fault{Kind: simcloud.FaultFailUpload, Count: 4})
			for range 4 {
				onceFails(t, ctx, b, "FAILED")
			}
			if ups := uploads(t, b); len(ups) != 0 {
				t.Errorf("a refused upload was recorded:\n%s", describeUploads(ups))
			}
			checkExecutedTimes(t, b, mustCommands(t, b)[:3], 1)
		}},
		{name: "401 once", done: true, run: func(t *testing.T, ctx context.Context, b *testbed.Bed) {
			setFault(t, b, simcloud.Fault{Kind: simcloud.FaultUnauthorized, Count: 1, Op: simcloud.OpFetch})
			onceFails(t, ctx, b, "FAILED_DEVICE_NOT_CLAIMED")
			noJobCommands(t, b)
		}},
		{name: "wrong CA", done: true, run: func(t *testing.T, ctx context.Context, b *testbed.Bed) {
			other, err := simcloud.New(simcloud.Config{StateDir: filepath.Join(t.TempDir(), "other")})
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			key := "http.ca_file"
			if b.Transport() == testbed.TransportCoAP {
				key = "coap.ca_file"
			}
			if err := b.WriteConfig(map[string]any{key: other.CAFile()}); err != nil {
				t.Fatal(err)
			}
			p := onceFails(t, ctx, b, "")
			if !strings.Contains(p.Stderr(), "provisiond: FAILED_WRONG_ROOT_CA:") {
				t.Errorf("run --once: stderr does not name FAILED_WRONG_ROOT_CA:\n%s", p.Stderr())
			}
			noJobCommands(t, b)
			if dev, _ := b.Cloud().Device(b.UUID()); dev.LastSeenAt != nil {
				t.Error("the service saw an authenticated request through a connection to the wrong CA")
			}
			if err := b.WriteConfig(map[string]any{key: nil}); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "command larger than the receive buffer", done: true,
			opts: testbed.Options{Settings: map[string]any{"provisioning.rx_buf_size": 256, "provisioning.rx_buf_max": 256}},
			run: func(t *testing.T, ctx context.Context, b *testbed.Bed) {
				// The certificate write does not fit in 256 bytes; the service says so, and
				// the cap allows no retry with the size it names.
				p := onceFails(t, ctx, b, "FAILED")
				if !strings.Contains(p.Stderr(), "rxMaxSize") || !strings.Contains(p.Stderr(), "provisioning.rx_buf_max") {
					t.Errorf("stderr does not say why:\n%s", p.Stderr())
				}
				if err := b.WriteConfig(map[string]any{"provisioning.rx_buf_size": nil, "provisioning.rx_buf_max": nil}); err != nil {
					t.Fatal(err)
				}
			}},
	})
}

// TestFaultUnclaimed: a device nobody claimed gets FAILED_DEVICE_NOT_CLAIMED, with nothing
// fetched or run; the owner claims it with the token `provisiond token` prints, and `now`
// provisions it.
func TestFaultUnclaimed(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, tr string) {
		ctx := testCtx(t)
		b := newBed(t, ctx, testbed.Options{Transport: tr, InitialMode: 1, Unclaimed: true})
		p := onceFails(t, ctx, b, "FAILED_DEVICE_NOT_CLAIMED")
		if strings.Contains(p.Stderr(), "attestation_token") {
			for _, e := range p.Entries() {
				if tok := e.Str("attestation_token"); len(tok) > 40 {
					t.Errorf("the attestation token is logged in full: %q", tok)
				}
			}
		}
		d := daemon(t, ctx, b)
		at := 0
		waitEvent(t, ctx, d, &at, "FAILED_DEVICE_NOT_CLAIMED")
		tok := ctl(t, b, "token")
		if _, err := b.Cloud().Claim(tok); err != nil {
			t.Fatalf("claim with the token from `provisiond token`: %v", err)
		}
		queue(t, b, testbed.RealisticJob()...)
		ctl(t, b, "now")
		waitEvent(t, ctx, d, &at, "DONE")
		stop(t, ctx, d)
		invariants(t, ctx, b, 1)
		jobDone(t, b)
	})
}
