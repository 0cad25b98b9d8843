package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/provisiond/provisiond/internal/atmodem"
	"github.com/provisiond/provisiond/internal/coaptransport"
	"github.com/provisiond/provisiond/internal/config"
	"github.com/provisiond/provisiond/internal/control"
	"github.com/provisiond/provisiond/internal/daemon"
	"github.com/provisiond/provisiond/internal/httptransport"
	"github.com/provisiond/provisiond/internal/liveness"
	"github.com/provisiond/provisiond/internal/status"
)

// daemonConfig is the engine's config for the validated file config.
func daemonConfig(cfg *config.Config) daemon.Config {
	return daemon.FromFile(cfg, "provisiond/"+version)
}

// maxStep bounds one step of an attempt for the heartbeat: two of the longest AT commands
// (the long timeout or the configured one; a batch's first command comes after setting the
// modem offline) with the daemon's grace, or a request to the service.
func maxStep(cfg *config.Config) time.Duration {
	at := 2*max(cfg.Modem.CommandTimeout, cfg.Modem.LongCommandTimeout) + 30*time.Second
	return max(at, cfg.Modem.RestoreTimeout, cfg.HTTP.Timeout, cfg.CoAP.Timeout) + time.Minute
}

// health is what the systemd watchdog watches: the scheduler, the AT loop of the open
// modem and the control server each report, and a ping goes out only while all of them do.
type health struct {
	mon                    *liveness.Monitor
	scheduler, at, control *liveness.Part
}

// beatSilence is how long a part may stay silent between idle beats (each beats every 5-10 s).
const beatSilence = 45 * time.Second

func newHealth() *health {
	mon := liveness.New(nil)
	return &health{
		mon:       mon,
		scheduler: mon.Part("scheduler", beatSilence),
		at:        mon.Part("modem AT loop", beatSilence),
		control:   mon.Part("control server", beatSilence),
	}
}

// check is the watchdog's health function; it logs when pings stop and when they resume.
func (l *health) check(log *zap.Logger) func() error {
	var withheld bool
	return func() error {
		err := l.mon.Check()
		switch {
		case err != nil && !withheld:
			log.Error("watchdog pings withheld: the daemon's work does not progress; systemd will restart it", zap.Error(err))
		case err == nil && withheld:
			log.Info("watchdog pings resumed")
		}
		withheld = err != nil
		return err
	}
}

// modemOpener returns the daemon's OpenModem: open the serial device, optionally trace the
// AT conversation, and start an AT client on it. The client owns the port and closes it when
// it is closed or the port is lost, so the daemon's Close of the Modem releases the tty.
// A missing device is an error (wrapping fs.ErrNotExist) the daemon retries on.
// beat receives the AT loop's heartbeat.
func modemOpener(mc config.ModemConfig, log *zap.Logger, beat *liveness.Part) func(ctx context.Context) (daemon.Modem, error) {
	return func(ctx context.Context) (daemon.Modem, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		port, err := atmodem.OpenPort(mc.Port, mc.Baud, mc.FlowControl)
		if err != nil {
			return nil, err
		}
		var rw io.ReadWriter = port
		if mc.TraceAT {
			// A decorator, not a branch: the tracer redacts secrets itself (%JWT, %ATTESTTOKEN,
			// %KEYINJECT) and closes the port when the client closes it.
			rw = atmodem.NewTracer(port, traceLogger(log))
		}
		return atmodem.New(rw, atmodem.Config{
			LineEnding:     mc.LineEnding,
			CommandTimeout: mc.CommandTimeout,
			Heartbeat:      atHeartbeat(beat),
			LongTimeout:    mc.LongCommandTimeout,
		}), nil
	}
}

// traceLogger logs the AT trace at debug level, as modem.trace_at documents: a trace is
// wanted while debugging, not in the journal of every running gateway.
func traceLogger(log *zap.Logger) func(dir, line string) {
	trace := log.Named("at")
	return func(dir, line string) {
		trace.Debug("at", zap.String("dir", dir), zap.String("line", line))
	}
}

