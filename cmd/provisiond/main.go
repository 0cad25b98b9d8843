// Command provisiond provisions an nRF91 modem attached over serial from the nRF Cloud
// Provisioning Service. Each subcommand lives in its own file; this file only wires them.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	// One Go processor for `provisiond run`, set before the other packages initialise.
	_ "github.com/provisiond/provisiond/internal/oneproc"
)

// version is set at link time: -ldflags "-X main.version=$(git describe --always --dirty)".
var version = "dev"

// exitError carries a process exit code through cobra without printing usage.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "provisiond",
		Short:         "nRF Cloud device provisioning for an nRF91 modem on a serial line",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	addVersionFlag(root)
	root.AddCommand(
		newVersionCmd(),
		newDecodeCmd(),
		newEncodeCmd(),
		newSettingsCmd(),
		newConfigCmd(),
		newRunCmd(),
		newNowCmd(),
		newStatusCmd(),
		newTokenCmd(),
		newUUIDCmd(),
		newIntervalCmd(),
		newTokensCmd(),
		newClaimCmd(),
		newListCmd(),
		newDashboardCmd(),
		newCompletionCmd(),
	)
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "provisiond %s\n", version)
			return err
		},
	}
}

// addVersionFlag gives root the -v/--version flag that cobra adds when Command.Version is set,
// printing "provisiond VERSION" as the version subcommand does. Cobra's own flag can only be
// reworded with a version template, and linking text/template makes reflect.Value.MethodByName
// reachable, which stops the linker from dropping unused exported methods: 3 MB of the binary.
// Root has no Run, so cobra answers any flag-only call with the help function; that is where
// the flag is honoured (help, if also asked for, wins, as in cobra).
func addVersionFlag(root *cobra.Command) {
	root.Flags().BoolP("version", "v", false, "version for "+root.Name())
	// Marked as cobra marks its own, so completion offers nothing after it.
	_ = root.Flags().SetAnnotation("version", cobra.FlagSetByCobraAnnotation, []string{"true"})
	help := root.HelpFunc()
	root.SetHelpFunc(func(cmd *cobra.Command, args []string) {
		if cmd == root && flagSet(cmd, "version") && !flagSet(cmd, "help") {
			if _, err := fmt.Fprintf(cmd.OutOrStdout(), "provisiond %s\n", version); err != nil {
				cmd.PrintErrln(err)
			}
			return
		}
		help(cmd, args)
	})
}

// flagSet reports whether the bool flag name of cmd is true.
func flagSet(cmd *cobra.Command, name string) bool {
	v, err := cmd.Flags().GetBool(name)
	return err == nil && v
}

// execute runs the CLI and returns the process exit code; main is the only caller of os.Exit.
func execute(ctx context.Context, args []string) int {
	root := newRootCmd()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil || errors.Is(err, context.Canceled) {
		return 0
	}
	fmt.Fprintf(root.ErrOrStderr(), "provisiond: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
