package atmodem

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

// stallPort never answers. Its writes return at once, or with blockWrites never until the
// test ends (a serial line whose flow control never lets a byte through).
type stallPort struct {
	blockWrites bool
	release     chan struct{}
	wrote       chan struct{}
}

func newStallPort(t *testing.T, blockWrites bool) *stallPort {
	p := &stallPort{blockWrites: blockWrites, release: make(chan struct{}), wrote: make(chan struct{}, 16)}
	t.Cleanup(func() { close(p.release) })
	return p
}

func (p *stallPort) Read([]byte) (int, error) {
	<-p.release
	return 0, io.EOF
}

func (p *stallPort) Write(b []byte) (int, error) {
	select {
	case p.wrote <- struct{}{}:
	default:
	}
	if p.blockWrites {
		<-p.release
		return 0, io.ErrClosedPipe
	}
	return len(b), nil
}

// beats starts a client on port and returns its heartbeat reports.
func beats(t *testing.T, port io.ReadWriter, timeout time.Duration) (*Client, <-chan error) {
	t.Helper()
	ch := make(chan error, 1024)
	c := New(port, Config{
		CommandTimeout: timeout,
		HeartbeatEvery: time.Millisecond,
		Heartbeat: func(err error) {
			select {
			case ch <- err:
			default:
			}
		},
	})
	t.Cleanup(func() { go c.Close() })
	return c, ch
}

// nextHealthy waits for n reports of a working loop, failing on anything else.
func nextHealthy(t *testing.T, ch <-chan error, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := <-ch; err != nil {
			t.Fatalf("heartbeat %d: %v, want a working loop", i, err)
		}
	}
}

func TestHeartbeatWhileIdle(t *testing.T) {
	_, ch := beats(t, newStallPort(t, false), time.Hour)
	nextHealthy(t, ch, 5)
}

// A command waiting for its answer within its timeout is work in progress, not a wedge.
func TestHeartbeatDuringLongCommand(t *testing.T) {
	port := newStallPort(t, false)
	c, ch := beats(t, port, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _, _ = c.Command(ctx, "AT%KEYGEN=16842753,2,0") }()
	<-port.wrote // the opening probe is on the wire and unanswered
	for len(ch) > 0 {
		<-ch
	}
	nextHealthy(t, ch, 5)
}

// A write that never returns wedges the conversation: the heartbeat says so, which is what
// stops the watchdog pings.
func TestHeartbeatReportsBlockedWrite(t *testing.T) {
	port := newStallPort(t, true)
	c, ch := beats(t, port, 20*time.Millisecond)
	go func() { _, _ = c.Command(context.Background(), "AT+CGSN=1") }()
	<-port.wrote
	for err := range ch {
		if err == nil {
			continue // still within the command's timeout
		}
		if !errors.Is(err, ErrWedged) {
			t.Fatalf("heartbeat: %v, want ErrWedged", err)
		}
		break
	}
	// It stays wedged while the write does not return.
	for range 3 {
		if err := <-ch; !errors.Is(err, ErrWedged) {
			t.Fatalf("heartbeat after the wedge: %v, want ErrWedged", err)
		}
	}
}
