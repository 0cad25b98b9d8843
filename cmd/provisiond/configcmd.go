package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/provisiond/provisiond/internal/config"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check, show or document the configuration",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newConfigCheckCmd(), newConfigShowCmd(), newConfigDefaultsCmd(), newConfigReferenceCmd())
	return cmd
}

func addConfigPathFlag(cmd *cobra.Command, path *string) {
	cmd.Flags().StringVar(path, "config", config.DefaultPath, "configuration file (a missing default file is not an error)")
}

func newConfigCheckCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "check [--config FILE]",
		Short: "Validate the configuration file and the PROVISIOND_* environment",
		Long: `Validate the configuration as the daemon would load it: the YAML file plus PROVISIOND_*
environment overrides, and what its keys point at: CA files must be readable and hold
certificates, the hooks folder must be a folder if it exists, the on_finished program must be
executable. Prints "ok: FILE" and exits 0, or prints every problem (unknown keys, wrong types,
values out of range, unusable files) one per line on stderr and exits 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			explicit := cmd.Flags().Changed("config")
			c, err := config.Load(path, explicit)
			var ve *config.ValidationError
			if errors.As(err, &ve) {
				where := path
				for _, p := range ve.Problems {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s\n", where, p)
				}
				return &exitError{code: 1, err: fmt.Errorf("config %s: %d problem(s)", where, len(ve.Problems))}
			}
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			problems, notes := config.CheckTargets(c)
			for _, p := range problems {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s\n", path, p)
			}
			if len(problems) > 0 {
				return &exitError{code: 1, err: fmt.Errorf("config %s: %d problem(s)", path, len(problems))}
			}
			out := cmd.OutOrStdout()
			if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
				fmt.Fprintf(out, "ok: %s not found, defaults and environment used\n", path)
			} else {
				fmt.Fprintf(out, "ok: %s\n", path)
			}
			for _, n := range notes {
				fmt.Fprintln(out, "note: "+n)
			}
			if c.Modem.Port == "" {
				fmt.Fprintln(out, "note: modem.port is empty; `provisiond run` needs it (or PROVISIOND_MODEM_PORT)")
			}
			return nil
		},
	}
	addConfigPathFlag(cmd, &path)
	return cmd
}

func newConfigShowCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "show [--config FILE]",
		Short: "Print the configuration in effect (file, environment and defaults) as YAML",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := config.Load(path, cmd.Flags().Changed("config"))
			if err != nil {
				return err
			}
			return config.WriteYAML(cmd.OutOrStdout(), c)
		},
	}
	addConfigPathFlag(cmd, &path)
	return cmd
}

func newConfigDefaultsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "defaults",
		Short: "Print the commented example configuration with every key at its default",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return config.WriteExample(cmd.OutOrStdout())
		},
	}
}

func newConfigReferenceCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reference",
		Short: "Print the configuration reference as a Markdown table (for the README)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return config.WriteMarkdown(cmd.OutOrStdout())
		},
	}
}
