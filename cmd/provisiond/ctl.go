package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/provisiond/provisiond/internal/config"
	"github.com/provisiond/provisiond/internal/control"
	"github.com/provisiond/provisiond/internal/daemon"
)

// exitNotRunning is the exit code of the control subcommands when no daemon answers, the same
// as `systemctl status` uses for a stopped unit, so scripts can tell it from other failures.
const exitNotRunning = 3

// ctlFlags are the flags every control subcommand takes to find the daemon's socket.
type ctlFlags struct {
	configPath string
	socket     string
}

func (f *ctlFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.configPath, "config", config.DefaultPath, "config file that names control.socket")
	cmd.Flags().StringVar(&f.socket, "socket", "", "control socket path (overrides control.socket from the config)")
}

// client finds the socket (--socket, else control.socket of the config) and returns a client.
func (f *ctlFlags) client(cmd *cobra.Command) (*control.Client, error) {
	if f.socket != "" {
		return control.Dial(f.socket), nil
	}
	cfg, err := config.Load(f.configPath, cmd.Flags().Changed("config"))
	if err != nil {
		return nil, err
	}
	return control.Dial(cfg.Control.Socket), nil
}

// ctlError gives "daemon not running" its own exit code; other failures exit 1.
func ctlError(err error) error {
	if errors.Is(err, control.ErrNotRunning) {
		return &exitError{code: exitNotRunning, err: err}
	}
	return err
}

// ctlCmd completes cmd as a control subcommand: it takes the socket flags and runs run with a
// client of the daemon. What run returns goes through ctlError.
func ctlCmd(cmd *cobra.Command, run func(cmd *cobra.Command, args []string, c *control.Client) error) *cobra.Command {
	var f ctlFlags
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := f.client(cmd)
		if err != nil {
			return err
		}
		return ctlError(run(cmd, args, c))
	}
	f.add(cmd)
	return cmd
}

// printAnswer prints the daemon's answer v on a line of its own.
func printAnswer(cmd *cobra.Command, v any, err error) error {
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(cmd.OutOrStdout(), v)
	return err
}

func newNowCmd() *cobra.Command {
	return ctlCmd(&cobra.Command{
		Use:   "now",
		Short: "Ask the running daemon to provision now",
		Long: "Ask the running daemon to start a provisioning attempt now (like SIGUSR1). Requests made\n" +
			"while an attempt runs are merged into one attempt after it.",
		Args: cobra.NoArgs,
	}, func(cmd *cobra.Command, _ []string, c *control.Client) error {
		return printAnswer(cmd, "provisioning requested", c.Now(cmd.Context()))
	})
}

func newTokenCmd() *cobra.Command {
	return ctlCmd(&cobra.Command{
		Use:   "token",
		Short: "Print the modem's attestation token",
		Long: "Print the modem's attestation token (AT%ATTESTTOKEN), used to claim the device in\n" +
			"nRF Cloud. The running daemon asks the modem, so the port is not shared.",
		Args: cobra.NoArgs,
	}, func(cmd *cobra.Command, _ []string, c *control.Client) error {
		tok, err := c.Token(cmd.Context())
		return printAnswer(cmd, tok, err)
	})
}

func newUUIDCmd() *cobra.Command {
	return ctlCmd(&cobra.Command{
		Use:   "uuid",
		Short: "Print the modem's device UUID",
		Args:  cobra.NoArgs,
	}, func(cmd *cobra.Command, _ []string, c *control.Client) error {
		id, err := c.UUID(cmd.Context())
		return printAnswer(cmd, id, err)
	})
}

