package e2e

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/store"
	"github.com/provisiond/provisiond/internal/testbed"
	"github.com/provisiond/provisiond/internal/testexec"
)

// testTimeout bounds each test; generous because CI machines are slow under -race. Nothing
// asserts on time: a test that needs longer than this has hung. Under emulation
// (scripts/test-arch.sh) testCtx allows testexec.Scale of it.
const testTimeout = 90 * time.Second

var transports = []string{testbed.TransportHTTP, testbed.TransportCoAP}

// testCtx is a context bounded by testTimeout (scaled under emulation) and the test's own
// deadline.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testexec.Scale(testTimeout))
	if d, ok := t.Deadline(); ok {
		var c2 context.CancelFunc
		ctx, c2 = context.WithDeadline(ctx, d.Add(-5*time.Second))
		t.Cleanup(c2)
	}
	t.Cleanup(cancel)
	return ctx
}

// newBed starts a bench for the test and closes it at the end.
func newBed(t *testing.T, ctx context.Context, opts testbed.Options) *testbed.Bed {
	t.Helper()
	b, err := testbed.Start(ctx, opts)
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("testbed close: %v", err)
		}
	})
	return b
}

// start starts provisiond with args and, if the test fails, logs its stderr. The process is
// killed at the end of the test if still running.
func start(t *testing.T, ctx context.Context, b *testbed.Bed, args ...string) *testbed.Process {
	t.Helper()
	p, err := b.Start(ctx, provisiond, nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case <-p.Done():
		default:
			_ = p.Kill()
			<-p.Done()
		}
		if strings.Contains(p.Stderr(), "WARNING: DATA RACE") {
			t.Errorf("the race detector reported a data race in provisiond")
		}
		if t.Failed() {
			t.Logf("provisiond %s (pid %d) stderr:\n%s", strings.Join(args, " "), p.Pid(), p.Stderr())
		}
	})
	return p
}

// runOnce runs `provisiond run --once` to its end and returns its exit code.
func runOnce(t *testing.T, ctx context.Context, b *testbed.Bed) (int, *testbed.Process) {
	t.Helper()
	p := start(t, ctx, b, "run", "--once")
	code, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("run --once: %v", err)
	}
	return code, p
}

// settings returns the store through `provisiond settings --json`.
func settings(t *testing.T, ctx context.Context, b *testbed.Bed) map[string]string {
	t.Helper()
	m, err := b.Settings(ctx, provisiond)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// uploads returns the decoded uploads the service recorded; a batch that did not decode
// fails the test.
func uploads(t *testing.T, b *testbed.Bed) []simcloud.Upload {
	t.Helper()
	ups, err := b.Uploads()
	if err != nil {
		t.Fatal(err)
	}
	for i, u := range ups {
		if u.Err != "" {
			t.Errorf("upload %d did not decode at the service: %s", i, u.Err)
		}
	}
	return ups
}

// queue queues owner requests and returns the device-level commands the queue holds.
func queue(t *testing.T, b *testbed.Bed, reqs ...simcloud.Request) []simcloud.Command {
	t.Helper()
	if _, err := b.Queue(reqs...); err != nil {
		t.Fatal(err)
	}
	cmds, err := b.Cloud().Commands(b.UUID())
	if err != nil {
		t.Fatal(err)
	}
	return cmds
}

// respString renders a response for messages.
func respString(r proto.Response) string {
	if r.Kind == proto.KindError {
		return r.ID + " ERROR cme=" + itoa(r.CMEError) + " " + quote(r.Message)
	}
	return r.ID + " " + kindName(r.Kind) + " " + quote(r.Message)
}

func kindName(k proto.ResponseKind) string {
	switch k {
	case proto.KindATResponse:
		return "AT"
	case proto.KindConfigAck:
		return "CONFIG_ACK"
	case proto.KindFinishedAck:
		return "FINISHED_ACK"
	case proto.KindError:
		return "ERROR"
	}
	return "kind" + itoa(uint64(k))
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

func quote(s string) string { return strconv.Quote(s) }

// waitEvent waits for the provisioning event ev at or after *at and moves *at past it.
func waitEvent(t *testing.T, ctx context.Context, p *testbed.Process, at *int, ev string) testbed.LogEntry {
	t.Helper()
	e, next, err := p.WaitEvent(ctx, *at, ev)
	if err != nil {
		t.Fatalf("waiting for event %s: %v", ev, err)
	}
	*at = next
	return e
}

// waitID waits for a log entry whose msg_id is one of ids at or after *at and moves *at past
// it. The daemon's messages are prose and may be reworded; msg_id is fixed.
func waitID(t *testing.T, ctx context.Context, p *testbed.Process, at *int, ids ...string) testbed.LogEntry {
	t.Helper()
	e, next, err := p.WaitLog(ctx, *at, func(e testbed.LogEntry) bool { return slices.Contains(ids, e.MsgID()) })
	if err != nil {
		t.Fatalf("waiting for a log entry with msg_id %s: %v", strings.Join(ids, " or "), err)
	}
	*at = next
	return e
}

// countID counts the log entries whose msg_id is id.
func countID(p *testbed.Process, id string) int {
	n := 0
	for _, e := range p.Entries() {
		if e.MsgID() == id {
			n++
		}
	}
	return n
}

// waitCheckpointed waits until the settings file alone shows the store's current state: the
// daemon brings it up to date after each attempt and when it stops (internal/store). It reads
// a copy of the file, so that the slot file beside the original plays no part.
func waitCheckpointed(t *testing.T, ctx context.Context, b *testbed.Bed) {
	t.Helper()
	want := settings(t, ctx, b)
	copyPath := filepath.Join(t.TempDir(), "settings")
	var got map[string]string
	var err error
	for {
		var data []byte
		if data, err = os.ReadFile(b.StorePath()); err == nil {
			if err = os.WriteFile(copyPath, data, 0o600); err == nil {
				got, err = store.Load(copyPath, store.Limits{})
			}
		}
		if err == nil && maps.Equal(got, want) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the settings file does not show the store: %q, %v; want %q", got, err, want)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
