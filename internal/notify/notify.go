// Package notify tells systemd about the daemon's life cycle through sd_notify(3) for units of
// Type=notify: READY once the daemon can work, STATUS lines for `systemctl status`, watchdog
// pings, RELOADING and STOPPING. Outside systemd (NOTIFY_SOCKET unset) every call is a silent
// no-op, so the daemon calls them unconditionally.
package notify

import (
	"context"
	"fmt"
	"strings"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends state changes to the service manager. The zero value is ready to use; it is
// safe for concurrent use because every message opens its own datagram socket.
type Notifier struct {
	// OnError receives failed watchdog pings (Watchdog runs in the background and has no
	// caller to return them to); nil drops them.
	OnError func(error)
	// OnWithheld receives the reason each time Watchdog withholds a ping; nil drops it.
	OnWithheld func(error)

	// tick replaces the watchdog's ticker in tests.
	tick func(time.Duration) (<-chan time.Time, func())
}

// Ready reports that start-up is complete (or, after Reloading, that the reload is done).
func (n *Notifier) Ready() error { return send(sd.SdNotifyReady) }

// Stopping reports that the daemon has begun shutting down.
func (n *Notifier) Stopping() error { return send(sd.SdNotifyStopping) }

// Reloading reports that the daemon is reloading its configuration; call Ready when done.
// The monotonic timestamp is what Type=notify-reload units require with RELOADING=1.
func (n *Notifier) Reloading() error {
	return send(sd.SdNotifyReloading + "\n" + strings.TrimSuffix(sd.SdNotifyMonotonicUsec(), "\n"))
}

// Status sets the one-line text `systemctl status` shows. Line breaks are replaced by spaces:
// the protocol is newline-separated assignments, so a newline would end the status early
// and let the rest be read as another assignment.
func (n *Notifier) Status(text string) error {
	text = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(text)
	return send("STATUS=" + text)
}

// Watchdog pings the service manager's watchdog at half the interval systemd asks for
// (WATCHDOG_USEC, honouring WATCHDOG_PID) until ctx is done, then returns nil, but only while
// healthy returns nil: a ping says the daemon's work goes on, not that this goroutine runs.
// While healthy reports a problem the ping is withheld and OnWithheld gets the problem, so
// systemd restarts a daemon whose loops are wedged. Without a watchdog it returns nil at once.
// Ping failures go to OnError and the loop keeps going.
func (n *Notifier) Watchdog(ctx context.Context, healthy func() error) error {
	interval, err := sd.SdWatchdogEnabled(false)
	if err != nil {
		return fmt.Errorf("notify: watchdog: %w", err)
	}
	if interval <= 0 {
		return nil
	}
	tick, stop := n.ticker(interval / 2)
	defer stop()
	for {
		if err := healthy(); err != nil {
			if n.OnWithheld != nil {
				n.OnWithheld(err)
			}
		} else if err := send(sd.SdNotifyWatchdog); err != nil && n.OnError != nil {
			n.OnError(err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
		}
	}
}

func (n *Notifier) ticker(d time.Duration) (<-chan time.Time, func()) {
	if n.tick != nil {
		return n.tick(d)
	}
	t := time.NewTicker(d)
	return t.C, t.Stop
}

// WatchdogInterval is the watchdog period systemd expects for this process, 0 without one.
func WatchdogInterval() (time.Duration, error) {
	d, err := sd.SdWatchdogEnabled(false)
	if err != nil {
		return 0, fmt.Errorf("notify: watchdog: %w", err)
	}
	return d, nil
}

func send(state string) error {
	if _, err := sd.SdNotify(false, state); err != nil {
		name, _, _ := strings.Cut(state, "\n")
		return fmt.Errorf("notify: %s: %w", name, err)
	}
	return nil
}