func newIntervalCmd() *cobra.Command {
	return ctlCmd(&cobra.Command{
		Use:   "interval [SECONDS]",
		Short: "Show or set the provisioning interval",
		Long: "Without an argument, print the interval between scheduled provisioning attempts in\n" +
			"seconds. With one, set it: the daemon stores it (provisioning/interval-sec, as the\n" +
			"device library's settings do), so it survives restarts and overrides\n" +
			"provisioning.interval from the config; 0 goes back to the configured interval.\n" +
			"The next attempt is rescheduled from now; a running attempt is not affected.",
		Args: cobra.MaximumNArgs(1),
	}, func(cmd *cobra.Command, args []string, c *control.Client) error {
		if len(args) == 0 {
			n, err := c.Interval(cmd.Context())
			return printAnswer(cmd, n, err)
		}
		secs, err := strconv.Atoi(args[0])
		if err != nil || secs < 0 {
			return fmt.Errorf("interval: %q is not a whole number of seconds >= 0", args[0])
		}
		if err := c.SetInterval(cmd.Context(), secs); err != nil {
			return err
		}
		msg := "interval set to %d s (%v)\n"
		if secs == 0 {
			msg = "interval back to the configured %d s (%v)\n"
			if secs, err = c.Interval(cmd.Context()); err != nil {
				return err
			}
		}
		_, err = fmt.Fprintf(cmd.OutOrStdout(), msg, secs, time.Duration(secs)*time.Second)
		return err
	})
}

func newStatusCmd() *cobra.Command {
	var asJSON bool
	cmd := ctlCmd(&cobra.Command{
		Use:   "status",
		Short: "Show what the running daemon is doing",
		Long: "Show the daemon's state, its last attempt and outcome, the next scheduled attempt, the\n" +
			"modem's identity, the cursor and any results waiting for upload. --json prints the\n" +
			"daemon's status object as it sent it. Exits 3 when no daemon answers.",
		Args: cobra.NoArgs,
	}, func(cmd *cobra.Command, _ []string, c *control.Client) error {
		raw, err := c.Status(cmd.Context())
		if err != nil {
			return err
		}
		if asJSON {
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", strings.TrimSpace(string(raw)))
			return err
		}
		var st daemon.Status
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("status: decode the daemon's answer: %w", err)
		}
		return printStatus(cmd.OutOrStdout(), st, time.Now())
	})
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the raw JSON status")
	return cmd
}

// recentEvents is how many of the daemon's kept events `status` shows.
const recentEvents = 5

// printStatus writes st for a person, one "label: value" line per fact, times in now's zone
// with how long ago or ahead they are.
func printStatus(w io.Writer, st daemon.Status, now time.Time) error {
	var b strings.Builder
	line := func(label, format string, args ...any) {
		fmt.Fprintf(&b, "%-16s%s\n", label+":", fmt.Sprintf(format, args...))
	}
	orNone := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	line("state", "%s", st.State)
	if a := st.LastAttempt; a != nil {
		line("last attempt", "#%d %s: %d executed, %d failed, %s", a.Number, a.Event, a.Executed, a.Failed, when(a.Finished, now))
		if a.Reason != "" {
			line("  reason", "%s", a.Reason)
		}
	} else {
		line("last attempt", "none yet")
	}
	if st.NextAttempt != nil {
		line("next attempt", "%s", when(*st.NextAttempt, now))
	} else {
		line("next attempt", "-")
	}
	if st.BackoffSeconds > 0 {
		line("backoff", "%v", time.Duration(st.BackoffSeconds)*time.Second)
	}
	line("interval", "%d s (%v)", st.IntervalSeconds, time.Duration(st.IntervalSeconds)*time.Second)
	line("device uuid", "%s", orNone(st.DeviceUUID))
	line("modem version", "%s", orNone(st.ModemVersion))
	line("cursor", "%s", orNone(st.Cursor))
	line("outbox pending", "%d response(s)", st.OutboxPending)
	line("attempts", "%d", st.Attempts)
	if n := len(st.Events); n > 0 {
		b.WriteString("recent events:\n")
		for _, e := range st.Events[max(0, n-recentEvents):] {
			fmt.Fprintf(&b, "  %s  %s", e.Time.In(now.Location()).Format(time.DateTime), e.Event)
			if e.Reason != "" {
				fmt.Fprintf(&b, ": %s", e.Reason)
			}
			b.WriteString("\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// when formats t in now's zone with its distance from now, e.g.
// "2026-11-25 17:40:12 UTC (12m ago)".
func when(t, now time.Time) string {
	s := t.In(now.Location()).Format("2006-01-02 15:04:05 MST")
	d := t.Sub(now).Round(time.Second)
	switch {
	case d > 0:
		return s + " (in " + d.String() + ")"
	case d < 0:
		return s + " (" + (-d).String() + " ago)"
	}
	return s + " (now)"
}
