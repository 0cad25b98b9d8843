package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/provisiond/provisiond/internal/config"
	"github.com/provisiond/provisiond/internal/control"
	"github.com/provisiond/provisiond/internal/daemon"
	"github.com/provisiond/provisiond/internal/logging"
	"github.com/provisiond/provisiond/internal/notify"
	"github.com/provisiond/provisiond/internal/store"
)

// Exit codes of `provisiond run` besides 0 (stopped by SIGTERM/SIGINT, or --once succeeded)
// and 1 (any other failure). The sysexits values let a unit stop restarting on errors a
// restart cannot fix (RestartPreventExitStatus=65 78).
const (
	exitOnceFailed   = 2  // --once: the attempt did not end in DONE or NO_COMMANDS without failures
	exitStoreCorrupt = 65 // EX_DATAERR: the settings file failed its check and was moved aside
	exitConfig       = 78 // EX_CONFIG: the config file is invalid
)

type runOptions struct {
	configPath string
	explicit   bool // --config was given: a missing file is an error
	once       bool

	// reloaded, when set, receives the outcome of each SIGHUP reload (tests).
	reloaded chan<- error
}

func newRunCmd() *cobra.Command {
	var opts runOptions
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the provisioning daemon",
		Long: `Run the daemon: provision the modem on modem.port from the nRF Cloud Provisioning Service at
start and then every provisioning.interval, and serve the control socket that "provisiond now",
"status", "token", "uuid" and "interval" talk to.

Signals: SIGTERM/SIGINT stop cleanly (the modem's mode is restored, pending results stay in
the store; exit 0), SIGUSR1 provisions now, SIGHUP reloads the config (an invalid config is
refused with a log entry and the running one stays).

With --once: open the modem, make one attempt and exit 0 when it ended in DONE or NO_COMMANDS
with no failed command; otherwise print "provisiond: <EVENT>: <reason>" and exit 2.

Exit codes: 0 ok, 1 failure, 2 --once attempt failed, 65 settings file corrupt (moved aside),
78 invalid config.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.explicit = cmd.Flags().Changed("config")
			return run(cmd.Context(), opts, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVar(&opts.configPath, "config", config.DefaultPath, "config file")
	cmd.Flags().BoolVar(&opts.once, "once", false, "make one provisioning attempt and exit")
	return cmd
}

// run is the daemon's main: it returns nil when ctx is cancelled (SIGTERM/SIGINT in main).
func run(ctx context.Context, opts runOptions, stdout, stderr io.Writer) error {
	cfg, err := config.Load(opts.configPath, opts.explicit)
	if err != nil {
		return &exitError{code: exitConfig, err: err}
	}
	if cfg.Modem.Port == "" {
		return &exitError{code: exitConfig, err: errors.New("modem.port is not set (config file or PROVISIOND_MODEM_PORT)")}
	}
	if opts.once && daemonAnswers(cfg.Control.Socket) {
		// The daemon owns the modem and the settings file; a second process on either would
		// interleave AT commands (root ignores the tty's exclusive flag) and lose writes.
		return fmt.Errorf("a provisiond daemon is running (control socket %s) and owns the modem: use `provisiond now` instead of run --once", cfg.Control.Socket)
	}
	level := zap.NewAtomicLevel()
	log, err := logging.New(logging.Config{Level: cfg.Log.Level, Format: cfg.Log.Format, Writer: stderr, Atomic: level,
		JournalFields: map[string]string{logging.FieldName("modem_port"): cfg.Modem.Port}})
	if err != nil {
		return &exitError{code: exitConfig, err: err}
	}
	defer func() { _ = log.Sync() }()

	st, err := store.Open(cfg.Store.Path, store.Limits{})
	if err != nil {
		var ce *store.CorruptError
		if errors.As(err, &ce) {
			// Never go on with an empty store by ourselves: the cursor and any pending results
			// would be lost without anyone noticing.
			log.Error("settings file is corrupt; it was moved aside and needs a look",
				zap.String("path", ce.Path), zap.String("moved_to", ce.Aside), zap.String("reason", ce.Reason))
			return &exitError{code: exitStoreCorrupt, err: err}
		}
		return err
	}
	// Every change is durable in the store's slot file when it is made; the settings file
	// itself is brought up to date after each attempt and on the way out (internal/store).
	checkpoint := func() {
		if err := st.Checkpoint(); err != nil {
			log.Warn("settings file not brought up to date; the settings are safe in its slot file and it is tried again after the next attempt",
				zap.String("path", cfg.Store.Path), zap.Error(err))
		}
	}
	defer checkpoint()

	dial, err := newDial(cfg, log)
	if err != nil {
		return &exitError{code: exitConfig, err: err}
	}
	rel := newReleaser(releaseAfter, debug.FreeOSMemory)
	defer rel.stop()
	sd := &notify.Notifier{OnError: func(err error) { log.Warn("systemd watchdog ping failed", zap.Error(err)) }}
	live := newHealth()
	d, err := daemon.New(daemonConfig(cfg), daemon.Deps{
		OpenModem: modemOpener(cfg.Modem, log, live.at),
		Dial:      dial,
		Store:     st,
		Logger:    log,
		Notify: func(state string) {
			if err := sd.Status(state); err != nil {
				log.Debug("systemd status not sent", zap.Error(err))
			}
		},
		Idle:      func() { checkpoint(); rel.attemptEnded() },
		Heartbeat: func(quiet time.Duration) { live.scheduler.BeatWithin(quiet) },
		MaxStep:   maxStep(cfg),
	})
	if err != nil {
		return &exitError{code: exitConfig, err: err}
	}

	if opts.once {
		return runOnce(ctx, d, stdout)
	}
	tuneGC()
	r := &runner{opts: opts, cfg: cfg, log: log, level: level, d: d, sd: sd, live: live}
	return r.serve(ctx)
}

// daemonAnswers reports whether a daemon accepts connections on the control socket.
func daemonAnswers(socket string) bool {
	conn, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// runOnce is --once: one attempt, judged for a factory script.
func runOnce(ctx context.Context, d *daemon.Daemon, stdout io.Writer) error {
	res, err := d.RunOnce(ctx)
	if err == nil && res.Err == nil && res.Failed == 0 &&
		(res.Event == daemon.EventDone || res.Event == daemon.EventNoCommands) {
		_, err := fmt.Fprintf(stdout, "%s: %d command(s) executed\n", res.Event, res.Executed)
		return err
	}
	if ctx.Err() != nil {
		// Not a clean stop for a factory script: the attempt did not finish.
		return &exitError{code: exitOnceFailed, err: fmt.Errorf("%s: interrupted", daemon.EventStop)}
	}
	event, reason := res.Event, res.Reason
	if event == "" {
		event = daemon.EventFatalError
	}
	switch {
	case reason != "" && (res.Err != nil || err != nil || res.Failed == 0):
	case res.Err != nil:
		reason = res.Err.Error()
	case err != nil:
		reason = err.Error()
	case res.Failed > 0:
		// The event is how the attempt ended (usually NO_COMMANDS after the failure was
		// reported); say so, or "NO_COMMANDS" alone reads like nothing happened. The reason,
		// when there is one, names the failing command.
		failed := fmt.Sprintf("%d command(s) failed; the attempt ended after reporting the failure to the service", res.Failed)
		if reason != "" {
			failed += " (" + reason + ")"
		}
		reason = failed
	default:
		reason = "attempt did not complete"
	}
	return &exitError{code: exitOnceFailed, err: fmt.Errorf("%s: %s", event, reason)}
}

// runner is the long-running daemon process around the engine: control socket, systemd
// notifications and signals. Its fields are only used by serve's goroutine, except d.
type runner struct {
	opts  runOptions
	cfg   *config.Config
	log   *zap.Logger
	level zap.AtomicLevel
	d     *daemon.Daemon
	sd    *notify.Notifier
	live  *health
}

func (r *runner) serve(ctx context.Context) error {
	// Signals first: from here on SIGHUP/SIGUSR1 can no longer kill the process.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	// The socket is created before anything runs, so a second daemon on the same socket
	// fails here instead of fighting over the modem.
	ln, err := control.Listen(r.cfg.Control.Socket)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- r.d.Run(ctx) }()
	srv := control.NewServer(controlBackend{r.d, r.cfg.Control.Socket}, r.log, control.Limits{})
	srv.Heartbeat = r.live.control.Beat
	r.live.control.Beat() // the socket accepts from Listen on
	ctlDone := make(chan error, 1)
	go func() { ctlDone <- srv.ServeListener(ctx, ln) }()
	wdDone := make(chan error, 1)
	go func() { wdDone <- r.sd.Watchdog(ctx, r.live.check(r.log)) }()
	r.log.Info("provisiond started", zap.String("version", version),
		zap.String("port", r.cfg.Modem.Port), zap.String("transport", r.cfg.Provisioning.Transport),
		zap.String("control_socket", r.cfg.Control.Socket))
	// Ready as soon as the control socket serves: the daemon works from here on, with or
	// without the modem (it waits for it and says so in STATUS), so a missing board never
	// holds `systemctl start` or the boot.
	r.notify(r.sd.Ready)
	if err := r.sd.Status("waiting for the modem on " + r.cfg.Modem.Port); err != nil {
		r.log.Debug("systemd status not sent", zap.Error(err))
	}

	ready, done := r.d.Ready(), ctx.Done()
	var runErr, ctlErr error
	running, serving := true, true
	for running || serving {
		select {
		case <-ready:
			ready = nil
			r.log.Info("modem answering", daemon.MsgID(daemon.MsgModemAnswering))
			if err := r.sd.Status("modem answering on " + r.cfg.Modem.Port); err != nil {
				r.log.Debug("systemd status not sent", zap.Error(err))
			}
		case s := <-sigs:
			switch s {
			case syscall.SIGUSR1:
				r.log.Info("provisioning requested by SIGUSR1")
				r.d.TriggerNow()
			case syscall.SIGHUP:
				err := r.reload()
				if r.opts.reloaded != nil {
					r.opts.reloaded <- err
				}
			}
		case <-done:
			// The engine restores the modem and keeps the outbox; the control server lets
			// requests in flight finish. Both end their loops on ctx. No READY after STOPPING.
			done, sigs, ready = nil, nil, nil
			r.log.Info("stopping")
			r.notify(r.sd.Stopping)
		case runErr = <-runDone:
			running = false
			cancel()
		case ctlErr = <-ctlDone:
			serving = false
			cancel()
		}
	}
	if err := <-wdDone; err != nil {
		r.log.Warn("systemd watchdog", zap.Error(err))
	}
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return runErr
	}
	if ctlErr != nil {
		return ctlErr
	}
	r.log.Info("stopped")
	return nil
}

func (r *runner) notify(f func() error) {
	if err := f(); err != nil {
		r.log.Warn("systemd notification failed", zap.Error(err))
	}
}

// reload is SIGHUP: load and check the whole config, and only if it is valid hand it to the
// engine, swap the transport and change the log level. Anything invalid leaves everything
// as it was. The viper instance is private to config.Load, so nothing races with it.
func (r *runner) reload() error {
	refuse := func(err error) error {
		r.log.Error("config reload refused; the running config stays", daemon.MsgID(daemon.MsgConfigReloadRefused), zap.String("config", r.opts.configPath), zap.Error(err))
		return err
	}
	cfg, err := config.Load(r.opts.configPath, r.opts.explicit)
	if err != nil {
		return refuse(err)
	}
	lvl, err := logging.ParseLevel(cfg.Log.Level)
	if err != nil {
		return refuse(err)
	}
	if cfg.Modem.Port == "" {
		return refuse(errors.New("modem.port is not set"))
	}
	dial, err := newDial(cfg, r.log)
	if err != nil {
		return refuse(err)
	}
	r.notify(r.sd.Reloading)
	defer r.notify(r.sd.Ready)
	// Config and transport go in as one pair: the running attempt finishes with the old
	// pair, the next one starts with the new.
	if err := r.d.Reconfigure(daemonConfig(cfg), dial); err != nil {
		return refuse(err)
	}
	r.level.SetLevel(lvl)
	if keys := config.RestartNeeded(r.cfg, cfg); len(keys) > 0 {
		r.log.Warn("changed settings take effect after a restart", zap.Strings("keys", keys))
	}
	r.cfg = cfg
	r.log.Info("config reloaded", zap.String("config", r.opts.configPath))
	return nil
}