// atHeartbeat reports an AT client's heartbeat to its part: a working loop beats, a wedged
// one is stuck, and a finished one (port lost or closed) pauses until the next modem is open.
func atHeartbeat(beat *liveness.Part) func(error) {
	return func(err error) {
		switch {
		case err == nil:
			beat.Beat()
		case errors.Is(err, atmodem.ErrWedged):
			beat.Stuck(err.Error())
		default:
			beat.Pause()
		}
	}
}

// newDial builds the transport the config selects and returns its per-attempt Open adapted to
// daemon.Session. The adapters return a nil interface on error: a nil *Session inside a
// non-nil interface would pass the daemon's err check and panic on first use.
func newDial(cfg *config.Config, log *zap.Logger) (daemon.DialFunc, error) {
	ua := "provisiond/" + version
	switch cfg.Provisioning.Transport {
	case "http":
		t, err := httptransport.New(httptransport.Config{
			Hostname:  cfg.HTTP.Hostname,
			Port:      cfg.HTTP.Port,
			Timeout:   cfg.HTTP.Timeout,
			CAFile:    cfg.HTTP.CAFile,
			UserAgent: ua,
		})
		if err != nil {
			return nil, err
		}
		return sessionDial(t.Open), nil
	case "coap":
		ccfg := coaptransport.Config{
			Hostname:     cfg.CoAP.Hostname,
			Port:         cfg.CoAP.Port,
			Timeout:      cfg.CoAP.Timeout,
			CAFile:       cfg.CoAP.CAFile,
			SessionCache: cfg.CoAP.DTLSSessionCache,
			OnError: func(err error) {
				log.Debug("coap: background error", zap.Error(err))
			},
		}
		t, err := coaptransport.New(ccfg)
		if err != nil {
			return nil, err
		}
		return sessionDial(t.Open), nil
	}
	return nil, fmt.Errorf("provisioning.transport: %q is neither http nor coap", cfg.Provisioning.Transport)
}

// sessionDial adapts a transport's Open to the daemon's Dial.
func sessionDial[S daemon.Session](open func(context.Context) (S, error)) daemon.DialFunc {
	return func(ctx context.Context) (daemon.Session, error) {
		s, err := open(ctx)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
}

// controlBackend adapts the daemon to the control server's consumer interface.
type controlBackend struct {
	*daemon.Daemon
	socket string
}

// Status is the engine's status with what only the process knows: its version, and the
// template instance it runs as, read from the socket path the instance's unit gives it.
func (b controlBackend) Status() status.Daemon {
	st := b.Daemon.Status()
	st.Version = version
	st.Instance = instanceOfSocket(b.socket)
	return st
}

// instanceOfSocket is NAME for a socket at instanceSocket(NAME), else "".
func instanceOfSocket(socket string) string {
	dir, file := filepath.Split(socket)
	name := filepath.Base(dir)
	if file != "provisiond.sock" || instanceSocket(name) != socket {
		return ""
	}
	return name
}

func (b controlBackend) SetInterval(ctx context.Context, seconds int) error {
	if err := checkIntervalSeconds(int64(seconds)); err != nil {
		return fmt.Errorf("%w: %w", control.ErrInvalid, err)
	}
	err := b.Daemon.SetInterval(ctx, seconds)
	if errors.Is(err, daemon.ErrInvalidInterval) {
		return fmt.Errorf("%w: %w", control.ErrInvalid, err)
	}
	return err
}

// checkIntervalSeconds accepts what provisioning.interval accepts, or 0 (back to the
// configured interval). A value beyond it would be stored and then ignored by the scheduler.
func checkIntervalSeconds(seconds int64) error {
	lo, hi := int64(config.MinInterval/time.Second), int64(config.MaxInterval/time.Second)
	if s := seconds; s != 0 && (s < lo || s > hi) {
		return fmt.Errorf("interval must be 0 (the configured interval) or %d..%d seconds (%d days), got %d",
			lo, hi, hi/86400, seconds)
	}
	return nil
}
