package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/provisiond/provisiond/internal/atmodem"
	"github.com/provisiond/provisiond/internal/control"
	"github.com/provisiond/provisiond/internal/notify/notifytest"
	"github.com/provisiond/provisiond/internal/status"
)

// With the modem unplugged the daemon is ready once its control socket serves, so that
// `systemctl start` returns and the boot goes on; STATUS and `status` say what it waits for.
func TestReadyWithoutModem(t *testing.T) {
	b := newBench(t, "http")
	if err := b.modem.Close(); err != nil { // unplugged: its link is gone
		t.Fatal(err)
	}
	msgs := notifytest.Listen(t)
	t.Setenv("WATCHDOG_USEC", "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, runOptions{configPath: b.config, explicit: true}, &stdout, &stderr) }()

	var sawReady bool
	for msg := range msgs {
		if msg == "READY=1" {
			sawReady = true
			continue
		}
		if sawReady && strings.HasPrefix(msg, "STATUS=waiting for the modem on ") && strings.HasSuffix(msg, "ttyACM0") {
			break
		}
	}
	// Ready means the socket answers.
	var st status.Daemon
	waitFor(t, "the daemon to report the missing modem", func() bool {
		var err error
		st, err = control.Dial(b.socket).Status(ctx)
		return err == nil && st.State == status.StateWaitingForModem
	})
	if !strings.HasPrefix(st.WaitingFor, "the modem on ") || !strings.HasSuffix(st.Port, "ttyACM0") {
		t.Errorf("status while waiting: waiting_for %q, port %q", st.WaitingFor, st.Port)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
}

// blockedPort is a serial line that never lets a byte through.
type blockedPort struct{ release chan struct{} }

func (p blockedPort) Read([]byte) (int, error)  { <-p.release; return 0, io.EOF }
func (p blockedPort) Write([]byte) (int, error) { <-p.release; return 0, io.ErrClosedPipe }

// The watchdog's health follows the AT loop: fine while idle, wedged while a write to the
// modem does not return, fine again once that client is gone (the next modem is awaited).
func TestHealthFollowsATLoop(t *testing.T) {
	h := newHealth()
	h.scheduler.Beat()
	h.control.Beat()
	port := blockedPort{release: make(chan struct{})}
	defer close(port.release)
	c := atmodem.New(port, atmodem.Config{CommandTimeout: 20 * time.Millisecond, HeartbeatEvery: time.Millisecond,
		Heartbeat: atHeartbeat(h.at)})
	if err := h.mon.Check(); err != nil {
		t.Fatalf("idle: %v", err)
	}
	go func() { _, _ = c.Command(context.Background(), "AT+CGSN=1") }()
	waitFor(t, "the wedge to show", func() bool {
		err := h.mon.Check()
		return err != nil && strings.Contains(err.Error(), "modem AT loop") && strings.Contains(err.Error(), atmodem.ErrWedged.Error())
	})
	var withheld error
	check := h.check(zap.NewNop())
	if withheld = check(); withheld == nil {
		t.Error("the watchdog's check passed with the AT loop wedged")
	}
	// The port is no io.Closer, so Close does not wait for the blocked write.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the finished loop to pause its part", func() bool { return h.mon.Check() == nil })
	if errors.Is(check(), atmodem.ErrWedged) {
		t.Error("still wedged after the client ended")
	}
}

// An idle daemon keeps feeding the watchdog: its loops report idleness, not only progress.
func TestWatchdogPingsWhileIdle(t *testing.T) {
	b := newBench(t, "http")
	msgs := notifytest.Listen(t)
	t.Setenv("WATCHDOG_USEC", "100000") // a ping every 50 ms
	t.Setenv("WATCHDOG_PID", "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, runOptions{configPath: b.config, explicit: true}, &stdout, &stderr) }()

	// Past the first attempt (nothing queued: NO_COMMANDS) the daemon idles until the next
	// interval; the pings must go on.
	waitFor(t, "the first attempt", func() bool {
		st, err := control.Dial(b.socket).Status(ctx)
		return err == nil && st.Attempts >= 1 && st.State == status.StateIdle
	})
	for len(msgs) > 0 {
		<-msgs
	}
	pings := 0
	for msg := range msgs {
		if msg == "WATCHDOG=1" {
			if pings++; pings == 5 {
				break
			}
		}
	}
	if strings.Contains(stderr.String(), "watchdog pings withheld") {
		t.Errorf("pings were withheld from an idle daemon:\n%s", stderr.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
}
