package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/provisiond/provisiond/internal/config"
	"github.com/provisiond/provisiond/internal/store"
)

func newSettingsCmd() *cobra.Command {
	var (
		asJSON     bool
		configPath string
		instance   string
	)
	cmd := &cobra.Command{
		Use:   "settings [--json] [--config FILE]",
		Short: "Print the settings store's keys and values",
		Long: `Print every key and value of the settings store (store.path in the configuration):
the provisioning interval and cursor, keys written by config commands, and the daemon's outbox.

It reads the file directly, so it works while the daemon is stopped, and it changes nothing:
a corrupt file is reported (exit status 1) and left where it is; the daemon moves it aside
when it next starts. Plain output is one key=value line per key, sorted by key, with a value
quoted Go-style when it holds line breaks or other control characters. --json prints one JSON
object mapping each key to its value.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var storePath string
			if cmd.Flags().Changed("instance") {
				name, err := checkInstance(instance)
				if err != nil {
					return err
				}
				storePath = instanceStore(name)
			} else {
				var err error
				storePath, err = configValue(cmd, configPath, "store.path", func(c *config.Config) string { return c.Store.Path })
				if err != nil {
					return err
				}
			}
			m, err := store.Load(storePath, store.Limits{})
			if errors.Is(err, store.ErrCorrupt) {
				return fmt.Errorf("%w (left in place; the daemon moves it aside when it starts)", err)
			}
			if err != nil {
				return err
			}
			if asJSON {
				return writeSettingsJSON(cmd.OutOrStdout(), m)
			}
			return writeSettingsPlain(cmd.OutOrStdout(), m)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object, key → value")
	cmd.Flags().StringVar(&configPath, "config", config.DefaultPath, "configuration file (a missing default file is not an error)")
	addInstanceFlag(cmd, &instance)
	cmd.MarkFlagsMutuallyExclusive("config", "instance")
	return cmd
}

func writeSettingsJSON(w io.Writer, m map[string]string) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(m) // keys come out sorted; an empty store is {}
}

func writeSettingsPlain(w io.Writer, m map[string]string) error {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		// Quote what would break the one-line-per-key form or be read as quoted.
		if strings.ContainsFunc(v, unicode.IsControl) || strings.HasPrefix(v, `"`) {
			v = strconv.Quote(v)
		}
		b.WriteString(k + "=" + v + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
