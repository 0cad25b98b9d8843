package notify

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/notify/notifytest"
)

func TestMessages(t *testing.T) {
	tests := []struct {
		name string
		call func(n *Notifier) error
		want string // regexp of the whole datagram
	}{
		{name: "ready", call: (*Notifier).Ready, want: `READY=1`},
		{name: "stopping", call: (*Notifier).Stopping, want: `STOPPING=1`},
		{name: "reloading", call: (*Notifier).Reloading, want: `RELOADING=1\nMONOTONIC_USEC=[0-9]+`},
		{name: "status", call: func(n *Notifier) error { return n.Status("idle; last: DONE") }, want: `STATUS=idle; last: DONE`},
		{name: "status with line breaks", call: func(n *Notifier) error { return n.Status("a\nREADY=1\r\nb") }, want: `STATUS=a READY=1 b`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs := notifytest.Listen(t)
			if err := tt.call(&Notifier{}); err != nil {
				t.Fatal(err)
			}
			got := <-msgs
			if !regexp.MustCompile(`\A` + tt.want + `\z`).MatchString(got) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSilentOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	n := &Notifier{}
	for name, f := range map[string]func() error{
		"ready": n.Ready, "stopping": n.Stopping, "reloading": n.Reloading,
		"status": func() error { return n.Status("x") },
		// Without a watchdog the loop must return at once, not block until ctx ends.
		"watchdog": func() error { return n.Watchdog(context.Background(), healthy) },
	} {
		if err := f(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestMissingSocketIsAnError(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone.sock"))
	err := (&Notifier{}).Ready()
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v, want an error wrapping ENOENT", err)
	}
}

func TestWatchdogPings(t *testing.T) {
	msgs := notifytest.Listen(t)
	t.Setenv("WATCHDOG_USEC", "2000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&Notifier{}).Watchdog(ctx, healthy) }()
	for i := 0; i < 3; i++ {
		if got := <-msgs; got != "WATCHDOG=1" {
			t.Fatalf("ping %d: got %q, want WATCHDOG=1", i, got)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Watchdog returned %v after cancel, want nil", err)
	}
}

func TestWatchdogForAnotherProcess(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "2000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()+1))
	if d, err := WatchdogInterval(); d != 0 || err != nil {
		t.Errorf("got %v, %v; want 0, nil", d, err)
	}
	if err := (&Notifier{}).Watchdog(context.Background(), healthy); err != nil {
		t.Errorf("got %v, want nil", err)
	}
}

func TestWatchdogBadValue(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "soon")
	if err := (&Notifier{}).Watchdog(context.Background(), healthy); err == nil {
		t.Error("got nil error for WATCHDOG_USEC=soon")
	}
}

func TestWatchdogReportsFailedPings(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone.sock"))
	t.Setenv("WATCHDOG_USEC", "2000")
	t.Setenv("WATCHDOG_PID", "")
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 1)
	n := &Notifier{OnError: func(err error) {
		select {
		case errs <- err:
		default:
		}
	}}
	done := make(chan error, 1)
	go func() { done <- n.Watchdog(ctx, healthy) }()
	if err := <-errs; !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OnError got %v, want ENOENT", err)
	}
	cancel()
	<-done
}

func healthy() error { return nil }

// The watchdog is fed only while the daemon's loops report in: a wedged loop stops the pings
// (systemd then restarts the daemon) and they resume when it recovers.
func TestWatchdogWithheldWhileUnhealthy(t *testing.T) {
	msgs := notifytest.Listen(t)
	t.Setenv("WATCHDOG_USEC", "60000000")
	t.Setenv("WATCHDOG_PID", "")
	ticks := make(chan time.Time)
	var (
		mu     sync.Mutex
		health error
	)
	withheld := make(chan error, 1)
	n := &Notifier{
		OnWithheld: func(err error) { withheld <- err },
		tick:       func(time.Duration) (<-chan time.Time, func()) { return ticks, func() {} },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- n.Watchdog(ctx, func() error {
			mu.Lock()
			defer mu.Unlock()
			return health
		})
	}()
	set := func(err error) {
		mu.Lock()
		health = err
		mu.Unlock()
	}
	if got := <-msgs; got != "WATCHDOG=1" {
		t.Fatalf("first ping: %q", got)
	}
	wedged := errors.New("at loop: write blocked")
	set(wedged)
	for range 3 {
		ticks <- time.Time{}
		if err := <-withheld; !errors.Is(err, wedged) {
			t.Fatalf("withheld for %v, want %v", err, wedged)
		}
	}
	// Datagrams keep their order: had a ping gone out while wedged, it would come first.
	if err := n.Status("marker"); err != nil {
		t.Fatal(err)
	}
	if got := <-msgs; got != "STATUS=marker" {
		t.Fatalf("while wedged the watchdog sent %q", got)
	}
	set(nil)
	ticks <- time.Time{}
	if got := <-msgs; got != "WATCHDOG=1" {
		t.Fatalf("after recovery: %q, want the ping back", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
}
