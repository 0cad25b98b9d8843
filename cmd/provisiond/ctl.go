package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/provisiond/provisiond/internal/config"
	"github.com/provisiond/provisiond/internal/control"
	"github.com/provisiond/provisiond/internal/status"
)

// exitNotRunning is the exit code of the control subcommands when no daemon answers, the same
// as `systemctl status` uses for a stopped unit, so scripts can tell it from other failures.
const exitNotRunning = 3

// ctlFlags are the flags every control subcommand takes to find the daemon's socket.
type ctlFlags struct {
	configPath string
	socket     string
	instance   string
}

func (f *ctlFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.configPath, "config", config.DefaultPath, "config file that names control.socket")
	cmd.Flags().StringVar(&f.socket, "socket", "", "control socket path (overrides control.socket from the config)")
	addInstanceFlag(cmd, &f.instance)
	cmd.MarkFlagsMutuallyExclusive("socket", "instance")
}

// addInstanceFlag adds --instance, which picks the paths of the template unit's instance.
func addInstanceFlag(cmd *cobra.Command, instance *string) {
	cmd.Flags().StringVar(instance, "instance", "", "instance NAME of provisiond@NAME.service (socket "+
		instanceSocket("NAME")+", settings "+instanceStore("NAME")+")")
}

// The template unit's per-instance paths (PROVISIOND_CONTROL_SOCKET and PROVISIOND_STORE_PATH
// in provisiond@.service, with %i the instance name as systemd shows it).
func instanceSocket(name string) string { return "/run/provisiond/" + name + "/provisiond.sock" }
func instanceStore(name string) string  { return "/var/lib/provisiond/" + name + "/settings" }

// checkInstance accepts an instance name as `systemctl list-units 'provisiond@*'` shows it,
// with or without the unit's prefix and suffix, and refuses what cannot be one folder.
func checkInstance(name string) (string, error) {
	name = strings.TrimSuffix(strings.TrimPrefix(name, "provisiond@"), ".service")
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return "", fmt.Errorf("--instance %q is not an instance name (the part after provisiond@, e.g. ttyACM0)", name)
	}
	return name, nil
}

// client finds the socket (--socket, --instance, else control.socket of the config) and
// returns a client.
func (f *ctlFlags) client(cmd *cobra.Command) (*control.Client, error) {
	switch {
	case f.socket != "":
		return control.Dial(f.socket), nil
	case cmd.Flags().Changed("instance"):
		name, err := checkInstance(f.instance)
		if err != nil {
			return nil, err
		}
		return control.Dial(instanceSocket(name)), nil
	}
	socket, err := configValue(cmd, f.configPath, "control.socket", func(c *config.Config) string { return c.Control.Socket })
	if err != nil {
		return nil, err
	}
	return control.Dial(socket), nil
}

// configValue reads one path setting for a control verb. A verb must not fail because some
// other key of the file is wrong (that is for `config check` and the daemon): when the whole
// config does not load, the key is read alone, from its environment variable or the file,
// else its default, with a warning on stderr.
func configValue(cmd *cobra.Command, path, key string, get func(*config.Config) string) (string, error) {
	explicit := cmd.Flags().Changed("config")
	cfg, loadErr := config.Load(path, explicit)
	if loadErr == nil {
		return get(cfg), nil
	}
	if _, err := os.Stat(cmp.Or(path, config.DefaultPath)); explicit && err != nil {
		return "", loadErr // the file asked for is not there: nothing to fall back from
	}
	var info *config.KeyInfo
	for _, k := range config.Keys() {
		if k.Key == key {
			info = &k
			break
		}
	}
	if info == nil {
		return "", loadErr
	}
	v, from, err := rawKey(path, explicit, *info)
	if err != nil {
		return "", fmt.Errorf("%w (and %s could not be read alone: %w)", loadErr, key, err)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "provisiond: warning: %v\nprovisiond: using %s %s from %s\n", loadErr, key, v, from)
	return v, nil
}

