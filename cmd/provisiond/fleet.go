package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/spf13/cobra"

	"github.com/provisiond/provisiond/internal/control"
	"github.com/provisiond/provisiond/internal/fleet"
	"github.com/provisiond/provisiond/internal/station"
)

// collector is the fleet view of the instances the station flags select.
func (f *stationFlags) collector() (*fleet.Collector, error) {
	if f.timeout <= 0 {
		return nil, fmt.Errorf("--timeout %v: want a positive duration", f.timeout)
	}
	return &fleet.Collector{RunDir: f.runDir, Only: f.instance, Timeout: f.timeout,
		Dial: func(socket string) fleet.Source { return control.Dial(socket) }}, nil
}

// clearScreen moves the cursor home and clears the terminal, so --watch redraws in place.
const clearScreen = "\x1b[H\x1b[2J"

func newListCmd() *cobra.Command {
	var f stationFlags
	var asJSON, watch bool
	var every time.Duration
	cmd := &cobra.Command{
		Use:   "list",
		Short: "Show every provisiond instance of the host, one row per modem",
		Long: "Ask every provisiond instance of the host at once (the control sockets in --run-dir and its\n" +
			"subfolders) and print one row per modem: instance, port, device UUID, IMEI, state, progress\n" +
			"of the running attempt (batch, command i of n), last outcome, next attempt, results waiting\n" +
			"for upload and the last outcome's reason. An instance that does not answer within --timeout\n" +
			"is shown as such. The IMEI is asked only of an idle instance (it costs an AT command) and\n" +
			"is left empty while the modem is busy. --json prints the rows as JSON; --watch redraws\n" +
			"every --every until interrupted. Exits 0 when every last attempt succeeded or none ran\n" +
			"yet, 1 when any failed or an instance gave no status, 2 when no instance answered.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.collector()
			if err != nil {
				return err
			}
			if watch && every <= 0 {
				return fmt.Errorf("--every %v: want a positive duration", every)
			}
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			for {
				snap, err := c.Collect(ctx)
				if err != nil {
					if errors.Is(err, station.ErrNoInstances) {
						return &exitError{code: fleet.ExitNoneSeen, err: err}
					}
					return err
				}
				if err := writeList(out, snap, asJSON, watch); err != nil {
					return err
				}
				if !watch {
					return listExit(snap)
				}
				select {
				case <-ctx.Done():
					return listExit(snap)
				case <-time.After(every):
				}
			}
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the rows as JSON (the dashboard's GET /api/instances)")
	cmd.Flags().BoolVar(&watch, "watch", false, "redraw in place until interrupted")
	cmd.Flags().DurationVar(&every, "every", 2*time.Second, "how often --watch redraws")
	return cmd
}

// writeList writes one rendering of snap; under watch it clears the screen first and writes
// everything at once so the terminal does not flicker.
func writeList(w io.Writer, snap fleet.Snapshot, asJSON, watch bool) error {
	var b bytes.Buffer
	if watch && !asJSON {
		b.WriteString(clearScreen)
		fmt.Fprintf(&b, "provisiond list — %s (Ctrl-C to stop)\n\n", snap.Time.Local().Format(time.TimeOnly))
	}
	var err error
	if asJSON {
		err = fleet.WriteJSON(&b, snap)
	} else {
		err = fleet.WriteTable(&b, snap, snap.Time)
	}
	if err != nil {
		return err
	}
	_, err = w.Write(b.Bytes())
	return err
}

func listExit(snap fleet.Snapshot) error {
	switch code := fleet.ExitCode(snap); code {
	case fleet.ExitOK:
		return nil
	case fleet.ExitNoneSeen:
		return &exitError{code: code, err: fmt.Errorf("none of %d instance(s) answered", len(snap.Instances))}
	default:
		c := fleet.Count(snap)
		return &exitError{code: code, err: fmt.Errorf("%d failed, %d gave no status (of %d instance(s))", c.Failed, c.Unreachable, len(snap.Instances))}
	}
}

func newDashboardCmd() *cobra.Command {
	var f stationFlags
	var listen string
	var every time.Duration
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Serve the station's live page, its JSON and Prometheus metrics",
		Long: "Serve one page (embedded, no external assets) with a tile per instance of --run-dir, live\n" +
			"through Server-Sent Events; GET /api/instances (the JSON of list --json) and GET /metrics\n" +
			"(Prometheus text exposition). The sockets are asked every --every (five times as often\n" +
			"while an attempt runs) and changes pushed to the page. Listens on loopback unless\n" +
			"--listen names another address.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.collector()
			if err != nil {
				return err
			}
			if every <= 0 {
				return fmt.Errorf("--every %v: want a positive duration", every)
			}
			ctx := cmd.Context()
			var lc net.ListenConfig
			ln, err := lc.Listen(ctx, "tcp", listen)
			if err != nil {
				return fmt.Errorf("--listen %s: %w", listen, err)
			}
			if !fleet.Loopback(listen) {
				fmt.Fprintf(cmd.ErrOrStderr(), "provisiond: dashboard: %s is not a loopback address: the page and metrics are open to the network\n", listen)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "provisiond: dashboard on http://%s/\n", ln.Addr())
			d := &fleet.Dashboard{Collector: c, Interval: every, Logf: func(format string, args ...any) {
				fmt.Fprintf(cmd.ErrOrStderr(), "provisiond: "+format+"\n", args...)
			}}
			err = d.Serve(ctx, ln)
			if err == nil && ctx.Err() != nil {
				return context.Canceled
			}
			return err
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:9273", "address to serve on (host:port); loopback unless set otherwise")
	cmd.Flags().DurationVar(&every, "every", time.Second, "how often the sockets are asked; five times as often while an attempt runs on any instance")
	return cmd
}
