package e2e

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/testbed"
)

// TestUploadFailsOnce: the service refuses the first upload. The results stay in the store;
// the next `run --once` delivers them first, byte for byte, and nothing runs twice.
func TestUploadFailsOnce(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			b := newBed(t, ctx, testbed.Options{Transport: tr, InitialMode: 1})
			queue(t, b, testbed.RealisticJob()...)
			if err := b.Cloud().SetFault(simcloud.Fault{Kind: simcloud.FaultFailUpload, Count: 1, HTTPStatus: 503}); err != nil {
				t.Fatal(err)
			}
			code, _ := runOnce(t, ctx, b)
			if code == 0 {
				t.Fatal("run --once with a refused upload: exit 0, want non-zero")
			}
			if ups := uploads(t, b); len(ups) != 0 {
				t.Fatalf("the refused upload was recorded:\n%s", describeUploads(ups))
			}
			st := settings(t, ctx, b)
			pending := storedOutbox(t, st)
			if len(pending) != 3 {
				t.Fatalf("pending outbox: %d responses, want the 3 of the first batch", len(pending))
			}
			if _, ok := st["provisioning/after-correlation-id"]; ok {
				t.Errorf("cursor moved although nothing was delivered: %v", st)
			}
			if got := b.Modem().FunctionalMode(); got != 1 {
				t.Errorf("modem mode %d, want 1", got)
			}

			if code, _ := runOnce(t, ctx, b); code != 0 {
				t.Fatalf("second run --once: exit %d, want 0", code)
			}
			ups := checkUploads(t, b, realisticUploads(t, b))
			checkSameBytes(t, ups, pending)
			cmds := mustCommands(t, b)
			checkExecutedTimes(t, b, cmds, 1)
			checkClientCert(t, b, testbed.ClientCertSecTag)
			checkSettings(t, settings(t, ctx, b), cmds[len(cmds)-1].ID, "3600")
		})
	}
}

// checkSameBytes checks the first recorded upload is the encoding of the outbox the daemon
// had stored before it was restarted.
func checkSameBytes(t *testing.T, ups []simcloud.Upload, pending []proto.Response) {
	t.Helper()
	want, err := proto.EncodeResponses(pending)
	if err != nil {
		t.Fatal(err)
	}
	if len(ups) == 0 || !bytes.Equal(ups[0].Raw, want) {
		t.Errorf("first upload after the restart is not the stored outbox:\n%s", describeUploads(ups))
	}
}

// TestKillDuringUpload: SIGKILL while the service is still taking the upload. The restarted
// daemon uploads the same results first, and nothing is executed again.
func TestKillDuringUpload(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			b := newBed(t, ctx, testbed.Options{Transport: tr, InitialMode: 1})
			queue(t, b, testbed.RealisticJob()...)
			// The service holds the first upload for far longer than the test runs.
			slow := simcloud.Fault{Kind: simcloud.FaultSlow, Count: 1, Op: simcloud.OpUpload, Delay: 10 * time.Minute}
			if err := b.Cloud().SetFault(slow); err != nil {
				t.Fatal(err)
			}
			p := start(t, ctx, b, "run", "--once")
			waitFaultsSpent(t, ctx, b) // the upload has reached the service and hangs there
			if err := p.Kill(); err != nil {
				t.Fatal(err)
			}
			if code, err := p.Wait(ctx); err != nil || code != -1 {
				t.Fatalf("killed daemon: exit %d, %v; want killed by a signal", code, err)
			}
			if ups := uploads(t, b); len(ups) != 0 {
				t.Fatalf("the held upload was recorded:\n%s", describeUploads(ups))
			}
			pending := storedOutbox(t, settings(t, ctx, b))
			if len(pending) != 3 {
				t.Fatalf("pending outbox: %d responses, want the 3 of the first batch", len(pending))
			}

			code, _ := runOnce(t, ctx, b)
			if code != 0 {
				t.Fatalf("run --once after the kill: exit %d, want 0", code)
			}
			ups := checkUploads(t, b, realisticUploads(t, b))
			checkSameBytes(t, ups, pending)
			cmds := mustCommands(t, b)
			checkExecutedTimes(t, b, cmds, 1)
			checkClientCert(t, b, testbed.ClientCertSecTag)
			if got := b.Modem().FunctionalMode(); got != 1 {
				t.Errorf("modem mode %d, want 1", got)
			}
			checkSettings(t, settings(t, ctx, b), cmds[len(cmds)-1].ID, "3600")
		})
	}
}

// waitFaultsSpent waits until every fault rule with a count has been used up, i.e. the
// requests it was aimed at have reached the service.
func waitFaultsSpent(t *testing.T, ctx context.Context, b *testbed.Bed) {
	t.Helper()
	for len(b.Cloud().Faults()) > 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("faults never triggered: %+v", b.Cloud().Faults())
		case <-time.After(5 * time.Millisecond):
		}
	}
}
