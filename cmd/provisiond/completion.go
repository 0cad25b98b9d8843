package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// newCompletionCmd prints a shell completion script for bash, zsh or fish. It replaces cobra's
// default completion command so the help text says where the Debian package installs each
// script and which shells are supported.
func newCompletionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print a shell completion script",
		Long: `Print the completion script for bash, zsh or fish to standard output.

The Debian package installs them already:
  bash  /usr/share/bash-completion/completions/provisiond
  zsh   /usr/share/zsh/vendor-completions/_provisiond
  fish  /usr/share/fish/vendor_completions.d/provisiond.fish

From a source build, for the current shell only:
  source <(provisiond completion bash)`,
		Args:                  cobra.ExactArgs(1),
		ValidArgs:             []string{"bash", "zsh", "fish"},
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			root, out := cmd.Root(), cmd.OutOrStdout()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			case "fish":
				return root.GenFishCompletion(out, true)
			default:
				return fmt.Errorf("completion: unsupported shell %q (want bash, zsh or fish)", args[0])
			}
		},
	}
}