// rawKey reads one string key without checking the rest of the config: the environment
// variable, else the file's value, else the default. It says where the value came from.
func rawKey(path string, explicit bool, k config.KeyInfo) (value, from string, err error) {
	if v, ok := os.LookupEnv(k.Env); ok && v != "" {
		return v, k.Env, nil
	}
	if path == "" {
		path = config.DefaultPath
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !explicit:
		return k.Default, "the default", nil
	case err != nil:
		return "", "", err
	}
	var doc map[string]map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return "", "", fmt.Errorf("%s: %w", path, err)
	}
	section, name, _ := strings.Cut(k.Key, ".")
	raw, ok := doc[section][name]
	if !ok || raw == nil {
		return k.Default, "the default", nil
	}
	v, ok := raw.(string)
	if !ok || v == "" {
		return "", "", fmt.Errorf("%s: %s is not a path", path, k.Key)
	}
	return v, path, nil
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
		// 64-bit parse: on a 32-bit CPU a value past int's range still gets the range message.
		secs64, err := strconv.ParseInt(args[0], 10, 64)
		if err != nil {
			return fmt.Errorf("interval: %q is not a whole number of seconds", args[0])
		}
		if err := checkIntervalSeconds(secs64); err != nil {
			return fmt.Errorf("interval: %w", err)
		}
		secs := int(secs64)
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
		Long: "Show the daemon's port and state, what it waits for, where a running attempt is (batch,\n" +
			"command i of n), the last attempt's outcome with the command that failed, the next\n" +
			"scheduled attempt, the modem's identity, the cursor and any results waiting for upload.\n" +
			"--json prints the daemon's status object as it sent it. Exits 3 when no daemon answers.",
		Args: cobra.NoArgs,
	}, func(cmd *cobra.Command, _ []string, c *control.Client) error {
		if asJSON {
			raw, err := c.StatusJSON(cmd.Context())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", strings.TrimSpace(string(raw)))
			return err
		}
		st, err := c.Status(cmd.Context())
		if err != nil {
			return err
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
func printStatus(w io.Writer, st status.Daemon, now time.Time) error {
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
	if st.Instance != "" {
		line("instance", "%s", st.Instance)
	}
	if st.Port != "" {
		line("port", "%s", st.Port)
	}
	line("state", "%s", st.State)
	if st.WaitingFor != "" {
		line("  waiting for", "%s", st.WaitingFor)
	}
	if p := st.Progress; p != nil {
		s := fmt.Sprintf("#%d %s, started %s", p.Attempt, p.Step, when(p.Started, now))
		if p.Commands > 0 {
			s = fmt.Sprintf("#%d batch %d, command %d of %d (%s), started %s", p.Attempt, p.Batch, p.Command, p.Commands, p.CorrelationID, when(p.Started, now))
		}
		line("attempt", "%s", s)
	}
	if a := st.LastAttempt; a != nil {
		line("last attempt", "#%d %s: %d executed, %d failed, %s", a.Number, a.Event, a.Executed, a.Failed, when(a.Finished, now))
		if a.Reason != "" {
			line("  reason", "%s", a.Reason)
		}
		if f := a.FailedCommand; f != nil {
			line("  failed", "%s (%s): %s", f.Command, f.CorrelationID, f.Error)
		}
		if a.Handshakes > 0 || a.BytesSent > 0 || a.BytesReceived > 0 {
			hs := plural(a.Handshakes, "handshake")
			if a.ResumedHandshakes > 0 {
				hs += fmt.Sprintf(" (%d resumed)", a.ResumedHandshakes)
			}
			line("  network", "%s", traffic(hs, a.Requests, a.BytesSent, a.BytesReceived))
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
	if st.HandshakesTotal > 0 || st.BytesSentTotal > 0 || st.BytesReceivedTotal > 0 {
		line("network", "%s since start", traffic(plural(st.HandshakesTotal, "handshake"), st.RequestsTotal,
			st.BytesSentTotal, st.BytesReceivedTotal))
	}
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

// traffic is the network line of status: "1 handshake, 4 requests, 4963 B sent, 2893 B received".
func traffic(handshakes string, requests int, sent, received int64) string {
	return fmt.Sprintf("%s, %s, %d B sent, %d B received", handshakes, plural(requests, "request"), sent, received)
}

// plural is "1 request", "2 requests".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
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
