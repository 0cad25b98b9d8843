package main

import (
	"encoding/hex"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/provisiond/provisiond/internal/proto"
)

func newEncodeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "encode JSON|-",
		Short: "Print the canonical CBOR of a JSON batch as hex",
		Long: `Encode a JSON array of commands or of responses, in the form "provisiond decode" prints
("-" reads stdin), as canonical CBOR and print it as lower-case hex. For every canonical
batch X of UTF-8 text, encode(decode(X)) prints X again; for a batch decode accepts in
another form (indefinite lengths, long heads, trailing bytes) it prints the canonical form.
Receive limits are not applied, so oversize batches can be built to test a decoder.`,
		Example: `  provisiond encode '[{"id":"x","type":"finished"}]'
  provisiond decode 8182617802 | provisiond encode -`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			js, err := codecInput(cmd, args[0])
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("encode: %w", err)}
			}
			data, err := proto.EncodeBatchJSON(js)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), hex.EncodeToString(data))
			return err
		},
	}
}
