package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/provisiond/provisiond/internal/atmodem"
	"github.com/provisiond/provisiond/internal/coaptransport"
	"github.com/provisiond/provisiond/internal/config"
	"github.com/provisiond/provisiond/internal/control"
	"github.com/provisiond/provisiond/internal/daemon"
	"github.com/provisiond/provisiond/internal/httptransport"
)

// daemonConfig maps the validated file config onto the engine's plain values. The root CA to
// write into the modem is left to the engine, which picks the one of the configured transport.
func daemonConfig(cfg *config.Config) daemon.Config {
	p := cfg.Provisioning
	return daemon.Config{
		Transport:        p.Transport,
		ClientVersion:    "provisiond/" + version,
		MaxCommands:      p.MaxCommands,
		RxBufSize:        p.RxBufSize,
		TxBufSize:        p.TxBufSize,
		Uplink:           p.Uplink,
		JWTSecTag:        cfg.Modem.JWTSecTag,
		JWTValidTime:     cfg.Modem.JWTValidTime,
		SetClockFromHost: cfg.Modem.SetClockFromHost,
		ProvisionRootCA:  cfg.Modem.ProvisionRootCA,
		RootCASecTag:     cfg.Modem.RootCASecTag,
		AutoStart:        p.AutoStart,
		Interval:         p.Interval,
		Spread:           p.Spread,
		InitialBackoff:   p.InitialBackoff,
		OnFinished:       p.OnFinished,
		OnFinishedExec:   p.OnFinishedExec,
		HooksDir:         p.HooksDir,
		StorePrefix:      cfg.Store.Prefix,
		RestoreTimeout:   cfg.Modem.RestoreTimeout,
	}
}

// modemOpener returns the daemon's OpenModem: open the serial device, optionally trace the
// AT conversation, and start an AT client on it. The client owns the port and closes it when
// it is closed or the port is lost, so the daemon's Close of the Modem releases the tty.
// A missing device is an error (wrapping fs.ErrNotExist) the daemon retries on.
func modemOpener(mc config.ModemConfig, log *zap.Logger) func(ctx context.Context) (daemon.Modem, error) {
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
			trace := log.Named("at")
			rw = atmodem.NewTracer(port, func(dir, line string) {
				trace.Info("at", zap.String("dir", dir), zap.String("line", line))
			})
		}
		return atmodem.New(rw, atmodem.Config{
			LineEnding:     mc.LineEnding,
			CommandTimeout: mc.CommandTimeout,
			LongTimeout:    mc.LongCommandTimeout,
		}), nil
	}
}

// dialer is the daemon's Dial. The transport behind it is replaced as a whole on a config
// reload, so an attempt uses either the old or the new settings, never a mix.
type dialer struct {
	cur atomic.Pointer[func(context.Context) (daemon.Session, error)]
}

func (d *dialer) set(f func(context.Context) (daemon.Session, error)) { d.cur.Store(&f) }

func (d *dialer) Dial(ctx context.Context) (daemon.Session, error) { return (*d.cur.Load())(ctx) }

// newDial builds the transport the config selects and returns its per-attempt Open adapted to
// daemon.Session. The adapters return a nil interface on error: a nil *Session inside a
// non-nil interface would pass the daemon's err check and panic on first use.
func newDial(cfg *config.Config, log *zap.Logger) (func(context.Context) (daemon.Session, error), error) {
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
func sessionDial[S daemon.Session](open func(context.Context) (S, error)) func(context.Context) (daemon.Session, error) {
	return func(ctx context.Context) (daemon.Session, error) {
		s, err := open(ctx)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
}

// controlBackend adapts the daemon to the control server's consumer interface.
type controlBackend struct{ *daemon.Daemon }

func (b controlBackend) Status() any { return b.Daemon.Status() }

func (b controlBackend) SetInterval(ctx context.Context, seconds int) error {
	err := b.Daemon.SetInterval(ctx, seconds)
	if errors.Is(err, daemon.ErrInvalidInterval) {
		return fmt.Errorf("%w: %w", control.ErrInvalid, err)
	}
	return err
}
